//! HTTP/1.1 as both transports speak it: keep-alive, pipelining, HEAD, chunked uploads,
//! `Expect: 100-continue`, refusals, clients that do not read their answers, many
//! connections at once, and shutdown with connections open.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use std::sync::Arc;

use edgeprice_pricing::PriceEntry;
use edgeprice_schemas::codec::{encode_delta, encode_snapshot, DeltaData, SnapshotData};
use edgeprice_server::metrics::Metrics;
use edgeprice_server::store::now_ms;
use edgeprice_server::uring::{serve_with, Timeouts};
use edgeprice_server::{Api, ApiConfig, ServerHandle, SnapshotStore, Transport, Update};

use crate::support::{entry, key, Edge, TOKEN};

fn loaded(transport: Transport) -> Edge {
    let edge = Edge::start(transport, None);
    let snapshot = encode_snapshot(&SnapshotData {
        version: 1,
        created_at_ms: now_ms(),
        promotions: None,
        entries: vec![
            entry(key("A", "*", "*", "*"), 100),
            entry(key("B", "*", "*", "*"), 200),
        ],
    });
    assert_eq!(edge.admin_post("/v1/admin/snapshot", &snapshot).status, 200);
    edge
}

fn connect(edge: &Edge) -> TcpStream {
    let stream = TcpStream::connect(edge.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// One response read off a connection: status, headers, body (by Content-Length).
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Reads the next response; `head_only` for answers to HEAD (no body whatever the
/// length says).
fn read_answer(reader: &mut impl BufRead, head_only: bool) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split(' ')
        .nth(1)
        .unwrap_or_else(|| panic!("status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("header line");
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':').expect("header field");
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![
        0;
        if head_only || status == 304 {
            0
        } else {
            length
        }
    ];
    reader.read_exact(&mut body).expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

fn at_eof(reader: &mut impl Read) -> bool {
    let mut byte = [0u8; 1];
    matches!(reader.read(&mut byte), Ok(0))
}

fn pipelining_keeps_order_on_one_connection(transport: Transport) {
    let edge = loaded(transport);
    let mut stream = connect(&edge);
    // Five requests in one write, answered in order on the same connection.
    stream
        .write_all(
            b"GET /v1/prices/A HTTP/1.1\r\nHost: e\r\n\r\n\
              HEAD /v1/prices/B HTTP/1.1\r\nHost: e\r\n\r\n\
              GET /v1/prices/NOPE HTTP/1.1\r\nHost: e\r\n\r\n\
              DELETE /v1/prices/A HTTP/1.1\r\nHost: e\r\n\r\n\
              GET /v1/prices/B HTTP/1.1\r\nHost: e\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let a = read_answer(&mut reader, false);
    assert_eq!(
        (a.status, a.json()["price_minor"].as_i64()),
        (200, Some(100))
    );
    let head = read_answer(&mut reader, true);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        head.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 0
    );
    assert!(head.header("etag").is_some());
    let missing = read_answer(&mut reader, false);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "unknown_sku");
    let wrong = read_answer(&mut reader, false);
    assert_eq!(
        (wrong.status, wrong.header("allow")),
        (405, Some("GET, HEAD"))
    );
    let b = read_answer(&mut reader, false);
    assert_eq!(
        (b.status, b.json()["price_minor"].as_i64()),
        (200, Some(200))
    );
    // Still open: another request later on the same connection.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: e\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut reader, false).status, 200);
    // `Connection: close` is the last answer.
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut reader, false).status, 200);
    assert!(at_eof(&mut reader), "closed after Connection: close");
}

fn http10_closes_unless_asked_to_keep_alive(transport: Transport) {
    let edge = loaded(transport);
    let mut stream = connect(&edge);
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(read_answer(&mut reader, false).status, 200);
    stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_answer(&mut reader, false).status, 200);
    assert!(at_eof(&mut reader), "HTTP/1.0 without keep-alive closes");
}

