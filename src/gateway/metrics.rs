//! `GET /metrics` in OpenMetrics text: the OpenFaaS gateway's names where they exist
//! (`gateway_function_invocation_total`, `gateway_functions_seconds`, `gateway_service_count`)
//! and microfaas' own (worker phase, power, boots, boot seconds, queue depth, reconcile
//! errors). Invocation metrics move as calls end; the rest is read from the engine and store at
//! each scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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

pub struct Metrics {
    registry: Registry,
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
        };
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
        Metrics { registry, ..m }
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
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!("cannot encode metrics: {e}");
        }
        out
    }
}
