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
//! The generator shares a machine with the server it measures, so its own cost per
//! request decides how much of its core is left to keep the schedule: a generator that
//! is busy when a request falls due sends it late, and the lateness is counted as the
//! server's. It is therefore one thread around one epoll set, with no runtime: a request
//! costs one `write` and one `read`, and waiting for the next send time or the next
//! response is one `epoll_pwait2` with a nanosecond timeout (and 1 ns of timer slack),
//! shared by all connections. (Its predecessor, tokio tasks paced by a timerfd, spent
//! four more syscalls per request and saturated its core at ~45k req/s on the 2-core
//! benchmark VM.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use edgeprice_bench::cpu::process_cpu_ns;
use edgeprice_bench::latency::{new_histogram, Summary};
use edgeprice_bench::target::HttpTarget;
use hdrhistogram::Histogram;
use serde::Serialize;

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
    /// Also report, per window of this many milliseconds (by scheduled send time), the
    /// worst latency and send lag: shows whether a tail is one stall or spread out.
    #[arg(long)]
    timeline_ms: Option<u64>,
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
    /// This process's CPU time (user + system) over the run, per response: what the
    /// generator's own core paid for each request.
    cpu_us_per_response: f64,
    /// With `--timeline-ms`: the measured window cut into equal slices, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    timeline: Vec<Slice>,
}

/// One `--timeline-ms` window of the measured run.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
struct Slice {
    /// Start of the window, ms after measuring began.
    at_ms: u64,
    responses: u64,
    /// Requests of the window that failed or were still unanswered at the end.
    failed: u64,
    /// Slowest request of the window, answered or not (an unanswered one counts until
    /// the generator gave up on it).
    max_us: f64,
    max_send_lag_us: f64,
}

/// The measured run cut into windows by scheduled send time.
#[derive(Debug, Default)]
struct Timeline {
    /// Window length; 0: no timeline.
    slice_ns: u64,
    /// Start of the first window (ns since the origin).
    from_ns: u64,
    slices: Vec<Slice>,
}

impl Timeline {
    fn new(slice_ms: u64, from_ns: u64, duration_ns: u64) -> anyhow::Result<Timeline> {
        let slice_ns = slice_ms
            .checked_mul(1_000_000)
            .filter(|&ns| ns > 0)
            .context("--timeline-ms must be positive and below 2^64 ns")?;
        let slices = (0..duration_ns.div_ceil(slice_ns))
            .map(|i| Slice {
                at_ms: i * slice_ms,
                ..Slice::default()
            })
            .collect();
        Ok(Timeline {
            slice_ns,
            from_ns,
            slices,
        })
    }

    /// Records a request scheduled at `scheduled_ns`: `answered`, or failed, after
    /// `latency_ns`, sent `lag_ns` late. Outside the windows (or without a timeline): ignored.
    fn record(&mut self, scheduled_ns: u64, lag_ns: u64, latency_ns: u64, answered: bool) {
        if self.slice_ns == 0 || scheduled_ns < self.from_ns {
            return;
        }
        let at = (scheduled_ns - self.from_ns) / self.slice_ns;
        let Some(slice) = usize::try_from(at)
            .ok()
            .and_then(|at| self.slices.get_mut(at))
        else {
            return;
        };
        if answered {
            slice.responses += 1;
        } else {
            slice.failed += 1;
        }
        slice.max_us = slice.max_us.max(latency_ns as f64 / 1e3);
        slice.max_send_lag_us = slice.max_send_lag_us.max(lag_ns as f64 / 1e3);
    }
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
    let requests: Vec<Box<[u8]>> = paths
        .iter()
        .map(|path| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: edgeprice-loadgen\r\n\r\n",
                target.authority
            )
            .into_bytes()
            .into_boxed_slice()
        })
        .collect();
    let report = Run::new(&args, &target, requests)?.run()?;
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

#[derive(Debug)]
struct Stats {
    latency: Histogram<u64>,
    send_lag: Histogram<u64>,
    scheduled: u64,
    errors: u64,
    non_2xx: u64,
    timeouts: u64,
    total_responses: u64,
    /// `--timeline-ms` windows (none without it).
    timeline: Timeline,
}

