//! The durable store: desired objects with generations, their status, and events, in SQLite
//! (WAL, `synchronous=FULL`) under the state directory, plus workload runs and every invocation
//! attempt, power meter samples and worker phase history. Committed writes are announced on
//! an in-process change feed (`feed`). `Store` (in `backend`) is that SQLite store or, when
//! selected, the same records in a shared etcd cluster (`etcd`).

mod backend;
pub mod clock;
pub mod committer;
pub mod energy;
pub mod etcd;
mod events;
pub mod feed;
pub mod gateway;
pub mod invocations;
pub mod lock;
mod merge;
mod migrations;
mod objects;
mod reads;
mod requests;
pub mod specs;

pub use backend::{Store, select, select_declared, selected_etcd};
pub use etcd::{ClientCert, EtcdLocation, TlsFiles};
pub use events::{Event, EventNote, EventType};
pub use invocations::{Attempt, AttemptStatus, Run, RunCounts, RunPhase, output_digest};
pub use lock::{LockError, StateLock};
pub use objects::{ApplyOutcome, DesiredObject, StoredObject};

use rusqlite::Connection;
use rusqlite::config::DbConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the state database {path} was written by a newer microfaas (schema {found}, this one knows {known})"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("corrupt record {what} in the state database: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("etcd store: {0}")]
    Etcd(String),
    /// etcd refused a record for what it says (already recorded, its run missing).
    #[error("etcd store: {0}")]
    EtcdRefused(String),
}

impl StoreError {
    /// A record refused for what it says (a duplicate, a run that does not exist), as opposed
    /// to a store that could not write it (disk full, I/O): retrying it cannot help.
    pub fn is_refusal(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
            }
            StoreError::EtcdRefused(_) => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The embedded store: one SQLite file under the state directory.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    specs: specs::SpecCache,
    reads: Box<std::cell::RefCell<reads::ReadCache>>,
}

/// `--state-dir`, else `$MICROFAAS_STATE_DIR` (clap reads it), else `$XDG_STATE_HOME/microfaas`,
/// else `~/.local/state/microfaas`.
pub fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("microfaas");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/microfaas")
}

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sleeps of the busy handler: short ones first, as the lock is usually held for one commit
/// (an fsync, a few ms); SQLite's own handler sleeps 1, 2, 5, 10, 15, 20, 25 ms ... so a
/// writer that found the recorder fsyncing lost far more than the fsync.
const BUSY_SHORT: std::time::Duration = std::time::Duration::from_micros(100);
const BUSY_SHORT_TRIES: i32 = 200;
const BUSY_LONG: std::time::Duration = std::time::Duration::from_millis(5);

/// A busy handler: 200 sleeps of 0.1 ms (about 20 ms), then 5 ms ones, until [`BUSY_TIMEOUT`]
/// has passed since this lock was first found busy (`tries` 0). True = try again.
fn busy_waiter() -> impl FnMut(i32) -> bool + Send + 'static {
    let mut since = std::time::Instant::now();
    move |tries| {
        if tries == 0 {
            since = std::time::Instant::now();
        }
        if since.elapsed() >= BUSY_TIMEOUT {
            return false;
        }
        std::thread::sleep(if tries < BUSY_SHORT_TRIES {
            BUSY_SHORT
        } else {
            BUSY_LONG
        });
        true
    }
}

