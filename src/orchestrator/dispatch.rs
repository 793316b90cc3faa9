//! Runs one workload to completion: plans it, releases invocations at their planned times into
//! per-worker queues (as MicroFaaS did), powers OnDemand workers on while work waits for them,
//! dispatches one invocation at a time per worker, retries lost or timed-out ones on another
//! worker up to `maxAttempts`, records every attempt durably, and ends the run Succeeded,
//! Failed or Cancelled — never hanging: a worker that cannot be made ready hands its queue on.

use super::attempt::{self, Answer, Call, Slot};
use super::usercode::{self, Code};
use super::{AgentEvent, FollowUp, Sessions};
use crate::drivers::gpio::ButtonConfig;
use crate::engine::Engine;
use crate::engine::board::BoardTiming;
use crate::engine::status::{CondStatus, Status};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::manifest::types::{
    Defaults, FunctionSpec, LifecycleMode, Runtime, WorkerProtocol, WorkerSpec, WorkloadSpec,
};
use crate::protocol::RUNTIME_BUILTIN;
use crate::store::invocations::{Attempt, AttemptStatus, RunCounts, RunPhase};
use crate::store::{EventType, clock};
use crate::workload::{Planned, generate};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, broadcast};

struct Job {
    planned: Planned,
    call: Call,
    attempt: u32,
    queued_ms: i64,
    tried: Vec<String>,
}

#[derive(Default)]
struct Shared {
    queues: BTreeMap<String, VecDeque<Job>>,
    remaining: usize,
    counts: RunCounts,
    gave_up: Vec<String>,
    /// Why each given-up worker was, for the invocations that end with no worker left.
    unavailable: Vec<String>,
}

struct Run<D: VmDriver> {
    engine: Arc<Engine<D, Sessions>>,
    workload: String,
    run: i64,
    generation: i64,
    max_attempts: u32,
    shared: Mutex<Shared>,
    wake: Notify,
    permits: Semaphore,
    workers: BTreeMap<String, WorkerSpec>,
    last_progress: Mutex<Instant>,
    /// Set when another orchestrator took the workload over: this run stops, unfinished.
    handed_over: std::sync::atomic::AtomicBool,
}

/// What became of an attempt's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Recorded (and counted, unless the invocation is tried again).
    Done,
    /// Not recorded (the workload is no longer held here): sent again as the same attempt.
    Resend,
}

/// What a resumed run finds recorded: invocations with a final record (not sent again), the
/// next attempt number of those in flight when their orchestrator stopped, and the counts.
#[derive(Default)]
struct Done {
    finished: std::collections::HashSet<String>,
    retry: HashMap<String, u32>,
    counts: RunCounts,
}

impl Done {
    fn of<D: VmDriver>(
        engine: &Engine<D, Sessions>,
        workload: &str,
        run: &crate::store::Run,
        max_attempts: u32,
    ) -> Result<Done, String> {
        let attempts = engine
            .with_store(|s| s.attempts(workload, run.run))
            .map_err(|e| e.to_string())?;
        let mut out = Done::default();
        let mut last: BTreeMap<String, &crate::store::Attempt> = BTreeMap::new();
        for a in &attempts {
            let e = last.entry(a.invocation_id.clone()).or_insert(a);
            if a.attempt > e.attempt {
                *e = a;
            }
        }
        for (id, a) in last {
            // Final: an answer, the last attempt allowed, or one that found no worker.
            let fin = matches!(a.status, AttemptStatus::Succeeded | AttemptStatus::Failed)
                || a.attempt >= max_attempts
                || a.worker.is_none();
            if fin {
                match a.status {
                    AttemptStatus::Succeeded => out.counts.succeeded += 1,
                    _ => out.counts.failed += 1,
                }
                if a.attempt > 1 {
                    out.counts.retried += 1;
                }
                out.finished.insert(id);
            } else {
                out.retry.insert(id, a.attempt + 1);
            }
        }
        Ok(out)
    }
}

/// The run to carry on instead of starting one: on a shared store, the current generation's
/// run still `Running` (its orchestrator lost its lease; this one holds the workload now).
fn resumable<D: VmDriver>(
    engine: &Engine<D, Sessions>,
    name: &str,
    generation: i64,
) -> Result<Option<crate::store::Run>, String> {
    if engine.ownership().is_none() {
        return Ok(None);
    }
    let latest = engine
        .with_store(|s| s.latest_run(name))
        .map_err(|e| e.to_string())?;
    Ok(latest.filter(|r| r.phase == RunPhase::Running && r.generation == generation))
}

