//! Quarantine of a worker whose agent keeps failing calls: every boot of `vm-0` is a faulty
//! agent (tests/support/faulty.rs: it authenticates, then drops the connection or answers
//! garbage on its first call). After `quarantineAfter` (here 2) such faults in a row the
//! worker is marked Bad with `Healthy=False`, reason `AgentFaults`, and a `Quarantined`
//! event; its work goes to the other worker, or fails naming the quarantine when there is
//! none; it is not booted again. `uncordon` brings it back. Loopback agents, no QEMU.

mod support;

use microfaas::engine::operator;
use microfaas::engine::quarantine::AGENT_FAULTS;
use microfaas::manifest::Kind;
use microfaas::store::invocations::{Attempt, Run};
use microfaas::store::{AttemptStatus, RunPhase};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::faulty::{Fault, FaultyDriver};
use support::host::{AgentProcs, Host, loopback, objects};

const T: Duration = Duration::from_secs(90);

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent"))
}

/// `workers` Warm OnDemand workers `vm-0..` and a workload of `count` calls, three attempts
/// each, `quarantineAfter: 2`.
fn declare(state: &Path, workers: usize, count: u32) {
    let mut yaml = "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {bootTimeout: 20s, powerOnHoldoff: 0s, jobTimeout: 30s, quarantineAfter: 2}\n".to_string();
    for i in 0..workers {
        yaml.push_str(&format!("---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: vm-{i}, labels: {{pool: p}}}}\nspec: {{power: OnDemand, lifecycle: {{mode: Warm}}, vm: {{kernel: /k}}}}\n"));
    }
    yaml.push_str(&format!("---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: fl}}\nspec: {{runtime: builtin, handler: float_operations, timeout: 5s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  workers: {{matchLabels: {{pool: p}}}}\n  functions: [{{function: fl, count: {count}, inputs: [{{n: 100}}]}}]\n  maxAttempts: 3\n  concurrency: 2\n"));
    microfaas::store::Store::open(state)
        .expect("store")
        .apply(&objects(&yaml), None, false, false)
        .expect("apply");
}

type H = Host<FaultyDriver>;