/// Switches the database to WAL. On a fresh file SQLite answers "database is locked" at once
/// when another connection is doing the same (the busy handler does not cover it), so several
/// processes opening a new state dir together would fail: retry within the busy timeout.
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("state.db");
        let sq = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(sq)?;
        conn.busy_handler(Some(busy_waiter())).map_err(sq)?;
        enable_wal(&conn).map_err(sq)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sq)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(sq)?;
        // Plans that do not depend on bound values. Without this, the bundled SQLite marks
        // statements such as `... WHERE kind = ?1 ORDER BY name` to be re-prepared whenever
        // they are bound again, so every cached statement was compiled anew on each use.
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(sq)?;
        // Room for every statement the engine and the gateway cache (the default is 16).
        conn.set_prepared_statement_cache_capacity(64);
        migrations::run(&mut conn, &path)?;
        feed::install(&mut conn, &path).map_err(sq)?;
        Ok(SqliteStore {
            conn,
            path,
            specs: specs::SpecCache::default(),
            reads: Default::default(),
        })
    }

    pub(crate) fn sq(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Begins an IMMEDIATE transaction (the write lock taken up front, waiting out other
    /// connections within the busy timeout), with the error mapping to use inside it.
    pub(crate) fn immediate(
        &mut self,
    ) -> Result<(
        rusqlite::Transaction<'_>,
        impl Fn(rusqlite::Error) -> StoreError + use<>,
    )> {
        let path = self.path.clone();
        let sq = move |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&sq)?;
        Ok((tx, sq))
    }

    /// Runs a write of observations (status, events) without waiting for fsync. They are
    /// re-derived by every reconcile, so a power cut may lose the last few, never corrupt them
    /// (WAL); desired state and invocation records keep `synchronous=FULL`. Without this, one
    /// fsync per status change made 1,000 workers take a minute to converge.
    pub(crate) fn observation<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let set = |level: &str| {
            self.conn
                .prepare_cached(&format!("PRAGMA synchronous = {level}"))
                .and_then(|mut st| st.execute([]))
                .map(drop)
        };
        set("NORMAL").map_err(self.sq())?;
        let r = f(&self.conn).map_err(self.sq());
        set("FULL").map_err(self.sq())?;
        r
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A second connection to the same file, for a writer that should not wait behind this
    /// one's users (the invocation recorder: WAL lets readers go on while it fsyncs).
    pub fn another_connection(&self) -> Result<SqliteStore> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        SqliteStore::open(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;

    /// A cached statement bound again is not compiled again (it was, on every use, until the
    /// query planner stability guarantee was turned on).
    #[test]
    fn cached_statements_are_not_reprepared_when_bound_again() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(dir.path()).expect("open");
        store
            .apply(
                &[DesiredObject::new(Kind::Worker, "w", serde_json::json!({}))],
                None,
                false,
                false,
            )
            .expect("apply");
        for phase in ["Ready", "Busy", "Ready", "Busy"] {
            store.list(Some(Kind::Worker)).expect("list");
            store
                .set_status(Kind::Worker, "w", &serde_json::json!({"phase": phase}))
                .expect("status");
            store
                .record_event(Kind::Worker, "w", EventType::Normal, "R", phase)
                .expect("event");
        }
        let sql = format!(
            "SELECT {} FROM objects WHERE kind = ?1 ORDER BY name",
            objects::COLUMNS
        );
        let st = store.conn.prepare_cached(&sql).expect("cached");
        assert_eq!(
            st.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the listing was compiled again"
        );
    }

    /// A store in `dir` holding Function `f`.
    fn with_function_f(dir: &Path) -> SqliteStore {
        let mut store = SqliteStore::open(dir).expect("open");
        let obj = DesiredObject {
            kind: Kind::Function,
            name: "f".into(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: serde_json::json!({"runtime": "exec"}),
            owner: None,
            source: None,
        };
        store.apply(&[obj], None, false, false).expect("apply");
        store
    }

    /// Observations skip the fsync; everything else must still be written with FULL.
    #[test]
    fn observation_writes_leave_full_durability_in_place() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = with_function_f(dir.path());
        store
            .set_status(
                Kind::Function,
                "f",
                &serde_json::json!({"phase": "Accepted"}),
            )
            .expect("status");
        store
            .record_event(Kind::Function, "f", EventType::Normal, "R", "m")
            .expect("event");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .expect("pragma");
        assert_eq!(sync, 2, "synchronous is no longer FULL");
        assert_eq!(
            store
                .get(Kind::Function, "f")
                .expect("get")
                .expect("f")
                .status["phase"],
            "Accepted"
        );
    }

    /// A transition's events go in with its status, in one transaction, seen by another
    /// connection together; for an object that is gone, neither is written.
    #[test]
    fn a_status_and_its_events_are_written_together() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = with_function_f(dir.path());
        let noted = |m: &str| EventNote::now(EventType::Normal, "Ready", m);
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = commits.clone();
        store
            .conn
            .commit_hook(Some(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                false
            }))
            .expect("commit hook");
        store
            .update_status(
                Kind::Function,
                "f",
                Some(&serde_json::json!({})),
                &serde_json::json!({"phase": "Ready"}),
                &[noted("one"), noted("two"), noted("two")],
            )
            .expect("status");
        assert_eq!(
            commits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the status and its three events took more than one transaction"
        );
        let other = store.another_connection().expect("second connection");
        assert_eq!(
            other
                .get(Kind::Function, "f")
                .expect("get")
                .expect("f")
                .status["phase"],
            "Ready"
        );
        let events = other.events(Kind::Function, "f", 10).expect("events");
        let counts: Vec<(&str, i64)> = events
            .iter()
            .map(|e| (e.message.as_str(), e.count))
            .collect();
        assert_eq!(counts.len(), 2, "{counts:?}");
        assert!(
            counts.contains(&("one", 1)) && counts.contains(&("two", 2)),
            "{counts:?}"
        );

        let gone = store.update_status(
            Kind::Function,
            "nope",
            Some(&serde_json::json!({})),
            &serde_json::json!({"phase": "Ready"}),
            &[noted("lost")],
        );
        assert!(matches!(gone, Err(StoreError::NotFound(_))), "{gone:?}");
        assert!(
            other
                .events(Kind::Function, "nope", 10)
                .expect("events")
                .is_empty()
        );
    }
}