/// How often a run's progress is written to the store while it runs.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts the run of `workload`'s current generation in the background.
pub fn spawn<D: VmDriver>(
    engine: Arc<Engine<D, Sessions>>,
    events: broadcast::Sender<AgentEvent>,
    workload: String,
) {
    tokio::spawn(async move {
        if let Err(e) = run_workload(engine.clone(), events, &workload).await {
            engine.event(
                Kind::Workload,
                &workload,
                EventType::Warning,
                "RunFailed",
                &e,
            );
        }
        engine.run_finished(&workload);
    });
}

async fn run_workload<D: VmDriver>(
    engine: Arc<Engine<D, Sessions>>,
    events: broadcast::Sender<AgentEvent>,
    name: &str,
) -> Result<(), String> {
    let obj = engine.get(Kind::Workload, name).ok_or("workload is gone")?;
    let spec: WorkloadSpec = serde_json::from_value(obj.spec.clone()).map_err(|e| e.to_string())?;
    let defaults = engine.defaults();
    let job_timeout = defaults
        .job_timeout
        .parse()
        .unwrap_or(Duration::from_secs(120));

    let mut handlers = BTreeMap::new();
    let mut codes = HashMap::new();
    let mut deadlines = HashMap::new();
    for f in &spec.functions {
        let fobj = engine
            .get(Kind::Function, &f.function)
            .ok_or_else(|| format!("Function `{}` is not in the store", f.function))?;
        let fspec: FunctionSpec = serde_json::from_value(fobj.spec).map_err(|e| e.to_string())?;
        // Read once per run: every invocation ships the same module.
        let code =
            usercode::code_of(&fspec).map_err(|e| format!("Function `{}`: {e}", f.function))?;
        if fspec.runtime == Runtime::Builtin {
            handlers.insert(f.function.clone(), code.handler.clone());
        }
        codes.insert(f.function.clone(), code);
        let d = fspec
            .timeout
            .as_ref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(job_timeout);
        deadlines.insert(f.function.clone(), d);
    }

    let all = engine
        .with_store(|s| s.list(Some(Kind::Worker)))
        .map_err(|e| e.to_string())?;
    let workers: BTreeMap<String, WorkerSpec> = all
        .into_iter()
        .filter(|w| spec.workers.matches(&w.labels))
        .filter(attempt::health_good)
        // On a shared store, only the workers this orchestrator holds (their agents dial it).
        .filter(|w| {
            engine
                .ownership()
                .is_none_or(|o| o.holds(Kind::Worker, &w.name))
        })
        // Boards and VMs alike: the engine powers either on for `want` and off for `release`.
        .filter_map(|w| {
            Some((
                w.name.clone(),
                serde_json::from_value::<WorkerSpec>(w.spec).ok()?,
            ))
        })
        .collect();

    let resumed = resumable(&engine, name, obj.generation)?;
    let run = match &resumed {
        Some(r) => r.run,
        None => engine
            .with_store(|s| s.start_run(name, obj.generation))
            .map_err(|e| e.to_string())?,
    };
    let mut st = Status::from_value(&obj.status);
    st.set(crate::engine::RERUN, serde_json::Value::Null);
    if workers.is_empty() {
        let msg = "no healthy worker matches the workload's selector";
        engine
            .with_store(|s| s.finish_run(name, run, RunPhase::Failed, &RunCounts::default(), msg))
            .map_err(|e| e.to_string())?;
        st.set_phase("Failed")
            .set("run", json!(run))
            .condition("Scheduled", CondStatus::False, "Unschedulable", msg)
            .observed(obj.generation);
        engine.write_status(Kind::Workload, name, &mut st);
        engine.event(
            Kind::Workload,
            name,
            EventType::Warning,
            "Unschedulable",
            msg,
        );
        return Ok(());
    }

    let trace = match (&spec.arrival.file, spec.arrival.pattern) {
        (Some(f), crate::manifest::types::ArrivalPattern::Trace) => {
            Some(std::fs::read_to_string(f).map_err(|e| format!("trace file {f}: {e}"))?)
        }
        _ => None,
    };
    let plan = match generate(&spec, &handlers, workers.len(), trace.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            engine
                .with_store(|s| {
                    s.finish_run(
                        name,
                        run,
                        RunPhase::Failed,
                        &RunCounts::default(),
                        &e.to_string(),
                    )
                })
                .map_err(|e| e.to_string())?;
            st.set_phase("Failed")
                .set("run", json!(run))
                .condition("Scheduled", CondStatus::False, "PlanFailed", &e.to_string())
                .observed(obj.generation);
            engine.write_status(Kind::Workload, name, &mut st);
            return Ok(());
        }
    };
    let max_attempts = u32::try_from(spec.max_attempts.unwrap_or(defaults.max_attempts))
        .unwrap_or(3)
        .max(1);
    let total = plan.len();
    let done = match &resumed {
        Some(r) => Done::of(&engine, name, r, max_attempts)?,
        None => Done::default(),
    };
    match &resumed {
        Some(_) => engine.event(
            Kind::Workload,
            name,
            EventType::Normal,
            "Resumed",
            &format!(
                "run {run} carried on by orchestrator {} on {} workers: {} of {} invocations were recorded; the other {} (those in flight included) are sent now, {} of them as retries of a recorded attempt",
                engine.ownership().map_or("", |o| o.name.as_str()),
                workers.len(),
                done.counts.succeeded + done.counts.failed,
                total,
                total.saturating_sub(usize::try_from(done.counts.succeeded + done.counts.failed).unwrap_or(0)),
                done.retry.len()
            ),
        ),
        None => engine.event(
            Kind::Workload,
            name,
            EventType::Normal,
            "Started",
            &format!(
                "run {run}: {} invocations on {} workers",
                plan.len(),
                workers.len()
            ),
        ),
    }
    let finished = usize::try_from(done.counts.succeeded + done.counts.failed).unwrap_or(0);
    let r = Arc::new(Run {
        engine: engine.clone(),
        workload: name.to_string(),
        run,
        generation: obj.generation,
        max_attempts,
        shared: Mutex::new(Shared {
            queues: workers
                .keys()
                .map(|w| (w.clone(), VecDeque::new()))
                .collect(),
            remaining: total.saturating_sub(finished),
            counts: RunCounts {
                total: total as u64,
                ..done.counts
            },
            gave_up: Vec::new(),
            unavailable: Vec::new(),
        }),
        wake: Notify::new(),
        permits: Semaphore::new(usize::try_from(spec.concurrency).unwrap_or(1).max(1)),
        workers,
        last_progress: Mutex::new(Instant::now()),
        handed_over: std::sync::atomic::AtomicBool::new(false),
    });
    r.publish("Running");

    let names: Vec<String> = r.workers.keys().cloned().collect();
    let mut tasks = Vec::new();
    for w in &names {
        let (r, w, rx) = (r.clone(), w.clone(), events.subscribe());
        tasks.push(tokio::spawn(async move { r.worker_loop(&w, rx).await }));
    }

    // Release invocations at their planned offsets (from the run's start, when resumed).
    let start = match &resumed {
        Some(r) => {
            let behind = u64::try_from(clock::now_millis() - r.started_ms).unwrap_or(0);
            let now = tokio::time::Instant::now();
            now.checked_sub(Duration::from_millis(behind))
                .unwrap_or(now)
        }
        None => tokio::time::Instant::now(),
    };
    for p in plan {
        let id = format!("{name}-{run}-{}", p.seq);
        if done.finished.contains(&id) {
            continue;
        }
        if r.handed_over() {
            break;
        }
        tokio::time::sleep_until(start + Duration::from_millis(p.at_ms)).await;
        let function = p.function.clone();
        let job = Job {
            attempt: done.retry.get(&id).copied().unwrap_or(1),
            call: Call {
                invocation_id: id,
                function: function.clone(),
                handler: handlers.get(&function).cloned().unwrap_or_default(),
                runtime: codes
                    .get(&function)
                    .map_or(RUNTIME_BUILTIN, |c: &Code| c.runtime),
                code: codes.get(&function).and_then(|c| c.user.clone()),
                input: p.input.clone(),
                deadline: deadlines.get(&function).copied().unwrap_or(job_timeout),
            },
            queued_ms: clock::now_millis(),
            tried: Vec::new(),
            planned: p,
        };
        let target = job
            .planned
            .worker_slot
            .and_then(|s| names.get(s % names.len()).cloned());
        r.enqueue(job, target).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    if r.handed_over() {
        engine.event(
            Kind::Workload,
            name,
            EventType::Warning,
            "HandedOver",
            &format!(
                "run {run}: orchestrator {} no longer holds the workload; the one that does carries the run on",
                engine.ownership().map_or("", |o| o.name.as_str())
            ),
        );
        return Ok(());
    }
    let counts = lock(&r.shared).counts;
    let phase = if counts.failed == 0 {
        RunPhase::Succeeded
    } else {
        RunPhase::Failed
    };
    let msg = format!(
        "{} of {} invocations succeeded, {} failed, {} retried",
        counts.succeeded, counts.total, counts.failed, counts.retried
    );
    engine
        .with_store(|s| s.finish_run(name, run, phase, &counts, &msg))
        .map_err(|e| e.to_string())?;
    r.publish(phase.as_str());
    engine.event(
        Kind::Workload,
        name,
        if counts.failed == 0 {
            EventType::Normal
        } else {
            EventType::Warning
        },
        phase.as_str(),
        &msg,
    );
    Ok(())
}

