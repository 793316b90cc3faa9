//! Parsed specs, cached per object: every gateway call and every reconcile read the same few
//! specs (the Cluster's defaults, the Function, the workers), and parsing their stored JSON
//! each time was a third of a gateway call's CPU. Below `reads.rs` (which skips the read while
//! `objects` is unchanged): when a read does happen, an entry is used only while the stored
//! text is byte for byte what it was parsed from, so a status change costs a comparison, not a
//! parse.

use super::{Result, SqliteStore, StoreError, StoredObject};
use crate::manifest::Kind;
use rusqlite::params;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

/// The text an entry was parsed from, and the parsed spec.
struct Entry {
    text: String,
    spec: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
pub(super) struct SpecCache(HashMap<(Kind, String), Entry>);

/// An object as a caller picks among them: name, parsed spec and the `health` its status
/// states.
pub struct SpecEntry<T> {
    pub name: String,
    pub spec: Arc<T>,
    pub health: Option<String>,
}

impl SpecCache {
    /// The spec parsed from `text` as `T`: the cached one when it was parsed from the same
    /// text, else parsed now and remembered.
    fn parse<T: DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        name: &str,
        text: &str,
    ) -> Result<Arc<T>> {
        let key = (kind, name.to_string());
        if let Some(e) = self.0.get(&key)
            && e.text == text
            && let Ok(spec) = e.spec.clone().downcast::<T>()
        {
            return Ok(spec);
        }
        let spec: Arc<T> =
            Arc::new(serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                what: format!("{kind}/{name} spec"),
                detail: e.to_string(),
            })?);
        self.0.insert(
            key,
            Entry {
                text: text.to_string(),
                spec: spec.clone(),
            },
        );
        Ok(spec)
    }
}

impl SqliteStore {
    /// The spec of `kind/name` parsed as `T` (the cached parse while its text is unchanged);
    /// `None` when there is no such object.
    pub(super) fn spec_of_uncached<T: DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<Arc<T>>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT spec FROM objects WHERE kind = ?1 AND name = ?2")
            .map_err(self.sq())?;
        let mut rows = st.query(params![kind.as_str(), name]).map_err(self.sq())?;
        let Some(row) = rows.next().map_err(self.sq())? else {
            drop(rows);
            drop(st);
            self.specs.0.remove(&(kind, name.to_string()));
            return Ok(None);
        };
        // Borrowed, so an unchanged spec costs a comparison, not a copy.
        let text = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_str()?))
            .map_err(self.sq())?;
        self.specs.parse(kind, name, text).map(Some)
    }

    /// Every object of `kind`, by name, with its spec parsed as `T` (cached parses while
    /// unchanged) and its status's `health`.
    pub(super) fn specs_of_kind_uncached<T: DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
    ) -> Result<Vec<SpecEntry<T>>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT name, spec, CASE WHEN json_type(status, '$.health') = 'text'
                                        THEN json_extract(status, '$.health') END
                 FROM objects WHERE kind = ?1 ORDER BY name",
            )
            .map_err(self.sq())?;
        let mut rows = st.query(params![kind.as_str()]).map_err(self.sq())?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(self.sq())? {
            let name: String = row.get(0).map_err(self.sq())?;
            let text = row
                .get_ref(1)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(self.sq())?;
            let spec = self.specs.parse(kind, &name, text)?;
            let health: Option<String> = row.get(2).map_err(self.sq())?;
            out.push(SpecEntry { name, spec, health });
        }
        Ok(out)
    }
}

/// `spec_of` for a backend without the cache (etcd): the spec parsed from the object read.
pub(super) fn parse_stored<T: DeserializeOwned>(obj: &StoredObject) -> Result<Arc<T>> {
    serde_json::from_value(obj.spec.clone())
        .map(Arc::new)
        .map_err(|e| StoreError::Corrupt {
            what: format!("{}/{} spec", obj.kind, obj.name),
            detail: e.to_string(),
        })
}

/// The `health` an object's status states, as the SQLite listing extracts it.
pub(super) fn stored_health(obj: &StoredObject) -> Option<String> {
    obj.status
        .get("health")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::types::FunctionSpec;
    use crate::store::DesiredObject;
    use serde_json::json;

    fn function(handler: &str) -> DesiredObject {
        DesiredObject::new(
            Kind::Function,
            "f",
            json!({"runtime": "builtin", "handler": handler}),
        )
    }

    /// A spec changed by another connection (another process's `apply`), or deleted and
    /// re-created, is read anew; an unchanged one is the cached value itself.
    #[test]
    fn changes_by_any_connection_are_seen_unchanged_specs_are_shared() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ours = SqliteStore::open(dir.path()).expect("open");
        let mut theirs = SqliteStore::open(dir.path()).expect("open");
        theirs
            .apply(&[function("a")], None, false, false)
            .expect("apply");
        let first = ours
            .spec_of::<FunctionSpec>(Kind::Function, "f")
            .expect("read")
            .expect("f");
        assert_eq!(first.handler.as_deref(), Some("a"));
        let again = ours
            .spec_of::<FunctionSpec>(Kind::Function, "f")
            .expect("read")
            .expect("f");
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged spec was parsed again"
        );

        theirs
            .apply(&[function("b")], None, false, false)
            .expect("apply");
        let changed = ours
            .spec_of::<FunctionSpec>(Kind::Function, "f")
            .expect("read")
            .expect("f");
        assert_eq!(changed.handler.as_deref(), Some("b"));

        theirs.delete(Kind::Function, "f").expect("delete");
        assert!(
            ours.spec_of::<FunctionSpec>(Kind::Function, "f")
                .expect("read")
                .is_none()
        );
        theirs
            .apply(&[function("c")], None, false, false)
            .expect("apply");
        let listed = ours
            .specs_of_kind::<FunctionSpec>(Kind::Function)
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].spec.handler.as_deref(), Some("c"));
    }

    /// The listing carries each object's stored health, which the cache does not hold.
    #[test]
    fn listings_carry_the_current_health() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut s = SqliteStore::open(dir.path()).expect("open");
        s.apply(&[function("a")], None, false, false)
            .expect("apply");
        let before = s
            .specs_of_kind::<FunctionSpec>(Kind::Function)
            .expect("list");
        assert_eq!(before[0].health, None);
        s.set_status(Kind::Function, "f", &json!({"health": "Bad"}))
            .expect("status");
        let after = s
            .specs_of_kind::<FunctionSpec>(Kind::Function)
            .expect("list");
        assert_eq!(after[0].health.as_deref(), Some("Bad"));
        assert!(Arc::ptr_eq(&before[0].spec, &after[0].spec));
    }
}
