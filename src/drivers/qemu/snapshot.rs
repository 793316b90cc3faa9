//! Snapshots of a worker's freshly booted guest, and the go line that lets a parked guest
//! dial. A snapshot worker's agent parks before dialling (`agent::resume`); the boot that has
//! no valid snapshot yet is stopped there, migrated to `snapshot.bin` in the worker's run
//! directory (QMP `migrate` to a `file:` URI), and let go; later starts load that file into a
//! QEMU launched with `-incoming defer` (QMP `migrate-incoming`) and skip the boot.
//!
//! ```text
//! impl Vm {
//!     pub async fn launch_incoming(cfg) -> Result<Vm, QemuError>;   // paused, awaiting state
//!     pub async fn restore(&mut self, file) -> Result<(), QemuError>; // migrate-incoming
//!     pub fn has_parked(&self) -> Result<bool, QemuError>;          // polled
//!     pub async fn take_snapshot(&mut self, file) -> Result<u64, QemuError>; // leaves it stopped
//!     pub async fn cont(&mut self) -> Result<(), QemuError>;
//!     pub async fn release(&self, restored: bool) -> Result<(), QemuError>;  // the go line
//! }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use super::{QMP_TIMEOUT, QemuError, Vm, VmConfig, args};
use crate::protocol::{PARKED_MARKER, RELEASED_MARKER};

/// In the worker's run directory: the guest state, and the key of the config it was taken with.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
pub const SNAPSHOT_KEY_FILE: &str = "snapshot.key";
/// How long a migration to or from the file may take (a 128 MiB guest takes ~0.1 s here).
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

fn failed(path: &Path, why: impl Into<String>) -> QemuError {
    QemuError::Snapshot {
        path: path.to_owned(),
        why: why.into(),
    }
}

impl Vm {
    /// A QEMU for `cfg` that waits for its guest state (`-incoming defer`); see [`Vm::restore`].
    /// Its console goes to `console.next.log` until [`Vm::resume`], like a standby's.
    pub async fn launch_incoming(cfg: &VmConfig) -> Result<Vm, QemuError> {
        Self::start(cfg, args::Start::Incoming).await
    }

    /// Loads `file` into a VM from [`Vm::launch_incoming`]; the guest stays paused. A file that
    /// does not fit (truncated, another config) is an error and the QEMU is of no further use.
    pub async fn restore(&mut self, file: &Path) -> Result<(), QemuError> {
        let uri = format!("file:{}", file.display());
        self.qmp
            .execute_raw_within(
                "migrate-incoming",
                // Stay up on failure, so the error can be read back (else QEMU exits).
                json!({"uri": uri, "exit-on-error": false}),
                QMP_TIMEOUT,
            )
            .await
            .map_err(|e| failed(file, e.to_string()))?;
        self.migration_done(file).await
    }

    /// Whether the guest's agent has parked (its console log has [`PARKED_MARKER`]); an
    /// error once QEMU is gone. Takes no lock on QMP, so callers poll it.
    pub fn has_parked(&self) -> Result<bool, QemuError> {
        let log = &self.files.console;
        if std::fs::read(log).is_ok_and(|b| String::from_utf8_lossy(&b).contains(PARKED_MARKER)) {
            return Ok(true);
        }
        if !self.is_alive() {
            return Err(failed(log, "QEMU exited before the agent parked"));
        }
        Ok(false)
    }

