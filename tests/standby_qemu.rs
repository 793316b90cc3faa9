//! Standbys through `serve`, with real TCG VMs: an OnDemand OneShot worker that is off keeps a
//! paused QEMU ready; a rebuilt kernel image (same path, new mtime) is never booted from the
//! standby launched with the old one; and deleting the worker kills its standby while the
//! daemon goes on. (Adoption of a standby by an engine restarted after a `kill -9` is counted
//! by tests/chaos.rs.)
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use std::path::Path;
use support::testbed::{Env, ok, stop, wait_for};

/// The PID of vm-0's standby: its one QEMU while the worker is Off after run `run` succeeded.
fn standby_after_run(env: &Env, run: u64) -> i32 {
    wait_for("the run, then a standby", || {
        let w = env.status("workload", "w");
        let done = w["run"].as_u64() == Some(run) && w["phase"] == "Succeeded";
        let off = env.status("worker", "vm-0")["phase"] == "Off";
        let qemus = env.qemus();
        // Not the last boot's QEMU on its way out: one the daemon launched paused.
        let standby = qemus.len() == 1
            && env
                .log("serve.log")
                .contains(&format!("pid {} for vm-0, paused (standby)", qemus[0].1));
        (done && off && standby).then(|| qemus[0].1)
    })
}

/// A one-call workload on vm-0, an OnDemand OneShot worker booting `kernel`.
fn manifest(env: &Env, kernel: &Path) -> String {
    env.one_call_manifest(&env.ondemand_vm("vm-0", "OneShot", kernel))
}

/// The standby is resumed for the next call while the image is unchanged; once the kernel
/// file has a new mtime, the standby launched with the old one is not what boots.
#[test]
fn a_standby_is_not_resumed_once_its_kernel_file_changed() {
    let env = Env::new();
    let kernel = env.own_kernel();
    let file = manifest(&env, &kernel);
    let daemon = env.serve(&file, "serve.log");

    let first = standby_after_run(&env, 1);
    ok(&env.ctl(&["rerun", "workload", "w"]));
    let second = standby_after_run(&env, 2);
    assert!(
        env.log("serve.log")
            .contains(&format!("resumed the standby (pid {first})")),
        "the control case: an unchanged image boots from the standby\n{}",
        env.log("serve.log")
    );
    assert_ne!(second, first);

    // "Rebuilt": same path and size, a newer mtime.
    support::testbed::touch_later(&kernel);
    ok(&env.ctl(&["rerun", "workload", "w"]));
    standby_after_run(&env, 3);
    let log = env.log("serve.log");
    assert!(
        !log.contains(&format!("resumed the standby (pid {second})")),
        "the standby of the old image was booted\n{log}"
    );
    assert!(
        !Path::new(&format!("/proc/{second}/cmdline")).exists()
            || std::fs::read(format!("/proc/{second}/cmdline")).is_ok_and(|c| c.is_empty()),
        "the old standby still runs"
    );
    stop(daemon);
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
}

/// Deleting an OnDemand worker that is off kills its standby; the daemon goes on.
#[test]
fn deleting_a_worker_discards_its_standby() {
    let env = Env::new();
    let file = manifest(&env, &env.vmlinux.clone());
    let mut daemon = env.serve(&file, "serve.log");
    let pid = standby_after_run(&env, 1);
    ok(&env.ctl(&["delete", "worker", "vm-0"]));
    wait_for("the standby to go", || env.qemus().is_empty().then_some(()));
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty()),
        "standby pid {pid} still runs"
    );
    assert!(
        daemon
            .0
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("wait").is_none()),
        "the daemon must go on"
    );
    stop(daemon);
}
