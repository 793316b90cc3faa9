//! The store's change feed: every committed write to a state database, by any connection of
//! this process, bumps a counter per database file. Readers that show live state (the web
//! view) wait on it instead of polling the database. Writes by other processes (`apply`
//! against a running daemon) are not seen here; such readers also refresh now and then.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::watch;

static FEEDS: LazyLock<Mutex<HashMap<PathBuf, watch::Sender<u64>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

pub(super) fn sender(db: &Path) -> watch::Sender<u64> {
    let mut feeds = FEEDS.lock().unwrap_or_else(|p| p.into_inner());
    feeds
        .entry(db.to_path_buf())
        .or_insert_with(|| watch::channel(0).0)
        .clone()
}

/// Changes to the database at `db` (the `state.db` path, as `Store::path` gives it).
pub fn subscribe(db: &Path) -> watch::Receiver<u64> {
    sender(db).subscribe()
}

/// Installs the hooks on a new connection: a row change marks the transaction dirty, its
/// commit publishes, a rollback forgets. Read-only transactions publish nothing.
pub(super) fn install(conn: &mut rusqlite::Connection, db: &Path) -> rusqlite::Result<()> {
    let tx = sender(db);
    let dirty = Arc::new(AtomicBool::new(false));
    let d = dirty.clone();
    conn.update_hook(Some(
        move |_: rusqlite::hooks::Action, _: &str, _: &str, _: i64| {
            d.store(true, Ordering::Relaxed);
        },
    ))?;
    let d = dirty.clone();
    conn.commit_hook(Some(move || {
        if d.swap(false, Ordering::Relaxed) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
        false
    }))?;
    conn.rollback_hook(Some(move || dirty.store(false, Ordering::Relaxed)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Kind;
    use crate::store::{EventType, Store};

    #[test]
    fn commits_of_any_connection_are_announced_reads_are_not() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut writer = Store::open(dir.path()).expect("open");
        let reader = Store::open(dir.path()).expect("open");
        let mut rx = subscribe(reader.path());
        let before = *rx.borrow_and_update();
        reader.list(None).expect("list");
        assert!(
            !rx.has_changed().expect("open feed"),
            "a read was announced"
        );
        writer
            .record_event(Kind::Cluster, "c", EventType::Normal, "R", "m")
            .expect("event");
        assert!(rx.has_changed().expect("open feed"));
        assert_ne!(*rx.borrow_and_update(), before);
        // Another state dir's writes are not this one's.
        let other = tempfile::tempdir().expect("tmp");
        let mut o = Store::open(other.path()).expect("open");
        o.record_event(Kind::Cluster, "c", EventType::Normal, "R", "m")
            .expect("event");
        assert!(!rx.has_changed().expect("open feed"));
    }
}
