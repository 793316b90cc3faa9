//! Versioned schema migrations, applied in order inside one transaction each; the version is
//! SQLite's `user_version`.

use super::{Result, StoreError};
use rusqlite::Connection;
use std::path::Path;

const MIGRATIONS: &[&str] = &[
    // 1: objects and events
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        spec TEXT NOT NULL,
        generation INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT '{}',
        owner TEXT,
        applyset TEXT,
        source TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deletion_requested_at TEXT,
        PRIMARY KEY (kind, name)
     );
     CREATE TABLE applysets (
        id TEXT PRIMARY KEY,
        paths TEXT NOT NULL,
        updated_at TEXT NOT NULL
     );
     CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        reason TEXT NOT NULL,
        message TEXT NOT NULL,
        count INTEGER NOT NULL,
        first_time TEXT NOT NULL,
        last_time TEXT NOT NULL
     );
     CREATE INDEX events_by_object ON events (kind, name, last_time);",
    // 2: workload runs and one row per invocation attempt (times in unix milliseconds)
    "CREATE TABLE runs (
        workload TEXT NOT NULL,
        run INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('Running', 'Succeeded', 'Failed', 'Cancelled')),
        total INTEGER NOT NULL DEFAULT 0,
        succeeded INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        message TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (workload, run)
     );
     CREATE TABLE invocations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        invocation_id TEXT NOT NULL,
        workload TEXT NOT NULL,
        run INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        function TEXT NOT NULL,
        worker TEXT,
        attempt INTEGER NOT NULL,
        queued_at INTEGER NOT NULL,
        dispatched_at INTEGER,
        finished_at INTEGER NOT NULL,
        exec_us INTEGER,
        rtt_us INTEGER,
        cold_start_ms INTEGER,
        status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'timeout', 'lost')),
        error TEXT,
        output_size INTEGER,
        output_sha256 TEXT,
        UNIQUE (workload, run, invocation_id, attempt),
        FOREIGN KEY (workload, run) REFERENCES runs (workload, run)
     );
     CREATE INDEX invocations_by_run ON invocations (workload, run, seq, attempt);",
    // 3: power meter samples as they arrive, and every worker phase change (for attributing
    //    energy to phases), times in unix milliseconds
    "CREATE TABLE meter_samples (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        meter TEXT NOT NULL,
        at INTEGER NOT NULL,
        watts REAL NOT NULL,
        volts REAL,
        amps REAL,
        watt_hours REAL
     );
     CREATE INDEX meter_samples_by_time ON meter_samples (meter, at);
     CREATE TABLE worker_phases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        worker TEXT NOT NULL,
        at INTEGER NOT NULL,
        phase TEXT NOT NULL
     );
     CREATE INDEX worker_phases_by_time ON worker_phases (worker, at);",
    // 4: the gateway's asynchronous calls (kept until their callback is delivered or given up)
    // and how many Warm workers it keeps powered per function
    "CREATE TABLE gateway_calls (
        call_id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        input TEXT NOT NULL,
        callback_url TEXT,
        state TEXT NOT NULL CHECK (state IN ('queued', 'done', 'delivered', 'undeliverable')),
        code INTEGER,
        result BLOB,
        headers TEXT,
        queued_at INTEGER NOT NULL,
        finished_at INTEGER,
        callback_tries INTEGER NOT NULL DEFAULT 0,
        delivered_at INTEGER
     );
     CREATE INDEX gateway_calls_by_state ON gateway_calls (state, queued_at);
     CREATE TABLE gateway_scale (
        function TEXT PRIMARY KEY,
        replicas INTEGER NOT NULL CHECK (replicas >= 0)
     );
     CREATE INDEX invocations_by_function ON invocations (workload, function, id);",
    // 5: a counter per kind that every change to `objects` of that kind bumps, by any
    // connection of any process, so readers can keep what they read until it moves
    // (src/store/reads.rs)
    "CREATE TABLE objects_version (
        kind TEXT PRIMARY KEY,
        v INTEGER NOT NULL
     );
     CREATE TRIGGER objects_version_on_insert AFTER INSERT ON objects BEGIN
        INSERT OR IGNORE INTO objects_version VALUES (NEW.kind, 0);
        UPDATE objects_version SET v = v + 1 WHERE kind = NEW.kind;
     END;
     CREATE TRIGGER objects_version_on_update AFTER UPDATE ON objects BEGIN
        INSERT OR IGNORE INTO objects_version VALUES (NEW.kind, 0);
        UPDATE objects_version SET v = v + 1 WHERE kind = NEW.kind;
     END;
     CREATE TRIGGER objects_version_on_delete AFTER DELETE ON objects BEGIN
        INSERT OR IGNORE INTO objects_version VALUES (OLD.kind, 0);
        UPDATE objects_version SET v = v + 1 WHERE kind = OLD.kind;
     END;",
];

pub fn run(conn: &mut Connection, path: &Path) -> Result<()> {
    let sq = |source| StoreError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let current: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sq)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        // IMMEDIATE takes the write lock before reading the version again: two processes
        // opening a new state dir at once (apply and get) must not both run a migration.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(sq)?;
        let now: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sq)?;
        if now > i as i64 {
            continue;
        }
        tx.execute_batch(sql).map_err(sq)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(sq)?;
        tx.commit().map_err(sq)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Many processes' worth of connections opening one new state dir at once, repeatedly:
    /// the WAL switch on a fresh file used to fail "database is locked" about once in ten.
    #[test]
    fn concurrent_opens_migrate_once() {
        for round in 0..50 {
            let dir = tempfile::tempdir().expect("tmp");
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let d = dir.path().to_path_buf();
                    std::thread::spawn(move || crate::store::Store::open(&d).map(|_| ()))
                })
                .collect();
            for h in handles {
                let r = h.join().expect("thread");
                assert!(
                    r.is_ok(),
                    "round {round}: {:?}",
                    r.err().map(|e| e.to_string())
                );
            }
        }
    }
}
