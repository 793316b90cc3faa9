//! Reports of one workload run, computed from its recorded attempts: the numbers
//! ([`Report::from_attempts`]) and their renderings as a table, JSON, CSV and HTML
//! (`html.rs`).
//!
//! Definitions, so that figures can be compared across papers and releases:
//! - Counts are of invocations, not attempts: `total` = distinct invocation ids recorded,
//!   `succeeded` = those with a succeeded attempt, `failed` = the rest, `retried` = those with
//!   more than one attempt. Per worker the counts are of attempts (an invocation retried
//!   elsewhere belongs to several workers); attempts that reached no worker are under `<none>`.
//! - Latency (round trip measured by the orchestrator), exec (measured by the agent) and cold
//!   start (the wait for a boot, only where there was one) are distributions over succeeded
//!   attempts, in milliseconds.
//! - Percentiles are nearest-rank: the p-th percentile of n sorted samples is the sample of
//!   rank ⌈p·n/100⌉ (1-based), so every reported value was actually observed. `null` when
//!   there are no samples.
//! - `durationSeconds` runs from the first attempt queued to the last one finished;
//!   `functionsPerMinute` = succeeded · 60 / durationSeconds, the MicroFaaS definition.
//! - `energy` is `null` unless a power meter has samples in the run's window; its figures are
//!   defined in [`crate::energy::report`].

use crate::energy::EnergyReport;
use crate::store::{Attempt, AttemptStatus, clock};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Key under which attempts that reached no worker are counted.
pub const NO_WORKER: &str = "<none>";

/// Nearest-rank percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Stats {
    /// Statistics of `samples` (any order).
    pub fn of(mut samples: Vec<f64>) -> Stats {
        samples.sort_by(f64::total_cmp);
        Stats {
            p50: percentile(&samples, 50),
            p95: percentile(&samples, 95),
            p99: percentile(&samples, 99),
            max: samples.last().copied(),
        }
    }
}

/// Nearest-rank percentile of sorted `samples`.
pub fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Counts and distributions of a subset of the run (one function or one worker).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub latency_ms: Stats,
    pub exec_ms: Stats,
    pub cold_start_ms: Stats,
}

/// The report of one run. Serialises to the documented JSON keys.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub workload: String,
    pub run: i64,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub duration_seconds: f64,
    pub functions_per_minute: f64,
    pub latency_ms: Stats,
    pub exec_ms: Stats,
    pub cold_start_ms: Stats,
    pub functions: BTreeMap<String, Group>,
    pub workers: BTreeMap<String, Group>,
    pub energy: Option<EnergyReport>,
}

/// Samples of succeeded attempts, gathered before the statistics are taken.
#[derive(Default)]
struct Samples {
    latency: Vec<f64>,
    exec: Vec<f64>,
    cold: Vec<f64>,
}

impl Samples {
    fn add(&mut self, a: &Attempt) {
        if a.status != AttemptStatus::Succeeded {
            return;
        }
        if let Some(us) = a.rtt_us {
            self.latency.push(us as f64 / 1000.0);
        }
        if let Some(us) = a.exec_us {
            self.exec.push(us as f64 / 1000.0);
        }
        if let Some(ms) = a.cold_start_ms {
            self.cold.push(ms as f64);
        }
    }

    fn into_group(self, total: u64, succeeded: u64, failed: u64, retried: u64) -> Group {
        Group {
            total,
            succeeded,
            failed,
            retried,
            latency_ms: Stats::of(self.latency),
            exec_ms: Stats::of(self.exec),
            cold_start_ms: Stats::of(self.cold),
        }
    }
}

/// Per-invocation facts: (function, attempts, succeeded).
type Outcome<'a> = (&'a str, usize, bool);

/// Counts (total, succeeded, failed, retried) of invocation outcomes.
fn count<'a>(outcomes: impl Iterator<Item = &'a Outcome<'a>>) -> (u64, u64, u64, u64) {
    outcomes.fold((0, 0, 0, 0), |(t, s, f, r), (_, n, ok)| {
        (
            t + 1,
            s + u64::from(*ok),
            f + u64::from(!*ok),
            r + u64::from(*n > 1),
        )
    })
}

