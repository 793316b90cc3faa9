//! Snapshot workers (`vm.start: snapshot`) through `serve`, with real TCG VMs: the first
//! power-on boots and takes the snapshot, later ones restore it (the agent's hello says so,
//! each with its own random start id, and the call is still recorded as a cold start); a
//! kernel file with a new mtime means a fresh boot and a fresh snapshot; a truncated snapshot
//! is deleted with a Warning event, the worker boots instead and the call succeeds.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::testbed::{Env, LIMIT, ok, stop, wait_for};

fn run_succeeded(env: &Env, run: u64) {
    wait_for(&format!("run {run} of the workload"), || {
        let w = env.status("workload", "w");
        (w["run"].as_u64() == Some(run) && w["phase"] == "Succeeded").then_some(())
    });
}

/// The start ids of the agents that said hello after a restore, in order; each must say its
/// RNG was reseeded with the host's entropy.
fn restored_starts(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split_once("agent connected (resumed from a snapshot, start "))
        .map(|(_, rest)| {
            let (id, rng) = rest.split_once(", ").unwrap_or((rest, ""));
            assert!(rng.starts_with("RNG reseeded)"), "{rest}");
            id.to_string()
        })
        .collect()
}

fn count(log: &str, what: &str) -> usize {
    log.matches(what).count()
}

/// Waits until `log` says `what` `n` times; the log is in the failure message.
fn wait_count(env: &Env, log: &str, what: &str, n: usize) {
    let started = Instant::now();
    while count(&env.log(log), what) != n {
        assert!(
            started.elapsed() < LIMIT,
            "timed out waiting for {n} × {what:?}\n{}",
            env.log(log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A one-call workload on vm-0, an OnDemand OneShot snapshot worker booting `kernel`.
fn manifest(env: &Env, kernel: &Path) -> String {
    let worker = env.ondemand_vm("vm-0", "OneShot", kernel).replace(
        "network: {mode: user}}",
        "network: {mode: user}, start: snapshot}",
    );
    assert!(worker.contains("start: snapshot"), "{worker}");
    env.one_call_manifest(&worker)
}

#[test]
fn a_snapshot_worker_restores_its_snapshot_and_boots_when_it_cannot() {
    let env = Env::new();
    let kernel = env.own_kernel();
    let file = manifest(&env, &kernel);
    let snapshot = env.state.join("vms/vm-0/snapshot.bin");
    let daemon = env.serve(&file, "serve1.log");

    // 1: a boot, which takes the snapshot.
    run_succeeded(&env, 1);
    wait_for("the snapshot file", || snapshot.is_file().then_some(()));
    let log = env.log("serve1.log");
    assert_eq!(count(&log, "vm-0: took a snapshot"), 1, "{log}");
    assert_eq!(count(&log, "agent connected (booted, start "), 1, "{log}");
    assert!(restored_starts(&log).is_empty(), "{log}");

    // 2 and 3: restores, each with its own entropy, each call a cold start.
    for run in [2, 3] {
        ok(&env.ctl(&["rerun", "workload", "w"]));
        run_succeeded(&env, run);
        let report = env.json(&["report", "w", "--format", "json"]);
        assert!(
            report["coldStartMs"]["p50"]
                .as_f64()
                .is_some_and(|c| c > 0.0),
            "a restored start is still a cold start: {report}"
        );
    }
    let log = env.log("serve1.log");
    let starts = restored_starts(&log);
    assert_eq!(starts.len(), 2, "runs 2 and 3 restore the snapshot\n{log}");
    assert_ne!(
        starts[0], starts[1],
        "two restores of one snapshot drew the same random id"
    );
    assert_eq!(count(&log, "vm-0: took a snapshot"), 1, "{log}");
    let describe =
        String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-0"]).stdout).into_owned();
    assert!(
        describe.contains("VM started (restored from its snapshot)"),
        "{describe}"
    );

    // 4: "rebuilt" kernel (same path and size, newer mtime): a boot and a new snapshot.
    support::testbed::touch_later(&kernel);
    ok(&env.ctl(&["rerun", "workload", "w"]));
    run_succeeded(&env, 4);
    wait_count(&env, "serve1.log", "vm-0: took a snapshot", 2);
    let log = env.log("serve1.log");
    assert_eq!(
        restored_starts(&log).len(),
        2,
        "the snapshot of the old kernel was restored\n{log}"
    );
    assert_eq!(count(&log, "agent connected (booted, start "), 2, "{log}");
    stop(daemon);
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());

    // 5: a truncated snapshot: deleted, a Warning event names it, the worker boots and the
    // call succeeds (and the boot takes a good snapshot again).
    let len = std::fs::metadata(&snapshot).expect("snapshot").len();
    std::fs::File::options()
        .write(true)
        .open(&snapshot)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate");
    let daemon = env.serve(&file, "serve2.log");
    // The rerun must reach this daemon, not converge on its own.
    wait_count(&env, "serve2.log", "serving", 1);
    ok(&env.ctl(&["rerun", "workload", "w"]));
    run_succeeded(&env, 5);
    let describe =
        String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-0"]).stdout).into_owned();
    assert!(
        describe.contains("SnapshotDiscarded") && describe.contains("snapshot.bin"),
        "{describe}"
    );
    wait_count(&env, "serve2.log", "vm-0: took a snapshot", 1);
    let log = env.log("serve2.log");
    assert!(restored_starts(&log).is_empty(), "{log}");
    assert_eq!(count(&log, "agent connected (booted, start "), 1, "{log}");
    assert!(
        std::fs::metadata(&snapshot).is_ok_and(|m| m.len() > len / 2),
        "the bad snapshot was replaced"
    );

    // 6: deleting the worker deletes its snapshot.
    ok(&env.ctl(&["delete", "worker", "vm-0"]));
    wait_for("the deleted worker's snapshot to go", || {
        (!snapshot.exists()).then_some(())
    });
    stop(daemon);
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
}
