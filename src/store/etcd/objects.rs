//! Desired objects and their status in etcd: apply (create / configure / unchanged / prune)
//! as compare-and-swap transactions, reads, deletes, status writes, deletion marks and the
//! desired-state revisions the daemon polls.

use super::client::{self, Kv, RangeOpts};
use super::{EtcdStore, decode, encode, segment};
use crate::manifest::Kind;
use crate::store::{ApplyOutcome, DesiredObject, Result, StoreError, StoredObject, clock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The `spec` record of an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ObjectRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    spec: Value,
    generation: i64,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    applyset: Option<String>,
    #[serde(default)]
    source: Option<String>,
    created_at: String,
    updated_at: String,
    #[serde(default)]
    deletion_requested_at: Option<String>,
}

/// An object as read: its record, the record's mod revision, and its status.
struct Read {
    kind: Kind,
    name: String,
    record: ObjectRecord,
    rev: i64,
    status: Value,
}

/// Objects in a transaction at most: etcd refuses more than 128 operations by default
/// (`--max-txn-ops`), and an object takes two.
const PER_TXN: usize = 60;

impl EtcdStore {
    fn object_prefix(&self, kind: Kind, name: &str) -> String {
        self.key(&format!("obj/{}/{name}/", kind.as_str()))
    }