impl Report {
    /// Computes the report of `run` of `workload` from its attempts (any order).
    pub fn from_attempts(workload: &str, run: i64, attempts: &[Attempt]) -> Report {
        let mut by_invocation: BTreeMap<&str, Outcome<'_>> = BTreeMap::new();
        let mut all = Samples::default();
        let mut per_function: BTreeMap<&str, Samples> = BTreeMap::new();
        let mut per_worker: BTreeMap<&str, (Samples, [u64; 4])> = BTreeMap::new();
        for a in attempts {
            let ok = a.status == AttemptStatus::Succeeded;
            let e = by_invocation
                .entry(&a.invocation_id)
                .or_insert((&a.function, 0, false));
            e.1 += 1;
            e.2 |= ok;
            all.add(a);
            per_function.entry(&a.function).or_default().add(a);
            let (samples, c) = per_worker
                .entry(a.worker.as_deref().unwrap_or(NO_WORKER))
                .or_default();
            samples.add(a);
            c[0] += 1;
            c[1] += u64::from(ok);
            c[2] += u64::from(!ok);
            c[3] += u64::from(a.attempt > 1);
        }
        let (total, succeeded, failed, retried) = count(by_invocation.values());
        let functions = per_function
            .into_iter()
            .map(|(name, samples)| {
                let (t, s, f, r) = count(by_invocation.values().filter(|o| o.0 == name));
                (name.to_string(), samples.into_group(t, s, f, r))
            })
            .collect();
        let workers = per_worker
            .into_iter()
            .map(|(name, (samples, [t, s, f, r]))| {
                (name.to_string(), samples.into_group(t, s, f, r))
            })
            .collect();
        let start = attempts.iter().map(|a| a.queued_ms).min();
        let end = attempts.iter().map(|a| a.finished_ms).max();
        let duration_seconds = match (start, end) {
            (Some(s), Some(e)) if e > s => (e - s) as f64 / 1000.0,
            _ => 0.0,
        };
        let functions_per_minute = if duration_seconds > 0.0 {
            succeeded as f64 * 60.0 / duration_seconds
        } else {
            0.0
        };
        Report {
            workload: workload.to_string(),
            run,
            total,
            succeeded,
            failed,
            retried,
            duration_seconds,
            functions_per_minute,
            latency_ms: Stats::of(all.latency),
            exec_ms: Stats::of(all.exec),
            cold_start_ms: Stats::of(all.cold),
            functions,
            workers,
            energy: None,
        }
    }

    /// The report with its energy figures (see [`crate::energy::report::compute`]).
    pub fn with_energy(mut self, energy: Option<EnergyReport>) -> Report {
        self.energy = energy;
        self
    }

    /// Pretty JSON with the documented keys.
    pub fn to_json(&self) -> String {
        // A struct of plain numbers, strings and maps with string keys cannot fail to serialise.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The human-readable summary.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Workload:       {}", self.workload);
        let _ = writeln!(out, "Run:            {}", self.run);
        let _ = writeln!(
            out,
            "Invocations:    {} total, {} succeeded, {} failed, {} retried",
            self.total, self.succeeded, self.failed, self.retried
        );
        let _ = writeln!(out, "Duration:       {:.3} s", self.duration_seconds);
        let _ = writeln!(out, "Functions/min:  {:.2}", self.functions_per_minute);
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header(["", "P50", "P95", "P99", "MAX"]);
        for (name, s) in [
            ("Latency (ms)", &self.latency_ms),
            ("Exec (ms)", &self.exec_ms),
            ("Cold start (ms)", &self.cold_start_ms),
        ] {
            t.add_row([name.to_string(), ms(s.p50), ms(s.p95), ms(s.p99), ms(s.max)]);
        }
        let _ = writeln!(out, "\n{t}");
        for (title, groups) in [("FUNCTION", &self.functions), ("WORKER", &self.workers)] {
            let mut t = comfy_table::Table::new();
            t.load_preset(comfy_table::presets::NOTHING);
            t.set_header([
                title,
                "TOTAL",
                "SUCCEEDED",
                "FAILED",
                "RETRIED",
                "LATENCY P50/P95/P99/MAX (ms)",
                "EXEC P50/P95/P99/MAX (ms)",
                "COLD P50/P95 (ms)",
            ]);
            for (name, g) in groups {
                t.add_row([
                    name.clone(),
                    g.total.to_string(),
                    g.succeeded.to_string(),
                    g.failed.to_string(),
                    g.retried.to_string(),
                    quad(&g.latency_ms),
                    quad(&g.exec_ms),
                    format!("{}/{}", ms(g.cold_start_ms.p50), ms(g.cold_start_ms.p95)),
                ]);
            }
            let _ = writeln!(out, "\n{t}");
        }
        match &self.energy {
            Some(e) => energy_table(&mut out, e),
            None => {
                let _ = writeln!(
                    out,
                    "\nEnergy:         no power meter samples in the run's window"
                );
            }
        }
        out
    }
}