/// How long a worker loop waits for a session before it hands its queue on: long enough for
/// the engine's whole recovery ladder (`quarantineAfter` failed boots, then Bad, which ends the
/// wait sooner). A VM's boot fails after one boot timeout. A board's may wait for its link,
/// bounce its port and wait for the link again, then wait for its agent (three boot
/// timeouts), after a power-on holdoff and possibly a recovery hold; and before its first
/// boot it may still be finishing a power-off (agent timeout, then the force-off hold), as
/// after every OneShot invocation.
fn ready_limit(spec: Option<&WorkerSpec>, defaults: &Defaults, timing: BoardTiming) -> Duration {
    let boot_timeout: Duration = defaults
        .boot_timeout
        .parse()
        .unwrap_or(Duration::from_secs(60));
    let boots = u32::try_from(defaults.quarantine_after)
        .unwrap_or(3)
        .saturating_add(1);
    let slack = Duration::from_secs(10);
    let Some(board) = spec.and_then(|s| s.board.as_ref()) else {
        return boot_timeout.saturating_mul(boots) + slack;
    };
    let hold = ButtonConfig::from_manifest(&board.power_button)
        .map(|b| b.force_off)
        .unwrap_or(Duration::from_secs(10));
    let holdoff: Duration = defaults.power_on_holdoff.parse().unwrap_or(Duration::ZERO);
    let per_boot = boot_timeout.saturating_mul(3) + holdoff + hold;
    let power_off = timing.agent_timeout + hold;
    per_boot.saturating_mul(boots) + power_off + slack
}

