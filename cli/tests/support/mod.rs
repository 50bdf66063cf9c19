//! What the process tests share: `edgeprice up` as a child process with the addresses
//! from its banner, one-shot HTTP/1.1 requests, and polling.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `edgeprice up`; killed (SIGKILL) when dropped.
pub struct Up {
    child: Child,
    pub edge: String,
    pub control: String,
    pub data_dir: PathBuf,
}

/// `edgeprice up` on free ports over `data_dir`, quiet, without fault injection; add
/// flags (`--demo`) and environment before [`Up::start`].
pub fn up_command(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeprice"));
    command
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--feeds-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .env_remove("EDGEPRICE_CHECKOUT_FAULT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

impl Up {
    /// Spawns `command` (from [`up_command`]) and reads the addresses from its banner.
    pub fn start(mut command: Command, data_dir: &Path) -> Up {
        let mut child = command.spawn().expect("start edgeprice up");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("banner");
        // "edgeprice is up: edge http://ADDR, control plane http://ADDR"
        let after = |marker: &str| {
            line.split(marker)
                .nth(1)
                .and_then(|rest| rest.split([',', ' ', '\n']).next())
                .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
                .to_owned()
        };
        let (edge, control) = (after("edge http://"), after("control plane http://"));
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in stdout.lines() {});
        Up {
            child,
            edge,
            control,
            data_dir: data_dir.to_owned(),
        }
    }

    /// `edgeprice up --demo` over `data_dir`.
    pub fn demo(data_dir: &Path) -> Up {
        let mut command = up_command(data_dir);
        command.arg("--demo");
        Up::start(command, data_dir)
    }

    /// A token file of the data directory (`admin.token`, `feed.token`).
    pub fn token(&self, name: &str) -> String {
        std::fs::read_to_string(self.data_dir.join(name))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `GET path` on the edge.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(&self.edge, "GET", path, &[], "")
    }

    /// SIGKILL: no destructor, no flush, no goodbye.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, the graceful path; waits for the exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "edgeprice up did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange on a fresh connection: status and body. Generous timeout:
/// test builds are unoptimised and the demo keeps the pipeline busy.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: edgeprice\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_owned()))
}

/// Polls `f` until it gives a value, for at most [`PATIENCE`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
