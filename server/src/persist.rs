//! The edge's on-disk copy of what it serves, so a restart comes back at the last
//! version it applied even when the control plane is unreachable.
//!
//! Layout of the data directory:
//! - `snapshot-{V}.fb`: a full snapshot at version `V` (the flatbuffer as received or as
//!   re-encoded by compaction), written to a temporary name, fsynced, then renamed.
//! - `deltas-{V}.log`: deltas applied after version `V`, as records
//!   `[u32 len LE][u32 crc32 LE][delta flatbuffer]`, appended and fsynced right after
//!   the edge swapped them in (several at once when they queued up).
//!
//! Recovery loads the newest snapshot file that decodes, then replays the logs with
//! `start ≥ V` in order, skipping records already included and stopping at the first
//! torn or corrupt record. Compaction writes `snapshot-{W}.fb` for the current version
//! `W` while new deltas go to `deltas-{W}.log`; only once the snapshot is durable are
//! older files deleted, so a crash at any point leaves a complete chain.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use edgeprice_schemas::codec::{self, DeltaData, SnapshotData};
use tracing::{info, warn};

/// A delta log larger than this triggers compaction into a new full snapshot.
pub const COMPACT_LOG_BYTES: u64 = 256 * 1024 * 1024;

fn snapshot_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("snapshot-{version:020}.fb"))
}

fn log_path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("deltas-{start:020}.log"))
}

fn parse_version(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Versions of the snapshot files and log segments in `dir`, ascending.
fn list(dir: &Path) -> io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut snapshots, mut logs) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(v) = parse_version(name, "snapshot-", ".fb") {
            snapshots.push(v);
        } else if let Some(v) = parse_version(name, "deltas-", ".log") {
            logs.push(v);
        }
    }
    snapshots.sort_unstable();
    logs.sort_unstable();
    Ok((snapshots, logs))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    pub snapshot: SnapshotData,
    pub deltas: Vec<DeltaData>,
}

/// The persistence side of the snapshot store; used only by the writer thread.
#[derive(Debug)]
pub struct Persistence {
    dir: PathBuf,
    log: Option<File>,
    log_start: u64,
    log_bytes: u64,
}