impl<D: VmDriver> Run<D> {
    fn publish(&self, phase: &str) {
        let Some(obj) = self.engine.get(Kind::Workload, &self.workload) else {
            return;
        };
        let counts = lock(&self.shared).counts;
        let mut st = Status::from_value(&obj.status);
        st.set(crate::engine::RERUN, serde_json::Value::Null)
            .set_phase(phase)
            .set("run", json!(self.run))
            .set("total", json!(counts.total))
            .set("succeeded", json!(counts.succeeded))
            .set("failed", json!(counts.failed))
            .set("retried", json!(counts.retried))
            .condition("Scheduled", CondStatus::True, "Placed", "")
            .condition(
                "Complete",
                CondStatus::from_bool(phase != "Running"),
                phase,
                "",
            )
            .observed(self.generation);
        self.engine
            .write_status(Kind::Workload, &self.workload, &mut st);
    }

    /// Puts a job on `target`'s queue, or on the shortest queue of a worker that has not tried
    /// it yet (any worker when all have).
    async fn enqueue(&self, job: Job, target: Option<String>) {
        if let Some(job) = self.place(job, target) {
            let mut err = "no healthy worker is left to run it".to_string();
            let why = lock(&self.shared).unavailable.join("; ");
            if !why.is_empty() {
                err = format!("{err} ({why})");
            }
            // Never retried: there is no worker left.
            let record = self.record_of(&job, None, None, Some(err), None);
            self.commit(&record, false).await;
        }
    }