    /// Stops the guest and writes its state to `file` (through a temporary file beside it, so
    /// a crash never leaves a half-written snapshot under the real name). The guest stays
    /// stopped: [`Vm::cont`] it. Returns the file's size.
    pub async fn take_snapshot(&mut self, file: &Path) -> Result<u64, QemuError> {
        let partial = partial_path(file);
        let _ = std::fs::remove_file(&partial);
        self.qmp
            .execute_raw_within("stop", Value::Null, QMP_TIMEOUT)
            .await?;
        let uri = format!("file:{}", partial.display());
        let result = async {
            self.qmp
                .execute_raw_within("migrate", json!({ "uri": uri }), QMP_TIMEOUT)
                .await
                .map_err(|e| failed(file, e.to_string()))?;
            self.migration_done(file).await?;
            std::fs::rename(&partial, file).map_err(|e| failed(file, e.to_string()))?;
            std::fs::metadata(file)
                .map(|m| m.len())
                .map_err(|e| failed(file, e.to_string()))
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Lets a stopped guest run (QMP `cont`), e.g. after [`Vm::take_snapshot`].
    pub async fn cont(&mut self) -> Result<(), QemuError> {
        self.qmp
            .execute_raw_within("cont", Value::Null, QMP_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Writes the go line into the console socket: 32 fresh random bytes, the host's clock,
    /// and whether this guest was restored. The parked agent reads it and dials. Returns once
    /// the agent has said it took the line: QEMU feeds the guest's UART only as fast as it
    /// drains its FIFO and drops what is left unread when the client hangs up.
    pub async fn release(&self, restored: bool) -> Result<(), QemuError> {
        let sock = &self.files.console_sock;
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let line = format!(
            "go {} {ns} {}\n",
            crate::orchestrator::endpoint::random_token(),
            if restored { "restored" } else { "booted" }
        );
        let send = async {
            let s = tokio::net::UnixStream::connect(sock).await?;
            let (read, mut write) = s.into_split();
            write.write_all(line.as_bytes()).await?;
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Some(l) = lines.next_line().await? {
                if l.contains(RELEASED_MARKER) {
                    return Ok(());
                }
            }
            Err(std::io::Error::other(
                "the console closed before the agent took the go line",
            ))
        };
        tokio::time::timeout(QMP_TIMEOUT, send)
            .await
            .map_err(|_| {
                failed(
                    sock,
                    format!("the agent did not take the go line within {QMP_TIMEOUT:?}"),
                )
            })?
            .map_err(|e| failed(sock, e.to_string()))
    }

    /// Polls `query-migrate` until the migration (either way) completed or failed.
    async fn migration_done(&mut self, file: &Path) -> Result<(), QemuError> {
        let deadline = Instant::now() + MIGRATE_TIMEOUT;
        loop {
            let reply = self
                .qmp
                .execute_raw_within("query-migrate", Value::Null, QMP_TIMEOUT)
                .await
                .map_err(|e| failed(file, e.to_string()))?;
            match reply.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(()),
                Some(s @ ("failed" | "cancelled")) => {
                    let why = reply
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(failed(file, format!("migration {s}: {why}")));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(failed(
                    file,
                    format!("migration not done within {MIGRATE_TIMEOUT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

fn partial_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    file.with_file_name(name)
}

/// The snapshot of the worker whose run directory is `run_dir`, if there is one taken with
/// `key`; a snapshot taken with another key is deleted (a changed image or command line means
/// a fresh snapshot, never a stale one) and `Stale` says so.
pub fn lookup(run_dir: &Path, key: &str) -> Lookup {
    let file = run_dir.join(SNAPSHOT_FILE);
    if !file.is_file() {
        return Lookup::None;
    }
    let stored = std::fs::read_to_string(run_dir.join(SNAPSHOT_KEY_FILE)).unwrap_or_default();
    if stored.trim() == key {
        Lookup::Valid(file)
    } else {
        tracing::info!(
            "{}: taken with another image, command line or QEMU: deleted; the next power-on boots and takes a new one",
            file.display()
        );
        remove(run_dir);
        Lookup::Stale
    }
}

#[derive(Debug, PartialEq)]
pub enum Lookup {
    None,
    Stale,
    Valid(PathBuf),
}

/// Records that the snapshot in `run_dir` was taken with `key`.
pub fn write_key(run_dir: &Path, key: &str) -> std::io::Result<()> {
    std::fs::write(run_dir.join(SNAPSHOT_KEY_FILE), key)
}

/// Deletes the worker's snapshot and its key.
pub fn remove(run_dir: &Path) {
    for f in [SNAPSHOT_FILE, SNAPSHOT_KEY_FILE] {
        let path = run_dir.join(f);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_used_only_with_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(lookup(dir.path(), "k1"), Lookup::None);
        std::fs::write(dir.path().join(SNAPSHOT_FILE), b"state").expect("write");
        write_key(dir.path(), "k1").expect("key");
        assert_eq!(
            lookup(dir.path(), "k1"),
            Lookup::Valid(dir.path().join(SNAPSHOT_FILE))
        );
        assert_eq!(lookup(dir.path(), "k2"), Lookup::Stale);
        assert!(!dir.path().join(SNAPSHOT_FILE).exists(), "a stale one goes");
        assert_eq!(lookup(dir.path(), "k1"), Lookup::None);
        assert_eq!(
            partial_path(&dir.path().join(SNAPSHOT_FILE)),
            dir.path().join("snapshot.bin.partial")
        );
    }
}