/// `body` as chunks of `size` bytes, with an extension and a trailer.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, chunk) in body.chunks(size).enumerate() {
        out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
        if i == 0 {
            out.extend_from_slice(b";ext=1");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

fn chunked_uploads_wait_for_100_continue_and_requests_behind_them_wait_their_turn(
    transport: Transport,
) {
    let edge = loaded(transport);
    let delta = encode_delta(&DeltaData {
        base_version: 1,
        version: 2,
        created_at_ms: now_ms(),
        promotions: None,
        upserts: vec![entry(key("A", "*", "*", "*"), 150)],
        removals: vec![],
    });
    let mut stream = connect(&edge);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    write!(
        stream,
        "POST /v1/admin/snapshot/delta HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    let interim = read_answer(&mut reader, false);
    assert_eq!(interim.status, 100, "100 Continue before the body is sent");
    // The body in small chunks, and a GET pipelined right behind it: the GET is answered
    // after the delta is applied, so it sees the new price.
    let mut tail = chunked(&delta, 7);
    tail.extend_from_slice(b"GET /v1/prices/A HTTP/1.1\r\nHost: e\r\n\r\n");
    stream.write_all(&tail).unwrap();
    let applied = read_answer(&mut reader, false);
    assert_eq!(
        applied.status,
        200,
        "{}",
        String::from_utf8_lossy(&applied.body)
    );
    assert_eq!(applied.json()["version"], 2);
    let after = read_answer(&mut reader, false);
    assert_eq!(after.json()["price_minor"], 150);
    assert_eq!(after.json()["snapshot_version"], 2);
}

fn bad_requests_are_refused_and_closed(transport: Transport) {
    let edge = loaded(transport);
    for (raw, status) in [
        (&b"NOT HTTP AT ALL\r\n\r\n"[..], 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n", 400),
        (
            b"POST /v1/quote HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            400,
        ),
    ] {
        let mut stream = connect(&edge);
        stream.write_all(raw).unwrap();
        let mut reader = BufReader::new(stream);
        let answer = read_answer(&mut reader, false);
        assert_eq!(answer.status, status, "{}", String::from_utf8_lossy(raw));
        assert!(at_eof(&mut reader), "closed after refusing a request");
    }
    // A head over the limit (64 KiB on io_uring; hyper reads somewhat more).
    let mut stream = connect(&edge);
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(1024 * 1024)
    );
    let _ = stream.write_all(huge.as_bytes());
    let mut reader = BufReader::new(stream);
    assert_eq!(read_answer(&mut reader, false).status, 431);
}

fn an_upload_over_the_limit_gets_413_while_the_client_is_still_sending(transport: Transport) {
    // Edge::start limits uploads to 1 MiB.
    let edge = loaded(transport);
    let mut stream = connect(&edge);
    let length = 8 << 20;
    write!(
        stream,
        "POST /v1/admin/snapshot HTTP/1.1\r\nHost: e\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    // The client keeps sending while the answer is on its way; the edge must not reset
    // the connection under it before it has read the 413.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let block = vec![0u8; 64 * 1024];
            let mut sent = 0;
            while sent < length {
                if stream.write_all(&block).is_err() {
                    break;
                }
                sent += block.len();
            }
        })
    };
    let mut reader = BufReader::new(stream);
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["code"], "body_too_large");
    drop(reader);
    writer.join().unwrap();
}

fn a_client_that_does_not_read_its_answers_gets_all_of_them_in_order(transport: Transport) {
    let edge = loaded(transport);
    let stream = connect(&edge);
    const REQUESTS: usize = 20_000;
    // Written from a thread: once the socket buffers fill, the edge stops reading and
    // this write blocks until the answers below are read.
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            for i in 0..REQUESTS {
                let sku = if i % 2 == 0 { "A" } else { "B" };
                batch.extend_from_slice(
                    format!("GET /v1/prices/{sku}?n={i} HTTP/1.1\r\nHost: e\r\n\r\n").as_bytes(),
                );
            }
            stream.write_all(&batch).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    for i in 0..REQUESTS {
        let answer = read_answer(&mut reader, false);
        assert_eq!(answer.status, 200, "answer {i}");
        let expected = if i % 2 == 0 { 100 } else { 200 };
        assert_eq!(
            answer.json()["price_minor"],
            expected,
            "answer {i} out of order"
        );
    }
    writer.join().unwrap();
}

