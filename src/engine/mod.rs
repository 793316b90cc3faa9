//! The controller runtime: a work queue of objects, bounded concurrent reconciles with
//! per-object backoff, a periodic resync, and triggers from drivers (VM exits) and agents
//! (connects, disconnects). Reconcile is level-triggered: observe, compare, act once, record.

pub mod backoff;
pub mod board;
mod lifecycle;
pub mod operator;
pub mod ownership;
pub mod placement;
pub mod quarantine;
pub mod queue;
pub mod status;
mod switch;
pub mod vm;
mod worker;

use crate::manifest::Kind;
use crate::manifest::types::{ClusterSpec, Defaults};
use crate::store::committer::Committer;
use crate::store::{EventNote, EventType, Store, StoredObject};
use backoff::Backoff;
use queue::WorkQueue;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use vm::{Presence, VmDriver};

pub use worker::{BUSY_SHOWN_AFTER, WorkerRuntime};

pub type Key = (Kind, String);

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    RequeueAfter(Duration),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    /// Port of the agent endpoint on the host (guests reach it through a guestfwd).
    pub orchestrator_port: u16,
    /// The cluster token agents prove they know.
    pub token: String,
    /// Initramfs used for VMs that name none.
    pub default_initrd: Option<PathBuf>,
    pub concurrency: usize,
    pub resync: Duration,
}

pub struct Engine<D: VmDriver, P: Presence> {
    pub store: Arc<Mutex<Store>>,
    /// Commits invocation attempts in groups, on its own SQLite connection (through `store`
    /// on etcd).
    pub recorder: Committer,
    /// A read-only use of its own SQLite connection for the dispatch path (a call's worker
    /// and function lookups), so a call never waits behind a status write that itself waits
    /// for the recorder's fsync (WAL readers do not wait for writers). Every write the engine
    /// makes is committed before it returns, so this connection sees it at its next read.
    /// `None` on etcd: reads go through `store`.
    reader: Option<Mutex<Store>>,
    pub driver: Arc<D>,
    pub presence: Arc<P>,
    pub queue: Arc<WorkQueue<Key>>,
    pub cfg: Config,
    backoff: Mutex<Backoff<Key>>,
    /// Shared with the timers of [`Self::set_busy`].
    runtime: Arc<Mutex<HashMap<String, WorkerRuntime>>>,
    /// OnDemand workers currently wanted on, with how many requests hold them.
    demand: Mutex<HashMap<String, usize>>,
    /// Bumped after every status write, so waiters (apply) re-check convergence.
    changed: watch::Sender<u64>,
    /// Starts a workload run in the background (set by whoever hosts the agent endpoint).
    starter: Mutex<Option<Starter>>,
    /// Workloads with a run in progress in this process.
    running: Mutex<std::collections::HashSet<String>>,
    /// Objects reconciled successfully at least once by this process: a stored status written
    /// by an earlier process is not evidence of the present.
    seen: Mutex<std::collections::HashSet<Key>>,
    /// One SNMP session per switch, with the spec it was made from.
    switches: Mutex<HashMap<String, (serde_json::Value, Arc<crate::drivers::snmp::SnmpSwitch>)>>,
    /// Power buttons and power-state bookkeeping of board workers.
    boards: board::Boards,
    /// Failed reconciles per kind since this engine started (for metrics).
    reconcile_errors: Mutex<HashMap<Kind, u64>>,
    /// Invocations waiting in the queues of each running workload (for metrics).
    queue_depths: Mutex<HashMap<String, usize>>,
    /// Set while an invocation cannot be recorded (disk full, I/O error): meanwhile no work is
    /// taken, since nothing it does could be recorded. Cleared when a retried record commits.
    storage_fault: Mutex<Option<(String, std::time::Instant)>>,
    /// On a store shared by several orchestrators: what this one holds (unset: everything).
    ownership: std::sync::OnceLock<Arc<ownership::Ownership>>,
    /// Events noted by a reconcile, written with its status write ([`Self::note_event`]).
    notes: Mutex<Vec<(Key, EventNote)>>,
}

/// Status field set by `microfaasctl rerun` and cleared when the new run starts.
pub const RERUN: &str = "rerunRequested";

/// Called with a workload's name to start its run for the current generation.
pub type Starter = Arc<dyn Fn(String) + Send + Sync>;

fn log_event(kind: Kind, name: &str, t: EventType, reason: &str, message: &str) {
    let object = format!("{}/{name}", kind.singular());
    match t {
        EventType::Normal => tracing::info!(object, reason, "{message}"),
        EventType::Warning => tracing::warn!(object, reason, "{message}"),
    }
}

