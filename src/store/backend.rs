//! `Store`: the one type the engine, CLI, daemon and gateway use, over either backend: the
//! embedded SQLite file (the default) or a shared etcd cluster. A closed enum rather than a
//! trait object: there are two backends, both known here, and every method forwards with a
//! `match` the compiler checks for completeness (a method one backend lacks does not build).

use super::energy::{PhaseChange, Sample};
use super::etcd::{EtcdLocation, EtcdStore};
use super::gateway::{CallState, LogLine, LogQuery, QueuedCall};
use super::{
    ApplyOutcome, Attempt, DesiredObject, Event, EventNote, EventType, Result, Run, RunCounts,
    RunPhase, SqliteStore, StoredObject,
};
use crate::manifest::Kind;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

pub enum Store {
    Sqlite(SqliteStore),
    Etcd(Box<EtcdStore>),
}

/// The store this process uses: `Some` an etcd cluster, `None` the state dir's SQLite file.
/// Set once, by the CLI's `--store` / `MICROFAAS_STORE` before anything is read, else by the
/// manifests' `Cluster.spec.store`; unset means SQLite.
static SELECTED: OnceLock<Option<EtcdLocation>> = OnceLock::new();

/// The command's own choice (`None`: SQLite); it stands over any manifest's.
pub fn select(location: Option<EtcdLocation>) {
    let _ = SELECTED.set(location);
}

/// The store the manifests declare, used unless the command chose one. Returns the store in
/// force.
pub fn select_declared(location: EtcdLocation) -> Option<&'static EtcdLocation> {
    SELECTED.get_or_init(|| Some(location)).as_ref()
}

/// The etcd store this process was pointed at, if any.
pub fn selected_etcd() -> Option<&'static EtcdLocation> {
    SELECTED.get().and_then(Option::as_ref)
}

macro_rules! forward {
    (@one [$($m:meta)*] read $name:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$m])*
        pub fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                Store::Sqlite(s) => s.$name($($arg),*),
                Store::Etcd(e) => e.$name($($arg),*),
            }
        }
    };
    (@one [$($m:meta)*] write $name:ident ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        $(#[$m])*
        pub fn $name(&mut self $(, $arg: $ty)*) -> $ret {
            match self {
                Store::Sqlite(s) => s.$name($($arg),*),
                Store::Etcd(e) => e.$name($($arg),*),
            }
        }
    };
    ($( $(#[$m:meta])* $access:ident fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty; )*) => {
        impl Store {
            $( forward!(@one [$($m)*] $access $name ($($arg: $ty),*) -> $ret); )*
        }
    };
}

impl Store {
    /// The spec of `kind/name` parsed as `T` (on SQLite, the cached parse while its text is
    /// unchanged); `None` when there is no such object.
    pub fn spec_of<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<std::sync::Arc<T>>> {
        match self {
            Store::Sqlite(s) => s.spec_of(kind, name),
            Store::Etcd(e) => e
                .get(kind, name)?
                .map(|o| super::specs::parse_stored(&o))
                .transpose(),
        }
    }

    /// `kind/name`'s status alone, parsed as `T`; `None` when there is no such object.
    pub fn status_of<T: serde::de::DeserializeOwned>(
        &self,
        kind: Kind,
        name: &str,
    ) -> Result<Option<T>> {
        match self {
            Store::Sqlite(s) => s.status_of(kind, name),
            Store::Etcd(e) => e
                .get(kind, name)?
                .map(|o| {
                    serde_json::from_value(o.status).map_err(|e| super::StoreError::Corrupt {
                        what: format!("status of {}/{name}", kind.singular()),
                        detail: e.to_string(),
                    })
                })
                .transpose(),
        }
    }

    /// Every object of `kind`, by name, with its spec parsed as `T` and its status's `health`.
    pub fn specs_of_kind<T: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
    ) -> Result<Vec<super::specs::SpecEntry<T>>> {
        match self {
            Store::Sqlite(s) => s.specs_of_kind(kind),
            Store::Etcd(e) => e
                .list(Some(kind))?
                .iter()
                .map(|o| {
                    Ok(super::specs::SpecEntry {
                        name: o.name.clone(),
                        spec: super::specs::parse_stored(o)?,
                        health: super::specs::stored_health(o),
                    })
                })
                .collect(),
        }
    }

    /// The store of `dir` (its SQLite file, created and migrated as needed), or the etcd store
    /// this process selected.
    pub fn open(dir: &Path) -> Result<Store> {
        match selected_etcd() {
            Some(loc) => Store::open_etcd(loc),
            None => Ok(Store::Sqlite(SqliteStore::open(dir)?)),
        }
    }

    pub fn open_etcd(location: &EtcdLocation) -> Result<Store> {
        Ok(Store::Etcd(Box::new(EtcdStore::open(location)?)))
    }

    /// Another connection to the same SQLite file, for a user that must not wait behind this
    /// store's: the invocation recorder (its fsyncs) and the dispatch path's reads. SQLite's
    /// WAL lets readers go on during a commit (writers wait only briefly). `None` for etcd,
    /// whose requests are remote calls that may as well share one client.
    pub fn own_connection(&self) -> Option<Result<Store>> {
        match self {
            Store::Sqlite(s) => Some(s.another_connection().map(Store::Sqlite)),
            Store::Etcd(_) => None,
        }
    }

    /// The SQLite file, or the etcd URL (`etcd://ENDPOINTS/PREFIX`).
    pub fn path(&self) -> &Path {
        match self {
            Store::Sqlite(s) => s.path(),
            Store::Etcd(e) => e.path(),
        }
    }

    /// Committed writes of this store: of this process for SQLite, of any process for etcd
    /// (a watch on its prefix).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        match self {
            Store::Sqlite(s) => super::feed::subscribe(s.path()),
            Store::Etcd(e) => e.changes(),
        }
    }
}

