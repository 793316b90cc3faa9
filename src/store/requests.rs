//! Requests written by one process for the engine to act on: deletion marks (the engine runs
//! the object's teardown, then removes its record) and a cheap revision of the desired state,
//! so a running daemon notices what `apply`, `delete` and `rerun` wrote from another process.

use super::{Result, SqliteStore, StoreError, clock};
use crate::manifest::Kind;
use rusqlite::{OptionalExtension, params};
use std::collections::BTreeMap;

impl SqliteStore {
    /// Marks an object for deletion; `NotFound` when there is no such object. Re-applying the
    /// object clears the mark.
    pub fn request_deletion(&mut self, kind: Kind, name: &str) -> Result<()> {
        let n = self
            .conn
            .execute(
                "UPDATE objects SET deletion_requested_at = COALESCE(deletion_requested_at, ?3)
                 WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name, clock::now()],
            )
            .map_err(self.sq())?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
        }
        Ok(())
    }

    pub fn deletion_requested(&self, kind: Kind, name: &str) -> Result<bool> {
        // Cached: every reconcile asks.
        let v: Option<Option<String>> = self
            .conn
            .prepare_cached(
                "SELECT deletion_requested_at FROM objects WHERE kind = ?1 AND name = ?2",
            )
            .and_then(|mut st| {
                st.query_row(params![kind.as_str(), name], |r| r.get(0))
                    .optional()
            })
            .map_err(self.sq())?;
        Ok(matches!(v, Some(Some(_))))
    }

    /// Per object, a string that changes whenever its desired state does: spec generation,
    /// metadata, a deletion mark, a rerun request or an operator's power request.
    pub fn desired_revisions(&self) -> Result<BTreeMap<(Kind, String), String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT kind, name, generation, updated_at, deletion_requested_at,
                        json_extract(status, '$.rerunRequested'),
                        json_extract(status, '$.powerRequest.id')
                 FROM objects",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<String>>(6)?,
                ))
            })
            .map_err(self.sq())?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (kind, name, generation, updated, deleting, rerun, power) =
                row.map_err(self.sq())?;
            let Ok(kind) = kind.parse::<Kind>() else {
                continue;
            };
            out.insert(
                (kind, name),
                format!(
                    "{generation}|{updated}|{}|{}|{}",
                    deleting.is_some(),
                    rerun.unwrap_or(0),
                    power.unwrap_or_default()
                ),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DesiredObject;

    fn function(name: &str, runtime: &str) -> DesiredObject {
        DesiredObject {
            kind: Kind::Function,
            name: name.into(),
            labels: Default::default(),
            annotations: Default::default(),
            spec: serde_json::json!({ "runtime": runtime }),
            owner: None,
            source: None,
        }
    }

    #[test]
    fn revisions_change_with_spec_mark_and_rerun_and_reapply_clears_the_mark() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut store = SqliteStore::open(dir.path()).expect("open");
        store
            .apply(&[function("f", "exec")], None, false, false)
            .expect("apply");
        let key = (Kind::Function, "f".to_string());
        let r0 = store.desired_revisions().expect("rev")[&key].clone();
        // A status write by the engine is not a desired-state change...
        store
            .set_status(Kind::Function, "f", &serde_json::json!({"phase": "Ready"}))
            .expect("status");
        assert_eq!(store.desired_revisions().expect("rev")[&key], r0);
        // ...a rerun request is.
        store
            .set_status(
                Kind::Function,
                "f",
                &serde_json::json!({"rerunRequested": true}),
            )
            .expect("status");
        let r1 = store.desired_revisions().expect("rev")[&key].clone();
        assert_ne!(r1, r0);
        // ...and so is an operator's power request (`microfaasctl power`).
        store
            .set_status(
                Kind::Function,
                "f",
                &serde_json::json!({"rerunRequested": true, "powerRequest": {"id": "abc"}}),
            )
            .expect("status");
        let r1b = store.desired_revisions().expect("rev")[&key].clone();
        assert_ne!(r1b, r1);
        let r1 = r1b;
        assert!(!store.deletion_requested(Kind::Function, "f").expect("q"));
        store.request_deletion(Kind::Function, "f").expect("mark");
        assert!(store.deletion_requested(Kind::Function, "f").expect("q"));
        let r2 = store.desired_revisions().expect("rev")[&key].clone();
        assert_ne!(r2, r1);
        store
            .apply(&[function("f", "exec")], None, false, false)
            .expect("re-apply");
        assert!(!store.deletion_requested(Kind::Function, "f").expect("q"));
        assert!(matches!(
            store.request_deletion(Kind::Function, "nope"),
            Err(StoreError::NotFound(_))
        ));
    }
}
