//! Running the engine inside a command (`apply`, `delete`): host the agent endpoint, reconcile
//! until every touched object has converged (or the timeout), show progress per worker and
//! workload, and say exactly what did not converge.

use crate::daemon::host::{Host, HostOptions};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::manifest::types::{PowerPolicy, WorkerSpec};
use crate::store::{Store, StoredObject};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where an object stands with respect to what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Converged,
    Waiting(String),
    Failed(String),
}

/// Pure convergence rule, shared by apply and tests.
pub fn standing(o: &StoredObject, latest_run: Option<&crate::store::invocations::Run>) -> Standing {
    let status = crate::engine::status::Status::from_value(&o.status);
    let phase = status.phase().unwrap_or("Pending");
    let observed = status.observed_generation();
    match o.kind {
        Kind::Worker => {
            if o.status
                .get("health")
                .and_then(|h| h.as_str())
                .is_some_and(|h| h != "Good")
            {
                return Standing::Failed(format!(
                    "health {}, phase {phase}",
                    o.status["health"].as_str().unwrap_or("?")
                ));
            }
            if observed != o.generation {
                return Standing::Waiting(phase.to_string());
            }
            let Ok(spec) = serde_json::from_value::<WorkerSpec>(o.spec.clone()) else {
                return Standing::Failed("unreadable spec".into());
            };
            if spec.vm.is_none() {
                return board_standing(o, &spec, phase);
            }
            let done = match spec.power {
                PowerPolicy::On => matches!(phase, "Ready" | "Busy"),
                PowerPolicy::Off | PowerPolicy::OnDemand => phase == "Off",
            };
            if done {
                Standing::Converged
            } else {
                Standing::Waiting(phase.to_string())
            }
        }
        Kind::Workload
            if o.status.get(crate::engine::RERUN) == Some(&serde_json::Value::Bool(true)) =>
        {
            Standing::Waiting("rerun requested".into())
        }
        Kind::Workload => match latest_run {
            Some(r) if r.generation == o.generation => match r.phase {
                crate::store::invocations::RunPhase::Running => Standing::Waiting(format!(
                    "running {}/{}",
                    r.counts.succeeded + r.counts.failed,
                    r.counts.total
                )),
                crate::store::invocations::RunPhase::Succeeded => Standing::Converged,
                other => {
                    Standing::Failed(format!("run {} {}: {}", r.run, other.as_str(), r.message))
                }
            },
            _ => Standing::Waiting("pending".into()),
        },
        _ => {
            if observed == o.generation {
                Standing::Converged
            } else {
                Standing::Waiting(phase.to_string())
            }
        }
    }
}