forward! {
    read fn get(kind: Kind, name: &str) -> Result<Option<StoredObject>>;
    /// Objects of a kind (all kinds when `None`), ordered by kind then name.
    read fn list(kind: Option<Kind>) -> Result<Vec<StoredObject>>;
    /// Stores a complete desired state: every object created, configured (generation + 1 when
    /// its spec changed) or unchanged; with `prune`, objects applied from the same `applyset`
    /// before and absent now are deleted; with `dry_run` nothing changes.
    write fn apply(objects: &[DesiredObject], applyset: Option<(&str, &[String])>, prune: bool, dry_run: bool) -> Result<Vec<(Kind, String, ApplyOutcome)>>;
    /// Removes an object and, for a WorkerSet, the workers it made. Returns what was removed.
    write fn delete(kind: Kind, name: &str) -> Result<Vec<(Kind, String)>>;
    /// Replaces an object's status; a worker's phase change also goes to its phase history.
    write fn set_status(kind: Kind, name: &str, status: &Value) -> Result<()>;
    /// A status edited from `base` (the one its writer read), merged with what was stored
    /// since, and the events of the same transition (one SQLite transaction). Returns the
    /// status stored.
    write fn update_status(kind: Kind, name: &str, base: Option<&Value>, status: &Value, events: &[EventNote]) -> Result<Value>;
    write fn request_deletion(kind: Kind, name: &str) -> Result<()>;
    read fn deletion_requested(kind: Kind, name: &str) -> Result<bool>;
    read fn desired_revisions() -> Result<BTreeMap<(Kind, String), String>>;
    write fn record_event(kind: Kind, name: &str, event_type: EventType, reason: &str, message: &str) -> Result<()>;
    /// Events noted earlier, each with the time it was noted, in one transaction on SQLite.
    write fn record_events(kind: Kind, name: &str, events: &[EventNote]) -> Result<()>;
    read fn event_counts(kind: Kind, reason: &str) -> Result<Vec<(String, u64)>>;
    read fn events(kind: Kind, name: &str, limit: usize) -> Result<Vec<Event>>;
    read fn recent_events(limit: usize) -> Result<Vec<Event>>;
    write fn start_run(workload: &str, generation: i64) -> Result<i64>;
    write fn set_run_counts(workload: &str, run: i64, counts: &RunCounts) -> Result<()>;
    write fn finish_run(workload: &str, run: i64, phase: RunPhase, counts: &RunCounts, message: &str) -> Result<()>;
    read fn run(workload: &str, run: i64) -> Result<Option<Run>>;
    read fn latest_run(workload: &str) -> Result<Option<Run>>;
    write fn record_attempt(a: &Attempt) -> Result<()>;
    write fn record_attempts(attempts: &[&Attempt]) -> Result<Vec<Result<()>>>;
    read fn attempts(workload: &str, run: i64) -> Result<Vec<Attempt>>;
    read fn attempts_since(workload: &str, run: i64, after_row: i64) -> Result<Vec<(i64, Attempt)>>;
    write fn close_runs(workload: &str, clean: bool, message: &str) -> Result<()>;
    write fn record_sample(s: &Sample) -> Result<()>;
    read fn samples(meter: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Sample>>;
    read fn latest_sample(meter: &str) -> Result<Option<Sample>>;
    read fn phase_history(worker: &str, from_ms: i64, to_ms: i64) -> Result<Vec<PhaseChange>>;
    write fn record_phase_at(worker: &str, at_ms: i64, phase: &str) -> Result<()>;
    write fn enqueue_call(call_id: &str, function: &str, input: &Value, callback_url: Option<&str>) -> Result<()>;
    read fn pending_calls() -> Result<Vec<QueuedCall>>;
    read fn call_state(call_id: &str) -> Result<Option<CallState>>;
    write fn finish_call(call_id: &str, code: u16, result: &[u8], headers: &Value) -> Result<()>;
    write fn callback_tried(call_id: &str, final_state: Option<CallState>) -> Result<()>;
    write fn set_scale(function: &str, replicas: u32) -> Result<()>;
    write fn delete_scale(function: &str) -> Result<()>;
    read fn scales() -> Result<Vec<(String, u32)>>;
    read fn gateway_invocations(function: &str) -> Result<u64>;
    read fn gateway_log(function: &str, q: LogQuery) -> Result<Vec<LogLine>>;
}
