//! A QEMU testbed for the tests that drive `microfaasctl` end to end: a fresh state dir and
//! image, manifests written to a temp folder, the CLI run against them, and the QEMU processes
//! of this state dir found (and, on drop, killed) by scanning /proc.

use super::{AGENT_VAR, ARMV7_AGENT_VAR, ARMV7_KERNEL_VAR, KERNEL_VAR, artifact};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Env {
    pub _serial: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub kernel: PathBuf,
    /// The same kernel uncompressed, for PVH boots (what the example manifests use).
    pub vmlinux: PathBuf,
    pub initrd: PathBuf,
    pub port: u16,
}

impl Env {
    pub fn new() -> Env {
        // One test at a time: several TCG guests on two cores would make boot times, and so
        // these tests, depend on what else runs.
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let kernel_src = artifact(KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
        let agent = artifact(AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("image");
        let built = microfaas::image::build(&microfaas::image::BuildOptions {
            kernel: microfaas::image::KernelSource::Path(kernel_src),
            agent,
            out_dir: out,
            token: None,
            cache_dir: None,
            pvh: true,
        })
        .expect("image build");
        let vmlinux = built.vmlinux.expect("pvh: true writes vmlinux");
        Env::assemble(serial, dir, built.bzimage, vmlinux, built.initramfs)
    }

    /// An ARMv7 testbed: the zImage of `hack/build-kernel.sh armv7` and an initramfs around
    /// the ARM agent, laid out as the x86 one (`vmlinux` is the zImage too: no PVH on ARM).
    pub fn armv7() -> Env {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let zimage = artifact(ARMV7_KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
        let agent = artifact(ARMV7_AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().expect("tmp");
        let initrd = dir.path().join("initramfs-armv7.cpio.gz");
        let agent = std::fs::read(&agent).expect("read the ARM agent");
        microfaas::image::initramfs::write(
            &initrd,
            &microfaas::image::initramfs::Contents {
                agent: &agent,
                modules: Vec::new(),
                token: None,
            },
        )
        .expect("initramfs");
        Env::assemble(serial, dir, zimage.clone(), zimage, initrd)
    }

    fn assemble(
        serial: std::sync::MutexGuard<'static, ()>,
        dir: tempfile::TempDir,
        kernel: PathBuf,
        vmlinux: PathBuf,
        initrd: PathBuf,
    ) -> Env {
        // A fixed port for this test's engine: a VM keeps the guestfwd it was started with,
        // so an engine that adopts it later must listen where the first one did.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        Env {
            _serial: serial,
            state: dir.path().join("state"),
            kernel,
            vmlinux,
            initrd,
            dir,
            port,
        }
    }

    pub fn cluster(&self, extra: &str) -> String {
        format!(
            "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  orchestrator: {{listen: 127.0.0.1:{}}}\n  defaults: {{bootTimeout: 30s, powerOnHoldoff: 0s, quarantineAfter: 2{extra}}}\n",
            self.port
        )
    }

    pub fn vm(&self, name: &str, power: &str, memory: &str, initrd: &Path) -> String {
        format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}, labels: {{pool: t}}}}\nspec:\n  power: {power}\n  lifecycle: {{mode: Warm}}\n  vm: {{kernel: {}, initrd: {}, memory: {memory}, machine: pc, accel: tcg}}\n",
            self.kernel.display(),
            initrd.display()
        )
    }

    /// An OnDemand worker `name` labelled `pool: t` in `mode` (OneShot, Warm) booting `kernel`
    /// (PVH on `microvm`, as the examples do) and this testbed's initramfs.
    pub fn ondemand_vm(&self, name: &str, mode: &str, kernel: &Path) -> String {
        format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}, labels: {{pool: t}}}}\nspec:\n  power: OnDemand\n  lifecycle: {{mode: {mode}}}\n  vm: {{kernel: {}, initrd: {}, memory: 128Mi, cpus: 1, accel: tcg, network: {{mode: user}}}}\n",
            kernel.display(),
            self.initrd.display()
        )
    }

    /// A builtin Function `fn` running `handler` and a Workload `wl` of `count` calls of it at
    /// `rate`, two at a time, each with `input` (JSON; empty: the generated inputs).
    pub fn builtin_workload(handler: &str, count: u32, rate: &str, input: &str) -> String {
        let inputs = if input.is_empty() {
            String::new()
        } else {
            format!(", inputs: [{input}]")
        };
        format!(
            "---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {{name: fn}}
spec: {{runtime: builtin, handler: {handler}, timeout: 120s}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {{name: wl}}
spec:
  functions: [{{function: fn, count: {count}{inputs}}}]
  arrival: {{pattern: fixed, rate: {rate}}}
  concurrency: 2
"
        )
    }

    pub fn write(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        p.display().to_string()
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(args)
            .env("MICROFAAS_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .output()
            .expect("run microfaasctl")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// PIDs of live QEMU processes started for this state dir, by worker name (from /proc).
    pub fn qemus(&self) -> Vec<(String, i32)> {
        super::qemu::running_for(&self.state)
    }
}

impl Drop for Env {
    /// Never leave a QEMU behind, whatever failed.
    fn drop(&mut self) {
        for (_, pid) in self.qemus() {
            // SAFETY: signalling a PID we just found running with our state dir in its argv.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// `microfaasctl ARGS` with `state` as its state dir and `store` as `MICROFAAS_STORE`: the CLI
/// of another machine on a shared (etcd) store.
pub fn ctl_on_store(state: &std::path::Path, store: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(args)
        .env("MICROFAAS_STATE_DIR", state)
        .env("MICROFAAS_STORE", store)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run microfaasctl")
}

pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
pub const LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < LIMIT, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A `serve` a test started; killed (by its PID) if the test fails before [`stop`].
pub struct Daemon(pub Option<std::process::Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM to the daemon; it must exit cleanly.
pub fn stop(mut daemon: Daemon) {
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

impl Env {
    /// `serve -f FILE` on this state dir, its log in `LOG` under the temp dir.
    pub fn serve(&self, file: &str, log: &str) -> Daemon {
        let log = std::fs::File::create(self.dir.path().join(log)).expect("log");
        Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(["serve", "-f", file])
            .env("MICROFAAS_STATE_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map(|c| Daemon(Some(c)))
            .expect("serve")
    }

    /// `m.yaml`: the cluster, `workers` (labelled pool=t) and workload `w`, one call of
    /// float_operations on them.
    pub fn one_call_manifest(&self, workers: &str) -> String {
        let text = format!(
            "{}{workers}---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: fl}}\nspec: {{runtime: builtin, handler: float_operations, timeout: 30s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  functions: [{{function: fl, count: 1}}]\n  workers: {{matchLabels: {{pool: t}}}}\n",
            self.cluster(""),
        );
        self.write("m.yaml", &text)
    }

    /// A copy of the PVH kernel in the temp dir, whose mtime a test may change.
    pub fn own_kernel(&self) -> PathBuf {
        let kernel = self.dir.path().join("vmlinux");
        std::fs::copy(&self.vmlinux, &kernel).expect("copy the kernel");
        kernel
    }

    /// A log written by [`Env::serve`] so far.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
    }

    /// An object's status (`get KIND NAME -o json`), or null.
    pub fn status(&self, kind: &str, name: &str) -> Value {
        let out = self.ctl(&["get", kind, name, "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).map_or(Value::Null, |v| v["status"].clone())
    }
}

/// "Rebuilds" a file: same path, size and content, an mtime 5 s in the future.
pub fn touch_later(path: &Path) {
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(later))
        .expect("set mtime");
}

/// `microfaasctl` set up for a `serve` under test: state dir `state`, stderr to `log`, and
/// none of the store, TLS, orchestrator or log settings of the environment the tests run in.
pub fn serve_command(state: &Path, log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_microfaasctl"));
    c.env("MICROFAAS_STATE_DIR", state);
    for var in [
        "MICROFAAS_STORE",
        "MICROFAAS_ETCD_CA",
        "MICROFAAS_ETCD_CERT",
        "MICROFAAS_ETCD_KEY",
        "MICROFAAS_ORCHESTRATOR",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"));
    c
}
