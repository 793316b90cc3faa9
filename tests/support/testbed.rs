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
