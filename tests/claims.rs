//! README claims that had no test: a board the engine will never press (power Unknown, or no
//! GPIO line) fails the work waiting for it at once with a named reason instead of holding
//! the queue for its whole boot ladder (about 13 minutes with the default timings).

mod support;

use microfaas::engine::vm::FakeDriver;
use microfaas::manifest::Kind;
use microfaas::store::{AttemptStatus, DesiredObject, RunPhase, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::boards::BoardHost;
use support::host::{Host, HostOptions};

/// Far below the ~13 minutes a board's ladder takes with these defaults, far above the
/// couple of seconds the named failure takes.
const T: Duration = Duration::from_secs(90);

fn opts() -> HostOptions {
    support::host::loopback("claims-token")
}

/// Defaults under which waiting out a board's recovery ladder takes 4 × (3 × 60 s + …) + 40 s.
fn slow_defaults() -> serde_json::Value {
    json!({"bootTimeout": "60s", "powerOnHoldoff": "0s", "quarantineAfter": 3})
}

/// A Function and a Workload of `count` calls on the workers labelled `pool: b`.
fn work(count: u32) -> Vec<DesiredObject> {
    vec![
        DesiredObject::new(
            Kind::Function,
            "fl",
            json!({"runtime": "builtin", "handler": "float_operations"}),
        ),
        DesiredObject::new(
            Kind::Workload,
            "w",
            json!({"functions": [{"function": "fl", "count": count}],
                   "workers": {"matchLabels": {"pool": "b"}}}),
        ),
    ]
}

fn board(name: &str, button: serde_json::Value) -> DesiredObject {
    let mut o = DesiredObject::new(
        Kind::Worker,
        name,
        json!({"power": "OnDemand", "lifecycle": {"mode": "Warm"},
               "board": {"powerButton": button}}),
    );
    o.labels.insert("pool".into(), "b".into());
    o
}

/// Waits for workload `w`'s run to end; its attempts' (status, worker, error).
async fn finished<D: microfaas::engine::vm::VmDriver>(
    engine: &microfaas::engine::Engine<D, microfaas::orchestrator::Sessions>,
) -> (
    microfaas::store::Run,
    Vec<(AttemptStatus, Option<String>, String)>,
) {
    let started = Instant::now();
    loop {
        let run = engine.with_store(|s| s.latest_run("w")).expect("run");
        if let Some(r) = run.filter(|r| r.phase != RunPhase::Running) {
            // A figure for the README, not an assertion.
            eprintln!(
                "run {} ended {:?} after {} ms",
                r.run,
                r.phase,
                r.finished_ms.unwrap_or(r.started_ms) - r.started_ms
            );
            let attempts = engine
                .with_store(|s| s.attempts("w", r.run))
                .expect("attempts")
                .into_iter()
                .map(|a| (a.status, a.worker, a.error.unwrap_or_default()))
                .collect();
            return (r, attempts);
        }
        assert!(
            started.elapsed() < T,
            "the run still waits for a board that will never be pressed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A board on no switch port has no evidence of its power: Unknown, so it is never pressed,
/// and its invocations fail naming `PowerUnknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_on_unknown_power_fails_its_work_at_once_with_the_reason() {
    let mut objects = vec![board(
        "bbb-0",
        json!({"chip": "sim", "line": 1, "pulse": "200ms", "forceOff": "1500ms"}),
    )];
    objects.extend(work(2));
    let bh = BoardHost::start(slow_defaults(), objects, &[("bbb-0", 1)], &opts()).await;
    let (run, attempts) = finished(&bh.host.engine).await;
    let presses = bh.rack.presses("bbb-0");
    let status = bh.status("bbb-0");
    bh.stop().await;

    assert_eq!(run.phase, RunPhase::Failed, "{run:?}");
    assert_eq!(run.counts.failed, 2, "{run:?}");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for (st, worker, error) in &attempts {
        assert_eq!(*st, AttemptStatus::Lost, "{attempts:?}");
        assert_eq!(*worker, None, "it never reached a worker: {attempts:?}");
        assert!(
            error.contains("`bbb-0`: the worker cannot be powered on: PowerUnknown"),
            "{error}"
        );
    }
    assert!(presses.is_empty(), "pressed on Unknown power: {presses:?}");
    assert_eq!(status["observedPower"]["state"], "Unknown", "{status}");
}

/// A board whose button names a GPIO chip that does not exist cannot be pressed at all: its
/// invocations fail naming `NoPowerControl`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_without_a_gpio_line_fails_its_work_at_once_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let mut objects = vec![
        DesiredObject::new(Kind::Cluster, "c", json!({ "defaults": slow_defaults() })),
        board(
            "bbb-1",
            json!({"chip": "microfaas-test-no-such-chip", "line": 3}),
        ),
    ];
    objects.extend(work(2));
    Store::open(&state)
        .expect("store")
        .apply(&objects, None, false, false)
        .expect("apply");
    // The engine's own GPIO buttons: the real driver looks for the chip and finds none.
    let h = Host::start(&state, Arc::new(FakeDriver::default()), &opts()).await;
    let (run, attempts) = finished(&h.engine).await;
    let status = h.engine.get(Kind::Worker, "bbb-1").expect("bbb-1").status;
    h.stop().await;

    assert_eq!(run.phase, RunPhase::Failed, "{run:?}");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    for (_, _, error) in &attempts {
        assert!(
            error.contains("`bbb-1`: the worker cannot be powered on: NoPowerControl"),
            "{error}"
        );
    }
    let power_control = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "PowerControl").cloned())
        .unwrap_or_default();
    assert_eq!(power_control["reason"], "LineUnavailable", "{status}");
}