fn joules(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn energy_table(out: &mut String, e: &EnergyReport) {
    let _ = writeln!(
        out,
        "\nEnergy:         {:.3} J ({:.6} Wh) over {:.3} s measured of {:.3} s, average {} W",
        e.joules,
        e.watt_hours,
        e.measured_seconds,
        e.window_seconds,
        joules(e.average_watts)
    );
    let _ = writeln!(
        out,
        "                exec {:.3} J, boot {:.3} J, idle {:.3} J (of which off {:.3} J, unattributed {:.3} J)",
        e.exec_joules, e.boot_joules, e.idle_joules, e.off_joules, e.overhead_joules
    );
    let _ = writeln!(
        out,
        "J/invocation:   {} (exec + boot); MicroFaaS Wh*3600/jobs: {}; functions/min {:.2}",
        joules(e.joules_per_invocation),
        joules(e.microfaas_joules_per_function),
        e.functions_per_minute
    );
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "FUNCTION",
        "INVOCATIONS",
        "J",
        "J/INVOCATION",
        "EXEC J",
        "BOOT J",
    ]);
    for (name, f) in &e.per_function {
        t.add_row([
            name.clone(),
            f.invocations.to_string(),
            format!("{:.3}", f.joules),
            joules(f.joules_per_invocation),
            format!("{:.3}", f.exec_joules),
            format!("{:.3}", f.boot_joules),
        ]);
    }
    let _ = writeln!(out, "\n{t}");
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "WORKER",
        "ATTEMPTS",
        "J",
        "J/INVOCATION",
        "EXEC J",
        "BOOT J",
        "IDLE J",
        "OFF J",
    ]);
    for (name, w) in &e.per_worker {
        t.add_row([
            name.clone(),
            w.attempts.to_string(),
            format!("{:.3}", w.joules),
            joules(w.joules_per_invocation),
            format!("{:.3}", w.exec_joules),
            format!("{:.3}", w.boot_joules),
            format!("{:.3}", w.idle_joules),
            format!("{:.3}", w.off_joules),
        ]);
    }
    let _ = writeln!(out, "\n{t}");
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn quad(s: &Stats) -> String {
    format!("{}/{}/{}/{}", ms(s.p50), ms(s.p95), ms(s.p99), ms(s.max))
}

/// The CSV header: the original MicroFaaS columns, then ours.
pub const CSV_HEADER: &str = "invocation_id,worker,function_id,exec_time(ms),rtt(ms),timestamp,workload,run,generation,seq,attempt,status,queued_ms,dispatched_ms,finished_ms,exec_us,rtt_us,cold_start_ms,error,output_size,output_sha256";

/// Columns added after [`CSV_HEADER`] when the run has energy figures.
pub const CSV_ENERGY_HEADER: &str = "energy_j,exec_energy_j,boot_energy_j";

/// One row per attempt, in the order given. `timestamp` is when the attempt finished
/// (RFC 3339 UTC); empty cells are unknown values.
pub fn to_csv(attempts: &[Attempt]) -> String {
    to_csv_with_energy(attempts, None)
}

/// [`to_csv`] plus, with energy figures, each attempt's energy (exec + boot, exec, boot).
pub fn to_csv_with_energy(attempts: &[Attempt], energy: Option<&EnergyReport>) -> String {
    let mut out = String::from(CSV_HEADER);
    if energy.is_some() {
        out.push(',');
        out.push_str(CSV_ENERGY_HEADER);
    }
    out.push('\n');
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let us_as_ms = |v: Option<i64>| v.map(|us| format!("{:.3}", us as f64 / 1000.0));
    for a in attempts {
        let cells = [
            csv_cell(&a.invocation_id),
            csv_cell(a.worker.as_deref().unwrap_or("")),
            csv_cell(&a.function),
            us_as_ms(a.exec_us).unwrap_or_default(),
            us_as_ms(a.rtt_us).unwrap_or_default(),
            clock::format_unix_millis(a.finished_ms),
            csv_cell(&a.workload),
            a.run.to_string(),
            a.generation.to_string(),
            a.seq.to_string(),
            a.attempt.to_string(),
            a.status.as_str().to_string(),
            a.queued_ms.to_string(),
            opt(a.dispatched_ms),
            a.finished_ms.to_string(),
            opt(a.exec_us),
            opt(a.rtt_us),
            opt(a.cold_start_ms),
            csv_cell(a.error.as_deref().unwrap_or("")),
            a.output_size.map(|v| v.to_string()).unwrap_or_default(),
            csv_cell(a.output_sha256.as_deref().unwrap_or("")),
        ];
        out.push_str(&cells.join(","));
        if let Some(e) = energy {
            match e.attempts.get(&(a.invocation_id.clone(), a.attempt)) {
                Some((exec, boot)) => {
                    let _ = write!(out, ",{:.6},{exec:.6},{boot:.6}", exec + boot);
                }
                None => out.push_str(",0,0,0"),
            }
        }
        out.push('\n');
    }
    out
}

/// RFC 4180 quoting, only where needed.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