/// One keep-alive connection: its schedule and the exchange in progress.
#[derive(Debug)]
struct Connection {
    /// `None` after an error or a `connection: close`, until the next send reconnects.
    stream: Option<TcpStream>,
    /// Read buffer (its whole length is usable) and how much of it holds data.
    buf: Vec<u8>,
    filled: usize,
    /// Send time of the next request, or of the one in flight (ns since the origin).
    scheduled_ns: u64,
    /// The request in flight: when it was sent (ns since the origin).
    sent_ns: Option<u64>,
    /// Bytes of the request in flight not yet written (the socket buffer was full).
    unsent: &'static [u8],
    /// Registered for writability, to write `unsent`.
    awaiting_writable: bool,
}

/// The whole run: connections, the epoll set, the schedule and the counters.
struct Run {
    epoll: OwnedFd,
    target: HttpTarget,
    connections: Vec<Connection>,
    /// Connections waiting for their next send time, earliest first.
    due: BinaryHeap<Reverse<(u64, usize)>>,
    requests: &'static [Box<[u8]>],
    next_request: usize,
    origin: Instant,
    interval_ns: u64,
    /// Requests scheduled at or after this are recorded (ns since the origin).
    record_from_ns: u64,
    /// No request is scheduled at or after this.
    end_ns: u64,
    /// Responses still missing at this point are timeouts.
    give_up_ns: u64,
    /// Requests sent and not yet answered (or failed).
    in_flight: usize,
    stats: Stats,
    args_url: String,
    rate: f64,
    duration: f64,
}

/// Initial read buffer per connection (grown for larger responses).
const READ_BUF: usize = 16 * 1024;

/// Connection index in an epoll event's user data.
fn token(index: usize) -> u64 {
    index as u64
}

