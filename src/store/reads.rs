//! Reads of `objects` answered from memory while that kind's objects are unchanged. Every
//! gateway call read the Cluster's defaults, its Function (twice), the worker list and its
//! worker's record, and each read went back to SQLite: the recorder's commits, many a second
//! on another connection, empty this connection's page cache, so every read refetched pages
//! and parsed JSON — a quarter of the gateway's CPU. A counter per kind that triggers bump on
//! every change to an object of that kind (migration 5), by any connection of any process,
//! says when what was read is still what is stored: one small read per lookup instead of the
//! lookup. Per kind, because workers' statuses change all the time while a workload reboots
//! them, and that must not throw away the Cluster and the Functions.
//!
//! The counter is read before the rows, so rows are never older than the version they are
//! filed under (at worst newer, and the next lookup reads again). Inside a transaction
//! nothing is cached or answered from the cache: its own uncommitted changes bump the counter
//! and a rollback would bring the old value back over rows that never were.

use super::specs::SpecEntry;
use super::{Result, SqliteStore, StoredObject};
use crate::manifest::Kind;
use rusqlite::OptionalExtension;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// What each kind's objects answered, under the version they were read at.
#[derive(Default)]
pub(super) struct ReadCache(HashMap<Kind, KindCache>);

/// What one version of one kind's objects answered.
#[derive(Default)]
struct KindCache {
    version: i64,
    objects: HashMap<String, Option<StoredObject>>,
    specs: HashMap<String, Option<Arc<dyn Any + Send + Sync>>>,
    all: Option<Arc<dyn Any + Send + Sync>>,
}

impl ReadCache {
    /// `kind`'s entries, emptied first when they were read under another version than `v`.
    fn at(&mut self, kind: Kind, v: i64) -> &mut KindCache {
        let c = self.0.entry(kind).or_default();
        if c.version != v {
            *c = KindCache {
                version: v,
                ..KindCache::default()
            };
        }
        c
    }
}

/// `kind`'s counter as `conn` sees it (0 before its first object).
pub(super) fn kind_version(conn: &rusqlite::Connection, kind: Kind) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT v FROM objects_version WHERE kind = ?1")?
        .query_row([kind.as_str()], |r| r.get(0))
        .optional()
        .map(|v| v.unwrap_or(0))
}

/// `specs_of_kind`'s answer as the cache keeps it (cloned out per caller).
struct KindEntries<T>(Vec<(String, Arc<T>, Option<String>)>);

impl SqliteStore {
    /// `kind`'s counter now, or `None` inside a transaction (no caching there).
    fn objects_version(&self, kind: Kind) -> Result<Option<i64>> {
        if !self.conn.is_autocommit() {
            return Ok(None);
        }
        kind_version(&self.conn, kind).map(Some).map_err(self.sq())
    }

    /// This connection just committed `status` as `kind/name`'s, one row, when the counter
    /// stood at `before`: the write held the lock, so its trigger moved the counter to exactly
    /// `before + 1`. When what is cached was read at `before`, the cache moves on with that
    /// status in place instead of being read again: a workload rebooting v1 workers writes a
    /// worker's status several times a job, and each write used to cost the next read of that
    /// worker its record and the rest of the kind theirs.
    pub(super) fn status_written(
        &self,
        kind: Kind,
        name: &str,
        before: i64,
        status: &serde_json::Value,
    ) {
        let mut reads = self.reads.borrow_mut();
        let Some(c) = reads.0.get_mut(&kind) else {
            return;
        };
        if c.version != before {
            return;
        }
        c.version = before + 1;
        // Listings carry each object's health, which is in its status.
        c.all = None;
        if let Some(Some(obj)) = c.objects.get_mut(name) {
            obj.status = status.clone();
        }
    }

    /// `kind/name` as stored, from memory while `kind`'s objects are unchanged.
    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>> {
        let Some(v) = self.objects_version(kind)? else {
            return self.get_uncached(kind, name);
        };
        if let Some(hit) = self.reads.borrow_mut().at(kind, v).objects.get(name) {
            return Ok(hit.clone());
        }
        let obj = self.get_uncached(kind, name)?;
        self.reads
            .borrow_mut()
            .at(kind, v)
            .objects
            .insert(name.to_string(), obj.clone());
        Ok(obj)
    }

    /// The spec of `kind/name` parsed as `T`, from memory while `kind`'s objects are
    /// unchanged; `None` when there is no such object.
    pub fn spec_of<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Arc<T>>> {
        let Some(v) = self.objects_version(kind)? else {
            return self.spec_of_uncached(kind, name);
        };
        match self.reads.get_mut().at(kind, v).specs.get(name) {
            Some(None) => return Ok(None),
            Some(Some(spec)) => {
                if let Ok(spec) = spec.clone().downcast::<T>() {
                    return Ok(Some(spec));
                }
            }
            None => {}
        }
        let spec = self.spec_of_uncached::<T>(kind, name)?;
        let any = spec.clone().map(|s| s as Arc<dyn Any + Send + Sync>);
        self.reads
            .get_mut()
            .at(kind, v)
            .specs
            .insert(name.to_string(), any);
        Ok(spec)
    }