impl Persistence {
    pub fn open(dir: &Path) -> io::Result<Persistence> {
        fs::create_dir_all(dir)?;
        Ok(Persistence {
            dir: dir.to_owned(),
            log: None,
            log_start: 0,
            log_bytes: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the newest complete state: the newest decodable snapshot and every delta
    /// that follows it. Corrupt files are skipped with a warning, never deleted.
    pub fn recover(&mut self) -> io::Result<Option<Recovered>> {
        let (snapshots, logs) = list(&self.dir)?;
        for &version in snapshots.iter().rev() {
            let path = snapshot_path(&self.dir, version);
            let bytes = fs::read(&path)?;
            let snapshot = match codec::decode_snapshot(&bytes) {
                Ok(s) => s,
                Err(err) => {
                    warn!(path = %path.display(), error = %err, "skipping unreadable persisted snapshot");
                    continue;
                }
            };
            let mut current = snapshot.version;
            let mut deltas = Vec::new();
            // Segments that may hold deltas after `version`: the one that started at or
            // before it (the last such) and every later one.
            let first = logs
                .iter()
                .rposition(|&start| start <= version)
                .unwrap_or(0);
            for &start in &logs[first..] {
                for delta in read_log(&log_path(&self.dir, start))? {
                    if delta.version <= current {
                        continue;
                    }
                    if delta.base_version != current {
                        warn!(
                            expected = current,
                            found = delta.base_version,
                            "delta log has a gap; stopping replay"
                        );
                        break;
                    }
                    current = delta.version;
                    deltas.push(delta);
                }
            }
            info!(
                snapshot_version = version,
                deltas = deltas.len(),
                version = current,
                "recovered persisted snapshot"
            );
            return Ok(Some(Recovered { snapshot, deltas }));
        }
        Ok(None)
    }

    /// Records a full snapshot (its encoded bytes) as the new base and starts a new log.
    pub fn write_snapshot(&mut self, version: u64, encoded: &[u8]) -> io::Result<()> {
        write_atomic(&snapshot_path(&self.dir, version), encoded)?;
        self.start_log(version)?;
        self.remove_older_than(version)
    }

    /// Starts a new log segment for deltas after `version`.
    pub fn start_log(&mut self, version: u64) -> io::Result<()> {
        let path = log_path(&self.dir, version);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.log_bytes = file.metadata()?.len();
        self.log = Some(file);
        self.log_start = version;
        sync_dir(&self.dir)
    }

    /// Appends an encoded delta durably (fdatasync) before returning.
    pub fn append_delta(&mut self, encoded: &[u8]) -> io::Result<()> {
        self.append_deltas(&[encoded])
    }

    /// Appends encoded deltas, in order, with one fdatasync for all of them.
    pub fn append_deltas(&mut self, encoded: &[&[u8]]) -> io::Result<()> {
        if encoded.is_empty() {
            return Ok(());
        }
        let log = match &mut self.log {
            Some(log) => log,
            None => {
                return Err(io::Error::other(
                    "no delta log open: no snapshot persisted yet",
                ))
            }
        };
        for delta in encoded {
            let mut header = [0u8; 8];
            header[..4].copy_from_slice(&(delta.len() as u32).to_le_bytes());
            header[4..].copy_from_slice(&crc32fast::hash(delta).to_le_bytes());
            // Two writes, not a copy of the delta into one buffer: a crash between them
            // leaves a torn record, which recovery stops at like any other.
            log.write_all(&header)?;
            log.write_all(delta)?;
            self.log_bytes += (header.len() + delta.len()) as u64;
        }
        log.sync_data()
    }

    /// Makes every later append fail, as a full or broken disk would.
    #[cfg(test)]
    pub fn fail_log_writes_for_test(&mut self) -> io::Result<()> {
        self.log = Some(File::open(log_path(&self.dir, self.log_start))?);
        Ok(())
    }

    /// Whether the current log has grown enough to be folded into a new snapshot.
    pub fn wants_compaction(&self) -> bool {
        self.log_bytes >= COMPACT_LOG_BYTES
    }

    /// Removes snapshot files and log segments that a durable snapshot at `version`
    /// makes unnecessary.
    pub fn remove_older_than(&self, version: u64) -> io::Result<()> {
        let (snapshots, logs) = list(&self.dir)?;
        for v in snapshots.into_iter().filter(|&v| v < version) {
            fs::remove_file(snapshot_path(&self.dir, v))?;
        }
        for start in logs.into_iter().filter(|&s| s < version) {
            fs::remove_file(log_path(&self.dir, start))?;
        }
        Ok(())
    }

    /// Writes a compacted snapshot (called off the writer thread).
    pub fn write_compacted(dir: &Path, version: u64, encoded: &[u8]) -> io::Result<()> {
        write_atomic(&snapshot_path(dir, version), encoded)
    }
}

/// Reads the intact prefix of a log segment.
fn read_log(path: &Path) -> io::Result<Vec<DeltaData>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut deltas = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            warn!(path = %path.display(), offset = at, "torn record at the end of the delta log");
            break;
        };
        if crc32fast::hash(payload) != crc {
            warn!(path = %path.display(), offset = at, "corrupt record in the delta log; stopping replay");
            break;
        }
        match codec::decode_delta(payload) {
            Ok(delta) => deltas.push(delta),
            Err(err) => {
                warn!(path = %path.display(), offset = at, error = %err, "undecodable delta; stopping replay");
                break;
            }
        }
        at += 8 + len;
    }
    Ok(deltas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{chain_entry as entry, reprice_a as delta};

    #[test]
    fn recovers_snapshot_and_deltas_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Persistence::open(dir.path()).unwrap();
        let snap = SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries: vec![entry("A", 10)],
        };
        p.write_snapshot(1, &codec::encode_snapshot(&snap)).unwrap();
        p.append_delta(&codec::encode_delta(&delta(1, 11))).unwrap();
        p.append_delta(&codec::encode_delta(&delta(2, 12))).unwrap();
        // A crash mid-append leaves half a record.
        let log = log_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();

        let recovered = Persistence::open(dir.path())
            .unwrap()
            .recover()
            .unwrap()
            .unwrap();
        assert_eq!(recovered.snapshot, snap);
        assert_eq!(
            recovered
                .deltas
                .iter()
                .map(|d| d.version)
                .collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[test]
    fn compaction_chain_survives_a_crash_before_the_new_snapshot_lands() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Persistence::open(dir.path()).unwrap();
        let snap = SnapshotData {
            version: 1,
            created_at_ms: 0,
            promotions: None,
            entries: vec![entry("A", 10)],
        };
        p.write_snapshot(1, &codec::encode_snapshot(&snap)).unwrap();
        p.append_delta(&codec::encode_delta(&delta(1, 11))).unwrap();
        // Compaction at version 2 starts a new segment; its snapshot never lands.
        p.start_log(2).unwrap();
        p.append_delta(&codec::encode_delta(&delta(2, 12))).unwrap();
        let recovered = Persistence::open(dir.path())
            .unwrap()
            .recover()
            .unwrap()
            .unwrap();
        assert_eq!(recovered.snapshot.version, 1);
        assert_eq!(recovered.deltas.last().unwrap().version, 3);

        // Once it lands, older files go and recovery starts from it.
        let v2 = SnapshotData {
            version: 2,
            created_at_ms: 0,
            promotions: None,
            entries: vec![entry("A", 11)],
        };
        Persistence::write_compacted(dir.path(), 2, &codec::encode_snapshot(&v2)).unwrap();
        p.remove_older_than(2).unwrap();
        let recovered = Persistence::open(dir.path())
            .unwrap()
            .recover()
            .unwrap()
            .unwrap();
        assert_eq!(recovered.snapshot.version, 2);
        assert_eq!(
            recovered
                .deltas
                .iter()
                .map(|d| d.version)
                .collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(list(dir.path()).unwrap(), (vec![2], vec![2]));
    }

    #[test]
    fn empty_directory_recovers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Persistence::open(dir.path())
            .unwrap()
            .recover()
            .unwrap()
            .is_none());
    }
}
