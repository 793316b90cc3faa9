//! Faults that belong to QEMU and to `apply` itself, with real TCG VMs: the QEMU of a worker
//! killed (-9) in the middle of a call, and `apply` sent SIGTERM in the middle of a workload.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::testbed::{Env, ok};

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
const BOOT: Duration = Duration::from_secs(180);

/// A function and a workload of `count` calls of `float_operations` with `n` iterations on
/// the workers labelled `pool: t`, `maxAttempts` 2.
fn work(count: u32, n: u64, rate: &str) -> String {
    format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: fl}}\nspec: {{runtime: builtin, handler: float_operations, timeout: 300s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  functions: [{{function: fl, count: {count}, inputs: [{{n: {n}}}]}}]\n  workers: {{matchLabels: {{pool: t}}}}\n  maxAttempts: 2\n  arrival: {{pattern: fixed, rate: {rate}}}\n"
    )
}

/// The object's status, or null while it is not stored yet.
fn status(env: &Env, kind: &str, name: &str) -> Value {
    let out = env.ctl(&["get", kind, name, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout).map_or(Value::Null, |v| v["status"].clone())
}

/// The latest run's attempts as `report --format csv` gives them (cells split on commas:
/// these runs' errors and outputs have none).
fn attempts(env: &Env) -> Vec<Vec<String>> {
    let out = env.ctl(&["report", "w", "--format", "csv"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// Writes the manifest: the Cluster (with `defaults` added to its defaults), the Warm VM
/// `vm-0` (power On) and `work`; returns its path.
fn one_vm(env: &Env, defaults: &str, work: &str) -> String {
    let initrd = env.initrd.clone();
    let text = format!(
        "{}{}{work}",
        env.cluster(defaults),
        env.vm("vm-0", "On", "128Mi", &initrd)
    );
    env.write("m.yaml", &text)
}

/// `apply -f FILE` in the background, its stderr captured.
fn spawn_apply(env: &Env, file: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["apply", "-f", file, "--timeout", "10m"])
        .env("MICROFAAS_STATE_DIR", &env.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < BOOT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// QEMU killed while its worker runs a call: the attempt is recorded Lost, the worker says
/// `AgentLost`, the VM is started again and the call retried there to success.
#[test]
fn a_qemu_killed_mid_call_is_relaunched_and_the_call_retried() {
    let env = Env::new();
    let f = one_vm(&env, ", jobTimeout: 300s", &work(1, 2_000_000, "1/s"));
    let apply = spawn_apply(&env, &f);
    wait_for("vm-0 busy", || {
        status(&env, "worker", "vm-0")["phase"] == "Busy"
    });
    let first = env.qemus();
    assert_eq!(first.len(), 1, "{first:?}");
    // SAFETY: signalling the QEMU this test's state dir started (found in /proc).
    unsafe {
        libc::kill(first[0].1, libc::SIGKILL);
    }
    let out = apply.wait_with_output().expect("apply");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");

    let rows = attempts(&env);
    let summary: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r[10].clone(), r[11].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("1".to_string(), "lost".to_string()),
            ("2".to_string(), "succeeded".to_string())
        ],
        "{rows:?}"
    );
    assert!(
        rows[0][18].contains("the agent connection is closed"),
        "{rows:?}"
    );
    let d = String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-0"]).stdout).into_owned();
    assert!(d.contains("AgentLost"), "{d}");
    let now = env.qemus();
    assert_eq!(now.len(), 1, "one QEMU, relaunched: {now:?}");
    assert_ne!(
        now[0].1, first[0].1,
        "the killed QEMU is not the one running"
    );
    ok(&env.ctl(&["delete", "-f", &f]));
    assert!(env.qemus().is_empty());
}

/// SIGTERM during `apply`: it stops converging and exits, leaving the VM running and the store
/// consistent; the next `apply` adopts the VM (no second QEMU) and records the interrupted run
/// Cancelled, with every attempt it had made recorded once.
#[test]
fn sigterm_during_apply_leaves_the_vm_for_the_next_apply_to_adopt() {
    let env = Env::new();
    let f = one_vm(&env, "", &work(60, 1000, "2/s"));
    let apply = spawn_apply(&env, &f);
    wait_for("a few invocations", || {
        status(&env, "workload", "w")["succeeded"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    });
    let before = env.qemus();
    assert_eq!(before.len(), 1, "{before:?}");
    // SAFETY: signalling the child this test started (and has not reaped).
    unsafe {
        libc::kill(i32::try_from(apply.id()).expect("pid"), libc::SIGTERM);
    }
    let out = apply.wait_with_output().expect("apply");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "an interrupted apply is not a success"
    );
    assert!(
        stderr.contains("workload/w"),
        "says what had not converged: {stderr}"
    );
    assert_eq!(env.qemus(), before, "the VM must be left running as it was");

    // The next apply adopts the VM and closes the interrupted run.
    let again = env.ctl(&["apply", "-f", &f]);
    let again_err = String::from_utf8_lossy(&again.stderr).to_string();
    assert_eq!(env.qemus(), before, "restarted or duplicated: {again_err}");
    let d = String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-0"]).stdout).into_owned();
    assert!(d.contains("Adopted"), "{d}");
    let w = status(&env, "workload", "w");
    assert_eq!(w["phase"], "Cancelled", "{w}");
    let rows = attempts(&env);
    assert!(rows.len() >= 2, "{rows:?}");
    let mut ids: Vec<(String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[10].clone())).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "an attempt recorded twice: {rows:?}");
    ok(&env.ctl(&["delete", "-f", &f]));
    assert!(env.qemus().is_empty());
}
