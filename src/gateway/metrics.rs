//! `GET /metrics` in OpenMetrics text: the OpenFaaS gateway's names where they exist
//! (`gateway_function_invocation_total`, `gateway_functions_seconds`, `gateway_service_count`)
//! and microfaas' own (worker phase, power, boots, boot seconds, queue depth, reconcile
//! errors). Invocation metrics move as calls end; the rest is read from the engine and store at
//! each scrape. With a `PowerMeter` declared, each scrape also attributes the gateway run's
//! energy up to where it is final ([`crate::energy::live`]) and adds it to the energy metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{Gateway, lock};
use crate::energy::live::{self, Live, Step};
use crate::engine::vm::VmDriver;
use crate::store::clock;
use crate::store::gateway::WORKLOAD;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FnCode {
    function_name: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FnLabel {
    function_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerPhase {
    worker: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabel {
    workload: String,
}

/// Worker phases reported as a one-hot gauge family.
const PHASES: &[&str] = &[
    "Off",
    "PoweringOn",
    "Booting",
    "Ready",
    "Busy",
    "PoweringOff",
    "Failed",
    "Unknown",
];

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~65 s: loopback warm calls up to TCG cold starts.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

fn joules_histogram() -> Histogram {
    // 1 mJ .. ~1 kJ: a warm call on a VM's share of a host up to a board's cold start.
    Histogram::new(exponential_buckets(0.001, 2.0, 21))
}

pub struct Metrics {
    registry: Registry,
    /// The energy metrics, exposed once a meter is declared (see [`Metrics::render`]).
    energy_registry: Registry,
    energy_shown: AtomicBool,
    /// `microfaas_invocation_energy_joules_total{function_name}`: the joules the `gateway`
    /// run's energy report charges the function's invocations (each attempt's exec energy,
    /// plus on OneShot workers the boot that served it), added as they become final (see
    /// [`Gateway::energy_step`]). Only grows; starts at 0 with each gateway (one run each).
    energy_joules: Family<FnLabel, Counter<f64, AtomicU64>>,
    /// `microfaas_function_invocation_energy_joules{function_name}`: the same per invocation,
    /// observed once all of its energy is counted (an invocation that reached no worker: 0 J).
    invocation_joules: Family<FnLabel, Histogram, fn() -> Histogram>,
    invocations: Family<FnCode, Counter>,
    seconds: Family<FnLabel, Histogram, fn() -> Histogram>,
    service_count: Family<FnLabel, Gauge>,
    phase: Family<WorkerPhase, Gauge>,
    powered: Family<WorkerLabel, Gauge>,
    boots: Family<WorkerLabel, Counter>,
    boot_seconds: Family<WorkerLabel, Gauge<f64, AtomicU64>>,
    queue_depth: Family<WorkloadLabel, Gauge>,
    reconcile_errors: Family<KindLabel, Counter>,
}

/// What a scrape reads from the engine and store.
pub struct Snapshot {
    /// (function, Ready workers that can run it)
    pub functions: Vec<(String, u64)>,
    /// (worker, phase, powered, boot seconds)
    pub workers: Vec<(String, String, bool, Option<f64>)>,
    pub boots: Vec<(String, u64)>,
    pub queue_depths: Vec<(String, usize)>,
    pub reconcile_errors: Vec<(String, u64)>,
    /// Energy attributed since the last scrape; `None` while no meter is declared.
    pub energy: Option<Step>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            invocations: Family::default(),
            seconds: Family::new_with_constructor(seconds_histogram),
            service_count: Family::default(),
            phase: Family::default(),
            powered: Family::default(),
            boots: Family::default(),
            boot_seconds: Family::default(),
            queue_depth: Family::default(),
            reconcile_errors: Family::default(),
            registry: Registry::default(),
            energy_registry: Registry::default(),
            energy_shown: AtomicBool::new(false),
            energy_joules: Family::default(),
            invocation_joules: Family::new_with_constructor(joules_histogram),
        };
        let mut energy_registry = Registry::default();
        energy_registry.register_with_unit(
            "microfaas_invocation_energy",
            "Energy of the function's gateway invocations (exec, plus the boot on OneShot \
             workers), attributed as `report gateway` does once the meters' samples cover it",
            Unit::Joules,
            m.energy_joules.clone(),
        );
        energy_registry.register_with_unit(
            "microfaas_function_invocation_energy",
            "Energy per gateway invocation of the function, observed once it is final",
            Unit::Joules,
            m.invocation_joules.clone(),
        );
        registry.register(
            "gateway_function_invocation",
            "Function invocations through the gateway, by HTTP status",
            m.invocations.clone(),
        );
        registry.register(
            "gateway_functions_seconds",
            "Time to serve a function call through the gateway, cold starts included",
            m.seconds.clone(),
        );
        registry.register(
            "gateway_service_count",
            "Workers Ready to run the function",
            m.service_count.clone(),
        );
        registry.register(
            "microfaas_worker_phase",
            "1 for the worker's current phase, 0 for the others",
            m.phase.clone(),
        );
        registry.register(
            "microfaas_worker_powered",
            "1 when the engine wants the worker powered",
            m.powered.clone(),
        );
        registry.register(
            "microfaas_worker_boots",
            "Power-ons of the worker recorded in the store",
            m.boots.clone(),
        );
        registry.register(
            "microfaas_worker_boot_seconds",
            "Seconds from power-on to the agent connecting, last boot",
            m.boot_seconds.clone(),
        );
        registry.register(
            "microfaas_queue_depth",
            "Invocations waiting, per workload (`gateway`: queued async calls)",
            m.queue_depth.clone(),
        );
        registry.register(
            "microfaas_reconcile_errors",
            "Failed reconciles per kind since the engine started",
            m.reconcile_errors.clone(),
        );
        Metrics {
            registry,
            energy_registry,
            ..m
        }
    }

    /// One finished call.
    pub fn observe(&self, function: &str, code: u16, seconds: f64) {
        self.invocations
            .get_or_create(&FnCode {
                function_name: function.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.seconds
            .get_or_create(&FnLabel {
                function_name: function.to_string(),
            })
            .observe(seconds);
    }

    pub fn set_async_depth(&self, n: usize) {
        self.queue_depth
            .get_or_create(&WorkloadLabel {
                workload: crate::store::gateway::WORKLOAD.to_string(),
            })
            .set(n as i64);
    }

    /// The exposition, after taking in `snap`.
    pub fn render(&self, snap: Snapshot) -> String {
        self.service_count.clear();
        for (f, n) in snap.functions {
            self.service_count
                .get_or_create(&FnLabel { function_name: f })
                .set(n as i64);
        }
        self.phase.clear();
        self.powered.clear();
        self.boot_seconds.clear();
        for (w, phase, powered, boot) in snap.workers {
            for p in PHASES {
                self.phase
                    .get_or_create(&WorkerPhase {
                        worker: w.clone(),
                        phase: p.to_string(),
                    })
                    .set(i64::from(*p == phase));
            }
            self.powered
                .get_or_create(&WorkerLabel { worker: w.clone() })
                .set(i64::from(powered));
            if let Some(b) = boot {
                self.boot_seconds
                    .get_or_create(&WorkerLabel { worker: w })
                    .set(b);
            }
        }
        // Counters only move up: add what the store has counted since the last scrape.
        for (w, n) in snap.boots {
            let c = self.boots.get_or_create(&WorkerLabel { worker: w });
            let seen = c.get();
            if n > seen {
                c.inc_by(n - seen);
            }
        }
        for (k, n) in snap.reconcile_errors {
            let c = self.reconcile_errors.get_or_create(&KindLabel { kind: k });
            let seen = c.get();
            if n > seen {
                c.inc_by(n - seen);
            }
        }
        for (wl, n) in snap.queue_depths {
            self.queue_depth
                .get_or_create(&WorkloadLabel { workload: wl })
                .set(n as i64);
        }
        if let Some(step) = snap.energy {
            self.energy_shown.store(true, Ordering::Relaxed);
            for (f, j) in step.charged {
                // Never negative (a meter reading below zero): counters only go up.
                if j > 0.0 {
                    self.energy_joules
                        .get_or_create(&FnLabel { function_name: f })
                        .inc_by(j);
                }
            }
            for (f, j) in step.finished {
                self.invocation_joules
                    .get_or_create(&FnLabel { function_name: f })
                    .observe(j.max(0.0));
            }
        }
        let mut out = String::new();
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut encoded = encode_registry(&mut out, &self.registry);
        // Once shown, the energy metrics stay, even if the meter goes: counters do not vanish.
        if encoded.is_ok() && self.energy_shown.load(Ordering::Relaxed) {
            encoded = encode_registry(&mut out, &self.energy_registry);
        }
        if let Err(e) = encoded.and_then(|()| encode_eof(&mut out)) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}

impl<D: VmDriver> Gateway<D> {
    /// Attributes the gateway run's energy from the last scrape's watermark up to the horizon
    /// where it is final: the meters' latest samples, and the start of the oldest call in
    /// progress (its attempts are not all recorded). Each scrape reads only the samples, phase
    /// changes and attempts since the watermark, plus attempts still running past it: its cost
    /// follows what happened since the last scrape, never the run's whole history. `None`
    /// while no `PowerMeter` is declared.
    pub(super) fn energy_step(&self) -> Option<Step> {
        // `now` first: a call that is not in progress yet when the calls are read starts after it.
        let now = clock::now_millis();
        let run = (*lock(&self.recording)).map(|(run, _)| run);
        let oldest = self.oldest_call();
        let mut live = lock(&self.energy);
        let stepped = tokio::task::block_in_place(|| {
            self.engine
                .with_store(|s| -> crate::store::Result<Option<Step>> {
                    let Some(samples) = live::samples_horizon(s, now)? else {
                        return Ok(None);
                    };
                    let Some(run) = run else {
                        return Ok(Some(Step::default()));
                    };
                    if live.as_ref().is_none_or(|l| l.run() != run) {
                        let Some(r) = s.run(WORKLOAD, run)? else {
                            return Ok(Some(Step::default()));
                        };
                        *live = Some(Live::new(WORKLOAD, run, r.started_ms));
                    }
                    let horizon = oldest.map_or(samples, |o| samples.min(o)).min(now);
                    match live.as_mut() {
                        Some(l) => l.advance(s, horizon).map(Some),
                        None => Ok(Some(Step::default())),
                    }
                })
        });
        stepped.unwrap_or_else(|e| {
            tracing::warn!("cannot attribute the gateway's energy: {e}");
            // Still shown when a meter exists: a later scrape catches up from the watermark.
            Some(Step::default())
        })
    }
}