impl Run {
    fn new(args: &Args, target: &HttpTarget, requests: Vec<Box<[u8]>>) -> anyhow::Result<Run> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: `raw` is a new descriptor owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        // Wake-ups at the requested nanosecond, not up to 50 µs (the default slack) late.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
        // The request texts live for the whole process; a connection's unwritten rest
        // borrows from them.
        let requests: &'static [Box<[u8]>] = Box::leak(requests.into_boxed_slice());
        let ns = |s: f64| (s * 1e9) as u64;
        let origin = Instant::now();
        let mut run = Run {
            epoll,
            target: target.clone(),
            connections: Vec::with_capacity(args.connections),
            due: BinaryHeap::with_capacity(args.connections),
            requests,
            next_request: 0,
            origin,
            interval_ns: ns(args.connections as f64 / args.rate),
            record_from_ns: 0,
            end_ns: 0,
            give_up_ns: 0,
            in_flight: 0,
            stats: Stats {
                latency: new_histogram(),
                send_lag: new_histogram(),
                scheduled: 0,
                errors: 0,
                non_2xx: 0,
                timeouts: 0,
                total_responses: 0,
                timeline: Timeline::default(),
            },
            args_url: args.url.clone(),
            rate: args.rate,
            duration: args.duration,
        };
        // Connect everything before the clock starts, so connection set-up is not
        // charged to the first requests.
        for index in 0..args.connections {
            let stream = run.connect(index)?;
            run.connections.push(Connection {
                stream: Some(stream),
                buf: vec![0; READ_BUF],
                filled: 0,
                scheduled_ns: 0,
                sent_ns: None,
                unsent: &[],
                awaiting_writable: false,
            });
        }
        let start_ns = run.now_ns() + 20_000_000;
        run.record_from_ns = start_ns + ns(args.warmup);
        run.end_ns = run.record_from_ns + ns(args.duration);
        run.give_up_ns = run.end_ns + ns(args.grace);
        if let Some(ms) = args.timeline_ms {
            run.stats.timeline = Timeline::new(ms, run.record_from_ns, ns(args.duration))?;
        }
        for index in 0..args.connections {
            let first = start_ns + ns(index as f64 / args.rate);
            run.connections[index].scheduled_ns = first;
            run.due.push(Reverse((first, index)));
        }
        Ok(run)
    }

    #[inline]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// A new connection for slot `index`, registered for readability.
    fn connect(&self, index: usize) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(self.target.addr)
            .with_context(|| format!("connecting to {}", self.target.addr))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        stream.set_nonblocking(true).context("O_NONBLOCK")?;
        self.epoll_ctl(libc::EPOLL_CTL_ADD, stream.as_raw_fd(), index, false)
            .context("epoll_ctl add")?;
        Ok(stream)
    }

    fn epoll_ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        index: usize,
        writable: bool,
    ) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | if writable { libc::EPOLLOUT } else { 0 }) as u32,
            u64: token(index),
        };
        // SAFETY: valid descriptors and a live event struct.
        if unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(mut self) -> anyhow::Result<Report> {
        let cpu_before = process_cpu_ns();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; self.connections.len()];
        while !self.due.is_empty() || self.in_flight > 0 {
            let mut now = self.now_ns();
            if now >= self.give_up_ns {
                break;
            }
            while let Some(&Reverse((at, index))) = self.due.peek() {
                if at > now {
                    break;
                }
                self.due.pop();
                self.send(index, now);
                now = self.now_ns();
            }
            let wake_at = self
                .due
                .peek()
                .map_or(self.give_up_ns, |Reverse((at, _))| *at);
            let ready = self.wait(&mut events, wake_at.saturating_sub(now))?;
            for event in &events[..ready] {
                let index = event.u64 as usize;
                if event.events & libc::EPOLLOUT as u32 != 0 {
                    self.write_rest(index);
                }
                if event.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                    self.read(index);
                }
            }
        }
        for connection in &self.connections {
            let Some(sent) = connection.sent_ns else {
                continue;
            };
            self.stats.timeouts += 1;
            let scheduled = connection.scheduled_ns;
            if scheduled < self.end_ns {
                self.stats.timeline.record(
                    scheduled,
                    sent.saturating_sub(scheduled),
                    self.give_up_ns.saturating_sub(scheduled),
                    false,
                );
            }
        }
        let cpu_ns = process_cpu_ns().saturating_sub(cpu_before);
        Ok(self.report(cpu_ns))
    }

    /// `epoll_pwait2` for at most `timeout_ns`; the number of ready events.
    fn wait(&self, events: &mut [libc::epoll_event], timeout_ns: u64) -> anyhow::Result<usize> {
        let timeout = libc::timespec {
            tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: valid epoll descriptor, an event buffer of the length given and a
            // live timespec; no signal mask.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as libc::c_int,
                    &timeout as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err).context("epoll_pwait2 (Linux 5.11 or newer is needed)");
            }
        }
    }

    /// Sends the next request on connection `index`, whose send time has come.
    fn send(&mut self, index: usize, now: u64) {
        if self.connections[index].stream.is_none() {
            match self.connect(index) {
                Ok(stream) => self.connections[index].stream = Some(stream),
                Err(_) => {
                    // Counted like a failed exchange; the next send time tries again.
                    self.stats.errors += 1;
                    self.finish(index, now, None);
                    return;
                }
            }
        }
        let request: &'static [u8] = &self.requests[self.next_request];
        self.next_request = (self.next_request + 1) % self.requests.len();
        let connection = &mut self.connections[index];
        connection.sent_ns = Some(now);
        connection.unsent = request;
        self.in_flight += 1;
        self.write_rest(index);
    }

    /// Writes what is left of the request in flight; waits for writability if the
    /// socket buffer is full.
    fn write_rest(&mut self, index: usize) {
        let connection = &mut self.connections[index];
        let Some(stream) = connection.stream.as_mut() else {
            return;
        };
        let result = loop {
            if connection.unsent.is_empty() {
                break Ok(());
            }
            match stream.write(connection.unsent) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => connection.unsent = &connection.unsent[n..],
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => break Err(err),
            }
        };
        let fd = stream.as_raw_fd();
        let wants_writable = match result {
            Ok(()) => false,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => {
                self.fail(index);
                return;
            }
        };
        if wants_writable != connection.awaiting_writable {
            connection.awaiting_writable = wants_writable;
            if self
                .epoll_ctl(libc::EPOLL_CTL_MOD, fd, index, wants_writable)
                .is_err()
            {
                self.fail(index);
            }
        }
    }

    /// Reads from connection `index`; finishes the exchange once a whole response is in.
    fn read(&mut self, index: usize) {
        let connection = &mut self.connections[index];
        let Some(stream) = connection.stream.as_mut() else {
            return;
        };
        if connection.filled == connection.buf.len() {
            let len = connection.buf.len();
            connection.buf.resize(len * 2, 0);
        }
        let got = match stream.read(&mut connection.buf[connection.filled..]) {
            Ok(0) => return self.fail(index),
            // (closed by the server: an error if a response was awaited)
            Ok(n) => n,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => return self.fail(index),
        };
        connection.filled += got;
        match parse_response(&connection.buf[..connection.filled]) {
            Ok(None) => {}
            Ok(Some(_)) if connection.sent_ns.is_none() => {
                // A response nobody asked for: the server is broken.
                self.fail(index)
            }
            Ok(Some(response)) => {
                connection
                    .buf
                    .copy_within(response.len..connection.filled, 0);
                connection.filled -= response.len;
                if response.close {
                    connection.stream = None;
                    connection.filled = 0;
                }
                let now = self.now_ns();
                self.stats.total_responses += 1;
                self.finish(index, now, Some(response.status))
            }
            Err(_) => self.fail(index),
        }
    }

    /// A connection error: counted, the connection dropped (the next send reconnects),
    /// the request in flight given up.
    fn fail(&mut self, index: usize) {
        let connection = &mut self.connections[index];
        connection.stream = None;
        connection.filled = 0;
        connection.unsent = &[];
        connection.awaiting_writable = false;
        if connection.sent_ns.is_none() {
            // Nothing in flight (closed while idle): reconnect at the next send.
            return;
        }
        self.stats.errors += 1;
        let now = self.now_ns();
        self.finish(index, now, None)
    }

    /// Records the exchange of connection `index` (its status, or `None` for an
    /// error) and schedules its next request, if its schedule has one.
    fn finish(&mut self, index: usize, now: u64, status: Option<u16>) {
        let connection = &mut self.connections[index];
        let scheduled = connection.scheduled_ns;
        let sent = match connection.sent_ns.take() {
            Some(sent) => {
                self.in_flight -= 1;
                sent
            }
            None => now,
        };
        if scheduled >= self.record_from_ns && scheduled < self.end_ns {
            let stats = &mut self.stats;
            stats.scheduled += 1;
            let lag = sent.saturating_sub(scheduled);
            stats.send_lag.saturating_record(lag);
            let latency = now.saturating_sub(scheduled);
            stats
                .timeline
                .record(scheduled, lag, latency, status.is_some());
            if let Some(status) = status {
                if !(200..300).contains(&status) {
                    stats.non_2xx += 1;
                }
                stats.latency.saturating_record(latency);
            }
        }
        connection.scheduled_ns += self.interval_ns;
        if connection.scheduled_ns < self.end_ns {
            // Behind schedule, the overdue request is due at once (it sorts first).
            self.due.push(Reverse((connection.scheduled_ns, index)));
        }
    }

    fn report(&self, cpu_ns: u64) -> Report {
        let latency = Summary::of(&self.stats.latency);
        let send_lag = Summary::of(&self.stats.send_lag);
        let stats = &self.stats;
        Report {
            url: self.args_url.clone(),
            target_rps: self.rate,
            connections: self.connections.len(),
            duration_s: self.duration,
            achieved_rps: (latency.count as f64 / self.duration).round(),
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
            cpu_us_per_response: (cpu_ns as f64 / stats.total_responses.max(1) as f64 / 100.0)
                .round()
                / 10.0,
            timeline: stats.timeline.slices.clone(),
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
    println!(
        "  generator CPU µs per response: {}",
        report.cpu_us_per_response
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
    fn timeline_windows_take_requests_by_scheduled_time() {
        let ms = 1_000_000;
        let mut timeline = Timeline::new(100, 5_000 * ms, 250 * ms).unwrap();
        assert_eq!(timeline.slices.len(), 3, "a partial last window is kept");
        timeline.record(5_000 * ms, 0, 2 * ms, true);
        timeline.record(5_099 * ms, ms, 7 * ms, true);
        timeline.record(5_100 * ms, 0, 3 * ms, false);
        timeline.record(4_999 * ms, 0, 90 * ms, true); // warm-up: not recorded
        timeline.record(5_300 * ms, 0, 90 * ms, true); // past the end: not recorded
        let slice = |at_ms, responses, failed, max_us: f64, max_send_lag_us: f64| Slice {
            at_ms,
            responses,
            failed,
            max_us,
            max_send_lag_us,
        };
        assert_eq!(
            timeline.slices,
            vec![
                slice(0, 2, 0, 7_000.0, 1_000.0),
                slice(100, 0, 1, 3_000.0, 0.0),
                slice(200, 0, 0, 0.0, 0.0),
            ]
        );
        assert!(Timeline::new(0, 0, ms).is_err());
        assert!(Timeline::new(u64::MAX / 1_000, 0, ms).is_err());
    }

    #[test]
    fn rejects_responses_without_framing() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\nbody").is_err());
    }
}
