//! The io_uring transport: the edge's read path without epoll or hyper.
//!
//! Thread per core, like [`crate::http`]: each worker owns one ring and one
//! `SO_REUSEPORT` listener, and a connection never leaves its worker. The worker keeps
//! one multishot accept armed and one multishot receive per connection, drawing from a
//! ring of provided buffers, so data arrives without a receive call per request. It
//! parses requests in place ([`crate::h1`]), answers them through [`crate::api`] straight
//! into the connection's send buffer, and hands every send of a pass to the kernel in the
//! one `io_uring_enter` that also waits for the next completions
//! (`IORING_SETUP_DEFER_TASKRUN`: completions are posted only then, in a batch).
//!
//! Admin uploads wait for the snapshot writer, so they run on a small admin thread
//! ([`AdminBridge`]) that posts the answer back to the worker's mailbox and wakes it
//! through an eventfd; requests pipelined behind one wait their turn. Quotes take
//! microseconds and are answered inline.
//!
//! Per connection there is at most one receive and one send in flight, and a connection's
//! buffers are freed only once neither is (the kernel writes into and reads from them
//! until their completions arrive). A connection that sends faster than it reads its
//! answers stops being read: answers queued past [`SEND_HIGH_WATER`] pause parsing, and
//! unparsed input past [`MAX_UNPARSED`] cancels its receive until the backlog drains.
//! Stalled requests get 408 and idle keep-alive connections are closed ([`Timeouts`],
//! checked once a second). After a final answer the socket is shut for writing and read
//! out for a while (a lingering close), so a client still sending a refused body gets
//! the answer instead of a reset.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, error, warn};

use crate::api::{AdminCall, Api, Method, Response, Routed};
use crate::h1::{self, BodyFraming, ChunkError, ChunkedDecoder, HttpDate};
use crate::metrics::{self, Route};
use crate::transport::{bind_all, ServerHandle, Transport};

/// Submission queue entries per ring; a full queue is submitted early, not dropped.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries (the kernel keeps overflow, `IORING_FEAT_NODROP`).
const CQ_ENTRIES: u32 = 8192;
/// Provided receive buffers per worker (a power of two) and their size. A buffer goes
/// back to the ring as soon as its bytes are parsed or copied, so this bounds the
/// receives completed in one pass, not the connections.
const RECV_BUFFERS: u16 = 512;
const RECV_BUFFER_BYTES: usize = 8 * 1024;
const BUFFER_GROUP: u16 = 0;
/// Answers queued on one connection before it stops reading requests.
pub const SEND_HIGH_WATER: usize = 64 * 1024;
/// Received bytes one connection may hold unparsed (a whole head fits) before its
/// receive is cancelled until the backlog drains.
pub const MAX_UNPARSED: usize = h1::MAX_HEAD_BYTES + RECV_BUFFER_BYTES;
/// Largest body skipped on a route that reads none; a larger one closes the connection
/// after the answer.
const MAX_DISCARDED_BODY: usize = 64 * 1024;
/// Connections per worker; more are closed as they are accepted.
const MAX_CONNECTIONS: usize = 1 << 18;
/// How much a closing connection is read out after its last answer, at most.
const LINGER_BYTES: usize = 1 << 20;

/// Time limits of the io_uring transport, in seconds. They are checked once a second: a
/// limit of N seconds acts after between N and N + 1 seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A request whose head or body has stalled this long gets 408 and the connection
    /// closes (slow or stuck clients do not hold a connection forever).
    pub request_secs: u32,
    /// A keep-alive connection with nothing in progress is closed after this long.
    pub idle_secs: u32,
    /// How long a connection is read out after its last answer before it is closed.
    pub linger_secs: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request_secs: 30,
            idle_secs: 300,
            linger_secs: 2,
        }
    }
}

/// What a completion is for: the top byte of its `user_data`; the rest is the
/// connection's slot (low 32 bits) and generation (24 bits), so a completion for a
/// freed and reused slot is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Accept = 1,
    Recv,
    Send,
    Cancel,
    Wake,
    Tick,
}

fn token(op: Op, slot: u32, generation: u32) -> u64 {
    (op as u64) << 56 | u64::from(generation & 0x00ff_ffff) << 32 | u64::from(slot)
}

fn untoken(user_data: u64) -> (Option<Op>, u32, u32) {
    let op = match (user_data >> 56) as u8 {
        1 => Some(Op::Accept),
        2 => Some(Op::Recv),
        3 => Some(Op::Send),
        4 => Some(Op::Cancel),
        5 => Some(Op::Wake),
        6 => Some(Op::Tick),
        _ => None,
    };
    (op, user_data as u32, (user_data >> 32) as u32 & 0x00ff_ffff)
}

/// A worker's ring. Building it checks that this kernel and its seccomp policy allow
/// what the transport needs: a single-issuer ring with deferred task work (Linux 6.1+,
/// which also has multishot accept and receive and provided-buffer rings).
fn new_ring() -> anyhow::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_submit_all()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES)
        .context("creating an io_uring (needs Linux 6.1+ and io_uring allowed)")
}

/// Starts `workers` io_uring serving threads on `addr`.
pub fn serve(addr: SocketAddr, workers: usize, api: Arc<Api>) -> anyhow::Result<ServerHandle> {
    serve_with(addr, workers, api, Timeouts::default())
}

