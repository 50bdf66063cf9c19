//! Thread-per-core serving for the peer servers: one current-thread tokio runtime per
//! worker thread, each accepting on its own `SO_REUSEPORT` listener so the kernel
//! spreads connections over workers without a shared accept queue.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use socket2::{Domain, Protocol, Socket, Type};

/// Binds a non-blocking listener with `SO_REUSEPORT` and `TCP_NODELAY` (inherited by
/// accepted sockets on Linux).
pub fn reuseport_listener(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .context("creating listener socket")?;
    socket.set_reuse_address(true).context("SO_REUSEADDR")?;
    socket.set_reuse_port(true).context("SO_REUSEPORT")?;
    socket.set_nodelay(true).context("TCP_NODELAY")?;
    socket.set_nonblocking(true).context("O_NONBLOCK")?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(4096).context("listen")?;
    Ok(socket.into())
}

/// Runs `serve(worker_index, listener)` on `workers` threads, each inside its own
/// current-thread runtime and `LocalSet` (so connection tasks need not be `Send`).
/// All listeners are bound before any thread starts, so a bind error is reported at once
/// and the port accepts connections as soon as this function has started the threads.
/// Returns when every worker has returned; the first error wins.
pub fn run_workers<S, Fut>(workers: usize, addr: SocketAddr, serve: S) -> anyhow::Result<()>
where
    S: Fn(usize, tokio::net::TcpListener) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    anyhow::ensure!(workers >= 1, "--workers must be at least 1");
    let listeners = (0..workers)
        .map(|_| reuseport_listener(addr))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let worker_jhs = listeners
        .into_iter()
        .enumerate()
        .map(|(index, std_listener)| {
            let serve = serve.clone();
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || -> anyhow::Result<()> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building worker runtime")?;
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&runtime, async move {
                        let listener = tokio::net::TcpListener::from_std(std_listener)
                            .context("registering listener")?;
                        serve(index, listener).await
                    })
                })
                .context("spawning worker thread")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (index, worker_jh) in worker_jhs.into_iter().enumerate() {
        worker_jh
            .join()
            .map_err(|_| anyhow::anyhow!("worker {index} panicked"))?
            .with_context(|| format!("worker {index}"))?;
    }
    Ok(())
}

/// Accepts connections forever and serves each with hyper's HTTP/1.1 server
/// (keep-alive on) as a local task.
pub async fn serve_http1<S>(listener: tokio::net::TcpListener, service: S) -> anyhow::Result<()>
where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<http_body_util::Full<bytes::Bytes>>,
        > + Clone
        + 'static,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            // Out of descriptors or a connection reset before accept: keep serving the
            // connections we have; a short pause avoids spinning on EMFILE.
            Err(error) => {
                eprintln!("accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::task::spawn_local(async move {
            // A client closing its connection mid-request is normal at the end of a run.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