fn many_connections_at_once(transport: Transport) {
    let edge = loaded(transport);
    let addr = edge.addr;
    let clients: Vec<_> = (0..200)
        .map(|c| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                for i in 0..20 {
                    let sku = if (c + i) % 2 == 0 { "A" } else { "B" };
                    write!(stream, "GET /v1/prices/{sku} HTTP/1.1\r\nHost: e\r\n\r\n").unwrap();
                    let answer = read_answer(&mut reader, false);
                    assert_eq!(answer.status, 200);
                    assert_eq!(answer.json()["sku"], sku);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client");
    }
}

fn shutdown_does_not_wait_for_idle_or_half_sent_requests(transport: Transport) {
    let edge = loaded(transport);
    let mut idle = connect(&edge);
    idle.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut reader = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_answer(&mut reader, false).status, 200);
    let mut partial = connect(&edge);
    partial
        .write_all(b"GET /v1/prices/A HTTP/1.1\r\nHo")
        .unwrap();
    let started = Instant::now();
    edge.stop();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(at_eof(&mut reader), "open connections are closed");
}

fn an_early_answer_to_a_request_expecting_100_continue_closes_the_connection(transport: Transport) {
    let edge = loaded(transport);
    // No token: 401 before the body. The client may or may not send the body now, so
    // the connection cannot be read on safely.
    let mut stream = connect(&edge);
    stream
        .write_all(
            b"POST /v1/admin/snapshot HTTP/1.1\r\nHost: e\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let answer = read_answer(&mut reader, false);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("connection"), Some("close"));
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert!(at_eof(&mut reader), "nothing more is read on it");
}

fn transfer_encoding_on_http10_is_refused(transport: Transport) {
    let edge = loaded(transport);
    let mut stream = connect(&edge);
    stream
        .write_all(b"POST /v1/quote HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(stream);
    assert_eq!(read_answer(&mut reader, false).status, 400);
    assert!(at_eof(&mut reader), "the request behind it is not taken");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What the open fds are (for a failure message).
fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|target| target.display().to_string())
        .collect()
}

/// CPU time of this process (the edge runs in it), in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn connections_reset_before_reading_are_closed_and_cost_nothing(transport: Transport) {
    let edge = loaded(transport);
    let baseline = open_fds();
    let baseline_targets = fd_targets();
    for _ in 0..200 {
        let mut stream = connect(&edge);
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: e\r\n\r\n")
            .unwrap();
        // SO_LINGER 0: close() resets the connection, the answer unread.
        socket2::SockRef::from(&stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(stream);
    }
    crate::assert_eventually!(
        open_fds() <= baseline + 2,
        "reset connections still open: {} fds, {baseline} before: {:?}; before: {:?}",
        open_fds(),
        fd_targets(),
        baseline_targets
    );
    // And nothing keeps working on them.
    let before = cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let spent = cpu_ticks() - before;
    assert!(spent < 15, "{spent} ticks of CPU in 500 ms while idle");
    assert_eq!(edge.get("/healthz").status, 200);
}

/// A one-worker io_uring edge with these time limits, serving `entries` (if any).
fn uring_edge(entries: Vec<PriceEntry>, timeouts: Timeouts) -> ServerHandle {
    let store = Arc::new(SnapshotStore::open(None).expect("store"));
    if !entries.is_empty() {
        let snapshot = encode_snapshot(&SnapshotData {
            version: 1,
            created_at_ms: now_ms(),
            promotions: None,
            entries,
        });
        store
            .update_blocking(Update::Full {
                encoded: snapshot.into(),
                force: false,
            })
            .expect("snapshot");
    }
    let api = Arc::new(Api::new(
        store,
        Arc::new(Metrics::new(1)),
        ApiConfig::default(),
    ));
    serve_with("127.0.0.1:0".parse().unwrap(), 1, api, timeouts).expect("serve")
}

/// io_uring's limits on clients that do not read: a connection whose answers stop
/// moving for a request timeout is closed (hyper has no such limit configured), and a
/// client that pipelines deeply but reads steadily is served to the end, however long
/// its requests wait behind its unread answers.
#[test]
fn uring_closes_clients_that_stop_reading_and_serves_slow_readers() {
    let handle = uring_edge(
        (0..100)
            .map(|i| entry(key(&format!("S{i}"), "*", "*", "*"), 100 + i))
            .collect(),
        Timeouts {
            request_secs: 1,
            idle_secs: 60,
            linger_secs: 1,
        },
    );
    let addr = handle.local_addr();
    let skus: Vec<String> = (0..100).map(|i| format!("S{i}")).collect();
    let batch = format!(
        "GET /v1/prices?skus={} HTTP/1.1\r\nHost: e\r\n\r\n",
        skus.join(",")
    );
    let baseline = open_fds();

    // A client that sends 2,000 batch requests (~70 MB of answers) and reads nothing.
    let deaf = TcpStream::connect(addr).unwrap();
    let writer = {
        let mut deaf = deaf.try_clone().unwrap();
        let batch = batch.clone();
        std::thread::spawn(move || {
            for _ in 0..2_000 {
                if deaf.write_all(batch.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    // Its connection is closed within a few seconds of its answers stopping.
    crate::assert_eventually!(
        open_fds() <= baseline + 1,
        "a client that reads nothing is still connected"
    );
    let _ = deaf.shutdown(std::net::Shutdown::Both);
    writer.join().unwrap();

    // A client that sends 600 at once and reads them at ~5 MB/s for ~4 s.
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut requests = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for _ in 0..600 {
            requests.write_all(batch.as_bytes()).unwrap();
        }
    });
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    for i in 0..600 {
        let answer = read_answer(&mut reader, false);
        assert_eq!(answer.status, 200, "answer {i}");
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(130));
        }
    }
    sender.join().unwrap();
    handle.shutdown();
}

crate::each_transport!(
    pipelining_keeps_order_on_one_connection,
    http10_closes_unless_asked_to_keep_alive,
    chunked_uploads_wait_for_100_continue_and_requests_behind_them_wait_their_turn,
    bad_requests_are_refused_and_closed,
    an_upload_over_the_limit_gets_413_while_the_client_is_still_sending,
    a_client_that_does_not_read_its_answers_gets_all_of_them_in_order,
    many_connections_at_once,
    shutdown_does_not_wait_for_idle_or_half_sent_requests,
    an_early_answer_to_a_request_expecting_100_continue_closes_the_connection,
    transfer_encoding_on_http10_is_refused,
    connections_reset_before_reading_are_closed_and_cost_nothing,
);

/// io_uring's time limits (hyper has none configured): a stalled request gets 408, an
/// idle keep-alive connection is closed, and neither happens early.
#[test]
fn uring_times_out_stalled_requests_and_idle_connections() {
    let handle = uring_edge(
        Vec::new(),
        Timeouts {
            request_secs: 1,
            idle_secs: 3,
            linger_secs: 1,
        },
    );
    let addr = handle.local_addr();
    let open = |head: &[u8]| {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(head).unwrap();
        (Instant::now(), BufReader::new(stream))
    };

    let (stalled_at, mut stalled) = open(b"GET /healthz HTTP/1.1\r\nHost: e");
    let (body_at, mut body) = open(b"POST /v1/quote HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"li");
    let (idle_at, mut idle) = open(b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(read_answer(&mut idle, false).status, 200);

    for (started, reader) in [(stalled_at, &mut stalled), (body_at, &mut body)] {
        let answer = read_answer(reader, false);
        assert_eq!(answer.status, 408);
        assert_eq!(answer.json()["error"]["code"], "request_timeout");
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(4)).contains(&waited),
            "408 after {waited:?}"
        );
        assert!(at_eof(reader));
    }
    assert!(at_eof(&mut idle), "an idle connection is closed");
    let waited = idle_at.elapsed();
    assert!(
        (Duration::from_millis(2900)..Duration::from_secs(6)).contains(&waited),
        "idle connection closed after {waited:?}"
    );
    handle.shutdown();
}