    /// The queueing half of [`Self::enqueue`], under the lock: the job back when no worker is
    /// left to take it.
    fn place(&self, job: Job, target: Option<String>) -> Option<Job> {
        let mut sh = lock(&self.shared);
        let live: Vec<String> = sh
            .queues
            .keys()
            .filter(|w| !sh.gave_up.contains(w))
            .cloned()
            .collect();
        let pick = target.filter(|t| live.contains(t)).or_else(|| {
            let fresh: Vec<&String> = live.iter().filter(|w| !job.tried.contains(w)).collect();
            let pool: Vec<&String> = if fresh.is_empty() {
                live.iter().collect()
            } else {
                fresh
            };
            pool.into_iter()
                .min_by_key(|w| sh.queues.get(*w).map_or(0, VecDeque::len))
                .cloned()
        });
        let Some(w) = pick else {
            return Some(job);
        };
        if let Some(q) = sh.queues.get_mut(&w) {
            q.push_back(job);
        }
        let depth = sh.queues.values().map(VecDeque::len).sum();
        drop(sh);
        self.engine.set_queue_depth(&self.workload, depth);
        self.wake.notify_waiters();
        None
    }

    /// The durable record of an attempt of `job`.
    fn record_of(
        &self,
        job: &Job,
        worker: Option<&str>,
        answer: Option<&Answer>,
        lost_reason: Option<String>,
        cold_start_ms: Option<i64>,
    ) -> Attempt {
        let slot = Slot {
            workload: &self.workload,
            run: self.run,
            generation: self.generation,
            seq: job.planned.seq,
            attempt: job.attempt,
            queued_ms: job.queued_ms,
        };
        attempt::attempt_record(&slot, &job.call, worker, answer, lost_reason, cold_start_ms)
    }

    /// Whether the invocation of `record` is tried again on another worker.
    fn retries(&self, record: &Attempt) -> bool {
        matches!(record.status, AttemptStatus::Lost | AttemptStatus::Timeout)
            && record.attempt < self.max_attempts
            && record.worker.is_some()
    }

    /// Commits `record` durably, then counts it: the run ends (`remaining` 0) only once every
    /// record is committed, whether committed in line or in the background.
    /// `Resend` when it was not recorded because this orchestrator no longer holds the
    /// workload (its lease expired while etcd was cut off): nothing durable says it ran, so it
    /// counts for nothing here and is sent again by whoever carries the run on (this one, once
    /// it holds it again).
    async fn commit(&self, record: &Attempt, retry: bool) -> Recorded {
        let recorded = attempt::record(&self.engine, record).await;
        if !recorded
            && self
                .engine
                .ownership()
                .is_some_and(|o| !o.holds(Kind::Workload, &self.workload))
        {
            return Recorded::Resend;
        }
        let status = record.status;
        if !retry {
            let mut sh = lock(&self.shared);
            sh.remaining = sh.remaining.saturating_sub(1);
            match status {
                AttemptStatus::Succeeded => sh.counts.succeeded += 1,
                _ => sh.counts.failed += 1,
            }
            if record.attempt > 1 {
                sh.counts.retried += 1;
            }
            let counts = sh.counts;
            drop(sh);
            // Progress for `get`/`apply`, at most a few times a second: the attempts themselves
            // are already durable.
            let due = {
                let mut last = lock(&self.last_progress);
                let due = last.elapsed() >= PROGRESS_EVERY;
                if due {
                    *last = Instant::now();
                }
                due
            };
            if due {
                tokio::task::block_in_place(|| {
                    let _ = self
                        .engine
                        .with_store(|s| s.set_run_counts(&self.workload, self.run, &counts));
                    self.publish("Running");
                });
            }
            self.wake.notify_waiters();
        }
        Recorded::Done
    }

