//! The hyper/epoll transport: the portable default.
//!
//! Thread per core: each worker thread runs its own current-thread tokio runtime and
//! accepts on its own `SO_REUSEPORT` listener bound to the same address, so the kernel
//! spreads connections and no request ever crosses threads. HTTP/1.1 with keep-alive,
//! `TCP_NODELAY`. All request → response logic lives in [`crate::api`].

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::api::{self, Api, Response, Routed};
use crate::metrics;
pub use crate::transport::ServerHandle;
use crate::transport::{bind_all, Transport};

type HttpResponse = hyper::Response<Full<Bytes>>;

/// Starts `workers` serving threads on `addr`.
pub fn serve(addr: SocketAddr, workers: usize, api: Arc<Api>) -> anyhow::Result<ServerHandle> {
    let (local_addr, listeners) = bind_all(addr, workers)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut workers_jh = Vec::with_capacity(listeners.len());
    // Serving starts once every worker has its runtime and listener: a server that
    // returned from `serve` is whole (and a worker that cannot start fails `serve`).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    for (index, listener) in listeners.into_iter().enumerate() {
        let api = Arc::clone(&api);
        let shutdown_rx = shutdown_rx.clone();
        let ready_tx = ready_tx.clone();
        let jh = std::thread::Builder::new()
            .name(format!("edge-worker-{index}"))
            .spawn(move || {
                metrics::register_worker(index);
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ =
                            ready_tx.send(Err(anyhow::Error::new(err).context("tokio runtime")));
                        return;
                    }
                };
                runtime.block_on(accept_loop(listener, api, shutdown_rx, ready_tx));
            })?;
        workers_jh.push(jh);
    }
    drop(ready_tx);
    let workers = workers_jh.len();
    let stop = Box::new(move || {
        let _ = shutdown_tx.send(true);
    });
    ServerHandle::new(local_addr, Transport::Hyper, stop, workers_jh).started(ready_rx, workers)
}

async fn accept_loop(
    listener: std::net::TcpListener,
    api: Arc<Api>,
    mut shutdown_rx: watch::Receiver<bool>,
    ready_tx: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(err) => {
            let _ = ready_tx.send(Err(
                anyhow::Error::new(err).context("registering the listener")
            ));
            return;
        }
    };
    let _ = ready_tx.send(Ok(()));
    let mut http = http1::Builder::new();
    // Answers are a few hundred bytes: copying the body behind the head and sending one
    // buffer is cheaper than a two-element writev (measured: see benches/RESULTS.md).
    http.keep_alive(true).max_buf_size(64 * 1024).writev(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = shutdown_rx.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = EdgeService {
            api: Arc::clone(&api),
        };
        let connection = http.serve_connection(TokioIo::new(stream), service);
        // No per-connection shutdown signal: when the accept loop ends the runtime is
        // dropped, which cancels every connection task with it.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}

#[derive(Clone)]
struct EdgeService {
    api: Arc<Api>,
}

/// Reads answer synchronously; only admin uploads need to await.
enum ResponseFuture {
    Ready(Option<HttpResponse>),
    Admin(Pin<Box<dyn Future<Output = HttpResponse> + Send>>),
}

impl Future for ResponseFuture {
    type Output = Result<HttpResponse, std::convert::Infallible>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            ResponseFuture::Ready(response) => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            ResponseFuture::Admin(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

impl Service<hyper::Request<Incoming>> for EdgeService {
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let headers = req.headers();
        let view = api::Request {
            method: match *req.method() {
                hyper::Method::GET => api::Method::Get,
                hyper::Method::HEAD => api::Method::Head,
                hyper::Method::POST => api::Method::Post,
                _ => api::Method::Other,
            },
            path: req.uri().path(),
            query: req.uri().query(),
            accept: headers.get(header::ACCEPT).map(|v| v.as_bytes()),
            if_none_match: headers.get(header::IF_NONE_MATCH).map(|v| v.as_bytes()),
            authorization: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        };
        match self.api.route(&view) {
            Routed::Done(response) => ResponseFuture::Ready(Some(to_hyper(response))),
            Routed::NeedsBody(call) => {
                let api = Arc::clone(&self.api);
                let limit = api.body_limit(call);
                let started = std::time::Instant::now();
                ResponseFuture::Admin(Box::pin(async move {
                    let body = match Limited::new(req.into_body(), limit).collect().await {
                        Ok(collected) => collected.to_bytes(),
                        Err(err) => {
                            let response = if err
                                .downcast_ref::<http_body_util::LengthLimitError>()
                                .is_some()
                            {
                                Response::error(
                                    413,
                                    "body_too_large",
                                    &format!("uploads are limited to {limit} bytes"),
                                )
                            } else {
                                Response::error(
                                    400,
                                    "body_read_failed",
                                    &format!("could not read the request body: {err}"),
                                )
                            };
                            api.record_refused(call, response.status, started.elapsed());
                            return to_hyper(response);
                        }
                    };
                    to_hyper(api.admin(call, body).await)
                }))
            }
        }
    }
}

fn to_hyper(response: Response) -> HttpResponse {
    let mut out = hyper::Response::new(Full::new(Bytes::from(response.body)));
    *out.status_mut() = hyper::StatusCode::from_u16(response.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(response.content_type),
    );
    if let Some(etag) = response.etag {
        if let Ok(value) = HeaderValue::from_bytes(&etag) {
            headers.insert(header::ETAG, value);
        }
    }
    if let Some(allow) = response.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if response.authenticate {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    out
}