/// [`serve`] with other time limits.
pub fn serve_with(
    addr: SocketAddr,
    workers: usize,
    api: Arc<Api>,
    timeouts: Timeouts,
) -> anyhow::Result<ServerHandle> {
    let (local_addr, listeners) = bind_all(addr, workers)?;
    let mailboxes = (0..listeners.len())
        .map(|_| Mailbox::new().map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let admin = AdminBridge::start()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers_jh = Vec::with_capacity(listeners.len() + 1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    for (index, listener) in listeners.into_iter().enumerate() {
        let mailbox = Arc::clone(&mailboxes[index]);
        let (api, stop, admin) = (Arc::clone(&api), Arc::clone(&stop), admin.handle.clone());
        let ready_tx = ready_tx.clone();
        let jh = std::thread::Builder::new()
            .name(format!("edge-uring-{index}"))
            .spawn(move || {
                metrics::register_worker(index);
                let date_secs = unix_secs();
                let ctx = Ctx {
                    api,
                    admin,
                    mailbox,
                    date: h1::http_date(date_secs),
                    date_secs,
                    tick: 0,
                };
                // A single-issuer ring belongs to the thread that creates it.
                match Worker::new(listener, ctx, stop, timeouts) {
                    Ok(worker) => {
                        let _ = ready_tx.send(Ok(()));
                        worker.run();
                    }
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                    }
                }
            })?;
        workers_jh.push(jh);
    }
    drop(ready_tx);
    let workers = workers_jh.len();
    let AdminBridge {
        handle: _,
        stop_tx,
        jh,
    } = admin;
    workers_jh.push(jh);
    let stop_all = move || {
        stop.store(true, Ordering::Release);
        for mailbox in &mailboxes {
            mailbox.wake();
        }
        let _ = stop_tx.send(());
    };
    ServerHandle::new(local_addr, Transport::Uring, Box::new(stop_all), workers_jh)
        .started(ready_rx, workers)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs admin calls (which wait for the snapshot writer) off the serving threads.
struct AdminBridge {
    handle: tokio::runtime::Handle,
    stop_tx: tokio::sync::oneshot::Sender<()>,
    jh: JoinHandle<()>,
}

impl AdminBridge {
    fn start() -> anyhow::Result<AdminBridge> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("admin runtime")?;
        let handle = runtime.handle().clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let jh = std::thread::Builder::new()
            .name("edge-admin".into())
            .spawn(move || {
                let _ = runtime.block_on(stop_rx);
            })?;
        Ok(AdminBridge {
            handle,
            stop_tx,
            jh,
        })
    }
}

/// An admin call's answer on its way back to the connection that asked.
struct AdminDone {
    slot: u32,
    generation: u32,
    response: Response,
}

/// Where the admin thread leaves answers for one worker, and the eventfd that wakes it.
struct Mailbox {
    done: Mutex<Vec<AdminDone>>,
    eventfd: OwnedFd,
}

impl Mailbox {
    fn new() -> anyhow::Result<Mailbox> {
        // SAFETY: eventfd has no memory arguments; the fd is owned from here on.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd");
        }
        Ok(Mailbox {
            done: Mutex::new(Vec::new()),
            // SAFETY: `fd` was just created and nothing else owns it.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn post(&self, done: AdminDone) {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(done);
        self.wake();
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot fail short
        // of the counter overflowing, and then the worker is awake anyway.
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    fn take(&self) -> Vec<AdminDone> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A worker's ring of provided receive buffers (`IORING_REGISTER_PBUF_RING`): the
/// kernel picks a buffer for each receive and names it in the completion; the worker
/// hands it back once it has taken the bytes out.
struct RecvBuffers {
    /// The ring of `io_uring_buf` entries the kernel reads, page-aligned.
    entries: *mut types::BufRingEntry,
    entries_len: usize,
    /// The buffers themselves, `count * size` bytes; written by the kernel, so only
    /// reached through raw pointers, and read only between a buffer's completion and
    /// its return.
    data: *mut u8,
    data_len: usize,
    count: u16,
    size: usize,
    /// Entries written; published to the kernel by [`Self::publish`].
    tail: u16,
}

impl RecvBuffers {
    fn new(ring: &IoUring, count: u16, size: usize) -> anyhow::Result<RecvBuffers> {
        debug_assert!(count.is_power_of_two());
        let entries_len = usize::from(count) * std::mem::size_of::<types::BufRingEntry>();
        let data_len = usize::from(count) * size;
        let entries = map_anonymous(entries_len)?.cast::<types::BufRingEntry>();
        let data = match map_anonymous(data_len) {
            Ok(data) => data,
            Err(err) => {
                // SAFETY: mapped just above with this length and not shared.
                unsafe { libc::munmap(entries.cast(), entries_len) };
                return Err(err);
            }
        };
        let mut buffers = RecvBuffers {
            entries,
            entries_len,
            data,
            data_len,
            count,
            size,
            tail: 0,
        };
        // SAFETY: the entries are a page-aligned mapping of `count` entries that lives
        // until this value drops, after the ring that uses it (see `Worker`'s fields).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BUFFER_GROUP, 0)
                .context("registering the receive buffer ring (needs Linux 5.19+)")?;
        }
        for bid in 0..count {
            buffers.recycle(bid);
        }
        buffers.publish();
        Ok(buffers)
    }

    /// The first `len` bytes the kernel wrote into buffer `bid`.
    fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count && len <= self.size);
        // SAFETY: in bounds (checked); the kernel wrote these bytes before posting the
        // completion that named `bid` and will not touch the buffer again until it is
        // recycled, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.data.add(usize::from(bid) * self.size), len) }
    }

    /// Hands buffer `bid` back (visible to the kernel at the next [`Self::publish`]).
    fn recycle(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index` < count; the kernel reads entries only below the published
        // tail, and this one is at or past it.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `bid` < count, so the address is inside the data mapping.
        entry.set_addr(unsafe { self.data.add(usize::from(bid) * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail is a u16 in the first entry's reserved field, which the
        // kernel reads with acquire ordering; entries above were written before.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for RecvBuffers {
    fn drop(&mut self) {
        // SAFETY: both are our own mappings with these lengths; the ring that used them
        // is gone (it drops first).
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
            libc::munmap(self.data.cast(), self.data_len);
        }
    }
}

fn map_anonymous(len: usize) -> anyhow::Result<*mut u8> {
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("mapping receive buffers");
    }
    Ok(ptr.cast())
}

/// What a worker's connections share.
struct Ctx {
    api: Arc<Api>,
    admin: tokio::runtime::Handle,
    mailbox: Arc<Mailbox>,
    /// The `Date` header, redone when the second changes.
    date: HttpDate,
    date_secs: u64,
    /// Seconds since the worker started (its tick count).
    tick: u32,
}

impl Ctx {
    fn refresh_date(&mut self) {
        let now = unix_secs();
        if now != self.date_secs {
            self.date_secs = now;
            self.date = h1::http_date(now);
        }
    }

    fn spawn_admin(&self, slot: u32, generation: u32, call: AdminCall, body: Bytes) {
        let api = Arc::clone(&self.api);
        // Answers the connection even if the call panics or the runtime drops it.
        let mut reply = AdminReply {
            mailbox: Arc::clone(&self.mailbox),
            slot,
            generation,
            sent: false,
        };
        self.admin.spawn(async move {
            let response = api.admin(call, body).await;
            reply.send(response);
        });
    }
}

/// The way back from the admin thread for one call. Dropped without an answer (the call
/// panicked, or the server is stopping), it answers 500 so the connection is not left
/// waiting.
struct AdminReply {
    mailbox: Arc<Mailbox>,
    slot: u32,
    generation: u32,
    sent: bool,
}

impl AdminReply {
    fn send(&mut self, response: Response) {
        self.sent = true;
        self.mailbox.post(AdminDone {
            slot: self.slot,
            generation: self.generation,
            response,
        });
    }
}

impl Drop for AdminReply {
    fn drop(&mut self) {
        if !self.sent {
            self.send(Response::error(
                500,
                "internal_error",
                "the admin call failed before answering",
            ));
        }
    }
}

/// How far a connection is from closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// The last answer is queued: send what is queued, then linger.
    AfterFlush,
    /// Shut for writing; reading out what the client still sends until EOF or the
    /// deadline.
    Lingering {
        until_tick: u32,
        discarded: usize,
    },
    /// Close as soon as no operation is in flight; nothing more is sent.
    Now,
}

/// Where a connection is in its current request.
enum Phase {
    /// Waiting for a request head.
    Head,
    /// Reading a request body.
    Body(Box<BodyRead>),
    /// An admin call runs on the admin thread; requests behind it wait.
    Admin { connection: h1::Connection },
}

struct BodyRead {
    /// The call the body is for; `None` skips the body of a request already answered.
    call: Option<AdminCall>,
    connection: h1::Connection,
    framing: BodyProgress,
    body: Vec<u8>,
    limit: usize,
    started: Instant,
}

enum BodyProgress {
    Length {
        left: usize,
    },
    Chunked {
        decoder: ChunkedDecoder,
        metadata: usize,
    },
}

impl BodyRead {
    /// Takes body bytes from `input`: how many it used, and whether the body is whole.
    fn take(&mut self, input: &[u8]) -> Result<(usize, bool), ChunkError> {
        match &mut self.framing {
            BodyProgress::Length { left } => {
                let used = (*left).min(input.len());
                if self.call.is_some() {
                    self.body.extend_from_slice(&input[..used]);
                }
                *left -= used;
                Ok((used, *left == 0))
            }
            BodyProgress::Chunked { decoder, metadata } => {
                let used = decoder.decode(input, &mut self.body, self.limit, metadata)?;
                if self.call.is_none() {
                    // Skipped bodies count against the limit by their chunk sizes only.
                    self.limit -= self.body.len().min(self.limit);
                    self.body.clear();
                }
                Ok((used, decoder.is_done()))
            }
        }
    }
}

/// Buffers grown past this by one large answer or request go back to the allocator
/// once drained, so an idle connection holds little.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

fn release_if_large(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > RETAINED_BUFFER_BYTES {
        *buf = Vec::new();
    }
}

/// One client connection.
struct Conn {
    fd: RawFd,
    slot: u32,
    generation: u32,
    /// Received bytes not parsed yet: a partial head, or requests waiting behind an
    /// admin call or a full send buffer.
    unparsed: Vec<u8>,
    /// Answers not yet handed to the kernel.
    out: Vec<u8>,
    /// The answers of the send in flight, `flight[..sent]` already sent. Not touched
    /// while a send is in flight: the kernel reads it.
    flight: Vec<u8>,
    sent: usize,
    phase: Phase,
    closing: Closing,
    recv_armed: bool,
    /// The armed receive is multishot (it reads whatever arrives until cancelled).
    recv_multishot: bool,
    /// Parsing stopped with requests left in `unparsed` because answers are backed up
    /// or an admin call is running (not because the input ran out): read no more than a
    /// buffer at a time until they are through.
    backlogged: bool,
    send_armed: bool,
    recv_cancel_sent: bool,
    send_cancel_sent: bool,
    peer_eof: bool,
    /// Requests answered (a connection that never sent one is closed sooner).
    answered: u64,
    /// When the partial request head in `unparsed` started to arrive: the head must be
    /// whole within the request timeout.
    head_since_tick: Option<u32>,
    /// Last tick bytes arrived, and last tick a send completed or nothing was pending.
    recv_tick: u32,
    send_tick: u32,
}

impl Conn {
    fn new(fd: RawFd, slot: u32, generation: u32, tick: u32) -> Conn {
        Conn {
            fd,
            slot,
            generation,
            unparsed: Vec::new(),
            out: Vec::new(),
            flight: Vec::new(),
            sent: 0,
            phase: Phase::Head,
            closing: Closing::Open,
            recv_armed: false,
            recv_multishot: false,
            backlogged: false,
            send_armed: false,
            recv_cancel_sent: false,
            send_cancel_sent: false,
            peer_eof: false,
            answered: 0,
            head_since_tick: None,
            recv_tick: tick,
            send_tick: tick,
        }
    }

    /// Takes in received bytes: parses what requests it can and queues their answers.
    fn receive(&mut self, ctx: &Ctx, data: &[u8]) {
        self.recv_tick = ctx.tick;
        match &mut self.closing {
            Closing::Open => {}
            Closing::Lingering { discarded, .. } => {
                *discarded += data.len();
                if *discarded > LINGER_BYTES {
                    self.abort();
                }
                return;
            }
            // The last answer is queued: whatever follows is not read.
            Closing::AfterFlush | Closing::Now => return,
        }
        if self.unparsed.is_empty() {
            // The common case: whole requests in one receive, parsed where they landed.
            let used = self.consume(ctx, data);
            if self.closing == Closing::Open {
                self.unparsed.extend_from_slice(&data[used..]);
            }
        } else {
            self.unparsed.extend_from_slice(data);
            self.consume_unparsed(ctx);
        }
    }

    fn consume_unparsed(&mut self, ctx: &Ctx) {
        if self.unparsed.is_empty() {
            self.backlogged = false;
            return;
        }
        let mut unparsed = std::mem::take(&mut self.unparsed);
        let used = self.consume(ctx, &unparsed);
        if self.closing == Closing::Open {
            unparsed.drain(..used);
            release_if_large(&mut unparsed);
            self.unparsed = unparsed;
        }
    }

    /// Parses and answers requests from `data` until it runs out, a request needs the
    /// admin thread, or the answers back up. Returns the bytes used.
    fn consume(&mut self, ctx: &Ctx, data: &[u8]) -> usize {
        let mut pos = 0;
        self.backlogged = false;
        loop {
            if self.closing != Closing::Open {
                return pos;
            }
            if self.out.len() > SEND_HIGH_WATER || matches!(self.phase, Phase::Admin { .. }) {
                self.backlogged = pos < data.len();
                return pos;
            }
            match &mut self.phase {
                Phase::Admin { .. } => unreachable!("returned above"),
                Phase::Head => {
                    if pos == data.len() {
                        return pos;
                    }
                    match h1::parse_head(&data[pos..]) {
                        Ok(None) => {
                            self.head_since_tick.get_or_insert(ctx.tick);
                            return pos;
                        }
                        Ok(Some(head)) => {
                            self.head_since_tick = None;
                            pos += head.len;
                            self.start(ctx, &head);
                        }
                        Err(refusal) => {
                            ctx.api.metrics().record(
                                Route::Other,
                                refusal.status,
                                std::time::Duration::ZERO,
                            );
                            self.answer(ctx, &refusal.response(), false, h1::Connection::Close);
                            return data.len();
                        }
                    }
                }
                Phase::Body(read) => {
                    let (used, done) = match read.take(&data[pos..]) {
                        Ok(progress) => progress,
                        Err(err) => {
                            let (call, limit, started) = (read.call, read.limit, read.started);
                            self.refuse_body(ctx, call, limit, started, err);
                            return data.len();
                        }
                    };
                    pos += used;
                    if !done {
                        return pos;
                    }
                    let Phase::Body(read) = std::mem::replace(&mut self.phase, Phase::Head) else {
                        unreachable!("matched above")
                    };
                    if let Some(call) = read.call {
                        self.call(ctx, call, read.body, read.connection);
                    }
                }
            }
        }
    }

    /// Answers a request whose head is in, or starts reading its body.
    fn start(&mut self, ctx: &Ctx, head: &h1::Head<'_>) {
        let head_only = head.request.method == Method::Head;
        let routed = catch_panic(|| ctx.api.route(&head.request));
        match routed {
            Routed::Done(response) => {
                // A body on a route that reads none is skipped if small; a large one is
                // not worth reading, so the connection closes after the answer. So does
                // one whose client waits for `100 Continue`: it may send the body or
                // not, and there is no telling which.
                let skippable = match head.body {
                    BodyFraming::Empty => true,
                    BodyFraming::Chunked => !head.expect_continue,
                    BodyFraming::Length(n) => {
                        n <= MAX_DISCARDED_BODY as u64 && !head.expect_continue
                    }
                };
                let connection = connection_of(head, skippable);
                self.answer(ctx, &response, head_only, connection);
                // (No clock read on the common path: a GET has no body.)
                if connection != h1::Connection::Close && head.body != BodyFraming::Empty {
                    self.read_body(head, None, MAX_DISCARDED_BODY, Instant::now());
                }
            }
            Routed::NeedsBody(call) => {
                let started = Instant::now();
                let limit = ctx.api.body_limit(call);
                match head.body {
                    BodyFraming::Empty => {
                        self.call(ctx, call, Vec::new(), connection_of(head, true))
                    }
                    BodyFraming::Length(n) if n > limit as u64 => {
                        self.refuse_body(ctx, Some(call), limit, started, ChunkError::TooLarge)
                    }
                    _ => {
                        if head.expect_continue {
                            self.out.extend_from_slice(h1::CONTINUE);
                        }
                        self.read_body(head, Some(call), limit, started);
                    }
                }
            }
        }
    }

    fn read_body(
        &mut self,
        head: &h1::Head<'_>,
        call: Option<AdminCall>,
        limit: usize,
        started: Instant,
    ) {
        let framing = match head.body {
            BodyFraming::Empty => return,
            // Checked against the limit by the caller.
            BodyFraming::Length(n) => BodyProgress::Length { left: n as usize },
            BodyFraming::Chunked => BodyProgress::Chunked {
                decoder: ChunkedDecoder::new(),
                metadata: 0,
            },
        };
        // Grown as the body arrives, not reserved from what the head announces.
        let capacity = match (call, head.body) {
            (Some(_), BodyFraming::Length(n)) => (n as usize).min(1 << 20),
            (Some(_), _) => 16 * 1024,
            (None, _) => 0,
        };
        self.phase = Phase::Body(Box::new(BodyRead {
            call,
            connection: connection_of(head, true),
            framing,
            body: Vec::with_capacity(capacity),
            limit,
            started,
        }));
    }

    /// Runs a call whose body is in: quotes inline, admin calls on the admin thread.
    fn call(&mut self, ctx: &Ctx, call: AdminCall, body: Vec<u8>, connection: h1::Connection) {
        if call == AdminCall::Quote {
            let response = catch_panic(|| ctx.api.quote_recorded(&body));
            self.answer(ctx, &response, false, connection);
        } else {
            self.phase = Phase::Admin { connection };
            ctx.spawn_admin(self.slot, self.generation, call, Bytes::from(body));
        }
    }

    /// A body that cannot be read: over the limit or malformed. The connection closes
    /// after the answer, since the rest of the body would be taken for requests.
    fn refuse_body(
        &mut self,
        ctx: &Ctx,
        call: Option<AdminCall>,
        limit: usize,
        started: Instant,
        err: ChunkError,
    ) {
        self.phase = Phase::Head;
        let Some(call) = call else {
            // A skipped body: its request is answered already.
            self.closing = Closing::AfterFlush;
            return;
        };
        let response = match err {
            ChunkError::TooLarge => Response::error(
                413,
                "body_too_large",
                &format!("uploads are limited to {limit} bytes"),
            ),
            ChunkError::Malformed => Response::error(
                400,
                "body_read_failed",
                "could not read the request body: malformed chunked encoding",
            ),
        };
        ctx.api
            .record_refused(call, response.status, started.elapsed());
        self.answer(ctx, &response, false, h1::Connection::Close);
    }

    /// Queues an answer; with `Connection::Close` it is the last one.
    fn answer(
        &mut self,
        ctx: &Ctx,
        response: &Response,
        head_only: bool,
        connection: h1::Connection,
    ) {
        h1::write_response(&mut self.out, response, head_only, connection, &ctx.date);
        self.answered += 1;
        if connection == h1::Connection::Close {
            self.closing = Closing::AfterFlush;
        }
    }

    /// The connection is dead or not worth keeping: nothing more is sent or read.
    fn abort(&mut self) {
        self.closing = Closing::Now;
    }

    /// Whether the connection should have a receive armed.
    fn wants_input(&self) -> bool {
        // Room for a whole head while one is arriving; while requests wait behind
        // unsent answers or an admin call, only for a receive's worth more.
        let room = if self.backlogged {
            RECV_BUFFER_BYTES
        } else {
            MAX_UNPARSED
        };
        !self.peer_eof
            && self.unparsed.len() <= room
            && matches!(self.closing, Closing::Open | Closing::Lingering { .. })
    }

    /// Nothing queued or in flight to send.
    fn is_flushed(&self) -> bool {
        !self.send_armed && self.out.is_empty() && self.flight.is_empty()
    }

    /// What the once-a-second check decides for this connection.
    fn check_time(&mut self, ctx: &Ctx, timeouts: &Timeouts) -> bool {
        let tick = ctx.tick;
        let since_recv = tick.wrapping_sub(self.recv_tick);
        // A send that has not completed for a whole request timeout: the client stopped
        // reading its answers.
        if self.send_armed && tick.wrapping_sub(self.send_tick) > timeouts.request_secs {
            self.abort();
            return true;
        }
        match self.closing {
            Closing::Lingering { until_tick, .. } if tick >= until_tick => {
                self.abort();
                true
            }
            Closing::Open if self.is_flushed() => {
                let stalled = match self.phase {
                    Phase::Head => self
                        .head_since_tick
                        .is_some_and(|since| tick.wrapping_sub(since) > timeouts.request_secs),
                    Phase::Body(_) => since_recv > timeouts.request_secs,
                    Phase::Admin { .. } => false,
                };
                if stalled {
                    self.phase = Phase::Head;
                    self.unparsed.clear();
                    self.head_since_tick = None;
                    let response = Response::error(
                        408,
                        "request_timeout",
                        &format!(
                            "the request did not arrive within {} s",
                            timeouts.request_secs
                        ),
                    );
                    self.answer(ctx, &response, false, h1::Connection::Close);
                    return true;
                }
                let idle = matches!(self.phase, Phase::Head) && self.unparsed.is_empty();
                let limit = if self.answered == 0 {
                    // Connected and said nothing: no keep-alive courtesy for that.
                    timeouts.request_secs
                } else {
                    timeouts.idle_secs
                };
                if idle && since_recv > limit {
                    self.abort();
                    return true;
                }
                false
            }
            _ => false,
        }
    }
}

/// The keep-alive answer to a request: close unless the client wants it kept and
/// `keep` allows.
fn connection_of(head: &h1::Head<'_>, keep: bool) -> h1::Connection {
    match (head.keep_alive && keep, head.http10) {
        (false, _) => h1::Connection::Close,
        (true, true) => h1::Connection::KeepAlive,
        (true, false) => h1::Connection::Default,
    }
}

/// Runs request code; a panic in it becomes a 500 for that request instead of taking
/// the worker, and every connection on it, down.
fn catch_panic<T: From<Response>>(f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        error!("a request handler panicked; answering 500");
        T::from(Response::error(
            500,
            "internal_error",
            "the edge failed to answer this request",
        ))
    })
}

/// Connections by slot, with a generation per slot so stale completions are dropped.
#[derive(Default)]
struct Slab {
    slots: Vec<(u32, Option<Conn>)>,
    free: Vec<u32>,
    live: usize,
}

impl Slab {
    fn insert(&mut self, fd: RawFd, tick: u32) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push((0, None));
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        entry.0 = (entry.0 + 1) & 0x00ff_ffff;
        entry.1 = Some(Conn::new(fd, slot, entry.0, tick));
        self.live += 1;
        slot
    }

    fn get_mut(&mut self, slot: u32, generation: u32) -> Option<&mut Conn> {
        match self.slots.get_mut(slot as usize) {
            Some((g, Some(conn))) if *g == generation => Some(conn),
            _ => None,
        }
    }

    fn remove(&mut self, slot: u32) -> Option<Conn> {
        let conn = self.slots.get_mut(slot as usize)?.1.take()?;
        self.free.push(slot);
        self.live -= 1;
        Some(conn)
    }
}

/// One serving thread: a ring, its listener and connections.
struct Worker {
    // Field order is drop order: the ring goes before the memory its operations use.
    ring: IoUring,
    buffers: RecvBuffers,
    listener: std::net::TcpListener,
    conns: Slab,
    ctx: Ctx,
    stop: Arc<AtomicBool>,
    timeouts: Timeouts,
    accept_armed: bool,
    /// Entries that did not fit the submission queue, pushed before the next submit.
    backlog: std::collections::VecDeque<squeue::Entry>,
    /// Where the mailbox eventfd's count is read into.
    wake_buf: Box<u64>,
    tick_spec: Box<types::Timespec>,
    completions: Vec<(u64, i32, u32)>,
}

impl Worker {
    fn new(
        listener: std::net::TcpListener,
        ctx: Ctx,
        stop: Arc<AtomicBool>,
        timeouts: Timeouts,
    ) -> anyhow::Result<Worker> {
        // io_uring arms a poll for a blocking socket instead of failing with EAGAIN.
        listener
            .set_nonblocking(false)
            .context("listener to blocking mode")?;
        let ring = new_ring()?;
        let buffers = RecvBuffers::new(&ring, RECV_BUFFERS, RECV_BUFFER_BYTES)?;
        Ok(Worker {
            ring,
            buffers,
            listener,
            conns: Slab::default(),
            ctx,
            stop,
            timeouts,
            accept_armed: false,
            backlog: std::collections::VecDeque::new(),
            wake_buf: Box::new(0),
            tick_spec: Box::new(types::Timespec::new().sec(1)),
            completions: Vec::with_capacity(1024),
        })
    }

    fn run(mut self) {
        self.arm_accept();
        self.arm_wake();
        self.arm_tick();
        while !self.stop.load(Ordering::Acquire) {
            self.buffers.publish();
            self.flush_backlog();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                // Interrupted, or the completion queue is full: drain what is there.
                Err(err) if matches!(err.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {
                }
                Err(err) => {
                    error!(error = %err, "io_uring_enter failed; this worker stops serving");
                    break;
                }
            }
            self.ctx.refresh_date();
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(user_data, result, flags) in &completions {
                self.complete(user_data, result, flags);
            }
            completions.clear();
            self.completions = completions;
        }
        self.close_all();
    }

    /// Queues an entry for the next submission.
    fn push(&mut self, entry: squeue::Entry) {
        if !self.backlog.is_empty() || !self.try_push(&entry) {
            // The queue is full: the entry waits for the next pass's submit, which
            // also drains the completions that may be holding the kernel up.
            self.backlog.push_back(entry);
        }
    }

    fn try_push(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every buffer an entry points at outlives its operation: receive
        // buffers and the wake/tick cells live as long as the ring, and a connection's
        // `flight` is neither touched nor freed while its send is in flight
        // (connections are freed only with nothing in flight).
        unsafe { self.ring.submission().push(entry) }.is_ok()
    }

    /// Moves backlogged entries into the submission queue, submitting as it fills.
    fn flush_backlog(&mut self) {
        while let Some(entry) = self.backlog.pop_front() {
            if self.try_push(&entry) {
                continue;
            }
            let submitted = self.ring.submit();
            if submitted.is_err() || !self.try_push(&entry) {
                // The kernel takes no more now (its completion queue is full): the
                // rest waits until this pass's completions are reaped.
                self.backlog.push_front(entry);
                return;
            }
        }
    }

    fn arm_accept(&mut self) {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token(Op::Accept, 0, 0));
        self.push(entry);
        self.accept_armed = true;
    }

    fn arm_wake(&mut self) {
        let buf = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let entry = opcode::Read::new(
            types::Fd(self.ctx.mailbox.eventfd.as_raw_fd()),
            buf,
            std::mem::size_of::<u64>() as u32,
        )
        .build()
        .user_data(token(Op::Wake, 0, 0));
        self.push(entry);
    }

    fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick_spec)
            .build()
            .user_data(token(Op::Tick, 0, 0));
        self.push(entry);
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        let (op, slot, generation) = untoken(user_data);
        match op {
            Some(Op::Accept) => self.on_accept(result, flags),
            Some(Op::Recv) => self.on_recv(slot, generation, result, flags),
            Some(Op::Send) => self.on_send(slot, generation, result),
            Some(Op::Wake) => self.on_wake(result),
            Some(Op::Tick) => self.on_tick(),
            Some(Op::Cancel) | None => {}
        }
    }

    fn on_accept(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed = false;
        }
        if result < 0 {
            // EMFILE and friends: the tick re-arms accepting a second later instead
            // of spinning on the error.
            warn!(error = %std::io::Error::from_raw_os_error(-result), "accept failed");
            return;
        }
        if !self.accept_armed && !self.stop.load(Ordering::Relaxed) {
            self.arm_accept();
        }
        let fd = result;
        if self.conns.live >= MAX_CONNECTIONS {
            warn!(
                limit = MAX_CONNECTIONS,
                "connection limit reached; closing a new connection"
            );
            // SAFETY: `fd` was just accepted and is ours.
            unsafe { libc::close(fd) };
            return;
        }
        set_nodelay(fd);
        let slot = self.conns.insert(fd, self.ctx.tick);
        self.settle(slot);
    }

    fn on_recv(&mut self, slot: u32, generation: u32, result: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let Some(conn) = self.conns.get_mut(slot, generation) else {
            if let Some(bid) = bid {
                self.buffers.recycle(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            conn.recv_armed = false;
            conn.recv_cancel_sent = false;
        }
        match result {
            n if n > 0 => {
                let bid = bid.expect("a receive with data names its buffer");
                conn.receive(&self.ctx, self.buffers.bytes(bid, n as usize));
                self.buffers.recycle(bid);
            }
            0 => {
                conn.peer_eof = true;
                match conn.closing {
                    // The answer to a request in progress is still wanted (a client may
                    // shut its sending side after the request), but a body will not
                    // complete any more.
                    Closing::Open | Closing::AfterFlush => {
                        if matches!(conn.phase, Phase::Body(_)) {
                            conn.abort();
                        }
                    }
                    Closing::Lingering { .. } | Closing::Now => conn.abort(),
                }
            }
            // Out of provided buffers (re-armed below) or our own cancel.
            n if n == -libc::ENOBUFS || n == -libc::ECANCELED => {}
            n => {
                debug!(error = %std::io::Error::from_raw_os_error(-n), "receive failed");
                conn.abort();
            }
        }
        self.settle(slot);
    }

    fn on_send(&mut self, slot: u32, generation: u32, result: i32) {
        let tick = self.ctx.tick;
        let Some(conn) = self.conns.get_mut(slot, generation) else {
            return;
        };
        conn.send_armed = false;
        conn.send_cancel_sent = false;
        if result < 0 {
            // Reset or cancelled: what was left of the answers cannot be delivered.
            debug!(error = %std::io::Error::from_raw_os_error(-result), "send failed");
            conn.abort();
        } else {
            conn.send_tick = tick;
            conn.sent += result as usize;
            if conn.sent == conn.flight.len() {
                conn.flight.clear();
                conn.sent = 0;
                release_if_large(&mut conn.flight);
                // Room again: read what waited behind the backlog.
                if matches!(conn.phase, Phase::Head | Phase::Body(_)) {
                    conn.consume_unparsed(&self.ctx);
                }
            }
        }
        self.settle(slot);
    }

    fn on_wake(&mut self, result: i32) {
        if result < 0 && result != -libc::EINTR {
            warn!(error = %std::io::Error::from_raw_os_error(-result), "mailbox read failed");
        }
        for done in self.ctx.mailbox.take() {
            let Some(conn) = self.conns.get_mut(done.slot, done.generation) else {
                continue;
            };
            if let Phase::Admin { connection } = conn.phase {
                conn.phase = Phase::Head;
                conn.answer(&self.ctx, &done.response, false, connection);
                conn.consume_unparsed(&self.ctx);
            }
            self.settle(done.slot);
        }
        if !self.stop.load(Ordering::Relaxed) {
            self.arm_wake();
        }
    }

    fn on_tick(&mut self) {
        self.ctx.tick = self.ctx.tick.wrapping_add(1);
        if !self.accept_armed && !self.stop.load(Ordering::Relaxed) {
            self.arm_accept();
        }
        let mut changed = Vec::new();
        for (_, conn) in &mut self.conns.slots {
            if let Some(conn) = conn {
                if conn.check_time(&self.ctx, &self.timeouts) {
                    changed.push(conn.slot);
                }
            }
        }
        for slot in changed {
            self.settle(slot);
        }
        self.arm_tick();
    }

    /// Brings a connection's operations in line with its state: sends what is
    /// queued, starts or cancels its receive, and closes it when it is done.
    fn settle(&mut self, slot: u32) {
        let (tick, linger) = (self.ctx.tick, self.timeouts.linger_secs);
        let Some((_, Some(conn))) = self.conns.slots.get_mut(slot as usize) else {
            return;
        };
        let mut entries: [Option<squeue::Entry>; 3] = [None, None, None];
        if conn.closing != Closing::Now {
            if !conn.send_armed && conn.flight.is_empty() && !conn.out.is_empty() {
                std::mem::swap(&mut conn.out, &mut conn.flight);
                release_if_large(&mut conn.out);
                conn.sent = 0;
                conn.send_tick = tick;
            }
            if !conn.send_armed && conn.sent < conn.flight.len() {
                let rest = &conn.flight[conn.sent..];
                entries[0] = Some(
                    opcode::Send::new(types::Fd(conn.fd), rest.as_ptr(), rest.len() as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(token(Op::Send, slot, conn.generation)),
                );
                conn.send_armed = true;
            }
        }
        if conn.closing == Closing::AfterFlush && conn.is_flushed() {
            conn.closing = if conn.peer_eof {
                Closing::Now
            } else {
                // SAFETY: shuts our own socket for writing; no memory involved.
                unsafe { libc::shutdown(conn.fd, libc::SHUT_WR) };
                Closing::Lingering {
                    until_tick: tick + linger,
                    discarded: 0,
                }
            };
        }
        if conn.closing == Closing::Open
            && conn.peer_eof
            && matches!(conn.phase, Phase::Head)
            && conn.is_flushed()
        {
            conn.closing = Closing::Now;
        }
        if conn.closing == Closing::Now {
            if conn.recv_armed && !conn.recv_cancel_sent {
                entries[1] = Some(cancel(Op::Recv, slot, conn.generation));
                conn.recv_cancel_sent = true;
            }
            if conn.send_armed && !conn.send_cancel_sent {
                entries[2] = Some(cancel(Op::Send, slot, conn.generation));
                conn.send_cancel_sent = true;
            }
        } else if conn.wants_input() {
            // A multishot receive reads all the client has sent, as fast as it arrives:
            // right while requests flow, wrong while they wait (it would move the
            // client's whole backlog from the kernel's buffers, which push back on the
            // client, into ours, which do not). A backlogged connection reads one buffer
            // per receive.
            let user_data = token(Op::Recv, slot, conn.generation);
            if !conn.recv_armed {
                entries[1] = Some(if conn.backlogged {
                    opcode::Recv::new(
                        types::Fd(conn.fd),
                        std::ptr::null_mut(),
                        RECV_BUFFER_BYTES as u32,
                    )
                    .buf_group(BUFFER_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
                    .user_data(user_data)
                } else {
                    opcode::RecvMulti::new(types::Fd(conn.fd), BUFFER_GROUP)
                        .build()
                        .user_data(user_data)
                });
                conn.recv_armed = true;
                conn.recv_multishot = !conn.backlogged;
            } else if conn.recv_multishot && conn.backlogged && !conn.recv_cancel_sent {
                entries[1] = Some(cancel(Op::Recv, slot, conn.generation));
                conn.recv_cancel_sent = true;
            }
        } else if conn.recv_armed && !conn.recv_cancel_sent {
            entries[1] = Some(cancel(Op::Recv, slot, conn.generation));
            conn.recv_cancel_sent = true;
        }
        let done = conn.closing == Closing::Now && !conn.recv_armed && !conn.send_armed;
        for entry in entries.into_iter().flatten() {
            self.push(entry);
        }
        if done {
            if let Some(conn) = self.conns.remove(slot) {
                // SAFETY: the fd is the connection's own, and no operation on it is in
                // flight any more.
                unsafe { libc::close(conn.fd) };
            }
        }
    }

    /// On shutdown: stops every operation, waits (briefly) for them to end, and closes
    /// every connection.
    fn close_all(&mut self) {
        self.backlog.clear();
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::any().all())
            .build()
            .user_data(token(Op::Cancel, 0, 0));
        let _ = self.try_push(&entry);
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        let in_flight = |conns: &Slab| {
            conns
                .slots
                .iter()
                .filter_map(|(_, c)| c.as_ref())
                .any(|c| c.recv_armed || c.send_armed)
        };
        while in_flight(&self.conns) && Instant::now() < deadline {
            let spec = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&spec);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let completions: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .collect();
            for (user_data, _, flags) in completions {
                let (op, slot, generation) = untoken(user_data);
                if let Some(conn) = self.conns.get_mut(slot, generation) {
                    match op {
                        Some(Op::Recv) if !cqueue::more(flags) => conn.recv_armed = false,
                        Some(Op::Send) => conn.send_armed = false,
                        _ => {}
                    }
                }
                if let Some(bid) = cqueue::buffer_select(flags) {
                    self.buffers.recycle(bid);
                }
            }
        }
        for slot in 0..self.conns.slots.len() as u32 {
            if let Some(conn) = self.conns.remove(slot) {
                if conn.send_armed {
                    // The kernel may still read it until the ring is gone: leak it
                    // rather than free memory under a send (only ever at shutdown).
                    std::mem::forget(conn.flight);
                }
                // SAFETY: the connection's own fd, closed once.
                unsafe { libc::close(conn.fd) };
            }
        }
    }
}

fn cancel(op: Op, slot: u32, generation: u32) -> squeue::Entry {
    opcode::AsyncCancel::new(token(op, slot, generation))
        .build()
        .user_data(token(Op::Cancel, slot, generation))
}

fn set_nodelay(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: passes a live c_int of the size given; failure only costs latency.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for (op, slot, generation) in [
            (Op::Recv, 0, 1),
            (Op::Send, u32::MAX, 0x00ff_ffff),
            (Op::Tick, 7, 0),
        ] {
            assert_eq!(
                untoken(token(op, slot, generation)),
                (Some(op), slot, generation)
            );
        }
        assert_eq!(untoken(0).0, None);
    }

    #[test]
    fn slab_generations_tell_reused_slots_apart() {
        let mut slab = Slab::default();
        let a = slab.insert(100, 0);
        let gen_a = slab.slots[a as usize].0;
        slab.remove(a);
        let b = slab.insert(101, 0);
        assert_eq!(a, b, "the slot is reused");
        assert!(
            slab.get_mut(a, gen_a).is_none(),
            "a stale completion finds nothing"
        );
        assert_eq!(slab.get_mut(b, slab.slots[b as usize].0).unwrap().fd, 101);
        assert_eq!(slab.live, 1);
    }
}