    fn handed_over(&self) -> bool {
        self.handed_over.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this orchestrator may dispatch to `worker` now; `None` once another one holds
    /// the workload (the run stops here).
    fn may_dispatch(&self, worker: &str) -> Option<bool> {
        let Some(o) = self.engine.ownership() else {
            return Some(true);
        };
        if o.acting() && !o.holds(Kind::Workload, &self.workload) {
            self.handed_over
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.wake.notify_waiters();
            return None;
        }
        Some(o.may_act(Kind::Workload, &self.workload) && o.may_act(Kind::Worker, worker))
    }

    fn take_job(&self, worker: &str) -> Option<Option<Job>> {
        if self.handed_over() {
            return None;
        }
        // No etcd quorum, or the worker went to another orchestrator: nothing is sent, the
        // jobs wait (or move on once the worker is given up).
        match self.may_dispatch(worker) {
            None => return None,
            Some(false) => return Some(None),
            Some(true) => {}
        }
        let mut sh = lock(&self.shared);
        if sh.remaining == 0 {
            return None;
        }
        // Work whose outcome cannot be recorded is not started; the loop waits until a retried
        // record commits (attempt::record) and the store takes writes again.
        if self.engine.storage_fault().is_some() {
            return Some(None);
        }
        let job = sh.queues.get_mut(worker).and_then(VecDeque::pop_front);
        if job.is_some() {
            let depth = sh.queues.values().map(VecDeque::len).sum();
            self.engine.set_queue_depth(&self.workload, depth);
        }
        Some(job)
    }

    fn has_work(&self, worker: &str) -> bool {
        lock(&self.shared)
            .queues
            .get(worker)
            .is_some_and(|q| !q.is_empty())
    }

    /// Whether `worker` went to another orchestrator while this one carries the run on (it
    /// acts and holds the workload): nothing here will serve it again in this run.
    fn held_elsewhere(&self, worker: &str) -> bool {
        self.engine.ownership().is_some_and(|o| {
            o.acting() && o.holds(Kind::Workload, &self.workload) && !o.holds(Kind::Worker, worker)
        })
    }

    /// Gives up on a worker that could not be made ready: its queued jobs go to the others.
    async fn abandon(&self, worker: &str, why: &attempt::NoSession) {
        let what = format!("worker `{worker}` could not be made ready ({why})");
        self.give_up(worker, "WorkerUnavailable", &what, &why.to_string())
            .await;
    }

    /// Gives up on `worker` for this run (event `reason`, saying `what`): its queued jobs go
    /// to the others, or fail naming `why` when there is none.
    async fn give_up(&self, worker: &str, reason: &str, what: &str, why: &str) {
        let jobs: Vec<Job> = {
            let mut sh = lock(&self.shared);
            sh.gave_up.push(worker.to_string());
            sh.unavailable.push(format!("`{worker}`: {why}"));
            sh.queues
                .get_mut(worker)
                .map(|q| q.drain(..).collect())
                .unwrap_or_default()
        };
        self.engine.event(
            Kind::Workload,
            &self.workload,
            EventType::Warning,
            reason,
            &format!(
                "{what}; its {} queued invocations move to other workers",
                jobs.len()
            ),
        );
        for mut j in jobs {
            j.tried.push(worker.to_string());
            self.enqueue(j, None).await;
        }
    }

    async fn worker_loop(
        self: &Arc<Self>,
        worker: &str,
        mut events: broadcast::Receiver<AgentEvent>,
    ) {
        let spec = self.workers.get(worker).cloned();
        let oneshot = spec
            .as_ref()
            .is_none_or(|s| s.lifecycle.mode == LifecycleMode::OneShot);
        let v1 = spec
            .as_ref()
            .is_some_and(|s| s.protocol == WorkerProtocol::MicrofaasV1);
        let idle_timeout = spec
            .as_ref()
            .and_then(|s| s.lifecycle.idle_timeout.as_ref())
            .and_then(|d| d.parse().ok())
            .unwrap_or(Duration::ZERO);
        let ready_limit = ready_limit(
            spec.as_ref(),
            &self.engine.defaults(),
            self.engine.board_timing(),
        );
        // A Warm worker stays on this long without work (also after the run's last call).
        let idle = if oneshot {
            Duration::ZERO
        } else {
            idle_timeout
        };
        let mut holding = false;
        let mut stale: Option<u64> = None;
        loop {
            let notified = self.wake.notified();
            if self.held_elsewhere(worker) {
                let owner = self.engine.ownership().map_or("", |o| o.name.as_str());
                let what = format!(
                    "worker `{worker}` is no longer held by orchestrator {owner}, which runs this workload"
                );
                self.give_up(
                    worker,
                    "WorkerHandedOver",
                    &what,
                    "held by another orchestrator",
                )
                .await;
                break;
            }
            let job = match self.take_job(worker) {
                None => break,
                Some(Some(job)) => job,
                Some(None) => {
                    if holding && !self.has_work(worker) {
                        holding = false;
                        self.release_after(worker, idle);
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
                    continue;
                }
            };
            if !holding {
                self.engine.want(worker);
                holding = true;
            }
            // Wait for a fresh agent session (not the one we just told to power off).
            let waited_from = Instant::now();
            // A session told to power off after it was picked refuses the call unsent: wait
            // for the worker's next one (a cold start) rather than spend an attempt.
            let mut passed_over = false;
            let (session, cold_start_ms, answer, _permit) = loop {
                let session =
                    attempt::fresh_session(&self.engine, worker, stale, &mut events, ready_limit)
                        .await;
                let (session, cold) = match session {
                    Ok(s) => s,
                    Err(why) => {
                        let mut job = job;
                        job.tried.push(worker.to_string());
                        self.abandon(worker, &why).await;
                        self.enqueue(job, None).await;
                        if holding {
                            self.engine.release(worker);
                        }
                        return;
                    }
                };
                let cold_start_ms = attempt::cold_start_ms(
                    cold || passed_over,
                    waited_from.elapsed(),
                    job.queued_ms,
                );
                let Ok(permit) = self.permits.acquire().await else {
                    return;
                };
                let answer = attempt::send(&self.engine, worker, &session, &job.call).await;
                if answer.unsent {
                    stale = Some(session.id);
                    passed_over = true;
                    continue;
                }
                break (session, cold_start_ms, answer, permit);
            };
            // OneShot: one invocation per boot. Warm: keep the connection. A v1 worker with
            // more work reboots itself (as v1 does) instead of waiting for its button.
            // The follow-up goes before the record is committed: what the worker does next
            // does not change what is durable (a crash before the commit leaves the
            // invocation unrecorded, to be redone, whenever the worker was told), and a
            // rebooting worker no longer waits out the fsync.
            let follow = if oneshot {
                if v1 && self.has_work(worker) {
                    FollowUp::Reboot
                } else {
                    FollowUp::Poweroff
                }
            } else if self.has_work(worker) {
                FollowUp::Next
            } else {
                FollowUp::Idle
            };
            if v1 {
                self.engine
                    .expect_reboot(worker, answer.answered && follow == FollowUp::Reboot);
            }
            attempt::follow_up(&session, &answer, follow).await;
            if oneshot || !answer.answered {
                stale = Some(session.id);
            }
            // The record commits in the background while this worker takes its next job
            // (its fsync shared with the other workers' records): the run counts it, and
            // ends, only once it is committed, so a crash meanwhile leaves it unrecorded and
            // redone, as before, never recorded twice.
            let record = self.record_of(&job, Some(worker), Some(&answer), None, cold_start_ms);
            let retry = self.retries(&record);
            let this = Arc::clone(self);
            if retry {
                // The next attempt carries the invocation on even if this record turns out
                // not to be ours to write, so a Resend is not sent a second time.
                tokio::spawn(async move { this.commit(&record, true).await });
                let mut job = job;
                job.attempt += 1;
                job.tried.push(worker.to_string());
                job.queued_ms = clock::now_millis();
                self.enqueue(job, None).await;
            } else {
                tokio::spawn(async move {
                    if this.commit(&record, false).await == Recorded::Resend {
                        this.enqueue(job, None).await;
                    }
                });
            }
        }
        if holding {
            self.release_after(worker, idle);
        }
    }

    /// Drops this run's hold on `worker` after `idle` (a Warm worker's `idleTimeout`).
    fn release_after(&self, worker: &str, idle: Duration) {
        if idle.is_zero() {
            self.engine.release(worker);
            return;
        }
        let (e, w) = (self.engine.clone(), worker.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            e.release(&w);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn worker(spec: serde_json::Value) -> WorkerSpec {
        serde_json::from_value(spec).expect("worker spec")
    }

    /// A VM waits out its ladder of boot timeouts; a board also its link waits, bounce,
    /// holdoffs, holds and a power-off still in progress.
    #[test]
    fn a_board_gets_its_whole_ladder_before_its_queue_moves_on() {
        let defaults = Defaults::default(); // bootTimeout 60s, holdoff 10s, quarantineAfter 3
        let timing = BoardTiming::default(); // agent timeout 30s
        let vm = worker(json!({"vm": {"kernel": "/k"}}));
        assert_eq!(
            ready_limit(Some(&vm), &defaults, timing),
            Duration::from_secs(4 * 60 + 10)
        );
        let board = worker(
            json!({"board": {"powerButton": {"chip": "gpiochip0", "line": 5,
                                  "pulse": "200ms", "forceOff": "8s"}}}),
        );
        assert_eq!(
            ready_limit(Some(&board), &defaults, timing),
            Duration::from_secs(4 * (3 * 60 + 10 + 8) + (30 + 8) + 10)
        );
    }
}
