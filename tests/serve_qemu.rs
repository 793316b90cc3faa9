//! `microfaasctl serve` with real QEMU (TCG): saved edits followed (plain writes and
//! temp-file-and-rename saves), invalid edits kept out, prune, `apply`/`delete` against a
//! running daemon, a second engine refused, signals and the shutdown policies, and a QEMU killed
//! by hand brought back.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::testbed::{Env, ok};

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
const BOOT: Duration = Duration::from_secs(120);

/// A `serve` child with its stderr in a file; killed on drop if still running.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(env: &Env, args: &[&str]) -> Serve {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = env.dir.path().join(format!("serve-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .arg("serve")
            .args(args)
            .env("MICROFAAS_STATE_DIR", &env.state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start serve");
        Serve { child, log }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling the child this test started (and has not reaped).
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then the exit status (within `limit`).
    fn stop(mut self, limit: Duration) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return (s, self.log());
            }
            assert!(
                started.elapsed() < limit,
                "serve did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it gives `Some`, failing with `what` and the daemon's log after `limit`.
fn wait_for<T>(
    serve: &mut Serve,
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            serve.alive(),
            "serve died while waiting for {what}:\n{}",
            serve.log()
        );
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn phase(env: &Env, worker: &str) -> String {
    let out = env.ctl(&["get", "worker", worker, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["status"]["phase"].as_str().unwrap_or("").to_string()
}

/// Waits until `worker` is Ready with exactly one QEMU; returns that QEMU's PID.
fn ready(env: &Env, serve: &mut Serve, worker: &str) -> i32 {
    wait_for(serve, BOOT, &format!("{worker} Ready"), || {
        let q: Vec<i32> = env
            .qemus()
            .into_iter()
            .filter(|(n, _)| n == worker)
            .map(|(_, p)| p)
            .collect();
        (phase(env, worker) == "Ready" && q.len() == 1).then(|| q[0])
    })
}

/// Waits until `worker` has no QEMU and (while it exists) reports Off.
fn off(env: &Env, serve: &mut Serve, worker: &str) {
    wait_for(serve, BOOT, &format!("{worker} off"), || {
        let p = phase(env, worker);
        (!env.qemus().iter().any(|(n, _)| n == worker) && (p == "Off" || p.is_empty()))
            .then_some(())
    });
}

/// Saves like editors that write a temp file and rename it over the original.
fn save_by_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("m")
    ));
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

fn describe(env: &Env, worker: &str) -> String {
    String::from_utf8_lossy(&env.ctl(&["describe", "worker", worker]).stdout).into_owned()
}

/// `FILE:LINE:COL` after `file` in `text`, if any.
fn position_after(text: &str, file: &str) -> Option<String> {
    let at = text.find(file)? + file.len();
    let rest = text[at..].strip_prefix(':')?;
    let mut parts = rest.splitn(3, ':');
    let line = parts.next()?;
    let col: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (line.chars().all(|c| c.is_ascii_digit()) && !line.is_empty() && !col.is_empty())
        .then(|| format!("{file}:{line}:{col}"))
}

#[test]
fn watch_follows_saves_and_keeps_out_invalid_edits() {
    let env = Env::new();
    let dir = env.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("cluster.yaml"), env.cluster("")).expect("write");
    let vm = dir.join("vm.yaml");
    let initrd = env.initrd.clone();
    std::fs::write(&vm, env.vm("vm-0", "On", "128Mi", &initrd)).expect("write");
    let d = dir.display().to_string();
    let mut serve = Serve::start(&env, &["-f", &d, "--watch", "--debounce", "200ms"]);
    ready(&env, &mut serve, "vm-0");

    // A plain write to power: Off, then On again saved through a temp file and a rename.
    std::fs::write(&vm, env.vm("vm-0", "Off", "128Mi", &initrd)).expect("write");
    off(&env, &mut serve, "vm-0");
    save_by_rename(&vm, &env.vm("vm-0", "On", "128Mi", &initrd));
    let pid = ready(&env, &mut serve, "vm-0");

    // An invalid edit: nothing changes, the daemon lives, a Warning names the position.
    save_by_rename(&vm, &env.vm("vm-0", "Sideways", "128Mi", &initrd));
    let shown = wait_for(
        &mut serve,
        Duration::from_secs(30),
        "the InvalidManifest warning",
        || {
            describe(&env, "vm-0")
                .lines()
                .find(|l| l.contains("InvalidManifest"))
                .map(str::to_string)
        },
    );
    let pos = position_after(&shown, "vm.yaml");
    assert!(
        pos.is_some(),
        "the warning does not name FILE:LINE:COL:\n{shown}"
    );
    assert!(
        serve.log().contains(&pos.clone().unwrap_or_default()),
        "the log does not name {pos:?}:\n{}",
        serve.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        serve.alive(),
        "serve died on an invalid edit:\n{}",
        serve.log()
    );
    assert_eq!(phase(&env, "vm-0"), "Ready");
    assert_eq!(
        env.qemus(),
        vec![("vm-0".to_string(), pid)],
        "an invalid edit touched the worker"
    );
    let stored = env.json(&["get", "worker", "vm-0", "-o", "json"]);
    assert_eq!(stored["spec"]["power"], "On", "{stored}");

    // The fix (a real change: Off) is applied.
    save_by_rename(&vm, &env.vm("vm-0", "Off", "128Mi", &initrd));
    off(&env, &mut serve, "vm-0");

    let (status, log) = serve.stop(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn prune_apply_delete_against_the_daemon_and_one_engine_only() {
    let env = Env::new();
    let initrd = env.initrd.clone();
    let dir = env.dir.path().join("manifests");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("cluster.yaml"), env.cluster("")).expect("write");
    std::fs::write(dir.join("a.yaml"), env.vm("vm-a", "On", "128Mi", &initrd)).expect("write");
    let d = dir.display().to_string();

    // Without --prune a removed document is left alone.
    let mut serve = Serve::start(&env, &["-f", &d, "--watch", "--debounce", "200ms"]);
    let pid_a = ready(&env, &mut serve, "vm-a");
    std::fs::remove_file(dir.join("a.yaml")).expect("rm");
    let log = serve.log.clone();
    wait_for(
        &mut serve,
        Duration::from_secs(30),
        "the not-declared log line",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("worker/vm-a")
                .then_some(())
                .filter(|()| text.contains("no longer declared"))
        },
    );
    assert_eq!(env.qemus(), vec![("vm-a".to_string(), pid_a)]);
    assert_eq!(phase(&env, "vm-a"), "Ready");

    // A second engine on the same state dir is refused, naming the daemon's PID.
    let second = env.ctl(&["serve", "-f", &d]);
    assert_eq!(second.status.code(), Some(3), "{second:?}");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains(&format!("PID {}", serve.pid())), "{err}");

    // `apply` while serving: the daemon converges it; apply returns once it has.
    let other = env.write("other.yaml", &env.vm("vm-c", "On", "128Mi", &initrd));
    let applied = env.ctl(&["apply", "-f", &other, "--timeout", "4m"]);
    ok(&applied);
    assert!(String::from_utf8_lossy(&applied.stdout).contains("worker/vm-c created"));
    assert_eq!(
        phase(&env, "vm-c"),
        "Ready",
        "apply returned before converging"
    );
    assert!(
        env.qemus().iter().any(|(n, _)| n == "vm-c"),
        "{:?}",
        env.qemus()
    );
    assert!(serve.alive());

    // `delete` while serving: the daemon tears it down; delete returns once it is gone.
    let deleted = env.ctl(&["delete", "worker", "vm-c", "--timeout", "2m"]);
    ok(&deleted);
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout),
        "worker/vm-c deleted\n"
    );
    assert!(
        !env.qemus().iter().any(|(n, _)| n == "vm-c"),
        "{:?}",
        env.qemus()
    );

    let (status, log) = serve.stop(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");

    // With --prune, the document that is gone is torn down and deleted.
    let mut serve = Serve::start(&env, &["-f", &d, "--watch", "--prune"]);
    off(&env, &mut serve, "vm-a");
    wait_for(&mut serve, Duration::from_secs(60), "vm-a deleted", || {
        env.ctl(&["get", "worker", "vm-a"])
            .status
            .code()
            .filter(|c| *c == 1)
    });
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
    let (status, log) = serve.stop(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
}

#[test]
fn signals_shutdown_policies_adoption_and_a_killed_qemu() {
    let env = Env::new();
    let initrd = env.initrd.clone();
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}",
            env.cluster(""),
            env.vm("vm-0", "On", "128Mi", &initrd)
        ),
    );
    let mut serve = Serve::start(&env, &["-f", &f, "--log-format", "json", "--resync", "3s"]);
    let pid = ready(&env, &mut serve, "vm-0");

    // SIGTERM with LeaveRunning: exit 0 and the VM keeps running.
    let (status, log) = serve.stop(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{log}");
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(log.contains("LeaveRunning"), "{log}");
    assert_eq!(
        env.qemus(),
        vec![("vm-0".to_string(), pid)],
        "LeaveRunning stopped the VM"
    );

    // The next serve adopts it: no second QEMU. (Its stored status still says Ready from the
    // last daemon: wait for this one's own word.)
    let mut serve = Serve::start(&env, &["-f", &f, "--resync", "3s"]);
    wait_for(&mut serve, BOOT, "the Adopted event", || {
        describe(&env, "vm-0").contains("Adopted").then_some(())
    });
    assert_eq!(ready(&env, &mut serve, "vm-0"), pid, "not adopted");
    assert_eq!(env.qemus().len(), 1, "{:?}", env.qemus());

    // A QEMU killed by hand is brought back.
    // SAFETY: a QEMU found with this test's state dir in its argv.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let again = wait_for(&mut serve, BOOT, "a relaunched QEMU", || {
        let q = env.qemus();
        (phase(&env, "vm-0") == "Ready" && q.len() == 1 && q[0].1 != pid).then(|| q[0].1)
    });
    assert_ne!(again, pid);

    // SIGHUP re-reads the files (no --watch here): the Cluster now says PowerOff.
    std::fs::write(
        &f,
        format!(
            "{}{}",
            env.cluster("")
                .replace("spec:\n", "spec:\n  shutdownPolicy: PowerOff\n"),
            env.vm("vm-0", "On", "128Mi", &initrd)
        ),
    )
    .expect("write");
    serve.signal(libc::SIGHUP);
    wait_for(
        &mut serve,
        Duration::from_secs(30),
        "the Cluster re-read",
        || {
            let c = env.json(&["get", "cluster", "t", "-o", "json"]);
            (c["spec"]["shutdownPolicy"] == "PowerOff").then_some(())
        },
    );
    let (status, log) = serve.stop(Duration::from_secs(90));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        env.qemus().is_empty(),
        "PowerOff left {:?}\n{log}",
        env.qemus()
    );
    assert_eq!(phase(&env, "vm-0"), "Off");
}
