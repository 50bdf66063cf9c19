//! The operator console as an operator uses it: `edgeprice up --demo` runs, the console
//! runs in a real terminal (tmux), keys are typed into it, and the effect of a kill
//! switch flipped through its confirmation is checked where customers see prices — at
//! the edge's HTTP API.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, http, Up, PATIENCE};

const PROMOTION: &str = "console-e2e";

/// The console test's reads and writes through `edgeprice up`'s public HTTP APIs.
impl Up {
    fn price(&self, sku: &str) -> Option<Value> {
        match self.get(&format!("/v1/prices/{sku}"))? {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
        let auth = format!("Bearer {}", self.token("admin.token"));
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, text) = http(
            &self.control,
            method,
            path,
            &[("Authorization", &auth)],
            &body,
        )?;
        Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn available() -> bool {
        let works = || {
            Command::new("tmux")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if works() {
            return true;
        }
        // A fresh machine may lack it; install it the way the project's CI would.
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "tmux"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        works()
    }

    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let tmux = Tmux {
            socket: format!("edgeprice-tui-test-{}", std::process::id()),
        };
        let status = tmux
            .cmd()
            .args(["new-session", "-d", "-s", "console", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command)
            .status()
            .expect("run tmux");
        assert!(status.success(), "tmux new-session failed");
        tmux
    }

    fn cmd(&self) -> Command {
        let mut command = Command::new("tmux");
        command.args(["-L", &self.socket]);
        command
    }

    fn screen(&self) -> String {
        let output = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "console"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Sends keys by tmux name (`Enter`, `Escape`, `3`, `y`).
    fn keys(&self, keys: &[&str]) {
        for key in keys {
            let status = self
                .cmd()
                .args(["send-keys", "-t", "console", key])
                .status()
                .expect("send-keys");
            assert!(status.success());
            // An Escape followed at once by a key reads as Alt+key.
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    fn type_text(&self, text: &str) {
        let status = self
            .cmd()
            .args(["send-keys", "-t", "console", "-l", text])
            .status()
            .expect("send-keys");
        assert!(status.success());
    }

    fn wait_for(&self, what: &str) -> String {
        let mut last = String::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen();
            if screen.contains(what) {
                return screen;
            }
            last = if screen.is_empty() { last } else { screen };
            assert!(
                Instant::now() < deadline,
                "the console never showed {what:?}; last screen:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn session_gone(&self) -> bool {
        !self
            .cmd()
            .args(["has-session", "-t", "console"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

fn promotion_at_edge(price: &Value) -> Option<&str> {
    price["promotion"]["id"].as_str()
}

#[test]
fn a_kill_switch_flipped_in_the_console_changes_prices_at_the_edge() {
    if !Tmux::available() {
        eprintln!("SKIPPED: tmux is not installed and could not be installed; the console's terminal test did not run");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let up = Up::demo(dir.path());

    // A promotion the edge shows: 2% off a few demo SKUs whose floor leaves room for it.
    let skus: Vec<String> = eventually("demo prices with room above their floors", || {
        let roomy: Vec<String> = (1..=60)
            .map(|n| format!("SKU-{n:07}"))
            .filter(|sku| {
                up.price(sku).is_some_and(|p| {
                    let (price, floor) = (p["price_minor"].as_i64(), p["floor_minor"].as_i64());
                    matches!((price, floor), (Some(price), Some(floor)) if price * 90 > floor * 100)
                })
            })
            .take(3)
            .collect();
        (roomy.len() == 3).then_some(roomy)
    });
    let definition = json!({
        "id": PROMOTION,
        "label": "Console test -2%",
        "rule": {"type": "percent_off", "basis_points": 200},
        "target": {"type": "skus", "skus": skus},
    });
    let (status, body) = eventually("the control plane to take the promotion", || {
        up.admin(
            "PUT",
            &format!("/v1/admin/promotions/{PROMOTION}?reason=console%20test"),
            Some(&definition),
        )
    });
    assert_eq!(status, 200, "{body}");
    let sku = &skus[0];
    let promoted = eventually("the promotion at the edge", || {
        up.price(sku)
            .filter(|p| promotion_at_edge(p) == Some(PROMOTION))
    });

    let console = format!(
        "{} tui --url http://{} --token-file {} --refresh-ms 500",
        env!("CARGO_BIN_EXE_edgeprice"),
        up.control,
        up.data_dir.join("admin.token").display()
    );
    let tmux = Tmux::start(&console, 160, 48);
    tmux.wait_for("● connected");
    tmux.wait_for("revenue/min");

    // The kill-switch panel lists the promotion; the first row is "All promotions".
    tmux.keys(&["3"]);
    tmux.wait_for(&format!("Promotion {PROMOTION}"));
    tmux.keys(&["Enter"]);
    tmux.wait_for("engage: all promotions off");
    tmux.type_text("console e2e");
    tmux.keys(&["Enter"]);
    let confirm = tmux.wait_for("blast radius:");
    assert!(confirm.contains("y: engage"), "{confirm}");
    // The dry run changed nothing.
    assert_eq!(
        up.price(sku).as_ref().and_then(promotion_at_edge),
        Some(PROMOTION),
        "the dry run must not change prices"
    );

    tmux.keys(&["y"]);
    let screen = tmux.wait_for("engaged: all promotions off");
    assert!(screen.contains("ENGAGED"), "{screen}");

    // Customers see it: the promotion is gone from the edge's answer and the price
    // went up from the promoted one.
    let after = eventually("the promotion to leave the edge", || {
        up.price(sku).filter(|p| p["promotion"].is_null())
    });
    let (_, switches) = up.admin("GET", "/v1/admin/kill-switches", None).unwrap();
    let engaged = &switches["engaged"][0];
    assert_eq!(engaged["switch"]["kind"], "all_promotions", "{switches}");
    assert_eq!(engaged["reason"], "console e2e", "{switches}");
    assert_ne!(
        after["price_minor"], promoted["price_minor"],
        "the price at the edge changed: {promoted} → {after}"
    );

    // Release it the same way: the promotion comes back.
    tmux.keys(&["Enter"]);
    tmux.wait_for("release: all promotions off");
    tmux.type_text("incident over");
    tmux.keys(&["Enter"]);
    tmux.wait_for("y: release");
    tmux.keys(&["y"]);
    tmux.wait_for("released: all promotions off");
    eventually("the promotion back at the edge", || {
        up.price(sku)
            .filter(|p| promotion_at_edge(p) == Some(PROMOTION))
    });

    tmux.keys(&["q"]);
    eventually("the console to exit", || tmux.session_gone().then_some(()));
}
