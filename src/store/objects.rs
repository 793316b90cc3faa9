//! Desired objects: apply (create / configure / unchanged / prune) in one transaction, reads,
//! deletes and status writes.

use super::{Result, SqliteStore, StoreError, clock};
use crate::manifest::Kind;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Write transactions take the write lock when they begin: a deferred one that read first
/// gets "database is locked" at once (no busy wait) if another connection, such as the energy
/// sampler or a second process, wrote in between.
const IMMEDIATE: rusqlite::TransactionBehavior = rusqlite::TransactionBehavior::Immediate;

/// What a manifest asks for, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    pub kind: Kind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Canonical spec JSON (defaults filled in).
    pub spec: Value,
    /// WorkerSet that made this worker.
    pub owner: Option<String>,
    /// `FILE:LINE:COL` of the declaration.
    pub source: Option<String>,
}

impl DesiredObject {
    /// An object with no labels, owner or source (programs and tests that build the store
    /// directly rather than from manifests).
    pub fn new(kind: Kind, name: &str, spec: Value) -> Self {
        DesiredObject {
            kind,
            name: name.to_string(),
            labels: Default::default(),
            annotations: Default::default(),
            spec,
            owner: None,
            source: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub kind: Kind,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: Value,
    pub generation: i64,
    pub status: Value,
    pub owner: Option<String>,
    pub source: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl ApplyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyOutcome::Created => "created",
            ApplyOutcome::Configured => "configured",
            ApplyOutcome::Unchanged => "unchanged",
            ApplyOutcome::Pruned => "pruned",
        }
    }
}

/// spec, labels, annotations, generation, owner, source of a stored object.
type ExistingRow = (String, String, String, i64, Option<String>, Option<String>);

pub(super) const COLUMNS: &str = "kind, name, labels, annotations, spec, generation, status, owner, source, created_at, updated_at";

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn row_to_object(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<StoredObject>> {
    let kind: String = row.get(0)?;
    let name: String = row.get(1)?;
    let labels: String = row.get(2)?;
    let annotations: String = row.get(3)?;
    let spec: String = row.get(4)?;
    let generation: i64 = row.get(5)?;
    let status: String = row.get(6)?;
    let owner: Option<String> = row.get(7)?;
    let source: Option<String> = row.get(8)?;
    let created_at: String = row.get(9)?;
    let updated_at: String = row.get(10)?;
    Ok((|| {
        let what = format!("{kind}/{name}");
        let kind: Kind = kind.parse().map_err(|detail| StoreError::Corrupt {
            what: what.clone(),
            detail,
        })?;
        let map = |v: Value| -> Result<BTreeMap<String, String>> {
            serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
                what: what.clone(),
                detail: e.to_string(),
            })
        };
        Ok(StoredObject {
            kind,
            labels: map(parse_json(&what, &labels)?)?,
            annotations: map(parse_json(&what, &annotations)?)?,
            spec: parse_json(&what, &spec)?,
            status: parse_json(&what, &status)?,
            name,
            generation,
            owner,
            source,
            created_at,
            updated_at,
        })
    })())
}

