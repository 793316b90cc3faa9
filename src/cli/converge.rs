//! Running the engine inside a command (`apply`, `delete`): host the agent endpoint, reconcile
//! until every touched object has converged (or the timeout), show progress per worker and
//! workload, and say exactly what did not converge.

use crate::engine::vm::VmDriver;
use crate::engine::{Config, Engine};
use crate::manifest::Kind;
use crate::manifest::types::{AuthSpec, ClusterSpec, PowerPolicy, WorkerSpec};
use crate::orchestrator::{Endpoint, Sessions, dispatch};
use crate::store::{Store, StoredObject};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

/// The cluster token: from the Cluster's auth source, else one generated once per state dir.
pub fn cluster_token(cluster: Option<&ClusterSpec>, state_dir: &Path) -> Result<String, String> {
    if let Some(AuthSpec {
        token_env,
        token_file,
    }) = cluster.and_then(|c| c.auth.as_ref())
    {
        if let Some(var) = token_env {
            return std::env::var(var)
                .map_err(|_| format!("the cluster token variable {var} is not set"));
        }
        if let Some(f) = token_file {
            return std::fs::read_to_string(f)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the cluster token file {f}: {e}"));
        }
    }
    let path = state_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    let token = crate::orchestrator::endpoint::random_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(f, "{token}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
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
    let cluster: Option<ClusterSpec> = store
        .list(Some(Kind::Cluster))
        .ok()
        .and_then(|l| l.into_iter().next())
        .and_then(|c| serde_json::from_value(c.spec).ok());
    let token = cluster_token(cluster.as_ref(), state_dir)?;
    let listen = cluster.as_ref().map_or_else(
        || "127.0.0.1:63302".to_string(),
        |c| c.orchestrator.listen.clone(),
    );
    let endpoint = Endpoint::bind(&listen, token.clone().into_bytes())
        .await
        .map_err(|e| format!("cannot listen for agents on {listen}: {e}"))?;
    let sessions: Arc<Sessions> = endpoint.sessions.clone();
    let engine = Engine::new(
        store,
        driver,
        sessions,
        Config {
            state_dir: state_dir.to_path_buf(),
            orchestrator_port: endpoint.addr.port(),
            token,
            default_initrd,
            concurrency: 8,
            resync: Duration::from_secs(10),
        },
    );
    let events = endpoint.events_sender();
    let e2 = engine.clone();
    engine.set_starter(Arc::new(move |name| {
        dispatch::spawn(e2.clone(), events.clone(), name)
    }));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Meters sample for as long as the engine runs, so every run has its energy recorded.
    let sampler = crate::energy::sampler::spawn(state_dir, stop_rx.clone())
        .map_err(|e| format!("cannot start the power meters: {e}"))?;
    let runner = tokio::spawn(engine.clone().run(stop_rx, Some(endpoint.subscribe())));
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
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        let mut runs = Vec::new();
        for (kind, name) in &touched {
            let Some(o) = engine.get(*kind, name) else {
                continue;
            };
            let run = if *kind == Kind::Workload {
                engine.with_store(|s| s.latest_run(name)).ok().flatten()
            } else {
                None
            };
            if let Some(r) = &run
                && r.generation == o.generation
            {
                runs.push((name.clone(), r.run));
            }
            let mut s = standing(&o, run.as_ref());
            if s == Standing::Converged && !engine.has_seen(&(*kind, name.clone())) {
                s = Standing::Waiting("observing".into());
            }
            progress.show(*kind, name, &o, run.as_ref(), &s);
            let reference = format!("{}/{name}", kind.singular());
            match s {
                Standing::Converged => {}
                Standing::Waiting(w) => waiting.push((reference, w)),
                Standing::Failed(f) => failed.push((reference, f)),
            }
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
    let _ = stop_tx.send(true);
    let _ = runner.await;
    let _ = sampler.await;
    drop(endpoint);
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
