//! Open-loop, fixed-rate HTTP/1.1 load generator with coordinated-omission correction
//! (what wrk2 does; wrk2 is not packaged in Debian).
//!
//! Each of `--connections` keep-alive connections sends on its own fixed schedule
//! (`rate / connections` requests per second, connections staggered by `1 / rate`), one
//! request in flight at a time (no pipelining). Latency is measured from the *scheduled*
//! send time, so a server that stalls is charged for the requests that queued up behind
//! the stall, not only for the one that was slow. A connection that fell behind sends
//! its overdue requests back to back until it is on schedule again.
//!
//! Everything runs on one current-thread runtime. Tokio's timer has millisecond
//! resolution, far too coarse for microsecond latencies measured from a schedule, so
//! connections wait for their send times on a [`Pacer`] (one high-resolution timerfd).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Parser;
use edgeprice_bench::latency::{new_histogram, Summary};
use edgeprice_bench::pacer::Pacer;
use edgeprice_bench::target::HttpTarget;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "Open-loop fixed-rate HTTP/1.1 load generator (coordinated-omission corrected)")]
struct Args {
    /// Target URL (http:// only); its path is used unless --paths-file is given.
    #[arg(long)]
    url: String,
    /// Total requests per second over all connections.
    #[arg(long)]
    rate: f64,
    /// Keep-alive connections, each with one request in flight at most.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds at the same rate before measuring (not recorded).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds to wait for responses still in flight at the end; those that do not
    /// arrive count as timeouts.
    #[arg(long, default_value_t = 2.0)]
    grace: f64,
    /// File with one request path per line (e.g. `/v1/prices/SKU-0000042?store=store-1`),
    /// used round-robin instead of the URL's path.
    #[arg(long)]
    paths_file: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    url: String,
    target_rps: f64,
    connections: usize,
    duration_s: f64,
    /// Responses completed in the measured window, per second.
    achieved_rps: f64,
    /// Requests scheduled in the measured window.
    scheduled: u64,
    /// Responses completed in the measured window (2xx or not).
    count: u64,
    /// Connection and protocol errors over the whole run (each costs a reconnect).
    errors: u64,
    non_2xx: u64,
    /// Requests still unanswered when the grace period ran out.
    timeouts: u64,
    /// Responses over the whole run, warm-up included: what the server served while
    /// this process ran (for CPU time per request).
    total_responses: u64,
    /// Latency from scheduled send time to complete response.
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    /// How late requests went out relative to their schedule: a large value means the
    /// generator itself (or the server, by holding connections) could not keep up.
    send_lag_p99_us: f64,
    send_lag_max_us: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    let target = HttpTarget::parse(&args.url)?;
    let paths = match &args.paths_file {
        Some(file) => read_paths(file)?,
        None => vec![target.path.clone()],
    };
    let requests: Vec<Bytes> = paths
        .iter()
        .map(|path| {
            Bytes::from(format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: edgeprice-loadgen\r\n\r\n",
                target.authority
            ))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building runtime")?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, run(&args, &target, requests))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn read_paths(file: &PathBuf) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let paths: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
        bail!("{}: path {bad:?} does not start with /", file.display());
    }
    anyhow::ensure!(!paths.is_empty(), "{} has no paths", file.display());
    Ok(paths)
}

/// Shared, single-threaded run state.
struct Shared {
    requests: Vec<Bytes>,
    next_request: Cell<usize>,
    /// Requests scheduled at or after this instant are recorded.
    record_from: Instant,
    /// No request is scheduled at or after this instant.
    end: Instant,
    stats: RefCell<Stats>,
    pacer: Pacer,
}

#[derive(Debug)]
struct Stats {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    scheduled: u64,
    errors: u64,
    non_2xx: u64,
    timeouts: u64,
    total_responses: u64,
}

impl Stats {
    /// Counts one exchange; latency and send lag only for requests in the window.
    fn record(
        &mut self,
        outcome: &anyhow::Result<u16>,
        recorded: bool,
        lag: Duration,
        latency: Duration,
    ) {
        match outcome {
            Ok(_) => self.total_responses += 1,
            Err(_) => self.errors += 1,
        }
        if !recorded {
            return;
        }
        self.scheduled += 1;
        self.send_lag.saturating_record(lag.as_nanos() as u64);
        if let Ok(status) = outcome {
            if !(200..300).contains(status) {
                self.non_2xx += 1;
            }
            self.latency.saturating_record(latency.as_nanos() as u64);
        }
    }
}