/// A board has converged when its observed power matches what is wanted (an operator's power
/// override, else its policy). It cannot converge without power control, nor while its power
/// is Unknown (nothing is pressed on unknown evidence), once its switch has been polled.
fn board_standing(o: &StoredObject, spec: &WorkerSpec, phase: &str) -> Standing {
    let status = crate::engine::status::Status::from_value(&o.status);
    let cond = |kind: &str| {
        o.status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
    };
    let on_switch = spec
        .board
        .as_ref()
        .and_then(|b| b.network.as_ref())
        .and_then(|n| n.switch.as_ref())
        .is_some();
    let polled = cond("LinkUp").is_some_and(|c| c["reason"] != "NotPolledYet");
    if status.get(crate::engine::board::POWER_REQUEST).is_some() || (on_switch && !polled) {
        return Standing::Waiting(phase.to_string());
    }
    if let Some(c) = cond("PowerControl")
        && c["status"] == "False"
    {
        return Standing::Failed(format!(
            "no power control: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    let want_on = match o.status[crate::engine::board::POWER_OVERRIDE].as_object() {
        Some(ov) if ov.get("generation").and_then(|g| g.as_i64()) == Some(o.generation) => {
            ov.get("state").and_then(|s| s.as_str()) == Some("On")
        }
        _ => spec.power == PowerPolicy::On,
    };
    match phase {
        "Unknown" => Standing::Failed(format!(
            "power Unknown ({}); nothing is pressed on unknown evidence: `microfaasctl power off --force` establishes it",
            o.status["observedPower"]["evidence"]
                .as_str()
                .unwrap_or("no evidence")
        )),
        "Ready" | "Busy" if want_on => Standing::Converged,
        "Off" if !want_on => Standing::Converged,
        _ => Standing::Waiting(phase.to_string()),
    }
}

pub struct Outcome {
    pub failed: Vec<(String, String)>,
    pub waiting: Vec<(String, String)>,
    /// Workloads that ran, to report on.
    pub runs: Vec<(String, i64)>,
}

/// Hosts the endpoint, runs the engine over `touched` until converged or `timeout`.
pub async fn converge<D: VmDriver>(
    store: Store,
    driver: Arc<D>,
    state_dir: &Path,
    touched: Vec<(Kind, String)>,
    timeout: Duration,
    default_initrd: Option<std::path::PathBuf>,
) -> Result<Outcome, String> {
    let mut opts = HostOptions::new(state_dir);
    opts.default_initrd = default_initrd;
    let host = Host::start(store, driver, opts).await?;
    let engine = host.engine.clone();
    for (k, n) in &touched {
        engine.queue.add((*k, n.clone()));
    }
    // Workloads first power workers on; the rest converge around them.
    let progress = Progress::new(&touched);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = engine.subscribe_changes();
    let mut interrupted = false;
    // SIGTERM as well as Ctrl-C: stop converging, leave workers as they are (a later apply
    // adopts them), and say what had not converged.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let outcome = loop {
        let (o, all) = engine.with_store(|s| assess(s, &touched, |k| engine.has_seen(k)));
        for (kind, name, obj, run, st) in &all {
            progress.show(*kind, name, obj, run.as_ref(), st);
        }
        let Outcome {
            mut failed,
            waiting,
            runs,
        } = o;
        // A store that cannot write pauses the work (the engine retries); it fails `apply`
        // only if it still cannot when `apply` stops waiting.
        if let Some(why) = engine.storage_fault()
            && (waiting.is_empty() || tokio::time::Instant::now() >= deadline || interrupted)
        {
            failed.push((
                "store".to_string(),
                format!("cannot record invocations ({why}); no work is taken until it can"),
            ));
        }
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline || interrupted {
            break Outcome {
                failed,
                waiting,
                runs,
            };
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => { interrupted = true; }
            _ = term.recv() => { interrupted = true; }
        }
    };
    progress.finish();
    host.shutdown().await;
    Ok(outcome)
}

/// One object's standing with what it was judged on.
type Assessed = (
    Kind,
    String,
    StoredObject,
    Option<crate::store::invocations::Run>,
    Standing,
);

/// Where every touched object stands. An object gone from the store has been deleted (done);
/// one marked for deletion is still being torn down; `seen` says whether the engine judging
/// has observed it itself (a status from an earlier process is not evidence of the present).
fn assess(
    store: &Store,
    touched: &[(Kind, String)],
    seen: impl Fn(&(Kind, String)) -> bool,
) -> (Outcome, Vec<Assessed>) {
    let mut out = Outcome {
        failed: Vec::new(),
        waiting: Vec::new(),
        runs: Vec::new(),
    };
    let mut all = Vec::new();
    for (kind, name) in touched {
        let Ok(Some(o)) = store.get(*kind, name) else {
            continue;
        };
        let run = if *kind == Kind::Workload {
            store.latest_run(name).ok().flatten()
        } else {
            None
        };
        if let Some(r) = &run
            && r.generation == o.generation
        {
            out.runs.push((name.clone(), r.run));
        }
        let mut s = if store.deletion_requested(*kind, name).unwrap_or(false) {
            Standing::Waiting("being deleted".into())
        } else {
            standing(&o, run.as_ref())
        };
        if s == Standing::Converged && !seen(&(*kind, name.clone())) {
            s = Standing::Waiting("observing".into());
        }
        let reference = format!("{}/{name}", kind.singular());
        match &s {
            Standing::Converged => {}
            Standing::Waiting(w) => out.waiting.push((reference, w.clone())),
            Standing::Failed(f) => out.failed.push((reference, f.clone())),
        }
        all.push((*kind, name.clone(), o, run, s));
    }
    (out, all)
}

/// With a daemon holding the state dir (`daemon_pid`), or orchestrators elsewhere serving a
/// shared store (`None`): their engines converge what this command stored; wait on the status
/// they write until `touched` has converged, the timeout, Ctrl-C, or the local daemon going
/// away.
pub async fn wait_on_daemon(
    state_dir: &Path,
    touched: &[(Kind, String)],
    timeout: Duration,
    daemon_pid: Option<&str>,
) -> Result<Outcome, String> {
    let store = Store::open(state_dir).map_err(|e| e.to_string())?;
    let progress = Progress::new(touched);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupted = false;
    let outcome = loop {
        // The daemon's engine observes what it is told: its statuses are current.
        let (o, all) = assess(&store, touched, |_| true);
        for (kind, name, obj, run, st) in &all {
            progress.show(*kind, name, obj, run.as_ref(), st);
        }
        if o.waiting.is_empty() || tokio::time::Instant::now() >= deadline || interrupted {
            break o;
        }
        if let Some(daemon_pid) = daemon_pid
            && crate::store::StateLock::holder(state_dir).is_none()
        {
            progress.finish();
            return Err(format!(
                "the daemon (PID {daemon_pid}) stopped before this converged; the desired state is stored and the next engine applies it"
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => { interrupted = true; }
            _ = term.recv() => { interrupted = true; }
        }
    };
    progress.finish();
    Ok(outcome)
}

/// Live lines per object: spinners on a terminal, one plain line per change otherwise.
struct Progress {
    multi: Option<MultiProgress>,
    bars: BTreeMap<String, ProgressBar>,
    last: std::sync::Mutex<BTreeMap<String, String>>,
}

impl Progress {
    fn new(touched: &[(Kind, String)]) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = tty.then(MultiProgress::new);
        let mut bars = BTreeMap::new();
        if let Some(m) = &multi {
            let style = ProgressStyle::with_template("{spinner} {prefix:<28} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            for (k, n) in touched
                .iter()
                .filter(|(k, _)| matches!(k, Kind::Worker | Kind::Workload))
            {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(format!("{}/{n}", k.singular()));
                b.enable_steady_tick(Duration::from_millis(120));
                bars.insert(format!("{}/{n}", k.singular()), b);
            }
        }
        Progress {
            multi,
            bars,
            last: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    fn show(
        &self,
        kind: Kind,
        name: &str,
        o: &StoredObject,
        run: Option<&crate::store::invocations::Run>,
        s: &Standing,
    ) {
        if !matches!(kind, Kind::Worker | Kind::Workload) {
            return;
        }
        let reference = format!("{}/{name}", kind.singular());
        let phase = o
            .status
            .get("phase")
            .and_then(|p| p.as_str())
            .unwrap_or("Pending");
        let msg = match (kind, run) {
            (Kind::Workload, Some(r)) => format!(
                "{phase}: {}/{} done, {} failed",
                r.counts.succeeded + r.counts.failed,
                r.counts.total,
                r.counts.failed
            ),
            _ => match s {
                Standing::Failed(f) => format!("{phase} ({f})"),
                _ => phase.to_string(),
            },
        };
        if let Some(b) = self.bars.get(&reference) {
            b.set_message(msg);
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.get(&reference) != Some(&msg) {
            eprintln!("{reference} {msg}");
            last.insert(reference, msg);
        }
    }

    fn finish(&self) {
        for b in self.bars.values() {
            b.finish();
        }
        if let Some(m) = &self.multi {
            let _ = m.clear();
        }
    }
}
