//! The admin client and the poller against a stand-in admin API: a real HTTP listener
//! on an ephemeral port that answers canned bodies of the contract types. It tests the
//! console's side of the wire (paths, query strings, bearer token, JSON both ways,
//! errors, reconnects), not the control plane.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeprice_schemas::admin::{
    BlastRadius, KillSwitchOutcome, KillSwitchRequest, KillSwitches, Metrics, PipelineMetrics,
    Role, SkuPage, SkuRow, Switch, WhoAmI,
};
use edgeprice_tui::app::{Command, ConnectionEvent, Message};
use edgeprice_tui::client::{AdminClient, ApiError, SkuQuery};
use edgeprice_tui::poller;

const TOKEN: &str = "console-test-token";
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: Option<String>,
    body: String,
}

/// Answers `(status, body)` for `(method, path without query)`.
type Route = dyn Fn(&str, &str) -> (u16, String) + Send + Sync;

struct FakeAdmin {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeAdmin {
    fn start(route: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static) -> FakeAdmin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        FakeAdmin::serve(listener, Arc::new(route))
    }

    fn serve(listener: TcpListener, route: Arc<Route>) -> FakeAdmin {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (route, log) = (route.clone(), log.clone());
                std::thread::spawn(move || handle(stream, &*route, &log));
            }
        });
        FakeAdmin { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn handle(stream: TcpStream, route: &Route, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let mut length = 0;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let path = target.split('?').next().unwrap_or("").to_owned();
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        target: target.clone(),
        authorization: authorization.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, answer) = if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        (
            401,
            r#"{"error":{"code":"unauthorized","message":"unknown token"}}"#.to_owned(),
        )
    } else {
        route(&method, &path)
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn json<T: serde::Serialize>(value: &T) -> (u16, String) {
    (200, serde_json::to_string(value).unwrap())
}

fn metrics(version: u64) -> Metrics {
    Metrics {
        at_ms: 1_000 + version as i64,
        pipeline: PipelineMetrics {
            version,
            decisions_per_s: 42.0,
            ..PipelineMetrics::default()
        },
        ..Metrics::default()
    }
}

/// A healthy control plane with one SKU and no switches engaged.
fn healthy(method: &str, path: &str) -> (u16, String) {
    match (method, path) {
        ("GET", "/v1/admin/whoami") => json(&WhoAmI {
            name: "ops".to_owned(),
            role: Role::Operator,
        }),
        ("GET", "/v1/admin/metrics") => json(&metrics(7)),
        ("GET", "/v1/admin/alerts") | ("GET", "/v1/admin/promotions") => (200, "[]".to_owned()),
        ("GET", "/v1/admin/overrides") | ("GET", "/v1/admin/audit") => (200, "[]".to_owned()),
        ("GET", "/v1/admin/approvals") => (200, "[]".to_owned()),
        ("GET", "/v1/admin/kill-switches") => json(&KillSwitches::default()),
        ("GET", "/v1/admin/skus") => json(&SkuPage {
            total: 1,
            offset: 0,
            skus: vec![SkuRow {
                sku: "SKU 1/a".to_owned(),
                currency: "EUR".to_owned(),
                price_minor: 1_299,
                ..SkuRow::default()
            }],
        }),
        ("POST", "/v1/admin/kill-switches") => json(&KillSwitchOutcome {
            switch: Switch::AllPromotions,
            engaged: true,
            dry_run: true,
            blast_radius: BlastRadius {
                skus: 120,
                promotions: 2,
                edges: 1,
            },
            snapshot_version: None,
            state: KillSwitches::default(),
        }),
        _ => (
            404,
            r#"{"error":{"code":"not_found","message":"no such route"}}"#.to_owned(),
        ),
    }
}

fn eventually<T>(
    what: &str,
    rx: &Receiver<Message>,
    mut pick: impl FnMut(Message) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(message) => {
                if let Some(found) = pick(message) {
                    return found;
                }
            }
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn the_client_sends_the_token_and_reads_the_contract_types() {
    let server = FakeAdmin::start(healthy);
    let client = AdminClient::new(&server.url(), TOKEN, Duration::from_secs(5));
    assert_eq!(client.whoami().unwrap().role, Role::Operator);
    assert_eq!(client.metrics().unwrap().pipeline.version, 7);
    let page = client
        .skus(&SkuQuery {
            q: "snack bar".to_owned(),
            sort: "margin".to_owned(),
            desc: true,
            offset: 50,
            limit: 25,
        })
        .unwrap();
    assert_eq!(page.skus[0].sku, "SKU 1/a");
    let seen = server.seen();
    assert!(seen
        .iter()
        .all(|s| s.authorization.as_deref() == Some("Bearer console-test-token")));
    let skus = seen
        .iter()
        .find(|s| s.target.starts_with("/v1/admin/skus"))
        .unwrap();
    for part in [
        "sort=margin",
        "desc=true",
        "limit=25",
        "offset=50",
        "q=snack",
    ] {
        assert!(skus.target.contains(part), "{} lacks {part}", skus.target);
    }

    // A SKU id is one path segment, whatever it contains.
    let _ = client.sku("SKU 1/a");
    assert!(server
        .seen()
        .iter()
        .any(|s| s.target == "/v1/admin/skus/SKU%201%2Fa"));
}

#[test]
fn the_client_posts_kill_switches_as_the_contract_says() {
    let server = FakeAdmin::start(healthy);
    let client = AdminClient::new(&server.url(), TOKEN, Duration::from_secs(5));
    let request = KillSwitchRequest {
        switch: Switch::FreezeSku {
            sku: "SKU-1".to_owned(),
        },
        engaged: true,
        reason: "recall".to_owned(),
        dry_run: true,
    };
    let outcome = client.kill_switch(&request).unwrap();
    assert_eq!(outcome.blast_radius.skus, 120);
    let post = server
        .seen()
        .into_iter()
        .find(|s| s.method == "POST")
        .unwrap();
    let sent: KillSwitchRequest = serde_json::from_str(&post.body).unwrap();
    assert_eq!(sent, request);
    let _ = client.remove_override(3, "done now");
    let delete = server
        .seen()
        .into_iter()
        .find(|s| s.method == "DELETE")
        .unwrap();
    assert_eq!(delete.target, "/v1/admin/overrides/3?reason=done%20now");
}

#[test]
fn errors_say_whether_the_server_refused_or_could_not_be_reached() {
    let server = FakeAdmin::start(|_, _| {
        (
            403,
            r#"{"error":{"code":"forbidden","message":"needs the admin role"}}"#.to_owned(),
        )
    });
    let client = AdminClient::new(&server.url(), TOKEN, Duration::from_secs(5));
    let error = client.metrics().unwrap_err();
    assert_eq!(
        error,
        ApiError::Status {
            status: 403,
            code: "forbidden".to_owned(),
            message: "needs the admin role".to_owned()
        }
    );
    assert!(!error.is_transport());

    let wrong_token = AdminClient::new(&server.url(), "nope", Duration::from_secs(5));
    assert!(wrong_token.metrics().unwrap_err().is_unauthorized());

    // Nothing listens on a port just released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = AdminClient::new(
        &format!("http://127.0.0.1:{port}"),
        TOKEN,
        Duration::from_secs(5),
    );
    assert!(gone.metrics().unwrap_err().is_transport());
}

#[test]
fn the_poller_polls_watches_and_mutates() {
    let server = FakeAdmin::start(healthy);
    let client = AdminClient::new(&server.url(), TOKEN, Duration::from_secs(5));
    let (messages_tx, messages_rx) = mpsc::channel();
    let (commands_tx, poller_jh) = poller::spawn(client, Duration::from_millis(200), messages_tx);

    eventually("the connection", &messages_rx, |m| {
        matches!(m, Message::Connection(ConnectionEvent::Up)).then_some(())
    });
    let poll = eventually("a poll", &messages_rx, |m| match m {
        Message::Polled(poll) => Some(poll),
        _ => None,
    });
    assert_eq!(poll.whoami.as_ref().unwrap().name, "ops");
    assert_eq!(poll.metrics.pipeline.version, 7);
    assert_eq!(poll.switches.as_ref().unwrap(), &KillSwitches::default());

    let query = SkuQuery::default();
    commands_tx.send(Command::WatchSkus(query.clone())).unwrap();
    let (answered, page) = eventually("the SKU page", &messages_rx, |m| match m {
        Message::Skus { query, result } => Some((query, result.unwrap())),
        _ => None,
    });
    assert_eq!(answered, query);
    assert_eq!(page.total, 1);
    // A watched page is refreshed with every poll.
    eventually("a refreshed SKU page", &messages_rx, |m| {
        matches!(m, Message::Skus { .. }).then_some(())
    });

    let request = KillSwitchRequest {
        switch: Switch::AllPromotions,
        engaged: true,
        reason: "test".to_owned(),
        dry_run: true,
    };
    commands_tx
        .send(Command::KillSwitch(request.clone()))
        .unwrap();
    let (echoed, outcome) = eventually("the dry run", &messages_rx, |m| match m {
        Message::KillSwitch { request, result } => Some((request, result)),
        _ => None,
    });
    assert_eq!(echoed, request);
    assert_eq!(outcome.unwrap().blast_radius.promotions, 2);

    commands_tx.send(Command::Quit).unwrap();
    poller_jh.join().unwrap();
}

#[test]
fn the_poller_backs_off_while_the_control_plane_is_away_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = AdminClient::new(&format!("http://{addr}"), TOKEN, Duration::from_secs(2));
    let (messages_tx, messages_rx) = mpsc::channel();
    let (commands_tx, poller_jh) = poller::spawn(client, Duration::from_millis(100), messages_tx);

    let mut delays = Vec::new();
    while delays.len() < 3 {
        let (attempt, retry_in_ms) = eventually("a failed attempt", &messages_rx, |m| match m {
            Message::Connection(ConnectionEvent::Down {
                attempt,
                retry_in_ms,
                error,
            }) => {
                assert!(error.contains("cannot reach"), "{error}");
                Some((attempt, retry_in_ms))
            }
            other => panic!("nothing but failures expected, got {other:?}"),
        });
        assert_eq!(attempt as usize, delays.len() + 1);
        delays.push(retry_in_ms);
    }
    assert_eq!(delays, vec![250, 500, 1_000], "exponential backoff");

    // The control plane comes back on the same address.
    let _server = FakeAdmin::serve(TcpListener::bind(addr).unwrap(), Arc::new(healthy));
    eventually("the reconnect", &messages_rx, |m| {
        matches!(m, Message::Connection(ConnectionEvent::Up)).then_some(())
    });
    let poll = eventually("a poll after reconnecting", &messages_rx, |m| match m {
        Message::Polled(poll) => Some(poll),
        _ => None,
    });
    assert!(poll.whoami.is_some(), "whoami is read again on reconnect");
    commands_tx.send(Command::Quit).unwrap();
    poller_jh.join().unwrap();
}
