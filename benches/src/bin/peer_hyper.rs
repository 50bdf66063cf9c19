//! Bare hyper 1.x server answering every request with one static body: the limit of
//! our own HTTP stack on this machine.
//!
//! One current-thread tokio runtime per worker thread, each with its own `SO_REUSEPORT`
//! listener, `TCP_NODELAY`, HTTP/1.1 keep-alive. No routing, no lookups: whatever the
//! edge spends above this peer's CPU per request is the cost of its own work.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response};

#[derive(Debug, Parser)]
#[command(about = "Bare hyper static-response server (benchmark peer)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8091")]
    listen: SocketAddr,
    /// Worker threads, each with its own runtime and listener.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// File whose bytes are the response body.
    #[arg(long)]
    body_file: PathBuf,
    /// Content-Type of the response.
    #[arg(long, default_value = "application/json")]
    content_type: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let body = Bytes::from(
        std::fs::read(&args.body_file)
            .with_context(|| format!("reading {}", args.body_file.display()))?,
    );
    let content_type = HeaderValue::from_str(&args.content_type).context("--content-type")?;
    eprintln!(
        "peer_hyper listening on {} with {} worker(s), {} byte body",
        args.listen,
        args.workers,
        body.len()
    );
    edgeprice_bench::serve::run_workers(args.workers, args.listen, move |_index, listener| {
        let body = body.clone();
        let content_type = content_type.clone();
        let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
            let mut response = Response::new(Full::new(body.clone()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, content_type.clone());
            std::future::ready(Ok::<_, Infallible>(response))
        });
        edgeprice_bench::serve::serve_http1(listener, service)
    })
}