fn json_text(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

impl SqliteStore {
    /// `kind/name` read from the database (`get` answers from memory when it can).
    pub(super) fn get_uncached(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>> {
        let sql = format!("SELECT {COLUMNS} FROM objects WHERE kind = ?1 AND name = ?2");
        // Cached statements: the engine reads and writes objects on every reconcile, and
        // parsing the SQL each time was a visible share of a 1,000-worker apply.
        let row = self
            .conn
            .prepare_cached(&sql)
            .and_then(|mut st| {
                st.query_row(params![kind.as_str(), name], row_to_object)
                    .optional()
            })
            .map_err(self.sq())?;
        row.transpose()
    }

    /// `kind/name`'s status alone, parsed as `T` (fields it does not name are skipped): a
    /// call waiting for its worker checks only its health and readiness, and reading and
    /// parsing the whole record was most of that wait's cost.
    pub fn status_of<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<T>> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT status FROM objects WHERE kind = ?1 AND name = ?2")
            .and_then(|mut st| {
                st.query_row(params![kind.as_str(), name], |r| r.get(0))
                    .optional()
            })
            .map_err(self.sq())?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                what: format!("status of {}/{name}", kind.singular()),
                detail: e.to_string(),
            })
        })
        .transpose()
    }

    /// Objects of a kind (all kinds when `None`), ordered by kind then name.
    pub fn list(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>> {
        // Two statements, not `?1 IS NULL OR kind = ?1`: SQLite cannot use the primary key
        // for that, and a full scan per Cluster lookup made every reconcile O(objects).
        let sql = match kind {
            Some(_) => format!("SELECT {COLUMNS} FROM objects WHERE kind = ?1 ORDER BY name"),
            None => format!("SELECT {COLUMNS} FROM objects ORDER BY kind, name"),
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sq())?;
        let rows = match kind {
            Some(k) => stmt.query_map(params![k.as_str()], row_to_object),
            None => stmt.query_map([], row_to_object),
        }
        .map_err(self.sq())?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(self.sq())??);
        }
        Ok(out)
    }

    /// Stores a complete desired state in one transaction: every object is created, configured
    /// (generation + 1 when its spec changed) or left unchanged; with `prune`, objects that were
    /// applied from the same `applyset` before and are absent now are deleted. With `dry_run`
    /// the transaction is rolled back, so the outcome is reported and nothing changes.
    pub fn apply(
        &mut self,
        objects: &[DesiredObject],
        applyset: Option<(&str, &[String])>,
        prune: bool,
        dry_run: bool,
    ) -> Result<Vec<(Kind, String, ApplyOutcome)>> {
        let now = clock::now();
        let (tx, sq) = self.immediate()?;
        let mut outcomes = Vec::new();
        let set_id = applyset.map(|(id, _)| id);
        for obj in objects {
            let existing: Option<ExistingRow> = tx
                .query_row(
                    "SELECT spec, labels, annotations, generation, owner, source FROM objects WHERE kind = ?1 AND name = ?2",
                    params![obj.kind.as_str(), obj.name],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()
                .map_err(&sq)?;
            let spec = json_text(&obj.spec);
            let labels = json_text(&obj.labels);
            let annotations = json_text(&obj.annotations);
            let outcome = match existing {
                None => {
                    tx.execute(
                        "INSERT INTO objects (kind, name, labels, annotations, spec, generation, status, owner, applyset, source, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1, '{}', ?6, ?7, ?8, ?9, ?9)",
                        params![obj.kind.as_str(), obj.name, labels, annotations, spec, obj.owner, set_id, obj.source, now],
                    )
                    .map_err(&sq)?;
                    ApplyOutcome::Created
                }
                Some((old_spec, old_labels, old_ann, generation, old_owner, old_source)) => {
                    let what = format!("{}/{}", obj.kind, obj.name);
                    let spec_changed = parse_json(&what, &old_spec)? != obj.spec;
                    let meta_changed = parse_json(&what, &old_labels)?
                        != parse_json(&what, &labels)?
                        || parse_json(&what, &old_ann)? != parse_json(&what, &annotations)?
                        || old_owner != obj.owner;
                    let generation = if spec_changed {
                        generation + 1
                    } else {
                        generation
                    };
                    tx.execute(
                        "UPDATE objects SET labels = ?3, annotations = ?4, spec = ?5, generation = ?6, owner = ?7,
                           applyset = COALESCE(?8, applyset), source = ?9,
                           updated_at = CASE WHEN ?10 THEN ?11 ELSE updated_at END,
                           deletion_requested_at = NULL
                         WHERE kind = ?1 AND name = ?2",
                        params![obj.kind.as_str(), obj.name, labels, annotations, spec, generation, obj.owner, set_id,
                                obj.source.clone().or(old_source), spec_changed || meta_changed, now],
                    )
                    .map_err(&sq)?;
                    if spec_changed || meta_changed {
                        ApplyOutcome::Configured
                    } else {
                        ApplyOutcome::Unchanged
                    }
                }
            };
            outcomes.push((obj.kind, obj.name.clone(), outcome));
        }
        if let Some((id, paths)) = applyset {
            tx.execute(
                "INSERT INTO applysets (id, paths, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(id) DO UPDATE SET paths = excluded.paths, updated_at = excluded.updated_at",
                params![id, json_text(&paths), now],
            )
            .map_err(&sq)?;
            if prune {
                let keep: HashSet<(Kind, &str)> =
                    objects.iter().map(|o| (o.kind, o.name.as_str())).collect();
                let mut stmt = tx
                    .prepare(
                        "SELECT kind, name FROM objects WHERE applyset = ?1 ORDER BY kind, name",
                    )
                    .map_err(&sq)?;
                let stale: Vec<(String, String)> = stmt
                    .query_map(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(&sq)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(&sq)?;
                drop(stmt);
                for (kind, name) in stale {
                    let Ok(k) = kind.parse::<Kind>() else {
                        continue;
                    };
                    if !keep.contains(&(k, name.as_str())) {
                        tx.execute(
                            "DELETE FROM objects WHERE kind = ?1 AND name = ?2",
                            params![kind, name],
                        )
                        .map_err(&sq)?;
                        outcomes.push((k, name, ApplyOutcome::Pruned));
                    }
                }
            }
        }
        if dry_run {
            tx.rollback().map_err(&sq)?;
        } else {
            tx.commit().map_err(&sq)?;
        }
        Ok(outcomes)
    }

    /// Removes an object and, for a WorkerSet, the workers it made. Returns what was removed.
    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<Vec<(Kind, String)>> {
        let (tx, sq) = self.immediate()?;
        let n = tx
            .execute(
                "DELETE FROM objects WHERE kind = ?1 AND name = ?2",
                params![kind.as_str(), name],
            )
            .map_err(&sq)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
        }
        let mut removed = vec![(kind, name.to_string())];
        if kind == Kind::WorkerSet {
            let mut stmt = tx
                .prepare(
                    "SELECT name FROM objects WHERE kind = 'Worker' AND owner = ?1 ORDER BY name",
                )
                .map_err(&sq)?;
            let owned: Vec<String> = stmt
                .query_map(params![name], |r| r.get(0))
                .map_err(&sq)?
                .collect::<rusqlite::Result<_>>()
                .map_err(&sq)?;
            drop(stmt);
            tx.execute(
                "DELETE FROM objects WHERE kind = 'Worker' AND owner = ?1",
                params![name],
            )
            .map_err(&sq)?;
            removed.extend(owned.into_iter().map(|n| (Kind::Worker, n)));
        }
        tx.commit().map_err(&sq)?;
        Ok(removed)
    }

    /// Replaces an object's status (written by the engine). A worker's phase change is also
    /// appended to its phase history, which energy attribution reads.
    pub fn set_status(&mut self, kind: Kind, name: &str, status: &Value) -> Result<()> {
        self.update_status(kind, name, None, status, &[]).map(drop)
    }

    /// Writes `status`, edited from `base` (the status its writer read), merged with what was
    /// stored since (`merge::three_way`; no `base`: a plain overwrite), with the events of the
    /// same transition, in one transaction: a OneShot board goes through two transitions per
    /// invocation, and a commit for each event beside its status was 29 % of the engine's
    /// status and event commits. Returns the status stored.
    pub fn update_status(
        &mut self,
        kind: Kind,
        name: &str,
        base: Option<&Value>,
        status: &Value,
        events: &[super::EventNote],
    ) -> Result<Value> {
        let (stored, before) = self.observation(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(conn, IMMEDIATE)?;
            let before = super::reads::kind_version(&tx, kind)?;
            let stored = match base {
                None => Some(status.clone()),
                Some(base) => tx
                    .prepare_cached("SELECT status FROM objects WHERE kind = ?1 AND name = ?2")?
                    .query_row(params![kind.as_str(), name], |r| r.get::<_, String>(0))
                    .optional()?
                    .map(|text| {
                        // An unreadable stored status has nothing worth keeping.
                        let theirs = serde_json::from_str(&text).unwrap_or(Value::Null);
                        super::merge::three_way(base, status, &theirs)
                    }),
            };
            let n = match &stored {
                Some(stored) => tx
                    .prepare_cached("UPDATE objects SET status = ?3 WHERE kind = ?1 AND name = ?2")?
                    .execute(params![kind.as_str(), name, json_text(stored)])?,
                None => 0,
            };
            // A missing object gets nothing: no phase history, no events.
            if n > 0 {
                if kind == Kind::Worker
                    && let Some(phase) = stored
                        .as_ref()
                        .and_then(|s| s.get("phase"))
                        .and_then(Value::as_str)
                {
                    super::energy::note_phase(&tx, name, phase)?;
                }
                for e in events {
                    super::events::write_event(&tx, kind, name, e)?;
                }
            }
            tx.commit()?;
            Ok((stored.filter(|_| n > 0), before))
        })?;
        let Some(stored) = stored else {
            return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
        };
        self.status_written(kind, name, before, &stored);
        Ok(stored)
    }
}
