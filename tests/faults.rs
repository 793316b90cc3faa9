//! Fault injection at the agent: a worker whose agent hangs on a call, drops the connection
//! mid-call, or answers garbage. Each ends in a named Warning on the worker (`AgentUnresponsive`,
//! `AgentLost`, `AgentProtocolError`), the attempt recorded with its status and reason, the
//! worker's "VM" stopped and booted again, and the invocation retried to success on the
//! recovered worker. The faulty agents speak the real protocol on loopback
//! (tests/support/faulty.rs); every other boot is a real `microfaas-agent` process.

mod support;

use microfaas::manifest::Kind;
use microfaas::store::{AttemptStatus, RunPhase};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::faulty::{Fault, FaultyDriver};
use support::host::{AgentProcs, Host, body_text, declare_one_worker, http, loopback, objects};

const T: Duration = Duration::from_secs(90);

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent"))
}

/// One OnDemand Warm worker and a workload of two calls, each allowed two attempts; the
/// function's deadline is 1 s, so a hung agent is given up on after 11 s (deadline + 10 s).
fn declare(state: &Path) {
    declare_one_worker(
        state,
        "{power: OnDemand, lifecycle: {mode: Warm}, vm: {kernel: /k}}",
        "{runtime: builtin, handler: float_operations, timeout: 1s}",
        "  functions: [{function: fl, count: 2, inputs: [{n: 100}]}]\n  maxAttempts: 2\n",
    );
}

