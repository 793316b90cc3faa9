//! Declared workloads on board workers, with no VM in the cluster: a Workload selecting an
//! OnDemand BeagleBone (simulated from real parts, see tests/support/boards.rs: a fake GPIO
//! button whose board runs a real `microfaas-agent` and moves a real `snmpsim` port) gets it
//! pressed on, runs every invocation on it with the function's own output, and leaves it powered
//! off through its agent. A Warm board boots once for the whole run; a OneShot board boots once
//! per invocation, as the original MicroFaaS boards did.

mod support;

use microfaas::manifest::Kind;
use microfaas::manifest::types::WorkloadSpec;
use microfaas::store::DesiredObject;
use microfaas::store::invocations::{AttemptStatus, RunPhase, output_digest};
use microfaas::workload::generate;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::boards::{BoardHost, FORCE_OFF, board_spec, event_count};
use support::host::{HostOptions, objects};

const BOARD: &str = "bbb-1";
const WORKLOAD: &str = "on-boards";
const INVOCATIONS: usize = 3;

/// The Function and the Workload: `INVOCATIONS` cascading_sha256 calls on workers labelled
/// `pool: boards`, with explicit inputs so their outputs can be computed here.
const MANIFEST: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {name: sha}
spec: {runtime: builtin, handler: cascading_sha256, timeout: 30s}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {name: on-boards}
spec:
  functions:
    - function: sha
      count: 3
      inputs: [{rounds: 3, data: beaglebone}, {rounds: 7, data: black}, {rounds: 11, data: rev-c}]
  arrival: {pattern: balanced, period: 200ms}
  workers: {matchLabels: {pool: boards}}
  maxAttempts: 1
";

/// Runs the workload on one OnDemand board of lifecycle `mode`; returns how many times the
/// board's button was pressed for the run.
async fn run_on_a_board(mode: &str) -> usize {
    let mut worker = DesiredObject::new(
        Kind::Worker,
        BOARD,
        board_spec("OnDemand", 1, "tor", "Gi1/0/5", false),
    );
    worker.spec["lifecycle"]["mode"] = json!(mode);
    if mode == "Warm" {
        // Kept on between invocations (they arrive 200 ms apart), released 2 s after the last.
        worker.spec["lifecycle"]["idleTimeout"] = json!("2s");
    }
    worker.labels.insert("pool".into(), "boards".into());
    let b = BoardHost::start(
        json!({"bootTimeout": "20s", "powerOnHoldoff": "500ms", "powerOffHoldoff": "1s",
               "jobTimeout": "30s"}),
        vec![worker],
        &[(BOARD, 10105)],
        &HostOptions {
            agent_listen: "127.0.0.1:0".into(),
            token: format!("workload-board-{mode}"),
            credentials: None,
        },
    )
    .await;
    let engine = &b.host.engine;
    b.until_off(BOARD, "the board seen off on the switch").await;
    assert!(b.rack.presses(BOARD).is_empty());

    // Declared while the engine runs, as `apply` does.
    let declared = objects(MANIFEST);
    engine
        .with_store(|s| s.apply(&declared, None, false, false))
        .expect("apply the workload");
    engine.queue.add((Kind::Workload, WORKLOAD.to_string()));

    let deadline = Instant::now() + Duration::from_secs(180);
    let run = loop {
        let latest = engine.with_store(|s| s.latest_run(WORKLOAD)).expect("runs");
        if let Some(r) = latest.filter(|r| r.phase != RunPhase::Running) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: run not finished; board {}",
            b.status(BOARD)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(run.phase, RunPhase::Succeeded, "{mode}: {}", run.message);
    assert_eq!(
        (run.counts.total, run.counts.succeeded),
        (INVOCATIONS as u64, INVOCATIONS as u64),
        "{mode}: {}",
        run.message
    );

    // Every invocation ran once on the board, with the output the function gives its input.
    let wl = engine.get(Kind::Workload, WORKLOAD).expect("workload");
    let spec: WorkloadSpec = serde_json::from_value(wl.spec).expect("workload spec");
    let handlers = BTreeMap::from([("sha".to_string(), "cascading_sha256".to_string())]);
    let plan = generate(&spec, &handlers, 1, None).expect("plan");
    let attempts = engine
        .with_store(|s| s.attempts(WORKLOAD, run.run))
        .expect("attempts");
    assert_eq!(attempts.len(), INVOCATIONS, "{mode}: {attempts:?}");
    for a in &attempts {
        assert_eq!(a.status, AttemptStatus::Succeeded, "{mode}: {a:?}");
        assert_eq!(a.worker.as_deref(), Some(BOARD), "{mode}: {a:?}");
        let planned = plan.iter().find(|p| p.seq == a.seq).expect("planned");
        let want = microfaas::functions::run("cascading_sha256", &planned.input).expect("local");
        let (size, sha) = output_digest(&serde_json::to_vec(&want).expect("json"));
        assert_eq!(
            (a.output_size, a.output_sha256.as_deref()),
            (Some(size), Some(sha.as_str())),
            "{mode}: seq {} input {}",
            a.seq,
            planned.input
        );
    }
    let mut inputs: Vec<String> = plan.iter().map(|p| p.input.to_string()).collect();
    inputs.sort();
    inputs.dedup();
    assert_eq!(inputs.len(), INVOCATIONS, "three different inputs");

    // Powered on with pulses (never the hold), and off again after the run through its agent.
    b.until_off(BOARD, "the board released after the run").await;
    let presses = b.rack.presses(BOARD);
    let events: Vec<String> = engine
        .with_store(|s| s.events(Kind::Worker, BOARD, 200))
        .unwrap_or_default()
        .iter()
        .map(|e| format!("{} {} x{}: {}", e.last_time, e.reason, e.count, e.message))
        .collect();
    assert!(
        presses.iter().all(|p| *p < FORCE_OFF),
        "{mode}: {presses:?} {events:#?}"
    );
    // Every boot was seen through, however fast its job came and went.
    for reason in ["PowerHold", "LinkTimeout", "BootTimeout"] {
        assert_eq!(event_count(engine, BOARD, reason), 0, "{mode}: {events:#?}");
    }
    if mode == "Warm" {
        assert!(event_count(engine, BOARD, "PowerOff") >= 1, "{mode}");
    }
    let st = b.status(BOARD);
    assert_eq!(
        (st["phase"].as_str(), st["power"].as_str()),
        (Some("Off"), Some("Off")),
        "{mode}: {st}"
    );
    b.stop().await;
    presses.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_runs_on_a_warm_board_booted_once() {
    assert_eq!(
        run_on_a_board("Warm").await,
        1,
        "one boot for the whole run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_boots_a_oneshot_board_for_each_invocation() {
    assert_eq!(
        run_on_a_board("OneShot").await,
        INVOCATIONS,
        "one boot per invocation"
    );
}
