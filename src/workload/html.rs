//! The HTML report: one self-contained page (no scripts, no external files) with the summary
//! and four inline SVG plots — latency CDF per function, throughput over time, cold-start
//! breakdown per function, per-worker timeline — plus, when the run has energy figures, power
//! over time with the invocations overlaid and joules per invocation by function. The SVG is written by hand: four plot shapes
//! do not justify a plotting crate in the controller. The page is also well-formed XML, so it
//! can be checked and post-processed with XML tools.

use super::report::{NO_WORKER, Report, Stats};
use crate::energy::EnergyReport;
use crate::store::{Attempt, AttemptStatus};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const PALETTE: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const W: f64 = 760.0;
const H: f64 = 320.0;
const LEFT: f64 = 140.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t') => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A 1-2-5 step giving about five ticks over `span`.
fn tick_step(span: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// One chart: a data window mapped onto the plot area, with axes drawn on `finish`.
struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    x: (f64, f64),
    y: (f64, f64),
    /// Category names for the y axis, first at the top (see `band`); numeric ticks when empty.
    rows: Vec<String>,
    body: String,
    legend: Vec<(String, &'static str)>,
}

impl Chart {
    fn new(title: &str, x_label: &str, y_label: &str, x_max: f64, y_max: f64) -> Chart {
        let fix = |m: f64| if m.is_finite() && m > 0.0 { m } else { 1.0 };
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            x: (0.0, fix(x_max)),
            y: (0.0, fix(y_max)),
            rows: Vec::new(),
            body: String::new(),
            legend: Vec::new(),
        }
    }

    /// A chart with one horizontal band per category (row i spans y = i..i+1).
    fn categories(title: &str, x_label: &str, x_max: f64, rows: Vec<String>) -> Chart {
        let mut c = Chart::new(title, x_label, "", x_max, rows.len().max(1) as f64);
        c.rows = rows;
        c
    }

    /// The bottom y of category `i`'s band: categories read top-down, like a table.
    fn band(&self, i: usize) -> f64 {
        self.rows.len().saturating_sub(i + 1) as f64
    }

    fn px(&self, v: f64) -> f64 {
        LEFT + (v - self.x.0) / (self.x.1 - self.x.0) * (W - LEFT - RIGHT)
    }

    fn py(&self, v: f64) -> f64 {
        H - BOTTOM - (v - self.y.0) / (self.y.1 - self.y.0) * (H - TOP - BOTTOM)
    }

    fn polyline(&mut self, points: &[(f64, f64)], color: &str) {
        let pts: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let _ = writeln!(
            self.body,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            pts.join(" ")
        );
    }

    /// A filled rectangle over data coordinates, with a hover title.
    fn rect(&mut self, (x0, x1): (f64, f64), (y0, y1): (f64, f64), color: &str, tip: &str) {
        let (a, b) = (self.px(x0), self.px(x1));
        let (c, d) = (self.py(y1), self.py(y0));
        let _ = writeln!(
            self.body,
            r#"<rect x="{a:.1}" y="{c:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}</title></rect>"#,
            (b - a).max(0.5),
            (d - c).max(0.5),
            esc(tip)
        );
    }

    fn finish(self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="18" text-anchor="middle" font-size="13" font-weight="bold">{}</text>"#,
            W / 2.0,
            esc(&self.title)
        );
        let (bx, by) = (H - BOTTOM, LEFT);
        let _ = writeln!(
            s,
            r##"<path d="M{LEFT},{TOP} V{bx} H{}" fill="none" stroke="#333"/>"##,
            W - RIGHT
        );
        let step = tick_step(self.x.1 - self.x.0);
        let mut v = self.x.0;
        while v <= self.x.1 + step * 1e-9 {
            let x = self.px(v);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{bx}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                bx + 4.0,
                bx + 16.0,
                num(v)
            );
            v += step;
        }
        if self.rows.is_empty() {
            let step = tick_step(self.y.1 - self.y.0);
            let mut v = self.y.0;
            while v <= self.y.1 + step * 1e-9 {
                let y = self.py(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{}" y1="{y:.1}" x2="{by}" y2="{y:.1}" stroke="#333"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    by - 4.0,
                    by - 6.0,
                    y + 4.0,
                    num(v)
                );
                v += step;
            }
        } else {
            for (i, name) in self.rows.iter().enumerate() {
                let _ = writeln!(
                    s,
                    r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                    by - 6.0,
                    self.py(self.band(i) + 0.5) + 4.0,
                    esc(name)
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (LEFT + W - RIGHT) / 2.0,
            H - 8.0,
            esc(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="14" y="{0}" text-anchor="middle" transform="rotate(-90 14 {0})">{1}</text>"#,
            (TOP + H - BOTTOM) / 2.0,
            esc(&self.y_label)
        );
        s.push_str(&self.body);
        for (i, (name, color)) in self.legend.iter().enumerate() {
            let y = TOP + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{}" y="{y}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
                W - RIGHT + 10.0,
                W - RIGHT + 24.0,
                y + 9.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

fn status_color(s: AttemptStatus) -> &'static str {
    match s {
        AttemptStatus::Succeeded => "#2ca02c",
        AttemptStatus::Failed => "#d62728",
        AttemptStatus::Timeout => "#ff7f0e",
        AttemptStatus::Lost => "#9467bd",
    }
}

fn succeeded(attempts: &[Attempt]) -> impl Iterator<Item = &Attempt> {
    attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Succeeded)
}

/// Step CDF of round-trip latency, one line per function.
fn latency_cdf(attempts: &[Attempt]) -> String {
    let mut per: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for a in succeeded(attempts) {
        if let Some(us) = a.rtt_us {
            per.entry(&a.function).or_default().push(us as f64 / 1000.0);
        }
    }
    let max = per.values().flatten().copied().fold(0.0, f64::max);
    let mut c = Chart::new(
        "Latency CDF per function",
        "round trip (ms)",
        "fraction of invocations",
        max,
        1.0,
    );
    for (i, (name, mut v)) in per.into_iter().enumerate() {
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut pts = vec![(0.0, 0.0)];
        for (k, x) in v.iter().enumerate() {
            pts.push((*x, k as f64 / n));
            pts.push((*x, (k + 1) as f64 / n));
        }
        c.polyline(&pts, color(i));
        c.legend.push((name.to_string(), color(i)));
    }
    c.finish()
}

/// Succeeded invocations per second, in buckets over the run.
fn throughput(attempts: &[Attempt], start: i64, duration_s: f64) -> String {
    let bucket = tick_step(duration_s.max(1.0) / 6.0).max(1.0);
    let n = (duration_s / bucket).ceil().max(1.0) as usize;
    let mut counts = vec![0u64; n];
    for a in succeeded(attempts) {
        let t = (a.finished_ms - start) as f64 / 1000.0;
        let i = ((t / bucket) as usize).min(n - 1);
        counts[i] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(0) as f64 / bucket;
    let mut c = Chart::new(
        "Throughput over time",
        &format!("time since start (s), {} s buckets", num(bucket)),
        "succeeded per second",
        n as f64 * bucket,
        peak,
    );
    for (i, k) in counts.iter().enumerate() {
        let x = i as f64 * bucket;
        let rate = *k as f64 / bucket;
        c.rect(
            (x, x + bucket * 0.9),
            (0.0, rate),
            color(0),
            &format!("{}-{} s: {k} succeeded", num(x), num(x + bucket)),
        );
    }
    c.finish()
}

/// Mean time per invocation split into boot wait, orchestrator overhead (round trip minus
/// exec) and exec, per function: where the time goes.
fn cold_start_breakdown(report: &Report, attempts: &[Attempt]) -> String {
    let mut per: BTreeMap<&str, [f64; 4]> = BTreeMap::new();
    for a in succeeded(attempts) {
        let e = per.entry(&a.function).or_default();
        let cold = a.cold_start_ms.unwrap_or(0) as f64;
        let exec = a.exec_us.unwrap_or(0) as f64 / 1000.0;
        let rtt = a.rtt_us.unwrap_or(0) as f64 / 1000.0;
        e[0] += cold;
        e[1] += (rtt - exec).max(0.0);
        e[2] += exec;
        e[3] += 1.0;
    }
    let means: Vec<(&str, [f64; 3])> = per
        .into_iter()
        .map(|(f, [c, o, e, n])| (f, [c / n, o / n, e / n]))
        .collect();
    let max = means
        .iter()
        .map(|(_, m)| m.iter().sum::<f64>())
        .fold(0.0, f64::max);
    let mut c = Chart::categories(
        "Cold-start breakdown (mean per succeeded invocation)",
        "ms",
        max,
        means.iter().map(|(f, _)| f.to_string()).collect(),
    );
    let parts = [
        ("boot wait", "#7f7f7f"),
        ("dispatch overhead", "#ff7f0e"),
        ("exec", "#1f77b4"),
    ];
    for (row, (f, m)) in means.iter().enumerate() {
        let cold_p50 = report
            .functions
            .get(*f)
            .map(|g| g.cold_start_ms)
            .unwrap_or_default();
        let mut x = 0.0;
        let y = c.band(row);
        for ((label, col), v) in parts.iter().zip(m) {
            c.rect(
                (x, x + v),
                (y + 0.15, y + 0.85),
                col,
                &format!("{f}: {label} {v:.3} ms{}", cold_note(&cold_p50)),
            );
            x += v;
        }
    }
    c.legend = parts.iter().map(|(l, c)| (l.to_string(), *c)).collect();
    c.finish()
}

fn cold_note(s: &Stats) -> String {
    match s.p50 {
        Some(p) => format!(" (cold start p50 {p:.0} ms)"),
        None => String::new(),
    }
}

/// One row per worker: boot wait (grey) then each attempt from dispatch to finish,
/// coloured by status.
fn worker_timeline(attempts: &[Attempt], start: i64, duration_s: f64) -> String {
    let mut workers: Vec<&str> = attempts
        .iter()
        .map(|a| a.worker.as_deref().unwrap_or(NO_WORKER))
        .collect();
    workers.sort_unstable();
    workers.dedup();
    let mut c = Chart::categories(
        "Per-worker timeline",
        "time since start (s)",
        duration_s,
        workers.iter().map(|w| w.to_string()).collect(),
    );
    let secs = |ms: i64| (ms - start) as f64 / 1000.0;
    for a in attempts {
        let w = a.worker.as_deref().unwrap_or(NO_WORKER);
        let row = c.band(workers.binary_search(&w).unwrap_or(0));
        let begin = a.dispatched_ms.unwrap_or(a.queued_ms);
        if let Some(cold) = a.cold_start_ms {
            c.rect(
                (secs(begin - cold), secs(begin)),
                (row + 0.3, row + 0.7),
                "#c7c7c7",
                &format!("{} boot wait {cold} ms", a.invocation_id),
            );
        }
        c.rect(
            (secs(begin), secs(a.finished_ms)),
            (row + 0.15, row + 0.85),
            status_color(a.status),
            &format!(
                "{} {} attempt {} {}",
                a.invocation_id, a.function, a.attempt, a.status
            ),
        );
    }
    c.legend = AttemptStatus::ALL
        .iter()
        .map(|s| (s.to_string(), status_color(*s)))
        .chain([("boot wait".to_string(), "#c7c7c7")])
        .collect();
    c.finish()
}

/// Each meter's power over the run, with every attempt drawn as a bar along the top (coloured
/// by status) so power can be read against what ran.
fn power_over_time(e: &EnergyReport, attempts: &[Attempt]) -> String {
    let (a, b) = e.window;
    let secs = |ms: i64| (ms - a) as f64 / 1000.0;
    let inside = |t: i64| t >= a && t <= b;
    let peak = e
        .curves
        .iter()
        .flat_map(|(_, pts)| pts.iter().filter(|p| inside(p.0)).map(|p| p.1))
        .fold(0.0, f64::max);
    let top = peak * 1.15;
    let mut c = Chart::new(
        "Power over time (invocations along the top)",
        "time since run start (s)",
        "watts",
        secs(b),
        top,
    );
    for (i, (name, pts)) in e.curves.iter().enumerate() {
        let line: Vec<(f64, f64)> = pts
            .iter()
            .filter(|p| inside(p.0))
            .map(|p| (secs(p.0), p.1))
            .collect();
        c.polyline(&line, color(i));
        c.legend.push((format!("meter {name}"), color(i)));
    }
    for at in attempts {
        if let Some(d) = at.dispatched_ms {
            let (j_exec, j_boot) = e
                .attempts
                .get(&(at.invocation_id.clone(), at.attempt))
                .copied()
                .unwrap_or_default();
            c.rect(
                (secs(d), secs(at.finished_ms)),
                (peak * 1.05, peak * 1.12),
                status_color(at.status),
                &format!(
                    "{} {} on {}: {:.3} J exec + {:.3} J boot",
                    at.invocation_id,
                    at.function,
                    at.worker.as_deref().unwrap_or(NO_WORKER),
                    j_exec,
                    j_boot
                ),
            );
        }
    }
    c.finish()
}

/// Mean joules per invocation for each function, split into exec and boot energy.
fn joules_per_function(e: &EnergyReport) -> String {
    let rows: Vec<(&String, f64, f64)> = e
        .per_function
        .iter()
        .map(|(f, g)| {
            let n = g.invocations.max(1) as f64;
            (f, g.exec_joules / n, g.boot_joules / n)
        })
        .collect();
    let max = rows.iter().map(|r| r.1 + r.2).fold(0.0, f64::max);
    let mut c = Chart::categories(
        "Energy per invocation by function",
        "joules per invocation",
        max,
        rows.iter().map(|r| r.0.clone()).collect(),
    );
    let parts = [("exec", "#1f77b4"), ("boot", "#7f7f7f")];
    for (i, (f, exec, boot)) in rows.iter().enumerate() {
        let y = c.band(i);
        c.rect(
            (0.0, *exec),
            (y + 0.15, y + 0.85),
            parts[0].1,
            &format!("{f}: exec {exec:.3} J"),
        );
        c.rect(
            (*exec, exec + boot),
            (y + 0.15, y + 0.85),
            parts[1].1,
            &format!("{f}: boot {boot:.3} J"),
        );
    }
    c.legend = parts.iter().map(|(l, c)| (l.to_string(), *c)).collect();
    c.finish()
}

fn energy_summary(o: &mut String, e: &EnergyReport) {
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
    let _ = writeln!(
        o,
        "<p>Energy: {:.3} J ({:.6} Wh), average {} W; exec {:.3} J, boot {:.3} J, idle {:.3} J; {} J per invocation; MicroFaaS Wh*3600/jobs {} J.</p>",
        e.joules,
        e.watt_hours,
        f(e.average_watts),
        e.exec_joules,
        e.boot_joules,
        e.idle_joules,
        f(e.joules_per_invocation),
        f(e.microfaas_joules_per_function)
    );
}

/// The whole page.
pub fn to_html(report: &Report, attempts: &[Attempt]) -> String {
    let start = attempts.iter().map(|a| a.queued_ms).min().unwrap_or(0);
    let d = report.duration_seconds;
    let mut o = String::new();
    let title = format!("microfaas report: {} run {}", report.workload, report.run);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n\
         <meta charset=\"utf-8\"/>\n<title>{t}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; }}\n\
         table {{ border-collapse: collapse; margin-bottom: 1em; }}\n\
         td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}\n\
         th:first-child, td:first-child {{ text-align: left; }}\n\
         svg {{ display: block; margin: 1em 0; }}\n</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = esc(&title)
    );
    let _ = writeln!(
        o,
        "<p>{} invocations: {} succeeded, {} failed, {} retried; {:.3} s; {:.2} functions per minute.</p>",
        report.total,
        report.succeeded,
        report.failed,
        report.retried,
        d,
        report.functions_per_minute
    );
    let row = |name: &str, s: &Stats| {
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
        format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(name),
            f(s.p50),
            f(s.p95),
            f(s.p99),
            f(s.max)
        )
    };
    o.push_str("<table>\n<tr><th>ms (nearest rank)</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>\n");
    o.push_str(&row("latency (round trip)", &report.latency_ms));
    o.push_str(&row("exec", &report.exec_ms));
    o.push_str(&row("cold start", &report.cold_start_ms));
    o.push_str("</table>\n");
    for (title, groups) in [("function", &report.functions), ("worker", &report.workers)] {
        let _ = writeln!(
            o,
            "<table>\n<tr><th>{title}</th><th>total</th><th>succeeded</th><th>failed</th><th>retried</th><th>latency p50</th><th>latency p99</th><th>exec p50</th><th>cold start p50</th></tr>"
        );
        for (name, g) in groups {
            let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.3}"));
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                g.total,
                g.succeeded,
                g.failed,
                g.retried,
                f(g.latency_ms.p50),
                f(g.latency_ms.p99),
                f(g.exec_ms.p50),
                f(g.cold_start_ms.p50)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str(&latency_cdf(attempts));
    o.push_str(&throughput(attempts, start, d));
    o.push_str(&cold_start_breakdown(report, attempts));
    o.push_str(&worker_timeline(attempts, start, d));
    if let Some(e) = &report.energy {
        energy_summary(&mut o, e);
        o.push_str(&power_over_time(e, attempts));
        o.push_str(&joules_per_function(e));
    }
    o.push_str("</body>\n</html>\n");
    o
}