fn ctl(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(args)
        .env("MICROFAAS_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run microfaasctl")
}

/// `microfaasctl logs worker NAME -f` prints the console as it grows, starts over when a
/// relaunched VM truncates it, and follows a resumed standby's console renamed over it.
#[test]
fn logs_follow_prints_what_the_console_writes_across_truncation_and_rename() {
    use std::io::{BufRead, Write};
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let vm_dir = state.join("vms").join("vm-0");
    std::fs::create_dir_all(&vm_dir).expect("vm dir");
    let console = vm_dir.join("console.log");
    std::fs::write(&console, "boot 1\n").expect("console");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["logs", "worker", "vm-0", "-f"])
        .env("MICROFAAS_STATE_DIR", &state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(20)).expect("a line");
    assert_eq!(next(), "boot 1");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&console)
        .expect("append");
    f.write_all(b"agent up\n").expect("write");
    drop(f);
    assert_eq!(next(), "agent up");
    // A relaunch truncates the log and writes it again from the start.
    std::fs::write(&console, "boot 2\n").expect("truncate");
    assert_eq!(next(), "boot 2");
    // A standby VM resumed: its console, written beside the log, is renamed over it and grows.
    let standby = vm_dir.join("console.next.log");
    std::fs::write(&standby, "standby boot\n").expect("standby console");
    std::fs::rename(&standby, &console).expect("rename over the log");
    assert_eq!(next(), "standby boot");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&console)
        .expect("append");
    f.write_all(b"resumed\n").expect("write");
    drop(f);
    assert_eq!(next(), "resumed");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "-f must keep following"
    );
    // SAFETY: signalling the child this test started (and has not reaped).
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let _ = child.wait();
}

/// `rerun` against the daemon: it stores the request and waits while `serve`'s engine runs the
/// workload again (run 2); no second engine is started.
#[test]
fn rerun_against_the_daemon_is_run_by_the_daemon() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let manifest = dir.path().join("m.yaml");
    // A workload no worker matches: each run fails at once (Unschedulable), no VM needed.
    std::fs::write(
        &manifest,
        "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  orchestrator: {listen: 127.0.0.1:0}
---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {name: sha}
spec: {runtime: builtin, handler: cascading_sha256}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {name: w}
spec:
  functions: [{function: sha, count: 1}]
  workers: {matchLabels: {pool: none}}
",
    )
    .expect("manifest");
    let log = dir.path().join("serve.log");
    let mut serve = std::process::Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["serve", "-f"])
        .arg(&manifest)
        .arg("--no-fs-checks")
        .env("MICROFAAS_STATE_DIR", &state)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("serve");
    let run_of = || -> Option<i64> {
        let out = ctl(&state, &["get", "workload", "w", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["status"]["phase"] == "Failed")
            .then(|| v["status"]["run"].as_i64())
            .flatten()
    };
    let started = Instant::now();
    while run_of() != Some(1) {
        assert!(
            started.elapsed() < T,
            "run 1 did not end: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctl(&state, &["rerun", "workload", "w", "--timeout", "60s"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        serve.try_wait().expect("try_wait").is_none(),
        "the daemon died: {stderr}"
    );
    assert_eq!(run_of(), Some(2), "rerun: {stderr}");
    assert!(stderr.contains("workload/w: failed"), "{stderr}");
    // Both runs were the daemon's: its log has the engine's decision for each.
    // SAFETY: signalling the child this test started (and has not reaped).
    unsafe {
        libc::kill(i32::try_from(serve.id()).expect("pid"), libc::SIGTERM);
    }
    let status = serve.wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("Unschedulable")).count(),
        2,
        "{text}"
    );
}

/// Warm `idleTimeout`: an OnDemand worker stays on that long after its last invocation (ready
/// for the next call), then is powered off through its agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_worker_powers_off_after_its_idle_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    support::host::declare_one_worker(
        &state,
        "{power: OnDemand, lifecycle: {mode: Warm, idleTimeout: 4s}, vm: {kernel: /k}}",
        "{runtime: builtin, handler: float_operations}",
        "  functions: [{function: fl, count: 1}]\n",
    );
    let driver = support::host::AgentProcs::new(std::path::PathBuf::from(env!(
        "CARGO_BIN_EXE_microfaas-agent"
    )));
    let h = Host::start(&state, driver.clone(), &opts()).await;
    let (run, _) = finished(&h.engine).await;
    assert_eq!(run.phase, RunPhase::Succeeded, "{run:?}");
    let finished_at = Instant::now();
    // Well inside the idle timeout: still on, its agent connected.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let on_while_idle = driver.is_running_now("vm-0");
    let phase = h.engine.get(Kind::Worker, "vm-0").expect("vm-0").status["phase"].clone();
    while driver.is_running_now("vm-0") {
        assert!(
            finished_at.elapsed() < T,
            "never powered off after its idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let off_after = finished_at.elapsed();
    let events = h
        .engine
        .with_store(|s| s.events(Kind::Worker, "vm-0", 50))
        .expect("events");
    h.stop().await;
    driver.kill_all();

    assert!(on_while_idle, "powered off before its idle timeout");
    assert_eq!(phase, "Ready");
    assert!(
        off_after >= Duration::from_secs(3),
        "off after {off_after:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason == "PowerOff" && e.message == "asked the agent to power off"),
        "{events:?}"
    );
    assert_eq!(
        driver.launches.lock().expect("lock").len(),
        1,
        "booted once"
    );
}