async fn run(args: &Args, target: &HttpTarget, requests: Vec<Bytes>) -> anyhow::Result<Report> {
    // Connect everything before the clock starts, so connection set-up is not charged
    // to the first requests.
    let mut streams = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        streams.push(connect(target).await?);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let record_from = start + Duration::from_secs_f64(args.warmup);
    let end = record_from + Duration::from_secs_f64(args.duration);
    let shared = Rc::new(Shared {
        requests,
        next_request: Cell::new(0),
        record_from,
        end,
        stats: RefCell::new(Stats {
            latency: new_histogram(),
            send_lag: new_histogram(),
            scheduled: 0,
            errors: 0,
            non_2xx: 0,
            timeouts: 0,
            total_responses: 0,
        }),
        pacer: Pacer::new().context("creating timerfd")?,
    });
    let pacer_jh = tokio::task::spawn_local({
        let shared = shared.clone();
        async move { shared.pacer.drive().await }
    });
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let give_up = end + Duration::from_secs_f64(args.grace);
    let connection_jhs: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let first = start + Duration::from_secs_f64(index as f64 / args.rate);
            let shared = shared.clone();
            let target = target.clone();
            tokio::task::spawn_local(async move {
                let mut connection = Connection {
                    stream: Some(stream),
                    buf: Vec::with_capacity(16 * 1024),
                };
                let in_flight = Rc::new(Cell::new(false));
                let schedule = connection.run(&shared, &target, first, interval, &in_flight);
                if tokio::time::timeout_at(give_up, schedule).await.is_err() && in_flight.get() {
                    shared.stats.borrow_mut().timeouts += 1;
                }
            })
        })
        .collect();
    for connection_jh in connection_jhs {
        connection_jh.await.context("connection task")?;
    }
    if pacer_jh.is_finished() {
        // The pacer only returns on a timer error, which left connections waiting.
        pacer_jh
            .await
            .context("pacer task")?
            .context("pacer timer")?;
    } else {
        pacer_jh.abort();
    }
    let stats = shared.stats.borrow();
    let latency = Summary::of(&stats.latency);
    let send_lag = Summary::of(&stats.send_lag);
    Ok(Report {
        url: args.url.clone(),
        target_rps: args.rate,
        connections: args.connections,
        duration_s: args.duration,
        achieved_rps: (latency.count as f64 / args.duration).round(),
        scheduled: stats.scheduled,
        count: latency.count,
        errors: stats.errors,
        non_2xx: stats.non_2xx,
        timeouts: stats.timeouts,
        total_responses: stats.total_responses,
        p50_us: latency.p50_us,
        p90_us: latency.p90_us,
        p99_us: latency.p99_us,
        p999_us: latency.p999_us,
        max_us: latency.max_us,
        mean_us: latency.mean_us,
        send_lag_p99_us: send_lag.p99_us,
        send_lag_max_us: send_lag.max_us,
    })
}

async fn connect(target: &HttpTarget) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connecting to {}", target.addr))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(stream)
}