/// The latest run of `w` once it has ended; fails after `limit` naming `what`.
async fn finished_run<D: microfaas::engine::vm::VmDriver>(
    h: &Host<D>,
    limit: Duration,
    what: &str,
) -> microfaas::store::invocations::Run {
    let started = Instant::now();
    loop {
        let run = h
            .engine
            .with_store(|s| s.latest_run("w"))
            .expect("latest run");
        if let Some(r) = run.filter(|r| r.phase != RunPhase::Running) {
            return r;
        }
        assert!(started.elapsed() < limit, "the run did not finish: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the workload with vm-0's first boot doing `fault`; returns the finished run's
/// attempts (status, worker, error) and vm-0's Warning events (reason, message).
async fn run_with(fault: Fault) -> (Vec<(AttemptStatus, String, String)>, Vec<(String, String)>) {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    declare(&state);
    let driver = FaultyDriver::new(AgentProcs::new(agent()));
    driver.arm("vm-0", fault);
    let h = Host::start(&state, driver.clone(), &loopback("fault-token")).await;
    let run = finished_run(&h, T, &format!("{fault:?}")).await;
    let attempts = h
        .engine
        .with_store(|s| s.attempts("w", run.run))
        .expect("attempts");
    let events = h
        .engine
        .with_store(|s| s.events(Kind::Worker, "vm-0", 100))
        .expect("events");
    let launches = driver.launches.lock().expect("lock").clone();
    h.stop().await;
    driver.real.kill_all();

    assert_eq!(run.phase, RunPhase::Succeeded, "{fault:?}: {run:?}");
    assert_eq!(
        (run.counts.succeeded, run.counts.failed, run.counts.retried),
        (2, 0, 1),
        "{fault:?}: {run:?}"
    );
    // The faulty boot, then real agents: the worker was stopped and booted again (and, being
    // OnDemand without an idle timeout, powered off and on between the two calls).
    assert_eq!(launches.first(), Some(&("vm-0".to_string(), Some(fault))));
    assert!(
        launches.len() >= 2
            && launches[1..]
                .iter()
                .all(|l| l == &("vm-0".to_string(), None)),
        "{fault:?}: {launches:?}"
    );
    (
        attempts
            .into_iter()
            .map(|a| {
                (
                    a.status,
                    a.worker.unwrap_or_default(),
                    a.error.unwrap_or_default(),
                )
            })
            .collect(),
        events
            .into_iter()
            .filter(|e| e.event_type == "Warning")
            .map(|e| (e.reason, e.message))
            .collect(),
    )
}

/// Checks the one failed attempt (first of three) and that the worker's Warnings name it.
fn check(
    fault: Fault,
    attempts: &[(AttemptStatus, String, String)],
    warnings: &[(String, String)],
    status: AttemptStatus,
    error: &str,
    reason: &str,
) {
    assert_eq!(attempts.len(), 3, "{fault:?}: {attempts:?}");
    let failed: Vec<_> = attempts
        .iter()
        .filter(|a| a.0 != AttemptStatus::Succeeded)
        .collect();
    assert_eq!(failed.len(), 1, "{fault:?}: {attempts:?}");
    assert_eq!(failed[0].0, status, "{fault:?}: {attempts:?}");
    assert_eq!(failed[0].1, "vm-0");
    assert!(
        failed[0].2.contains(error),
        "{fault:?}: error {:?} should say {error:?}",
        failed[0].2
    );
    assert!(
        warnings
            .iter()
            .any(|(r, m)| r == reason && m.contains("w-1-")),
        "{fault:?}: no `{reason}` naming the invocation among {warnings:?}"
    );
    assert!(
        attempts
            .iter()
            .filter(|a| a.0 == AttemptStatus::Succeeded)
            .all(|a| a.1 == "vm-0"),
        "{attempts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_hangs_is_given_up_on_and_its_worker_rebooted() {
    let (attempts, warnings) = run_with(Fault::Hang).await;
    check(
        Fault::Hang,
        &attempts,
        &warnings,
        AttemptStatus::Timeout,
        "no result within 11s",
        "AgentUnresponsive",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_drops_the_connection_mid_call_is_lost_and_retried() {
    let (attempts, warnings) = run_with(Fault::Drop).await;
    check(
        Fault::Drop,
        &attempts,
        &warnings,
        AttemptStatus::Lost,
        "the agent connection is closed",
        "AgentLost",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_answers_garbage_is_cut_off_and_retried() {
    let (attempts, warnings) = run_with(Fault::Garbage).await;
    check(
        Fault::Garbage,
        &attempts,
        &warnings,
        AttemptStatus::Lost,
        "protocol error from the agent",
        "AgentProtocolError",
    );
}

/// A small tmpfs the test mounts (root, as CI runs) over the state dir, so the disk really
/// fills; lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `file` until a write fails with "no space".
fn fill(file: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
}

fn attempts_so_far<D: microfaas::engine::vm::VmDriver>(h: &Host<D>) -> usize {
    records(h, "w").len()
}

/// Waits (until `T` after `started`) for the engine to name a full disk as its storage fault.
async fn full_disk_named<D: microfaas::engine::vm::VmDriver>(h: &Host<D>, started: Instant) {
    let fault = loop {
        if let Some(f) = h.engine.storage_fault() {
            break f;
        }
        assert!(started.elapsed() < T, "the full disk went unnoticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(fault.contains("full"), "{fault}");
}

/// The records of the latest run of `workload`.
fn records<D: microfaas::engine::vm::VmDriver>(
    h: &Host<D>,
    workload: &str,
) -> Vec<microfaas::store::Attempt> {
    h.engine
        .with_store(|s| {
            let run = s.latest_run(workload)?.map_or(0, |r| r.run);
            s.attempts(workload, run)
        })
        .unwrap_or_default()
}

/// The invocation ids recorded so far in the latest run of `w`, with their attempt numbers.
fn recorded_ids<D: microfaas::engine::vm::VmDriver>(h: &Host<D>) -> Vec<(String, u32)> {
    records(h, "w")
        .into_iter()
        .map(|a| (a.invocation_id, a.attempt))
        .collect()
}

/// The disk fills in the middle of a workload: the engine names the failure and takes no new
/// work while it lasts; once space is back the record it kept retrying commits, a
/// `StorageRecovered` event names the resumption, and the workload finishes: every invocation
/// recorded exactly once, every record from before the fault still there, the store intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_engine_until_space_is_back_then_the_workload_finishes() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let disk = Tmpfs::mount(&state, "8m");
    declare_one_worker(
        &state,
        "{power: On, lifecycle: {mode: Warm}, vm: {kernel: /k}}",
        "{runtime: builtin, handler: float_operations}",
        "  functions: [{function: fl, count: 400, inputs: [{n: 100}]}]\n  arrival: {pattern: fixed, rate: 40/s}\n",
    );
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &loopback("fault-token")).await;
    let started = Instant::now();
    while attempts_so_far(&h) < 5 {
        assert!(started.elapsed() < T, "no invocations recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filler = state.join("filler");
    fill(&filler);
    full_disk_named(&h, started).await;
    let before = recorded_ids(&h);
    // While the disk stays full: no new work, the fault stays named.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        attempts_so_far(&h),
        before.len(),
        "work was taken while the disk was full"
    );
    assert!(h.engine.storage_fault().is_some());
    assert!(
        before.len() < 400,
        "the whole workload ran: {}",
        before.len()
    );

    // Space is back: the retried record commits and the workload runs to its end.
    std::fs::remove_file(&filler).expect("free space");
    let run = finished_run(&h, T, "after the disk was freed").await;
    assert!(h.engine.storage_fault().is_none());
    assert_eq!(run.phase, RunPhase::Succeeded, "{run:?}");
    assert_eq!(
        (run.counts.succeeded, run.counts.failed),
        (400, 0),
        "{run:?}"
    );
    let after = recorded_ids(&h);
    let mut ids: Vec<&String> = after.iter().map(|a| &a.0).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (after.len(), ids.len()),
        (400, 400),
        "each invocation recorded once"
    );
    for r in &before {
        assert!(
            after.contains(r),
            "{r:?} was recorded before the fault and is gone"
        );
    }
    let events = h
        .engine
        .with_store(|s| s.events(Kind::Workload, "w", 100))
        .expect("events");
    assert!(
        events
            .iter()
            .any(|e| e.reason == "StorageRecovered" && e.message.contains("full")),
        "{events:?}"
    );
    h.stop().await;
    driver.kill_all();

    let db = rusqlite::Connection::open(state.join("state.db")).expect("open the store");
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    drop(db);
    drop(disk);
}

/// The disk fills while the gateway takes calls: the call whose record cannot be committed
/// waits (its record retried, no 200 without it); every call after it is refused 503 naming
/// the fault, run nowhere and recorded nowhere; once space is back the waiting call gets its
/// 200 and calls are answered 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_503_while_storage_fails_and_200_once_it_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let disk = Tmpfs::mount(&state, "8m");
    let yaml = "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {powerOnHoldoff: 0s}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: vm-0}\nspec: {power: On, lifecycle: {mode: Warm}, vm: {kernel: /k}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: fl}\nspec: {runtime: builtin, handler: float_operations}\n";
    microfaas::store::Store::open(&state)
        .expect("store")
        .apply(&objects(yaml), None, false, false)
        .expect("apply");
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &loopback("fault-token")).await;
    let started = Instant::now();
    while h.endpoint.sessions.connected().is_empty() {
        assert!(started.elapsed() < T, "the agent never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = h.url("/function/fl");
    let input = br#"{"n": 1}"#.to_vec();
    let r = http("POST", &url, true, input.clone()).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let first = r.header("x-call-id").expect("call id").to_string();

    let filler = state.join("filler");
    fill(&filler);
    let (u, i) = (url.clone(), input.clone());
    let waiting = tokio::spawn(async move { http("POST", &u, true, i).await });
    full_disk_named(&h, started).await;
    for _ in 0..3 {
        let r = http("POST", &url, true, input.clone()).await;
        assert_eq!(r.status, 503, "{}", body_text(&r));
        assert!(
            body_text(&r).contains("cannot record invocations") && body_text(&r).contains("full"),
            "{}",
            body_text(&r)
        );
    }
    assert!(
        !waiting.is_finished(),
        "the call whose record could not be committed was answered"
    );

    std::fs::remove_file(&filler).expect("free space");
    let r = waiting.await.expect("waiting call");
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let second = r.header("x-call-id").expect("call id").to_string();
    assert!(h.engine.storage_fault().is_none());
    let r = http("POST", &url, true, input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let third = r.header("x-call-id").expect("call id").to_string();

    let mut recorded: Vec<(String, AttemptStatus)> = records(&h, "gateway")
        .into_iter()
        .map(|a| (a.invocation_id, a.status))
        .collect();
    recorded.sort();
    let mut want: Vec<(String, AttemptStatus)> = [first, second, third]
        .into_iter()
        .map(|id| (id, AttemptStatus::Succeeded))
        .collect();
    want.sort();
    assert_eq!(recorded, want, "the 503s must leave no records");
    h.stop().await;
    driver.kill_all();
    drop(disk);
}

/// A board's switch port goes down after its link came up and before its agent connected:
/// `LinkLost` on the worker, then its boot ladder (the link never comes back, so no agent),
/// ending in quarantine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_goes_down_mid_boot_is_named_and_the_board_quarantined() {
    use support::boards::{Behaviour, BoardHost, board_spec, event_count, lock};
    let mut worker = microfaas::store::DesiredObject::new(
        Kind::Worker,
        "bbb-0",
        board_spec("OnDemand", 1, "tor", "Gi1/0/5", false),
    );
    worker.labels.insert("pool".into(), "b".into());
    let bh = BoardHost::start(
        serde_json::json!({"bootTimeout": "3s", "powerOnHoldoff": "0s", "quarantineAfter": 2}),
        vec![worker],
        &[("bbb-0", 10105)],
        &loopback("fault-token"),
    )
    .await;
    bh.until_off("bbb-0", "seen off before the test").await;
    // Its PHY will come up, its agent never.
    if let Some(b) = lock(&bh.rack.boards).get_mut("bbb-0") {
        b.behaviour = Behaviour::NoAgent;
    }
    let engine = bh.host.engine.clone();
    engine.want("bbb-0");
    let started = Instant::now();
    while bh.status("bbb-0")["phase"] != "Booting" {
        assert!(
            started.elapsed() < T,
            "never booting: {}",
            bh.status("bbb-0")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bh.rack.set_oper(10105, false);
    while bh.status("bbb-0")["health"] != "Bad" {
        assert!(
            started.elapsed() < T,
            "not quarantined: {}",
            bh.status("bbb-0")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lost = event_count(&engine, "bbb-0", "LinkLost");
    let quarantined = event_count(&engine, "bbb-0", "Quarantined");
    let status = bh.status("bbb-0");
    engine.release("bbb-0");
    bh.stop().await;
    assert_eq!(lost, 1, "{status}");
    assert_eq!(quarantined, 1, "{status}");
    assert_eq!(status["phase"], "Failed", "{status}");
}

/// The condition `kind` of a stored status (null when absent).
fn condition(status: &serde_json::Value, kind: &str) -> serde_json::Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind).cloned())
        .unwrap_or_default()
}

type Pred<'a> = &'a dyn Fn(&serde_json::Value, &serde_json::Value) -> bool;

/// Waits until `pred(switch tor's status, worker bbb-0's status)`; returns both.
async fn until_switch<D: microfaas::engine::vm::VmDriver>(
    engine: &microfaas::engine::Engine<D, microfaas::orchestrator::Sessions>,
    started: Instant,
    what: &str,
    pred: Pred<'_>,
) -> (serde_json::Value, serde_json::Value) {
    loop {
        let sw = engine
            .get(Kind::Switch, "tor")
            .map(|o| o.status)
            .unwrap_or_default();
        let w = engine
            .get(Kind::Worker, "bbb-0")
            .map(|o| o.status)
            .unwrap_or_default();
        if pred(&sw, &w) {
            return (sw, w);
        }
        assert!(started.elapsed() < T, "{what}: switch {sw}\nworker {w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The switch's SNMP agent stops answering (SIGSTOP) while a board is Ready on it: the switch
/// is `Reachable=False` (`Timeout`) with an `Unreachable` Warning, the board's link becomes
/// Unknown (`SwitchUnreachable`) — never "down" — and nothing is pressed; when the agent
/// answers again (SIGCONT) the switch is reachable and the link up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_that_stops_answering_snmp_is_unreachable_and_nothing_is_pressed() {
    use support::boards::{BoardHost, board_spec};
    let bh = BoardHost::start(
        serde_json::json!({"bootTimeout": "20s", "powerOnHoldoff": "0s"}),
        vec![microfaas::store::DesiredObject::new(
            Kind::Worker,
            "bbb-0",
            board_spec("On", 1, "tor", "Gi1/0/5", false),
        )],
        &[("bbb-0", 10105)],
        &loopback("fault-token"),
    )
    .await;
    let engine = bh.host.engine.clone();
    let started = Instant::now();
    let until = |what, pred| until_switch(&engine, started, what, pred);
    until("bbb-0 ready, link up", &|_, w| {
        w["phase"] == "Ready" && condition(w, "LinkUp")["status"] == "True"
    })
    .await;
    let sim = bh.rack.sim.child.id() as libc::pid_t;
    // SAFETY: signalling the snmpsim child this test's rack started (not reaped: it runs).
    unsafe { libc::kill(sim, libc::SIGSTOP) };
    let (sw, w) = until("switch unreachable", &|sw, w| {
        condition(sw, "Reachable")["status"] == "False"
            && condition(w, "LinkUp")["status"] == "Unknown"
    })
    .await;
    // SAFETY: as above.
    unsafe { libc::kill(sim, libc::SIGCONT) };
    assert_eq!(condition(&sw, "Reachable")["reason"], "Timeout", "{sw}");
    assert_eq!(
        condition(&w, "LinkUp")["reason"],
        "SwitchUnreachable",
        "{w}"
    );
    assert_eq!(w["phase"], "Ready", "its agent is still connected: {w}");
    until("switch reachable again", &|sw, w| {
        condition(sw, "Reachable")["status"] == "True" && condition(w, "LinkUp")["status"] == "True"
    })
    .await;
    let unreachable = engine
        .with_store(|s| s.events(Kind::Switch, "tor", 50))
        .expect("events")
        .iter()
        .filter(|e| e.reason == "Unreachable" && e.event_type == "Warning")
        .count();
    let presses = bh.rack.presses("bbb-0");
    bh.stop().await;
    assert_eq!(unreachable, 1);
    assert_eq!(presses.len(), 1, "only the power-on press: {presses:?}");
}