/// Waits for run `n` of `w` to end; returns it and its attempts.
async fn finished_run(h: &H, n: i64) -> (Run, Vec<Attempt>) {
    let started = Instant::now();
    loop {
        let run = h.engine.with_store(|s| s.run("w", n)).expect("run");
        if let Some(r) = run.filter(|r| r.phase != RunPhase::Running) {
            let attempts = h.engine.with_store(|s| s.attempts("w", n)).expect("a");
            return (r, attempts);
        }
        assert!(started.elapsed() < T, "run {n} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker's `Healthy` condition (reason, message) and health.
fn healthy(h: &H, worker: &str) -> (String, String, String) {
    let o = h.engine.get(Kind::Worker, worker).expect("worker");
    let c = o.status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Healthy").cloned())
        .unwrap_or_default();
    (
        o.status["health"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
        c["message"].as_str().unwrap_or("").to_string(),
    )
}

fn warnings(h: &H, worker: &str) -> Vec<(String, String)> {
    h.engine
        .with_store(|s| s.events(Kind::Worker, worker, 1000))
        .expect("events")
        .into_iter()
        .filter(|e| e.event_type == "Warning")
        .map(|e| (e.reason, e.message))
        .collect()
}

fn launches(d: &FaultyDriver, worker: &str) -> usize {
    d.launches
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.0 == worker)
        .count()
}

/// `vm-0` ends off and is not booted again (one boot may have been under way as the fault
/// that quarantined it was counted).
async fn left_off(driver: &FaultyDriver) {
    let started = Instant::now();
    while microfaas::engine::vm::VmDriver::is_running(driver, "vm-0") {
        assert!(started.elapsed() < T, "vm-0 was not powered off");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let boots = launches(driver, "vm-0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(launches(driver, "vm-0"), boots, "booted again");
    assert!(!microfaas::engine::vm::VmDriver::is_running(driver, "vm-0"));
}

async fn start(state: &Path, fault: Fault) -> (H, Arc<FaultyDriver>) {
    let driver = FaultyDriver::new(AgentProcs::new(agent()));
    driver.arm_always("vm-0", fault);
    let h: Host<FaultyDriver> = Host::start(state, driver.clone(), &loopback("q-token")).await;
    (h, driver)
}

/// Two workers, `vm-0`'s agent dropping every call: quarantined after two, the run succeeds
/// on `vm-1`; `uncordon` (with a working agent again) returns `vm-0` to service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_agent_keeps_dropping_calls_is_quarantined_until_uncordoned() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    declare(&state, 2, 8);
    let (h, driver) = start(&state, Fault::Drop).await;
    let (run, attempts) = finished_run(&h, 1).await;

    assert_eq!(run.phase, RunPhase::Succeeded, "{run:?} {attempts:?}");
    assert_eq!(run.counts.succeeded, 8, "{run:?}");
    let on_0: Vec<_> = attempts
        .iter()
        .filter(|a| a.worker.as_deref() == Some("vm-0"))
        .map(|a| a.status)
        .collect();
    assert_eq!(
        on_0,
        vec![AttemptStatus::Lost, AttemptStatus::Lost],
        "two faults, then no more work on vm-0: {attempts:?}"
    );
    let (health, reason, message) = healthy(&h, "vm-0");
    assert_eq!((health.as_str(), reason.as_str()), ("Bad", AGENT_FAULTS));
    assert!(message.contains("2 agent faults in a row"), "{message}");
    assert!(
        warnings(&h, "vm-0")
            .iter()
            .any(|(r, m)| r == "Quarantined" && m.contains("AgentLost")),
        "{:?}",
        warnings(&h, "vm-0")
    );
    // Quarantined means left off: no more boots of the faulty agent.
    left_off(&driver).await;

    // The operator fixes the image and returns the worker to service.
    driver.disarm("vm-0");
    h.engine
        .with_store(|s| operator::set_health(s, "vm-0", "Good"))
        .expect("uncordon");
    h.engine
        .with_store(|s| operator::request_rerun(s, "w"))
        .expect("rerun");
    h.engine.enqueue_all();
    let (run, attempts) = finished_run(&h, 2).await;
    assert_eq!(run.phase, RunPhase::Succeeded, "{run:?} {attempts:?}");
    assert!(
        attempts
            .iter()
            .any(|a| a.worker.as_deref() == Some("vm-0") && a.status == AttemptStatus::Succeeded),
        "vm-0 works again after uncordon: {attempts:?} health {:?} events {:?}",
        healthy(&h, "vm-0"),
        h.engine
            .with_store(|s| s.events(Kind::Worker, "vm-0", 1000))
            .expect("events")
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect::<Vec<_>>()
    );
    assert_eq!(healthy(&h, "vm-0").0, "Good");
    h.stop().await;
    driver.real.kill_all();
}

/// The only worker's agent answers garbage: quarantined after two faults; every invocation
/// then fails at once naming the quarantine instead of being retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_other_worker_the_work_fails_naming_the_quarantine() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    declare(&state, 1, 3);
    let (h, driver) = start(&state, Fault::Garbage).await;
    let (run, attempts) = finished_run(&h, 1).await;
    left_off(&driver).await;
    h.stop().await;
    driver.real.kill_all();

    assert_eq!(run.phase, RunPhase::Failed, "{run:?}");
    assert_eq!((run.counts.succeeded, run.counts.failed), (0, 3), "{run:?}");
    let faults = attempts
        .iter()
        .filter(|a| a.worker.as_deref() == Some("vm-0"))
        .count();
    assert_eq!(faults, 2, "{attempts:?}");
    // Each invocation's last record names why it could not run.
    let mut last: std::collections::BTreeMap<u64, &Attempt> = Default::default();
    for a in &attempts {
        last.insert(a.seq, a);
    }
    assert_eq!(last.len(), 3, "{attempts:?}");
    for a in last.values() {
        let e = a.error.as_deref().unwrap_or("");
        assert!(
            e.contains("no healthy worker") && e.contains(AGENT_FAULTS),
            "{a:?}"
        );
    }
}
