//! The energy figures of one workload run, computed from what the store recorded: the samples
//! of every `PowerMeter`, the phase history of the workers they cover and the run's attempts.
//!
//! Definitions (JSON keys in parentheses):
//! - The window is the run's, from its start to its end (or now while it runs).
//! - Total energy (`joules`, `wattHours`) is the trapezoidal integral of every meter's samples
//!   over the window; `averageWatts` divides it by the time the samples covered.
//! - `execJoules`: energy charged to attempts while they ran; `bootJoules`: energy of boots
//!   (on OneShot workers also charged to the invocation the boot served); `idleJoules`: all the
//!   rest — idle workers, off workers (`offJoules`) and energy no covered worker's model
//!   accounts for (`overheadJoules`). `joules = execJoules + bootJoules + idleJoules`.
//! - An invocation's energy is its attempts' exec energy plus the boots charged to them;
//!   `joulesPerInvocation` is their mean over the run's invocations.
//! - `microfaasJoulesPerFunction` is the MicroFaaS paper's figure, `Wh*3600/jobs` over the
//!   window with jobs = succeeded invocations.

use super::attribute::{Exec, MeterInput, WorkerInput, attribute};
use super::integrate::Curve;
use crate::drivers::meter::model::{self, Phase};
use crate::manifest::Kind;
use crate::manifest::types::{LifecycleMode, PowerMeterSpec, WorkerSpec};
use crate::store::invocations::Run;
use crate::store::{Attempt, AttemptStatus, Store, StoredObject};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The keys of the report's `energy` object that the issue and the README promise.
pub const DOCUMENTED_KEYS: &[&str] = &[
    "joules",
    "wattHours",
    "joulesPerInvocation",
    "averageWatts",
    "perFunction",
    "perWorker",
    "idleJoules",
    "bootJoules",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterEnergy {
    pub joules: f64,
    pub measured_seconds: f64,
    pub covers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionEnergy {
    pub invocations: u64,
    pub joules: f64,
    pub joules_per_invocation: Option<f64>,
    pub exec_joules: f64,
    pub boot_joules: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerEnergyReport {
    /// Attempts that ran on the worker.
    pub attempts: u64,
    /// Energy charged to those attempts (exec plus the boots they were charged).
    pub joules: f64,
    pub joules_per_invocation: Option<f64>,
    pub exec_joules: f64,
    pub boot_joules: f64,
    pub idle_joules: f64,
    pub off_joules: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationEnergy {
    pub function: String,
    pub joules: f64,
    pub exec_joules: f64,
    pub boot_joules: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnergyReport {
    pub joules: f64,
    pub watt_hours: f64,
    pub joules_per_invocation: Option<f64>,
    pub average_watts: Option<f64>,
    pub exec_joules: f64,
    pub boot_joules: f64,
    pub idle_joules: f64,
    pub off_joules: f64,
    pub overhead_joules: f64,
    pub window_seconds: f64,
    pub measured_seconds: f64,
    pub functions_per_minute: f64,
    pub microfaas_joules_per_function: Option<f64>,
    pub meters: BTreeMap<String, MeterEnergy>,
    pub per_function: BTreeMap<String, FunctionEnergy>,
    pub per_worker: BTreeMap<String, WorkerEnergyReport>,
    pub per_invocation: BTreeMap<String, InvocationEnergy>,
    /// Per attempt (invocation id, attempt number): (exec J, boot J). For CSV and HTML.
    #[serde(skip)]
    pub attempts: BTreeMap<(String, u32), (f64, f64)>,
    /// Each meter's samples in and around the window, for the HTML plot.
    #[serde(skip)]
    pub curves: Vec<(String, Vec<(i64, f64)>)>,
    /// The window, unix ms.
    #[serde(skip)]
    pub window: (i64, i64),
}

/// Samples further apart than this are a gap, not a line (see `integrate`).
pub fn max_gap(spec: &PowerMeterSpec) -> Duration {
    let every =
        |d: &crate::manifest::quantity::Duration| d.parse().unwrap_or(Duration::from_secs(1));
    let interval = if let Some(w) = &spec.wattsup {
        every(&w.interval).max(Duration::from_secs(1))
    } else if let Some(c) = &spec.command {
        every(&c.interval) + every(&c.timeout)
    } else {
        spec.model
            .as_ref()
            .and_then(|m| m.interval.as_ref())
            .map_or(Duration::from_secs(1), every)
    };
    // Floor: a sampler delayed a few seconds by a loaded host is not a meter that was gone.
    (interval * 3).max(Duration::from_secs(5))
}

/// The names of the stored workers `spec` covers.
pub fn covered(spec: &PowerMeterSpec, workers: &[StoredObject]) -> Vec<String> {
    workers
        .iter()
        .filter(|w| spec.covers.matches(&w.labels))
        .map(|w| w.name.clone())
        .collect()
}

/// What attribution needs over a window, read from the store: every meter with samples in
/// or around it, and the phase history of the workers they cover.
pub struct Inputs {
    pub meters: Vec<MeterInput>,
    pub workers: Vec<WorkerInput>,
    /// Each meter's samples, for plots.
    pub curves: Vec<(String, Vec<(i64, f64)>)>,
}

/// The attribution inputs over `window` (unix ms), or `None` when no meter has samples there.
pub fn inputs(store: &Store, window: (i64, i64)) -> crate::store::Result<Option<Inputs>> {
    let workers = store.list(Some(Kind::Worker))?;
    let mut meters = Vec::new();
    let mut curves = Vec::new();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for m in store.list(Some(Kind::PowerMeter))? {
        let Ok(spec) = serde_json::from_value::<PowerMeterSpec>(m.spec.clone()) else {
            continue;
        };
        let samples = store.samples(&m.name, window.0, window.1)?;
        if samples.is_empty() {
            continue;
        }
        let points: Vec<(i64, f64)> = samples.iter().map(|s| (s.at_ms, s.watts)).collect();
        let covers = covered(&spec, &workers);
        wanted.extend(covers.iter().cloned());
        curves.push((m.name.clone(), points.clone()));
        meters.push(MeterInput {
            name: m.name.clone(),
            curve: Curve::new(points, max_gap(&spec).as_millis() as i64),
            model: spec.model.clone().unwrap_or_default(),
            covers,
        });
    }
    if meters.is_empty() {
        return Ok(None);
    }
    let mut inputs = Vec::new();
    for w in workers.iter().filter(|w| wanted.contains(&w.name)) {
        let Ok(spec) = serde_json::from_value::<WorkerSpec>(w.spec.clone()) else {
            continue;
        };
        let phases = store
            .phase_history(&w.name, window.0, window.1)?
            .into_iter()
            .map(|p| (p.at_ms, Phase::of_status(&p.phase)))
            .collect();
        inputs.push(WorkerInput {
            name: w.name.clone(),
            kind: model::Kind::of(&spec),
            oneshot: spec.lifecycle.mode == LifecycleMode::OneShot,
            phases,
        });
    }
    Ok(Some(Inputs {
        meters,
        workers: inputs,
        curves,
    }))
}

/// The attempts that ran on a worker, and their exec spans (dispatch to end), in that order.
pub fn execs(attempts: &[Attempt]) -> (Vec<&Attempt>, Vec<Exec>) {
    let ran: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.worker.is_some() && a.dispatched_ms.is_some())
        .collect();
    let execs = ran
        .iter()
        .map(|a| {
            let start = a.dispatched_ms.unwrap_or(a.finished_ms);
            Exec {
                worker: a.worker.clone().unwrap_or_default(),
                start,
                end: a.finished_ms.max(start),
            }
        })
        .collect();
    (ran, execs)
}

/// The energy report of `run`, or `None` when no meter has samples in its window.
pub fn compute(
    store: &Store,
    run: &Run,
    attempts: &[Attempt],
    now_ms: i64,
) -> crate::store::Result<Option<EnergyReport>> {
    let window = (
        run.started_ms,
        run.finished_ms.unwrap_or(now_ms).max(run.started_ms),
    );
    let Some(Inputs {
        meters,
        workers,
        curves,
    }) = inputs(store, window)?
    else {
        return Ok(None);
    };
    let (ran, execs) = execs(attempts);
    let at = attribute(window, &meters, &workers, &execs);
    Ok(Some(build(attempts, &ran, &at, meters, curves, window)))
}

fn per_invocation(
    ran: &[&Attempt],
    at: &super::attribute::Attribution,
) -> BTreeMap<String, InvocationEnergy> {
    let mut out: BTreeMap<String, InvocationEnergy> = BTreeMap::new();
    for (i, a) in ran.iter().enumerate() {
        let e = out.entry(a.invocation_id.clone()).or_default();
        e.function = a.function.clone();
        e.exec_joules += at.exec[i];
        e.boot_joules += at.boot_charged[i];
        e.joules = e.exec_joules + e.boot_joules;
    }
    out
}

fn build(
    attempts: &[Attempt],
    ran: &[&Attempt],
    at: &super::attribute::Attribution,
    meters: Vec<MeterInput>,
    curves: Vec<(String, Vec<(i64, f64)>)>,
    window: (i64, i64),
) -> EnergyReport {
    let mut per_invocation = per_invocation(ran, at);
    // Invocations that never reached a worker cost nothing measurable but still count.
    for a in attempts {
        per_invocation
            .entry(a.invocation_id.clone())
            .or_insert_with(|| InvocationEnergy {
                function: a.function.clone(),
                ..InvocationEnergy::default()
            });
    }
    let mut per_function: BTreeMap<String, FunctionEnergy> = BTreeMap::new();
    for inv in per_invocation.values() {
        let f = per_function.entry(inv.function.clone()).or_default();
        f.invocations += 1;
        f.joules += inv.joules;
        f.exec_joules += inv.exec_joules;
        f.boot_joules += inv.boot_joules;
    }
    for f in per_function.values_mut() {
        f.joules_per_invocation = (f.invocations > 0).then(|| f.joules / f.invocations as f64);
    }
    let mut per_worker: BTreeMap<String, WorkerEnergyReport> = BTreeMap::new();
    let mut by_attempt = BTreeMap::new();
    for (i, a) in ran.iter().enumerate() {
        let w = per_worker
            .entry(a.worker.clone().unwrap_or_default())
            .or_default();
        w.attempts += 1;
        w.exec_joules += at.exec[i];
        w.joules += at.exec[i] + at.boot_charged[i];
        by_attempt.insert(
            (a.invocation_id.clone(), a.attempt),
            (at.exec[i], at.boot_charged[i]),
        );
    }
    for (name, we) in &at.workers {
        let w = per_worker.entry(name.clone()).or_default();
        w.boot_joules = we.boot;
        w.idle_joules = we.idle;
        w.off_joules = we.off;
    }
    for w in per_worker.values_mut() {
        w.joules_per_invocation = (w.attempts > 0).then(|| w.joules / w.attempts as f64);
    }
    let invocations = per_invocation.len();
    let charged: f64 = per_invocation.values().map(|i| i.joules).sum();
    let measured_ms: i64 = at.meters.iter().map(|m| m.2).max().unwrap_or(0);
    let window_seconds = (window.1 - window.0) as f64 / 1000.0;
    let succeeded = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Succeeded)
        .map(|a| a.invocation_id.as_str())
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let watt_hours = at.joules / 3600.0;
    EnergyReport {
        joules: at.joules,
        watt_hours,
        joules_per_invocation: (invocations > 0).then(|| charged / invocations as f64),
        average_watts: (measured_ms > 0).then(|| at.joules / (measured_ms as f64 / 1000.0)),
        exec_joules: at.exec.iter().sum(),
        boot_joules: at.boot,
        idle_joules: at.idle + at.off + at.overhead,
        off_joules: at.off,
        overhead_joules: at.overhead,
        window_seconds,
        measured_seconds: measured_ms as f64 / 1000.0,
        functions_per_minute: if window_seconds > 0.0 {
            succeeded as f64 * 60.0 / window_seconds
        } else {
            0.0
        },
        microfaas_joules_per_function: (succeeded > 0)
            .then(|| watt_hours * 3600.0 / succeeded as f64),
        meters: meters
            .iter()
            .zip(&at.meters)
            .map(|(m, (name, j, ms))| {
                (
                    name.clone(),
                    MeterEnergy {
                        joules: *j,
                        measured_seconds: *ms as f64 / 1000.0,
                        covers: m.covers.clone(),
                    },
                )
            })
            .collect(),
        per_function,
        per_worker,
        per_invocation,
        attempts: by_attempt,
        curves,
        window,
    }
}
