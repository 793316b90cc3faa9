//! Standbys through `serve`, with real TCG VMs: an OnDemand OneShot worker that is off keeps a
//! paused QEMU ready; a rebuilt kernel image (same path, new mtime) is never booted from the
//! standby launched with the old one; and deleting the worker kills its standby while the
//! daemon goes on. (Adoption of a standby by an engine restarted after a `kill -9` is counted
//! by tests/chaos.rs.)
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use support::testbed::{Env, ok};

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
const LIMIT: Duration = Duration::from_secs(180);

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `serve` this test started; killed (by its PID) if the test fails before [`stop`].
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `serve -f FILE` on the testbed's state dir, its log in `serve.log`.
fn serve(env: &Env, file: &str) -> Daemon {
    let log = std::fs::File::create(env.dir.path().join("serve.log")).expect("log");
    Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["serve", "-f", file])
        .env("MICROFAAS_STATE_DIR", &env.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(|c| Daemon(Some(c)))
        .expect("serve")
}

fn serve_log(env: &Env) -> String {
    std::fs::read_to_string(env.dir.path().join("serve.log")).unwrap_or_default()
}

fn stop(mut daemon: Daemon) {
    let Some(mut child) = daemon.0.take() else {
        return;
    };
    // SAFETY: signalling the daemon this test started and has not reaped.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGTERM);
    }
    let s = child.wait().expect("wait");
    assert!(s.success(), "serve stopped with {s}");
}

fn status(env: &Env, kind: &str, name: &str) -> Value {
    let out = env.ctl(&["get", kind, name, "-o", "json"]);
    serde_json::from_slice::<Value>(&out.stdout).map_or(Value::Null, |v| v["status"].clone())
}

/// The PID of vm-0's standby: its one QEMU while the worker is Off after run `run` succeeded.
fn standby_after_run(env: &Env, run: u64) -> i32 {
    wait_for("the run, then a standby", || {
        let w = status(env, "workload", "w");
        let done = w["run"].as_u64() == Some(run) && w["phase"] == "Succeeded";
        let off = status(env, "worker", "vm-0")["phase"] == "Off";
        let qemus = env.qemus();
        // Not the last boot's QEMU on its way out: one the daemon launched paused.
        let standby = qemus.len() == 1
            && serve_log(env).contains(&format!("pid {} for vm-0, paused (standby)", qemus[0].1));
        (done && off && standby).then(|| qemus[0].1)
    })
}

/// A one-call workload on vm-0, an OnDemand OneShot worker booting `kernel`.
fn manifest(env: &Env, kernel: &Path) -> String {
    let text = format!(
        "{}{}---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: fl}}\nspec: {{runtime: builtin, handler: float_operations, timeout: 30s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  functions: [{{function: fl, count: 1}}]\n  workers: {{matchLabels: {{pool: t}}}}\n",
        env.cluster(""),
        env.ondemand_vm("vm-0", "OneShot", kernel)
    );
    env.write("m.yaml", &text)
}

/// The standby is resumed for the next call while the image is unchanged; once the kernel
/// file has a new mtime, the standby launched with the old one is not what boots.
#[test]
fn a_standby_is_not_resumed_once_its_kernel_file_changed() {
    let env = Env::new();
    let kernel = env.dir.path().join("vmlinux");
    std::fs::copy(&env.vmlinux, &kernel).expect("copy the kernel");
    let file = manifest(&env, &kernel);
    let daemon = serve(&env, &file);

    let first = standby_after_run(&env, 1);
    ok(&env.ctl(&["rerun", "workload", "w"]));
    let second = standby_after_run(&env, 2);
    assert!(
        serve_log(&env).contains(&format!("resumed the standby (pid {first})")),
        "the control case: an unchanged image boots from the standby\n{}",
        serve_log(&env)
    );
    assert_ne!(second, first);

    // "Rebuilt": same path and size, a newer mtime.
    let later = SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&kernel)
        .and_then(|f| f.set_modified(later))
        .expect("set mtime");
    ok(&env.ctl(&["rerun", "workload", "w"]));
    standby_after_run(&env, 3);
    let log = serve_log(&env);
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
    let mut daemon = serve(&env, &file);
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