    /// Every object of `kind` by name, its spec parsed as `T` and its status's `health`, from
    /// memory while `kind`'s objects are unchanged.
    pub fn specs_of_kind<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
    ) -> Result<Vec<SpecEntry<T>>> {
        let Some(v) = self.objects_version(kind)? else {
            return self.specs_of_kind_uncached(kind);
        };
        if let Some(hit) = &self.reads.get_mut().at(kind, v).all
            && let Ok(entries) = hit.clone().downcast::<KindEntries<T>>()
        {
            return Ok(entries
                .0
                .iter()
                .map(|(name, spec, health)| SpecEntry {
                    name: name.clone(),
                    spec: spec.clone(),
                    health: health.clone(),
                })
                .collect());
        }
        let entries = self.specs_of_kind_uncached::<T>(kind)?;
        let kept = KindEntries(
            entries
                .iter()
                .map(|e| (e.name.clone(), e.spec.clone(), e.health.clone()))
                .collect(),
        );
        self.reads.get_mut().at(kind, v).all = Some(Arc::new(kept));
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DesiredObject, SqliteStore};
    use crate::manifest::Kind;
    use serde_json::{Value, json};

    fn function(store: &mut SqliteStore, handler: &str) {
        store
            .apply(
                &[DesiredObject::new(
                    Kind::Function,
                    "f",
                    json!({"runtime": "exec", "handler": handler}),
                )],
                None,
                false,
                false,
            )
            .expect("apply");
    }

    fn handler(store: &mut SqliteStore) -> Option<String> {
        let spec = store
            .spec_of::<Value>(Kind::Function, "f")
            .expect("spec_of")?;
        let by_get = store.get(Kind::Function, "f").expect("get")?;
        assert_eq!(by_get.spec, *spec, "get and spec_of disagree");
        Some(spec["handler"].as_str().expect("handler").to_string())
    }

    /// The one Function's health as `specs_of_kind` lists it.
    fn health(store: &mut SqliteStore) -> Option<String> {
        let all = store.specs_of_kind::<Value>(Kind::Function).expect("kind");
        assert_eq!(all.len(), 1);
        all[0].health.clone()
    }

    /// `apply` from another process against a running `serve`: every kind of change on
    /// another connection is seen at the next read.
    #[test]
    fn a_change_by_another_connection_is_seen_at_the_next_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut reader = SqliteStore::open(dir.path()).expect("open");
        let mut writer = SqliteStore::open(dir.path()).expect("open");
        function(&mut writer, "one");
        assert_eq!(handler(&mut reader).as_deref(), Some("one"));
        assert_eq!(handler(&mut reader).as_deref(), Some("one"));
        function(&mut writer, "two");
        assert_eq!(handler(&mut reader).as_deref(), Some("two"));

        assert_eq!(health(&mut reader), None);
        writer
            .set_status(Kind::Function, "f", &json!({"health": "Bad"}))
            .expect("status");
        assert_eq!(health(&mut reader).as_deref(), Some("Bad"));
        assert_eq!(
            reader
                .get(Kind::Function, "f")
                .expect("get")
                .expect("f")
                .status["health"],
            "Bad"
        );

        writer.delete(Kind::Function, "f").expect("delete");
        assert_eq!(handler(&mut reader), None);
        assert!(
            reader
                .specs_of_kind::<Value>(Kind::Function)
                .expect("kind")
                .is_empty()
        );
    }

    /// This connection's own status writes keep the cache (patched in place) but never hide
    /// what another connection changed before them.
    #[test]
    fn own_status_writes_patch_the_cache_and_others_changes_still_show() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut own = SqliteStore::open(dir.path()).expect("open");
        let mut other = SqliteStore::open(dir.path()).expect("open");
        function(&mut own, "one");
        assert_eq!(handler(&mut own).as_deref(), Some("one"));
        assert_eq!(health(&mut own), None);

        own.set_status(Kind::Function, "f", &json!({"health": "Bad"}))
            .expect("status");
        let got = own.get(Kind::Function, "f").expect("get").expect("f");
        assert_eq!(got.status, json!({"health": "Bad"}));
        assert_eq!(health(&mut own).as_deref(), Some("Bad"));
        assert_eq!(handler(&mut own).as_deref(), Some("one"));

        // Another connection's change, then one of ours: both must show.
        function(&mut other, "two");
        own.set_status(Kind::Function, "f", &json!({"health": "Good"}))
            .expect("status");
        assert_eq!(handler(&mut own).as_deref(), Some("two"));
        assert_eq!(
            own.get(Kind::Function, "f")
                .expect("get")
                .expect("f")
                .status,
            json!({"health": "Good"})
        );
        assert_eq!(health(&mut own).as_deref(), Some("Good"));
    }

    /// While `objects` is unchanged the answer comes from memory: a change the counter does
    /// not see (its trigger dropped behind the store's back) is not seen either, until the
    /// counter moves.
    #[test]
    fn an_unchanged_table_is_answered_from_memory() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(dir.path()).expect("open");
        function(&mut store, "one");
        assert_eq!(handler(&mut store).as_deref(), Some("one"));
        let raw = rusqlite::Connection::open(dir.path().join("state.db")).expect("raw");
        raw.execute_batch(
            "DROP TRIGGER objects_version_on_update;
             UPDATE objects SET spec = '{\"runtime\": \"exec\", \"handler\": \"hidden\"}';",
        )
        .expect("hidden change");
        assert_eq!(handler(&mut store).as_deref(), Some("one"));
        raw.execute_batch("UPDATE objects_version SET v = v + 1 WHERE kind = 'Function'")
            .expect("bump");
        assert_eq!(handler(&mut store).as_deref(), Some("hidden"));
    }
}
