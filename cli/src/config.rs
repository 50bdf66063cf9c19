//! Edge server configuration: a TOML file says what to do, flags and environment
//! variables (`EDGEPRICE_*`) say how to run and override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use edgeprice_server::Transport;
use serde::Deserialize;

/// The edge server's settings. `Debug` never shows secrets (admin token, quote key
/// secrets), so the config can be printed and logged.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// Serving threads (one runtime and one listener each); 0 = one per core.
    pub workers: usize,
    /// What serves HTTP: `hyper` (epoll, runs anywhere), `uring` (io_uring: less CPU
    /// per request, needs Linux 6.1+ with io_uring allowed) or `auto`, the default
    /// (io_uring where available, hyper otherwise).
    pub transport: Transport,
    /// Where the edge persists the last snapshot it applied; it restarts from there.
    pub data_dir: Option<PathBuf>,
    /// Snapshot file to load at start (if newer than the persisted one) and on SIGHUP.
    pub snapshot: Option<PathBuf>,
    /// Bearer token for the admin routes (snapshot upload, delta); unset disables them.
    pub admin_token: Option<String>,
    /// Most SKUs in one batch request.
    pub batch_limit: usize,
    /// Largest snapshot or delta upload, in bytes.
    pub max_upload_bytes: usize,
    /// Most changes (upserts plus removals) in one delta; a larger one is refused (413
    /// `delta_too_large`) and the control plane sends a full snapshot instead.
    pub max_delta_changes: usize,
    /// Most entries in one uploaded snapshot; a larger one is refused (413
    /// `snapshot_too_large`).
    pub max_snapshot_entries: usize,
    /// Quote signing keys as `kid:secret` (secret at least 32 bytes, shared with the
    /// control plane); the first signs, the others still verify (key rotation). Empty
    /// disables `POST /v1/quote` (503 `quotes_disabled`).
    pub quote_keys: Vec<String>,
    /// Lifetime of a quote (the price lock), seconds.
    pub quote_ttl_secs: u64,
}

impl std::fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let quote_key_ids: Vec<&str> = self
            .quote_keys
            .iter()
            .map(|spec| spec.split(':').next().unwrap_or(""))
            .collect();
        f.debug_struct("EdgeConfig")
            .field("listen", &self.listen)
            .field("workers", &self.workers)
            .field("transport", &self.transport)
            .field("data_dir", &self.data_dir)
            .field("snapshot", &self.snapshot)
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("batch_limit", &self.batch_limit)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_delta_changes", &self.max_delta_changes)
            .field("max_snapshot_entries", &self.max_snapshot_entries)
            .field("quote_key_ids", &quote_key_ids)
            .field("quote_ttl_secs", &self.quote_ttl_secs)
            .finish()
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            workers: 0,
            transport: Transport::default(),
            data_dir: None,
            snapshot: None,
            admin_token: None,
            batch_limit: 100,
            max_upload_bytes: 1 << 30,
            max_delta_changes: edgeprice_server::api::DEFAULT_MAX_DELTA_CHANGES,
            max_snapshot_entries: edgeprice_server::api::DEFAULT_MAX_SNAPSHOT_ENTRIES,
            quote_keys: Vec::new(),
            quote_ttl_secs: 15 * 60,
        }
    }
}