    /// Groups `obj/KIND/NAME/{spec,status}` keys into objects (keys arrive sorted, so
    /// an object's two keys are neighbours).
    fn assemble(&self, kvs: Vec<Kv>) -> Result<Vec<Read>> {
        let base = self.key("obj/");
        let mut out: Vec<Read> = Vec::new();
        let mut statuses: HashMap<(String, String), Value> = HashMap::new();
        for kv in kvs {
            let Some(rest) = kv.key.strip_prefix(&base) else {
                continue;
            };
            let mut parts = rest.splitn(3, '/');
            let (Some(kind), Some(name), Some(field)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            match field {
                "spec" => {
                    // Kinds this build does not know are skipped, as the SQLite store does.
                    let Ok(k) = kind.parse::<Kind>() else {
                        continue;
                    };
                    out.push(Read {
                        kind: k,
                        name: name.to_string(),
                        record: decode(&kv)?,
                        rev: kv.mod_revision,
                        status: json!({}),
                    });
                }
                "status" => {
                    statuses.insert((kind.to_string(), name.to_string()), decode(&kv)?);
                }
                _ => {}
            }
        }
        for r in &mut out {
            if let Some(s) = statuses.remove(&(r.kind.as_str().to_string(), r.name.clone())) {
                r.status = s;
            }
        }
        Ok(out)
    }

    fn read_all(&self, kind: Option<Kind>) -> Result<Vec<Read>> {
        let prefix = match kind {
            Some(k) => self.key(&format!("obj/{}/", k.as_str())),
            None => self.key("obj/"),
        };
        let kvs = self.range(&prefix, true, RangeOpts::default())?;
        self.assemble(kvs)
    }

    fn read_one(&self, kind: Kind, name: &str) -> Result<Option<Read>> {
        segment("name", name)?;
        let kvs = self.range(&self.object_prefix(kind, name), true, RangeOpts::default())?;
        Ok(self.assemble(kvs)?.into_iter().next())
    }

    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<StoredObject>> {
        Ok(self.read_one(kind, name)?.map(stored))
    }

    /// Objects of a kind (all kinds when `None`), ordered by kind then name (key order).
    pub fn list(&self, kind: Option<Kind>) -> Result<Vec<StoredObject>> {
        Ok(self.read_all(kind)?.into_iter().map(stored).collect())
    }

    pub fn apply(
        &mut self,
        objects: &[DesiredObject],
        applyset: Option<(&str, &[String])>,
        prune: bool,
        dry_run: bool,
    ) -> Result<Vec<(Kind, String, ApplyOutcome)>> {
        for o in objects {
            segment("name", &o.name)?;
        }
        if let Some((id, _)) = applyset {
            segment("applyset", id)?;
        }
        // A transaction that lost a race is retried from a fresh read; an object that an
        // earlier round already wrote keeps the outcome it got then.
        let mut first: HashMap<(Kind, String), ApplyOutcome> = HashMap::new();
        for _ in 0..super::CAS_TRIES {
            let now = clock::now();
            let current: HashMap<(Kind, String), Read> = self
                .read_all(None)?
                .into_iter()
                .map(|r| ((r.kind, r.name.clone()), r))
                .collect();
            let (outcomes, writes) = plan(objects, &current, applyset, prune, &now);
            if dry_run {
                return Ok(outcomes);
            }
            let mut all_ok = true;
            for chunk in writes.chunks(PER_TXN) {
                let mut compare = Vec::new();
                let mut ops = Vec::new();
                for w in chunk {
                    let prefix = self.object_prefix(w.kind, &w.name);
                    let spec_key = format!("{prefix}spec");
                    compare.push(client::unchanged_since(&spec_key, w.rev));
                    match &w.record {
                        Some(rec) => {
                            ops.push(client::put_op(&spec_key, &encode(rec)));
                            if w.rev == 0 {
                                ops.push(client::put_op(&format!("{prefix}status"), b"{}"));
                            }
                        }
                        None => ops.push(client::delete_prefix_op(&prefix)),
                    }
                }
                if !client::succeeded(&self.txn(compare, ops, vec![])?) {
                    all_ok = false;
                }
            }
            for (k, n, o) in &outcomes {
                if *o != ApplyOutcome::Unchanged {
                    first.entry((*k, n.clone())).or_insert(*o);
                }
            }
            if all_ok {
                if let Some((id, paths)) = applyset {
                    let rec = json!({ "paths": paths, "updated_at": now });
                    self.txn(
                        vec![],
                        vec![client::put_op(
                            &self.key(&format!("applysets/{id}")),
                            &encode(&rec),
                        )],
                        vec![],
                    )?;
                }
                return Ok(outcomes
                    .into_iter()
                    .map(|(k, n, o)| {
                        let o = first.get(&(k, n.clone())).copied().unwrap_or(o);
                        (k, n, o)
                    })
                    .collect());
            }
        }
        Err(StoreError::Etcd(
            "apply kept conflicting with other writers; nothing more was written".into(),
        ))
    }

    /// Removes an object and, for a WorkerSet, the workers it made. Returns what was removed.
    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<Vec<(Kind, String)>> {
        for _ in 0..super::CAS_TRIES {
            let Some(obj) = self.read_one(kind, name)? else {
                return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
            };
            let mut gone = vec![(kind, name.to_string(), obj.rev)];
            if kind == Kind::WorkerSet {
                for w in self.read_all(Some(Kind::Worker))? {
                    if w.record.owner.as_deref() == Some(name) {
                        gone.push((Kind::Worker, w.name, w.rev));
                    }
                }
            }
            let compare = gone
                .iter()
                .map(|(k, n, rev)| {
                    client::unchanged_since(&format!("{}spec", self.object_prefix(*k, n)), *rev)
                })
                .collect();
            let ops = gone
                .iter()
                .map(|(k, n, _)| client::delete_prefix_op(&self.object_prefix(*k, n)))
                .collect();
            if client::succeeded(&self.txn(compare, ops, vec![])?) {
                return Ok(gone.into_iter().map(|(k, n, _)| (k, n)).collect());
            }
        }
        Err(StoreError::Etcd(format!(
            "delete {}/{name} kept conflicting with other writers",
            kind.singular()
        )))
    }

    /// Replaces an object's status; a worker's phase change is also appended to its phase
    /// history.
    pub fn set_status(&mut self, kind: Kind, name: &str, status: &Value) -> Result<()> {
        self.put_status(kind, name, None, status).map(drop)
    }

    /// Writes `status`, edited from `base`, merged with what was stored since (see the SQLite
    /// store's `update_status`): a compare-and-swap on the status key, guarded by the
    /// object's existence; the old status comes back from the same transaction.
    pub(super) fn put_status(
        &mut self,
        kind: Kind,
        name: &str,
        base: Option<&Value>,
        status: &Value,
    ) -> Result<Value> {
        segment("name", name)?;
        let prefix = self.object_prefix(kind, name);
        let (spec_key, status_key) = (format!("{prefix}spec"), format!("{prefix}status"));
        for attempt in 0..super::CAS_TRIES {
            let mut compares = vec![client::present(&spec_key)];
            let stored = match base {
                None => status.clone(),
                // First the likely case, in one round trip: nobody wrote it since it was read
                // (a decoded status encodes back to the same bytes).
                Some(base) if attempt == 0 => {
                    compares.push(client::holds(&status_key, &encode(base)));
                    status.clone()
                }
                Some(base) => {
                    let kv = self.get_kv(&status_key)?;
                    compares.push(client::unchanged_since(
                        &status_key,
                        kv.as_ref().map_or(0, |k| k.mod_revision),
                    ));
                    // No status key is the empty status; an unreadable one has nothing worth
                    // keeping.
                    let theirs = match &kv {
                        None => json!({}),
                        Some(kv) => decode::<Value>(kv).unwrap_or(Value::Null),
                    };
                    crate::store::merge::three_way(base, status, &theirs)
                }
            };
            let answer = self.txn(
                compares,
                vec![
                    client::range_op(&status_key, false),
                    client::put_op(&status_key, &encode(&stored)),
                ],
                vec![client::range_op(&spec_key, false)],
            )?;
            if !client::succeeded(&answer) {
                let spec = Self::first_kv(&answer, &spec_key)?;
                if spec.is_none() {
                    return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
                }
                // Written by another writer since it was read: merge again.
                continue;
            }
            if kind == Kind::Worker
                && let Some(phase) = stored.get("phase").and_then(Value::as_str)
            {
                let old: Option<Value> = Self::first_kv(&answer, &status_key)?
                    .map(|kv| decode(&kv))
                    .transpose()?;
                let old_phase = old
                    .as_ref()
                    .and_then(|s| s.get("phase"))
                    .and_then(Value::as_str);
                if old_phase != Some(phase) {
                    self.note_phase(name, clock::now_millis(), phase)?;
                }
            }
            return Ok(stored);
        }
        Err(StoreError::Etcd(format!(
            "status of {}/{name}: still contended after {} compare-and-swap attempts",
            kind.singular(),
            super::CAS_TRIES
        )))
    }

    /// The key a txn's first range answer holds, if any.
    fn first_kv(answer: &Value, key: &str) -> Result<Option<Kv>> {
        Ok(client::responses(answer)
            .first()
            .and_then(|r| r.get("response_range"))
            .map(client::kvs)
            .transpose()
            .map_err(|e| super::corrupt(key, e))?
            .and_then(|kvs| kvs.into_iter().next()))
    }

    /// Marks an object for deletion; `NotFound` when there is no such object.
    pub fn request_deletion(&mut self, kind: Kind, name: &str) -> Result<()> {
        segment("name", name)?;
        let key = format!("{}spec", self.object_prefix(kind, name));
        self.update(&key, |rec: Option<ObjectRecord>| {
            let Some(mut rec) = rec else {
                return Err(StoreError::NotFound(format!("{}/{name}", kind.singular())));
            };
            if rec.deletion_requested_at.is_some() {
                return Ok((None, ()));
            }
            rec.deletion_requested_at = Some(clock::now());
            Ok((Some(rec), ()))
        })
    }

    pub fn deletion_requested(&self, kind: Kind, name: &str) -> Result<bool> {
        Ok(self
            .read_one(kind, name)?
            .is_some_and(|r| r.record.deletion_requested_at.is_some()))
    }

    /// Per object, a string that changes whenever its desired state does (see the SQLite
    /// store's doc): the same fields, read from both keys of every object.
    pub fn desired_revisions(&self) -> Result<BTreeMap<(Kind, String), String>> {
        Ok(self
            .read_all(None)?
            .into_iter()
            .map(|r| {
                let rerun = r.status.get("rerunRequested").map_or(0, |v| {
                    i64::from(v.as_bool().unwrap_or(false)) + v.as_i64().unwrap_or(0)
                });
                let power = r
                    .status
                    .pointer("/powerRequest/id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                (
                    (r.kind, r.name),
                    format!(
                        "{}|{}|{}|{rerun}|{power}",
                        r.record.generation,
                        r.record.updated_at,
                        r.record.deletion_requested_at.is_some()
                    ),
                )
            })
            .collect())
    }
}

fn stored(r: Read) -> StoredObject {
    StoredObject {
        kind: r.kind,
        name: r.name,
        labels: r.record.labels,
        annotations: r.record.annotations,
        spec: r.record.spec,
        generation: r.record.generation,
        status: r.status,
        owner: r.record.owner,
        source: r.record.source,
        created_at: r.record.created_at,
        updated_at: r.record.updated_at,
    }
}

/// One object write of an apply: the new record (`None`: delete) if the key is still at `rev`.
struct Write {
    kind: Kind,
    name: String,
    rev: i64,
    record: Option<ObjectRecord>,
}

/// The outcomes and writes of an apply over `current`, by the SQLite store's rules.
fn plan(
    objects: &[DesiredObject],
    current: &HashMap<(Kind, String), Read>,
    applyset: Option<(&str, &[String])>,
    prune: bool,
    now: &str,
) -> (Vec<(Kind, String, ApplyOutcome)>, Vec<Write>) {
    let set_id = applyset.map(|(id, _)| id.to_string());
    let mut outcomes = Vec::new();
    let mut writes = Vec::new();
    for obj in objects {
        let old = current.get(&(obj.kind, obj.name.clone()));
        let (outcome, record) = match old {
            None => (
                ApplyOutcome::Created,
                ObjectRecord {
                    labels: obj.labels.clone(),
                    annotations: obj.annotations.clone(),
                    spec: obj.spec.clone(),
                    generation: 1,
                    owner: obj.owner.clone(),
                    applyset: set_id.clone(),
                    source: obj.source.clone(),
                    created_at: now.to_string(),
                    updated_at: now.to_string(),
                    deletion_requested_at: None,
                },
            ),
            Some(old) => {
                let o = &old.record;
                let spec_changed = o.spec != obj.spec;
                let meta_changed = o.labels != obj.labels
                    || o.annotations != obj.annotations
                    || o.owner != obj.owner;
                let changed = spec_changed || meta_changed;
                (
                    if changed {
                        ApplyOutcome::Configured
                    } else {
                        ApplyOutcome::Unchanged
                    },
                    ObjectRecord {
                        labels: obj.labels.clone(),
                        annotations: obj.annotations.clone(),
                        spec: obj.spec.clone(),
                        generation: o.generation + i64::from(spec_changed),
                        owner: obj.owner.clone(),
                        applyset: set_id.clone().or_else(|| o.applyset.clone()),
                        source: obj.source.clone().or_else(|| o.source.clone()),
                        created_at: o.created_at.clone(),
                        updated_at: if changed {
                            now.to_string()
                        } else {
                            o.updated_at.clone()
                        },
                        deletion_requested_at: None,
                    },
                )
            }
        };
        // An unchanged record is not rewritten: a re-apply of 1,000 objects costs no writes.
        if old.is_none_or(|o| o.record != record) {
            writes.push(Write {
                kind: obj.kind,
                name: obj.name.clone(),
                rev: old.map_or(0, |o| o.rev),
                record: Some(record),
            });
        }
        outcomes.push((obj.kind, obj.name.clone(), outcome));
    }
    if let (Some(id), true) = (&set_id, prune) {
        let keep: HashSet<(Kind, &str)> =
            objects.iter().map(|o| (o.kind, o.name.as_str())).collect();
        let mut stale: Vec<&Read> = current
            .values()
            .filter(|r| r.record.applyset.as_deref() == Some(id.as_str()))
            .filter(|r| !keep.contains(&(r.kind, r.name.as_str())))
            .collect();
        stale.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
        for r in stale {
            writes.push(Write {
                kind: r.kind,
                name: r.name.clone(),
                rev: r.rev,
                record: None,
            });
            outcomes.push((r.kind, r.name.clone(), ApplyOutcome::Pruned));
        }
    }
    (outcomes, writes)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    /// A status write's first try compares the stored bytes with its base encoded again
    /// (`put_status`): one round trip only while a decoded status encodes back to the bytes
    /// it was decoded from, floats, escapes and nesting included.
    #[test]
    fn a_decoded_status_encodes_back_to_its_bytes() {
        let status = json!({
            "phase": "Ready", "observedGeneration": 3, "bootSeconds": 0.712_345_678_901_234_5,
            "watts": 1.0e-7, "big": 12_345_678_901_234_567_u64, "neg": -2.5,
            "note": "quote \" slash / tab \t é ☃",
            "vm": {"uuid": "u", "specHash": "abc", "place": {"host": "h", "bootId": "b"}},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentConnected",
                            "message": "", "lastTransitionTime": "2026-12-08T01:02:03.004Z"}]
        });
        let stored = super::encode(&status);
        let read: Value = serde_json::from_slice(&stored).expect("decode");
        assert_eq!(super::encode(&read), stored);
    }
}