/// One keep-alive connection and its read buffer.
struct Connection {
    /// `None` after an error, until the next request reconnects.
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Connection {
    async fn run(
        &mut self,
        shared: &Shared,
        target: &HttpTarget,
        first: Instant,
        interval: Duration,
        in_flight: &Cell<bool>,
    ) {
        let mut scheduled = first;
        while scheduled < shared.end {
            shared.pacer.sleep_until(scheduled).await;
            let recorded = scheduled >= shared.record_from;
            let index = shared.next_request.get();
            shared.next_request.set((index + 1) % shared.requests.len());
            let sent_at = Instant::now();
            in_flight.set(true);
            let outcome = self.exchange(target, &shared.requests[index]).await;
            in_flight.set(false);
            let done_at = Instant::now();
            shared.stats.borrow_mut().record(
                &outcome,
                recorded,
                sent_at.saturating_duration_since(scheduled),
                done_at.saturating_duration_since(scheduled),
            );
            scheduled += interval;
        }
    }

    /// Sends one request and reads its response; returns the status. On error the
    /// connection is dropped and the next call reconnects.
    async fn exchange(&mut self, target: &HttpTarget, request: &[u8]) -> anyhow::Result<u16> {
        let result = self.try_exchange(target, request).await;
        if result.is_err() {
            self.stream = None;
            self.buf.clear();
        }
        result
    }

    async fn try_exchange(&mut self, target: &HttpTarget, request: &[u8]) -> anyhow::Result<u16> {
        if self.stream.is_none() {
            self.stream = Some(connect(target).await?);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream.write_all(request).await.context("sending request")?;
        loop {
            if let Some(response) = parse_response(&self.buf)? {
                self.buf.drain(..response.len);
                if response.close {
                    self.stream = None;
                }
                return Ok(response.status);
            }
            if stream.read_buf(&mut self.buf).await.context("reading")? == 0 {
                bail!("connection closed by server");
            }
        }
    }
}

/// A complete response at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
struct ParsedResponse {
    status: u16,
    /// Bytes of head and body.
    len: usize,
    /// The server will close the connection after it.
    close: bool,
}

/// Parses one response from the start of `buf`: `Ok(None)` if more bytes are needed.
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<ParsedResponse>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf).context("malformed response head")? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.context("response without status")?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = response.version == Some(0);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value).context("content-length")?;
            content_length = Some(value.trim().parse::<usize>().context("content-length")?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = header.value.eq_ignore_ascii_case(b"chunked");
        } else if header.name.eq_ignore_ascii_case("connection") {
            close = header.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body_len = if status == 204 || status == 304 || (100..200).contains(&status) {
        Some(0)
    } else if chunked {
        chunked_body_len(&buf[head_len..])?
    } else if let Some(len) = content_length {
        (buf.len() >= head_len + len).then_some(len)
    } else {
        bail!("response {status} has neither content-length nor chunked encoding");
    };
    Ok(body_len.map(|body_len| ParsedResponse {
        status,
        len: head_len + body_len,
        close,
    }))
}

/// Length of a complete chunked body (with its terminating chunk and trailers) at the
/// start of `buf`, or `None` if more bytes are needed.
fn chunked_body_len(buf: &[u8]) -> anyhow::Result<Option<usize>> {
    let mut pos = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&buf[pos..])
            .map_err(|_| anyhow::anyhow!("malformed chunk size"))?
        {
            httparse::Status::Complete(parsed) => parsed,
            httparse::Status::Partial => return Ok(None),
        };
        pos += size_len;
        if size == 0 {
            // Trailers, if any, end with an empty line; without trailers it is just CRLF.
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                return Ok(Some(pos + 2));
            }
            return Ok(rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|at| pos + at + 4));
        }
        let chunk_end = pos + size as usize + 2;
        if buf.len() < chunk_end {
            return Ok(None);
        }
        pos = chunk_end;
    }
}

fn print_text(report: &Report) {
    println!(
        "{} at {:.0} req/s target over {} connections for {:.1}s",
        report.url, report.target_rps, report.connections, report.duration_s
    );
    println!(
        "  achieved {:.0} req/s: {} responses, {} errors, {} non-2xx, {} timeouts",
        report.achieved_rps, report.count, report.errors, report.non_2xx, report.timeouts
    );
    println!(
        "  latency µs (from schedule): p50 {} p90 {} p99 {} p99.9 {} max {} mean {}",
        report.p50_us, report.p90_us, report.p99_us, report.p999_us, report.max_us, report.mean_us
    );
    println!(
        "  send lag µs: p99 {} max {}",
        report.send_lag_p99_us, report.send_lag_max_us
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_responses_and_waits_for_the_body() {
        let full = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(parse_response(&full[..full.len() - 1]).unwrap(), None);
        assert_eq!(
            parse_response(full).unwrap(),
            Some(ParsedResponse {
                status: 200,
                len: full.len(),
                close: false
            })
        );
    }

    #[test]
    fn parses_chunked_responses() {
        let full = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse_response(&full[..full.len() - 2]).unwrap(), None);
        assert_eq!(
            parse_response(full).unwrap(),
            Some(ParsedResponse {
                status: 404,
                len: full.len(),
                close: true
            })
        );
    }

    #[test]
    fn rejects_responses_without_framing() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
    }
}
