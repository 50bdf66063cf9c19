//! Choosing and running a transport: hyper on epoll ([`crate::http`], the portable
//! default) or io_uring ([`crate::uring`], Linux 6.1+ where io_uring is allowed).
//! Both serve the same routes through [`crate::api`] and are stopped the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

use crate::api::Api;

/// Which transport serves HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// hyper on tokio (epoll): runs wherever tokio does.
    Hyper,
    /// io_uring with multishot accept and receive, provided buffers and one submission
    /// per batch of answers; fails to start where io_uring is unavailable.
    Uring,
    /// io_uring where the kernel offers what it needs, hyper otherwise (containers
    /// often forbid io_uring: Docker's default seccomp profile does). The default:
    /// io_uring costs less CPU per request, and hyper stays the portable fallback.
    #[default]
    Auto,
}

impl std::str::FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "hyper" => Ok(Transport::Hyper),
            "uring" | "io_uring" | "io-uring" => Ok(Transport::Uring),
            "auto" => Ok(Transport::Auto),
            other => Err(format!(
                "unknown transport {other:?}: expected hyper, uring or auto"
            )),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Hyper => "hyper",
            Transport::Uring => "uring",
            Transport::Auto => "auto",
        })
    }
}

/// A running server, whichever transport serves it.
pub struct ServerHandle {
    local_addr: SocketAddr,
    transport: Transport,
    stop: Box<dyn FnOnce() + Send + Sync>,
    workers_jh: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("transport", &self.transport)
            .field("workers", &self.workers_jh.len())
            .finish()
    }
}

impl ServerHandle {
    pub(crate) fn new(
        local_addr: SocketAddr,
        transport: Transport,
        stop: Box<dyn FnOnce() + Send + Sync>,
        workers_jh: Vec<JoinHandle<()>>,
    ) -> ServerHandle {
        ServerHandle {
            local_addr,
            transport,
            stop,
            workers_jh,
        }
    }

    /// Collects one readiness report per serving thread (`workers` of them): the
    /// handle once all are serving, or the first failure, after stopping the rest.
    pub(crate) fn started(
        self,
        ready_rx: std::sync::mpsc::Receiver<anyhow::Result<()>>,
        workers: usize,
    ) -> anyhow::Result<ServerHandle> {
        let failure = (0..workers).find_map(|_| match ready_rx.recv() {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err),
            Err(_) => Some(anyhow::anyhow!("a serving thread exited while starting")),
        });
        match failure {
            None => Ok(self),
            Some(err) => {
                self.shutdown();
                Err(err)
            }
        }
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The transport serving (never `Auto`).
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Stops accepting, closes connections, and waits for the workers.
    pub fn shutdown(self) {
        (self.stop)();
        for worker in self.workers_jh {
            let _ = worker.join();
        }
    }

    /// Waits until the workers exit (they run until shutdown).
    pub fn join(self) {
        for worker in self.workers_jh {
            let _ = worker.join();
        }
    }
}

/// A non-blocking listener with `SO_REUSEPORT`, so each worker can bind its own to the
/// same address and the kernel spreads connections over them.
fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// One listener per worker on `addr` (the first learns the port when it is 0).
pub(crate) fn bind_all(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let first = bind(addr)?;
    let local_addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers.max(1) {
        listeners.push(bind(local_addr)?);
    }
    Ok((local_addr, listeners))
}

/// Starts `workers` serving threads on `addr` with `transport`.
pub fn serve(
    transport: Transport,
    addr: SocketAddr,
    workers: usize,
    api: Arc<Api>,
) -> anyhow::Result<ServerHandle> {
    match transport {
        Transport::Hyper => crate::http::serve(addr, workers, api),
        Transport::Uring => crate::uring::serve(addr, workers, api),
        // A worker that cannot build its ring (old kernel, seccomp) fails the start.
        Transport::Auto => crate::uring::serve(addr, workers, Arc::clone(&api)).or_else(|err| {
            warn!(error = %format!("{err:#}"), "io_uring is unavailable here; serving with hyper");
            crate::http::serve(addr, workers, api)
        }),
    }
}