/// Runs `f`, which may wait (for SQLite's write lock), off the async runtime's worker threads
/// when it runs on one: the runtime hands that thread's other tasks to another thread.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<D: VmDriver, P: Presence> Engine<D, P> {
    pub fn new(store: Store, driver: Arc<D>, presence: Arc<P>, cfg: Config) -> Arc<Self> {
        let writer = match store.own_connection() {
            Some(Ok(own)) => Some(Arc::new(Mutex::new(own))),
            Some(Err(e)) => {
                tracing::warn!("invocation recorder shares the engine's connection: {e}");
                None
            }
            None => None,
        };
        let reader = match store.own_connection() {
            Some(Ok(own)) => Some(Mutex::new(own)),
            Some(Err(e)) => {
                tracing::warn!("dispatch reads share the engine's connection: {e}");
                None
            }
            None => None,
        };
        let store = Arc::new(Mutex::new(store));
        Arc::new(Engine {
            reader,
            recorder: Committer::start(writer.unwrap_or_else(|| store.clone())),
            store,
            driver,
            presence,
            queue: WorkQueue::new(),
            cfg,
            backoff: Mutex::new(Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(30),
            )),
            runtime: Arc::new(Mutex::new(HashMap::new())),
            demand: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
            starter: Mutex::new(None),
            running: Mutex::new(std::collections::HashSet::new()),
            seen: Mutex::new(std::collections::HashSet::new()),
            switches: Mutex::new(HashMap::new()),
            boards: board::Boards::default(),
            reconcile_errors: Mutex::new(HashMap::new()),
            queue_depths: Mutex::new(HashMap::new()),
            storage_fault: Mutex::new(None),
            ownership: std::sync::OnceLock::new(),
            notes: Mutex::new(Vec::new()),
        })
    }

    /// Records that invocations cannot be recorded (`why`: the store's error); the first one
    /// is logged as an error and pauses dispatch ([`Self::storage_fault`]). No event: the
    /// store is what cannot be written.
    pub fn storage_failed(&self, why: &str) {
        let mut f = lock(&self.storage_fault);
        if f.is_none() {
            tracing::error!(
                reason = "StorageFailed",
                "cannot record invocations, taking no work until the store can: {why}"
            );
            *f = Some((why.to_string(), std::time::Instant::now()));
        }
    }

    /// A record the store had refused to write committed after `tries` tries: work resumes.
    /// The first to see it names the recovery in the log and as an event on `workload`.
    pub fn storage_recovered(&self, workload: &str, tries: u32) {
        let Some((why, since)) = lock(&self.storage_fault).take() else {
            return;
        };
        self.event(
            Kind::Workload,
            workload,
            EventType::Normal,
            "StorageRecovered",
            &format!(
                "invocations are recorded again after {:.1} s ({tries} tries); taking work again (was: {why})",
                since.elapsed().as_secs_f64()
            ),
        );
        self.bump();
    }

    /// Why invocations cannot be recorded, while they cannot.
    pub fn storage_fault(&self) -> Option<String> {
        lock(&self.storage_fault).as_ref().map(|f| f.0.clone())
    }

    /// Shares the store with other orchestrators: act only on what `o` holds, while it holds
    /// it. Set once, before the engine runs.
    pub fn set_ownership(&self, o: Arc<ownership::Ownership>) {
        let _ = self.ownership.set(o);
    }

    pub fn ownership(&self) -> Option<&Arc<ownership::Ownership>> {
        self.ownership.get()
    }

    /// Whether this engine may power, reconcile or dispatch to `kind/name` now.
    pub fn may_act(&self, kind: Kind, name: &str) -> bool {
        self.ownership.get().is_none_or(|o| o.may_act(kind, name))
    }

    /// Failed reconciles per kind since this engine started.
    pub fn reconcile_errors(&self) -> Vec<(Kind, u64)> {
        lock(&self.reconcile_errors)
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect()
    }

    /// Set by a workload run as its queues change.
    pub fn set_queue_depth(&self, workload: &str, depth: usize) {
        lock(&self.queue_depths).insert(workload.to_string(), depth);
    }

    pub fn queue_depths(&self) -> Vec<(String, usize)> {
        lock(&self.queue_depths)
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    /// Whether this process has reconciled the object at least once.
    pub fn has_seen(&self, key: &Key) -> bool {
        lock(&self.seen).contains(key)
    }

    pub fn set_starter(&self, f: Starter) {
        *lock(&self.starter) = Some(f);
    }

    /// Called by a run when it has ended, so a new generation can start the next one.
    pub fn run_finished(&self, workload: &str) {
        lock(&self.running).remove(workload);
        self.queue.add((Kind::Workload, workload.to_string()));
    }

    /// A Workload runs once per generation, like a Job: start a run when the current
    /// generation has none; a run left `Running` by a process that died is marked Cancelled.
    async fn reconcile_workload(&self, name: &str) -> Result<Next, String> {
        let Some(obj) = self.get(Kind::Workload, name) else {
            return Ok(Next::Done);
        };
        let latest = self
            .with_store(|s| s.latest_run(name))
            .map_err(|e| e.to_string())?;
        let in_progress = lock(&self.running).contains(name);
        // On a shared store a run left by an orchestrator that lost its lease is carried on
        // here: this engine holds the workload now, so no one else runs it.
        let resume = self.ownership.get().is_some();
        if let Some(run) = &latest
            && run.phase == crate::store::invocations::RunPhase::Running
            && !in_progress
            && resume
            && let Some(start) = lock(&self.starter).clone()
        {
            lock(&self.running).insert(name.to_string());
            start(name.to_string());
            return Ok(Next::Done);
        }
        if let Some(run) = &latest
            && run.phase == crate::store::invocations::RunPhase::Running
            && !in_progress
        {
            let msg = "the engine running it stopped before it finished";
            self.with_store(|s| {
                s.finish_run(
                    name,
                    run.run,
                    crate::store::invocations::RunPhase::Cancelled,
                    &run.counts,
                    msg,
                )
            })
            .map_err(|e| e.to_string())?;
            let mut st = status::Status::from_value(&obj.status);
            st.set_phase("Cancelled")
                .set("run", serde_json::json!(run.run))
                .condition("Complete", status::CondStatus::True, "Cancelled", msg);
            self.write_status(Kind::Workload, name, &mut st);
            self.event(
                Kind::Workload,
                name,
                EventType::Warning,
                "Cancelled",
                &format!("run {}: {msg}", run.run),
            );
            return Ok(Next::Done);
        }
        let has_run = latest
            .as_ref()
            .is_some_and(|r| r.generation == obj.generation);
        // `microfaasctl rerun` asks for one more run of the same generation.
        let rerun = obj.status.get(RERUN) == Some(&serde_json::Value::Bool(true));
        if (!has_run || rerun) && !in_progress {
            let starter = lock(&self.starter).clone();
            if let Some(start) = starter {
                lock(&self.running).insert(name.to_string());
                start(name.to_string());
            } else {
                let mut st = status::Status::from_value(&obj.status);
                if st.phase().is_none() {
                    st.set_phase("Pending");
                    self.write_status(Kind::Workload, name, &mut st);
                }
            }
        }
        Ok(Next::Done)
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `f` on the engine's store. A reconcile's write can wait for the recorder's fsync
    /// (one SQLite writer at a time), and a read for that write: when the store is taken, the
    /// wait happens off the async runtime's worker threads, so agent sessions and calls go on
    /// meanwhile (on 2 cores, two reconciles waiting had stalled every session).
    pub fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match self.store.try_lock() {
            Ok(mut s) => f(&mut s),
            Err(std::sync::TryLockError::Poisoned(p)) => f(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => blocking(|| f(&mut lock(&self.store))),
        }
    }

    /// Reads through the dispatch path's own connection ([`Self::reader`]); `f` must not
    /// write.
    pub fn with_reader<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        match &self.reader {
            Some(r) => f(&mut lock(r)),
            None => self.with_store(f),
        }
    }

    /// Cluster-wide defaults: the declared Cluster's, or the built-in ones.
    pub fn defaults(&self) -> Defaults {
        self.cluster_spec()
            .map(|c| c.defaults.clone())
            .unwrap_or_default()
    }

    pub fn cluster(&self) -> Option<ClusterSpec> {
        self.cluster_spec().map(|c| (*c).clone())
    }

    /// The declared Cluster's spec (the first by name), parsed once per change: every
    /// reconcile and call reads its defaults.
    fn cluster_spec(&self) -> Option<Arc<ClusterSpec>> {
        self.with_store(|s| s.specs_of_kind::<ClusterSpec>(Kind::Cluster))
            .ok()?
            .into_iter()
            .next()
            .map(|c| c.spec)
    }

    pub fn event(&self, kind: Kind, name: &str, t: EventType, reason: &str, message: &str) {
        log_event(kind, name, t, reason, message);
        if let Err(e) =
            blocking(|| self.with_store(|s| s.record_event(kind, name, t, reason, message)))
        {
            tracing::warn!("cannot record event: {e}");
        }
    }

    /// An event of the transition a reconcile is making: logged now, stored with that
    /// reconcile's status write (one transaction for both), or at its end if it writes none.
    /// Not for what must be on record before an action starts (a press): use [`Self::event`].
    pub(crate) fn note_event(
        &self,
        kind: Kind,
        name: &str,
        t: EventType,
        reason: &str,
        message: &str,
    ) {
        log_event(kind, name, t, reason, message);
        lock(&self.notes).push(((kind, name.to_string()), EventNote::now(t, reason, message)));
    }

    /// The noted events of `kind/name`, taken out of the queue.
    fn take_notes(&self, kind: Kind, name: &str) -> Vec<EventNote> {
        let mut notes = lock(&self.notes);
        if notes.is_empty() {
            return Vec::new();
        }
        let (mine, rest) = std::mem::take(&mut *notes)
            .into_iter()
            .partition::<Vec<_>, _>(|((k, n), _)| *k == kind && n == name);
        *notes = rest;
        mine.into_iter().map(|(_, e)| e).collect()
    }

    /// Stores the events noted for `kind/name` that no status write took.
    fn flush_notes(&self, kind: Kind, name: &str) {
        self.record_events(kind, name, self.take_notes(kind, name));
    }

    /// Stores noted events on their own, with the times they were noted.
    fn record_events(&self, kind: Kind, name: &str, events: Vec<EventNote>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = blocking(|| self.with_store(|s| s.record_events(kind, name, &events))) {
            tracing::warn!("cannot record events: {e}");
        }
    }

    /// Writes `st`, merged with what another writer stored since `st` was read (an operator's
    /// uncordon or power request, a meter's sampler), and carries `st` on from the result.
    pub fn write_status(&self, kind: Kind, name: &str, st: &mut status::Status) {
        let events = self.take_notes(kind, name);
        if let Err(e) = blocking(|| self.with_store(|s| st.save(s, kind, name, &events))) {
            tracing::debug!("status of {}/{name} not written: {e}", kind.singular());
            // The events stand without the status (an object deleted meanwhile keeps them).
            self.record_events(kind, name, events);
        }
        self.bump();
    }

    /// [`Self::write_status`] when `st` differs from the status it was read or last written
    /// as; only the waiters are told otherwise (a reconcile that changed nothing still counts
    /// as one for them).
    pub fn write_changed_status(&self, kind: Kind, name: &str, st: &mut status::Status) {
        if st.changed() {
            self.write_status(kind, name, st);
        } else {
            self.bump();
        }
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<StoredObject> {
        self.with_store(|s| s.get(kind, name)).ok().flatten()
    }

    /// Asks for an OnDemand worker to be on (counted; `release` undoes one request).
    pub fn want(&self, worker: &str) {
        let first = {
            let mut d = lock(&self.demand);
            let n = d.entry(worker.to_string()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            self.demand_changed(worker);
        }
    }

    pub fn release(&self, worker: &str) {
        let mut d = lock(&self.demand);
        let last = match d.get_mut(worker) {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if last {
            d.remove(worker);
        }
        drop(d);
        if last {
            self.demand_changed(worker);
        }
    }

    /// A worker became wanted or unwanted: only an OnDemand one (or one not reconciled yet)
    /// is powered by that, so only then is a reconcile worth its reads and status write.
    fn demand_changed(&self, worker: &str) {
        let power = lock(&self.runtime).get(worker).and_then(|r| r.power);
        if power.is_none_or(|p| p == crate::manifest::types::PowerPolicy::OnDemand) {
            self.queue.add((Kind::Worker, worker.to_string()));
        }
    }

    pub fn wanted(&self, worker: &str) -> bool {
        lock(&self.demand).contains_key(worker)
    }

    /// Queues every stored object (startup and periodic resync).
    pub fn enqueue_all(&self) {
        let objs = self.with_store(|s| s.list(None)).unwrap_or_default();
        for o in objs {
            self.queue.add((o.kind, o.name));
        }
    }

    async fn reconcile(self: &Arc<Self>, key: &Key) -> Result<Next, String> {
        let next = self.reconcile_object(key).await;
        // What a reconcile noted and did not write with a status (it ended early, or failed).
        self.flush_notes(key.0, &key.1);
        next
    }

    async fn reconcile_object(self: &Arc<Self>, key: &Key) -> Result<Next, String> {
        // Another orchestrator's, or no lease renewed lately (no etcd quorum): hands off.
        // The lease keeper queues what it gains or gets back.
        if self
            .ownership
            .get()
            .is_some_and(|o| !o.may_reconcile(key.0, &key.1))
        {
            return Ok(Next::Done);
        }
        if self.deletion_requested(key) {
            return self.finalize(key).await;
        }
        match key.0 {
            Kind::Worker => self.reconcile_worker(&key.1).await,
            Kind::Workload => self.reconcile_workload(&key.1).await,
            Kind::Switch => self.reconcile_switch(&key.1).await,
            _ => {
                // Kinds without a driver yet are accepted as declared.
                if let Some(o) = self.get(key.0, &key.1) {
                    let mut st = status::Status::from_value(&o.status);
                    if st.observed_generation() != o.generation || st.phase().is_none() {
                        let phase = if key.0 == Kind::Workload {
                            "Pending"
                        } else {
                            "Accepted"
                        };
                        if st.phase().is_none() {
                            st.set_phase(phase);
                        }
                        st.observed(o.generation);
                        self.write_status(key.0, &key.1, &mut st);
                    }
                }
                Ok(Next::Done)
            }
        }
    }

    /// Runs reconcile workers until `stop` turns true. Triggers from the driver and from
    /// `agent_events` feed the queue; a resync re-queues everything periodically.
    pub async fn run(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
        agent_events: Option<tokio::sync::broadcast::Receiver<crate::orchestrator::AgentEvent>>,
    ) {
        let mut exits = self.driver.exits();
        let me = self.clone();
        let pump_exits = tokio::spawn(async move {
            loop {
                match exits.recv().await {
                    Ok(name) => me.queue.add((Kind::Worker, name)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => me.enqueue_all(),
                    Err(_) => break,
                }
            }
        });
        let me = self.clone();
        let pump_agents = tokio::spawn(async move {
            let Some(mut rx) = agent_events else { return };
            loop {
                use crate::orchestrator::AgentEvent;
                match rx.recv().await {
                    Ok(AgentEvent::Connected { worker, .. }) => {
                        me.board_agent_connected(&worker);
                        me.queue.add((Kind::Worker, worker));
                    }
                    Ok(AgentEvent::Disconnected { worker, .. }) => {
                        me.queue.add((Kind::Worker, worker));
                    }
                    // Only for declared workers: anyone can dial in and name any worker,
                    // and an undeclared name must not make an unauthenticated peer a writer
                    // of the store (the endpoint logs every rejection).
                    Ok(AgentEvent::Rejected {
                        worker: Some(w),
                        reason,
                        ..
                    }) if me.get(Kind::Worker, &w).is_some() => {
                        me.event(
                            Kind::Worker,
                            &w,
                            EventType::Warning,
                            "AgentRejected",
                            &reason,
                        );
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => me.enqueue_all(),
                    Err(_) => break,
                }
            }
        });
        let me = self.clone();
        let resync = tokio::spawn(async move {
            let mut t = tokio::time::interval(me.cfg.resync);
            loop {
                t.tick().await;
                me.enqueue_all();
            }
        });
        let mut workers = Vec::new();
        for _ in 0..self.cfg.concurrency.max(1) {
            let me = self.clone();
            workers.push(tokio::spawn(async move {
                while let Some(key) = me.queue.next().await {
                    let result = me.reconcile(&key).await;
                    match result {
                        Ok(next) => {
                            lock(&me.backoff).reset(&key);
                            lock(&me.seen).insert(key.clone());
                            me.bump();
                            if let Next::RequeueAfter(d) = next {
                                me.queue.add_after(key.clone(), d);
                            }
                        }
                        Err(e) => {
                            *lock(&me.reconcile_errors).entry(key.0).or_insert(0) += 1;
                            let d = lock(&me.backoff).fail(&key);
                            tracing::warn!(object = %format!("{}/{}", key.0.singular(), key.1), "reconcile failed, retrying in {d:?}: {e}");
                            me.queue.add_after(key.clone(), d);
                        }
                    }
                    me.queue.done(&key);
                }
            }));
        }
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        self.queue.shutdown();
        for w in workers {
            let _ = w.await;
        }
        pump_exits.abort();
        pump_agents.abort();
        resync.abort();
    }
}