impl EdgeConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<EdgeConfig> {
        let Some(path) = path else {
            return Ok(EdgeConfig::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }

    /// The quote signing keyring (`None` without keys): the first key is active.
    pub fn keyring(&self) -> anyhow::Result<Option<edgeprice_pricing::quote::Keyring>> {
        let mut keyring: Option<edgeprice_pricing::quote::Keyring> = None;
        for spec in &self.quote_keys {
            let (kid, secret) = spec
                .split_once(':')
                .context("a quote key is given as kid:secret")?;
            match &mut keyring {
                None => {
                    keyring = Some(
                        edgeprice_pricing::quote::Keyring::new(kid, secret.as_bytes())
                            .context("quote key")?,
                    )
                }
                Some(ring) => ring.add(kid, secret.as_bytes()).context("quote key")?,
            }
        }
        Ok(keyring)
    }

    /// Settings of `POST /v1/quote`.
    pub fn quote_config(&self) -> anyhow::Result<edgeprice_server::QuoteConfig> {
        let ttl_ms = i64::try_from(self.quote_ttl_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
        anyhow::ensure!(
            (1..=edgeprice_pricing::quote::MAX_TTL_MS).contains(&ttl_ms),
            "quote_ttl_secs must be between 1 and {}",
            edgeprice_pricing::quote::MAX_TTL_MS / 1_000
        );
        Ok(edgeprice_server::QuoteConfig {
            keyring: self.keyring()?,
            ttl_ms,
            cache: true,
        })
    }

    /// Checks what can be checked without starting.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.quote_config()?;
        anyhow::ensure!(self.batch_limit >= 1, "batch_limit must be at least 1");
        anyhow::ensure!(
            self.max_upload_bytes >= 1024,
            "max_upload_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.max_delta_changes >= 1,
            "max_delta_changes must be at least 1"
        );
        anyhow::ensure!(
            self.max_snapshot_entries >= 1,
            "max_snapshot_entries must be at least 1"
        );
        if let Some(token) = &self.admin_token {
            anyhow::ensure!(
                token.len() >= 16,
                "admin_token must be at least 16 characters"
            );
        }
        if let Some(snapshot) = &self.snapshot {
            anyhow::ensure!(
                snapshot.is_file(),
                "snapshot file {} does not exist",
                snapshot.display()
            );
        }
        Ok(())
    }

    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_and_defaults() {
        let config: EdgeConfig =
            toml::from_str("listen = \"0.0.0.0:9000\"\nbatch_limit = 50\ntransport = \"auto\"\n")
                .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.transport, Transport::Auto);
        assert!(
            toml::from_str::<EdgeConfig>("transport = \"epoll\"").is_err(),
            "unknown transports are errors"
        );
        assert_eq!(config.batch_limit, 50);
        assert_eq!(config.workers, 0);
        assert!(
            toml::from_str::<EdgeConfig>("lisen = \"x\"").is_err(),
            "typos are errors"
        );
    }

    #[test]
    fn limits_must_admit_something() {
        for (text, error) in [
            ("batch_limit = 0", "batch_limit must be at least 1"),
            (
                "max_upload_bytes = 10",
                "max_upload_bytes must be at least 1024",
            ),
            (
                "max_delta_changes = 0",
                "max_delta_changes must be at least 1",
            ),
        ] {
            let config: EdgeConfig = toml::from_str(text).unwrap();
            assert_eq!(config.validate().unwrap_err().to_string(), error, "{text}");
        }
        let config: EdgeConfig = toml::from_str("max_delta_changes = 5").unwrap();
        assert_eq!(config.max_delta_changes, 5);
        config.validate().unwrap();
    }

    #[test]
    fn the_example_deployment_config_is_valid() {
        let config: EdgeConfig = toml::from_str(include_str!("../../deploy/edge.toml")).unwrap();
        assert_eq!(config.listen.port(), 8080);
        assert!(config.data_dir.is_some());
        config.validate().unwrap();
    }

    #[test]
    fn quote_keys_make_a_keyring_whose_first_key_signs() {
        let config: EdgeConfig = toml::from_str(
            "quote_keys = [\"new:0123456789abcdef0123456789abcdef\", \"old:fedcba9876543210fedcba9876543210\"]\nquote_ttl_secs = 60\n",
        )
        .unwrap();
        config.validate().unwrap();
        let quotes = config.quote_config().unwrap();
        assert_eq!(quotes.ttl_ms, 60_000);
        let keyring = quotes.keyring.unwrap();
        assert_eq!(keyring.active_id(), "new");
        assert_eq!(keyring.key_ids().count(), 2);
        assert!(EdgeConfig::default().keyring().unwrap().is_none());
        for bad in ["no-colon", "k:short"] {
            let config = EdgeConfig {
                quote_keys: vec![bad.into()],
                ..EdgeConfig::default()
            };
            assert!(config.validate().is_err(), "{bad}");
        }
        let config = EdgeConfig {
            quote_ttl_secs: 0,
            ..EdgeConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn printing_the_config_never_shows_secrets() {
        let config = EdgeConfig {
            admin_token: Some("admin-secret-0123456789".into()),
            quote_keys: vec!["k1:quote-secret-0123456789abcdef0123456789".into()],
            ..EdgeConfig::default()
        };
        let printed = format!("{config:?}");
        assert!(
            !printed.contains("admin-secret") && !printed.contains("quote-secret"),
            "{printed}"
        );
        assert!(
            printed.contains("<redacted>") && printed.contains("k1"),
            "{printed}"
        );
    }

    #[test]
    fn validation_rejects_weak_tokens() {
        let config = EdgeConfig {
            admin_token: Some("short".into()),
            ..EdgeConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
