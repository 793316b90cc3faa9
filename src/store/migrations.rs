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
        let tx = conn.transaction().map_err(sq)?;
        tx.execute_batch(sql).map_err(sq)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)
            .map_err(sq)?;
        tx.commit().map_err(sq)?;
    }
    Ok(())
}
