//! The seed design as a benchmark peer: an HTTP server whose handler for
//! `GET /v1/prices/{sku}` reads the price JSON from Redis (`GET price:{sku}`) on every
//! request and answers it as is.
//!
//! Same serving shape as `peer_hyper` (a current-thread runtime and `SO_REUSEPORT`
//! listener per worker), plus one Redis connection per worker shared by that worker's
//! HTTP connections. Commands from concurrent requests are written in order as they come
//! (batched into one write when several are queued, as the `redis` crate's multiplexed
//! connection does) and replies are matched to them in order, so the Redis round trip
//! is paid per request but not serialised across connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use anyhow::{bail, Context};
use bytes::{Buf, Bytes, BytesMut};
use clap::Parser;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

const PRICE_PREFIX: &str = "/v1/prices/";

#[derive(Debug, Parser)]
#[command(about = "HTTP handler reading each price from Redis (benchmark peer: the seed design)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Worker threads, each with its own runtime, listener and Redis connection.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Redis server address.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis: SocketAddr,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    eprintln!(
        "peer_redis_http listening on {} with {} worker(s), prices from redis at {}",
        args.listen, args.workers, args.redis
    );
    let redis_addr = args.redis;
    edgeprice_bench::serve::run_workers(
        args.workers,
        args.listen,
        move |_index, listener| async move {
            let redis = Rc::new(
                Redis::connect(redis_addr)
                    .await
                    .with_context(|| format!("connecting to redis at {redis_addr}"))?,
            );
            let json = HeaderValue::from_static("application/json");
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let redis = redis.clone();
                let json = json.clone();
                async move {
                    let (status, body) = price(&redis, request.uri().path()).await;
                    let mut response = Response::new(Full::new(body));
                    *response.status_mut() = status;
                    response.headers_mut().insert(CONTENT_TYPE, json);
                    Ok::<_, Infallible>(response)
                }
            });
            edgeprice_bench::serve::serve_http1(listener, service).await
        },
    )
}

/// Answers one price request from Redis.
async fn price(redis: &Redis, path: &str) -> (StatusCode, Bytes) {
    let Some(sku) = path.strip_prefix(PRICE_PREFIX).filter(|s| !s.is_empty()) else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    match redis.get(format!("price:{sku}").as_bytes()).await {
        Ok(Some(json)) => (StatusCode::OK, json),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "unknown_sku",
            "no price for this sku",
        ),
        Err(failure) => error(
            StatusCode::BAD_GATEWAY,
            "redis_failed",
            &format!("{failure:#}"),
        ),
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Bytes) {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, Bytes::from(body.to_string()))
}

type Reply = anyhow::Result<Option<Bytes>>;

/// One pipelined Redis connection: a writer task batches queued commands into writes, a
/// reader task answers them in order.
struct Redis {
    command_tx: mpsc::UnboundedSender<(Bytes, oneshot::Sender<Reply>)>,
}

impl Redis {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Redis> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read_half, write_half) = stream.into_split();
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        let waiting = Rc::new(RefCell::new(VecDeque::new()));
        tokio::task::spawn_local(write_commands(write_half, command_rx, waiting.clone()));
        tokio::task::spawn_local(async move {
            if let Err(failure) = read_replies(read_half, &waiting).await {
                eprintln!("redis connection lost: {failure:#}");
            }
            // Dropping the waiting senders fails their requests instead of hanging them.
            waiting.borrow_mut().clear();
        });
        Ok(Redis { command_tx })
    }

    /// `GET key`: the value, or `None` if the key does not exist.
    async fn get(&self, key: &[u8]) -> Reply {
        let mut command = BytesMut::with_capacity(key.len() + 32);
        command.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$");
        command.extend_from_slice(key.len().to_string().as_bytes());
        command.extend_from_slice(b"\r\n");
        command.extend_from_slice(key);
        command.extend_from_slice(b"\r\n");
        let (reply_tx, reply_rx) = oneshot::channel();
        self.command_tx
            .send((command.freeze(), reply_tx))
            .map_err(|_| anyhow::anyhow!("redis connection is closed"))?;
        reply_rx.await.context("redis connection lost")?
    }
}

/// Replies are matched to commands in the order the commands were written, so a reply
/// sender is queued before its command's bytes leave.
async fn write_commands(
    mut write_half: OwnedWriteHalf,
    mut command_rx: mpsc::UnboundedReceiver<(Bytes, oneshot::Sender<Reply>)>,
    waiting: Rc<RefCell<VecDeque<oneshot::Sender<Reply>>>>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while command_rx.recv_many(&mut batch, 256).await > 0 {
        for (command, reply_tx) in batch.drain(..) {
            buf.extend_from_slice(&command);
            waiting.borrow_mut().push_back(reply_tx);
        }
        if let Err(failure) = write_half.write_all(&buf).await {
            eprintln!("redis write failed: {failure}");
            return;
        }
        buf.clear();
    }
}

async fn read_replies(
    mut read_half: OwnedReadHalf,
    waiting: &RefCell<VecDeque<oneshot::Sender<Reply>>>,
) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(reply) = parse_reply(&mut buf)? {
            let reply_tx = waiting
                .borrow_mut()
                .pop_front()
                .context("redis sent a reply nobody asked for")?;
            // The HTTP connection may have gone away meanwhile; nothing to do then.
            let _ = reply_tx.send(reply);
        }
        if read_half.read_buf(&mut buf).await? == 0 {
            bail!("redis closed the connection");
        }
    }
}

/// Takes one complete reply off the front of `buf` (`None`: need more bytes). Bulk
/// strings and nil are values; `-ERR` replies become errors of their request; any other
/// reply type is a protocol error for this client, which only sends `GET`.
fn parse_reply(buf: &mut BytesMut) -> anyhow::Result<Option<Reply>> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..line_end]).context("non-UTF-8 reply header")?;
    match buf.first() {
        Some(b'$') => {
            let len: i64 = line.parse().context("bad bulk length")?;
            if len < 0 {
                buf.advance(line_end + 2);
                return Ok(Some(Ok(None)));
            }
            let start = line_end + 2;
            let end = start + len as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            buf.advance(start);
            let value = buf.split_to(len as usize).freeze();
            buf.advance(2);
            Ok(Some(Ok(Some(value))))
        }
        Some(b'-') => {
            let message = line.to_owned();
            buf.advance(line_end + 2);
            Ok(Some(Err(anyhow::anyhow!("redis error: {message}"))))
        }
        other => bail!("unexpected redis reply type {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(input: &[u8]) -> Vec<Option<Bytes>> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(reply) = parse_reply(&mut buf).unwrap() {
            out.push(reply.unwrap());
        }
        out
    }

    #[test]
    fn parses_bulk_and_nil_replies_in_order() {
        assert_eq!(
            values(b"$5\r\nhello\r\n$-1\r\n$0\r\n\r\n"),
            vec![Some(Bytes::from_static(b"hello")), None, Some(Bytes::new())]
        );
    }

    #[test]
    fn waits_for_incomplete_replies() {
        assert!(values(b"$5\r\nhel").is_empty());
        assert!(values(b"$5").is_empty());
    }

    #[test]
    fn turns_error_replies_into_request_errors() {
        let mut buf = BytesMut::from(&b"-ERR wrong type\r\n"[..]);
        let reply = parse_reply(&mut buf).unwrap().unwrap();
        assert!(reply.unwrap_err().to_string().contains("wrong type"));
        assert!(buf.is_empty());
    }
}
