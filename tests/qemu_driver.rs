//! The QEMU driver against real QEMU under TCG (`accel: tcg` explicitly), and the QMP client
//! against a fake peer that speaks a newer QEMU's dialect.
//!
//! Artefacts (nothing is skipped when they are missing; the tests fail saying what to run):
//!   eval "$(hack/test-artifacts.sh)"   # MICROFAAS_TEST_KERNEL and MICROFAAS_TEST_AGENT
//!   cargo test --test qemu_driver
//! QEMU itself comes from hack/install-deps.sh.
//!
//! Every QEMU a test starts is held by a [`Reaper`] that SIGKILLs it by PID (after checking
//! /proc shows our uuid) when the test ends, also when it fails. VM tests run one at a time:
//! TCG guests on a shared 2-core machine boot slowly enough when alone.

mod support;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use microfaas::drivers::qemu::{
    Accel, Machine, QemuError, RunState, Vm, VmConfig, VmNet, probe_accel,
};
use microfaas::drivers::qmp::{Qmp, QmpError, QmpEvent};
use microfaas::drivers::vms::QemuVms;
use microfaas::engine::vm::{Launched, StopHow, VmDriver};
use microfaas::image::{BuildOptions, KernelSource, build};
use microfaas::orchestrator::{AgentEvent, Endpoint};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::broadcast;

use support::{AGENT_VAR, KERNEL_VAR, artifact};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// The address the guest dials; guestfwd maps it to the endpoint on loopback.
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
const GUEST_PORT: u16 = 7100;

/// One VM test at a time (see the module comment). An async mutex: each test has its own
/// runtime, and the guard is held across awaits.
static VM_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// SIGKILLs the QEMU behind a pidfile when dropped, if /proc still shows our uuid on it.
struct Reaper {
    pidfile: PathBuf,
    uuid: String,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|&p| p > 1)
        else {
            return;
        };
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|&b| b == 0).any(|arg| arg == self.uuid.as_bytes()))
            .unwrap_or(false);
        if ours {
            // SAFETY: kill(2) on a PID just verified to be our QEMU.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            eprintln!("reaper: killed QEMU pid {pid}");
        }
    }
}

fn uuid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        n & 0xffff,
        (t >> 48) & 0xfff,
        (t >> 36) & 0xfff,
        t & 0xffff_ffff_ffff
    )
}

/// A built worker image and a temp dir holding it and the VMs' run directories.
struct Fixture {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    /// The same kernel uncompressed, for PVH direct boot.
    vmlinux: PathBuf,
    initrd: PathBuf,
}

fn fixture() -> Fixture {
    let kernel = artifact(KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    let agent = artifact(AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
    // Short paths: the QMP socket path must fit in a sockaddr_un.
    let dir = tempfile::Builder::new()
        .prefix("mfq")
        .tempdir()
        .expect("temp dir");
    // No token baked in (it goes on the command line), default cache, and a PVH vmlinux too.
    let mut opts = BuildOptions::new(KernelSource::Path(kernel), agent, dir.path().join("img"));
    opts.pvh = true;
    let image = build(&opts).unwrap_or_else(|e| panic!("image build: {e}"));
    Fixture {
        kernel: image.bzimage,
        vmlinux: image.vmlinux.expect("--pvh writes vmlinux"),
        initrd: image.initramfs,
        dir,
    }
}

impl Fixture {
    /// A TCG VM config whose agent dials `endpoint` (or nowhere) with `token`.
    fn config(&self, name: &str, endpoint: Option<&Endpoint>, token: &str) -> VmConfig {
        let mut cfg = VmConfig::new(name, &uuid(), &self.kernel);
        cfg.initrd = Some(self.initrd.clone());
        cfg.accel = Accel::Tcg;
        // The default machine (microvm): the driver must make it boot under TCG.
        assert_eq!(cfg.machine, Machine::Microvm);
        cfg.memory_mib = 128;
        cfg.run_dir = self.dir.path().join("vms").join(name);
        cfg.cmdline = format!(
            "console=ttyS0 quiet microfaas.worker={name} microfaas.orchestrator={GUEST_IP}:{GUEST_PORT} microfaas.token={token}"
        );
        cfg.network = VmNet::User {
            guestfwd: endpoint.map(|e| (GUEST_IP, GUEST_PORT, e.addr)),
        };
        cfg
    }
}

fn reaper(cfg: &VmConfig) -> Reaper {
    Reaper {
        pidfile: cfg.run_dir.join("qemu.pid"),
        uuid: cfg.uuid.clone(),
    }
}

fn console(cfg: &VmConfig) -> String {
    std::fs::read_to_string(cfg.run_dir.join("console.log")).unwrap_or_default()
}

async fn launch(cfg: &VmConfig) -> Vm {
    let t = Instant::now();
    let vm = Vm::launch(cfg)
        .await
        .unwrap_or_else(|e| panic!("launch {}: {e}", cfg.name));
    eprintln!(
        "{}: launch returned in {:?} (pid {})",
        cfg.name,
        t.elapsed(),
        vm.pid()
    );
    vm
}

/// Waits for an event matching `want`, failing after `timeout` with what was seen.
async fn expect_event(
    rx: &mut broadcast::Receiver<QmpEvent>,
    timeout: Duration,
    want: impl Fn(&QmpEvent) -> bool,
) -> Result<QmpEvent, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) if want(&ev) => return Ok(ev),
            Ok(Ok(ev)) => seen.push(ev),
            Ok(Err(broadcast::error::RecvError::Lagged(n))) => seen.push(QmpEvent::Other {
                event: format!("(lagged {n})"),
                data: Value::Null,
            }),
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                return Err(format!("event channel closed; saw {seen:?}"));
            }
            Err(_) => return Err(format!("no such event within {timeout:?}; saw {seen:?}")),
        }
    }
}

#[tokio::test]
async fn agent_connects_then_acpi_powerdown_makes_qemu_exit() {
    let _one = VM_TESTS.lock().await;
    let fx = fixture();
    let cfg = |endpoint: &Endpoint, token: &str| fx.config("vm-power", Some(endpoint), token);
    connect_then_powerdown(cfg).await;
}

/// The uncompressed kernel through PVH on microvm: QEMU puts the initrd at the top of RAM,
/// where microvm keeps its ACPI tables; without a page-multiple initramfs the guest loses them
/// (no PCI, no NIC, no power button) and this test times out. It also catches the guest dying
/// before its console on microvm's unprogrammed 8259 (args.rs, pic=off), as about half of
/// these boots did.
#[tokio::test]
async fn pvh_vmlinux_on_microvm_connects_and_powers_down() {
    let _one = VM_TESTS.lock().await;
    let fx = fixture();
    let cfg = |endpoint: &Endpoint, token: &str| {
        let mut c = fx.config("vm-pvh", Some(endpoint), token);
        c.kernel = fx.vmlinux.clone();
        c
    };
    connect_then_powerdown(cfg).await;
}

/// Boots the VM `cfg` builds, waits for its agent, then presses the ACPI power button and
/// expects the guest to power off and QEMU to exit by itself.
async fn connect_then_powerdown(cfg: impl Fn(&Endpoint, &str) -> VmConfig) {
    let token = "drivertoken1";
    let endpoint = Endpoint::bind("127.0.0.1:0", token.as_bytes().to_vec())
        .await
        .expect("bind endpoint");
    let mut agents = endpoint.subscribe();
    let cfg = cfg(&endpoint, token);
    let _reaper = reaper(&cfg);

    let started = Instant::now();
    let mut vm = launch(&cfg).await;
    let connected = tokio::time::timeout(BOOT_TIMEOUT, async {
        loop {
            match agents.recv().await {
                Ok(AgentEvent::Connected {
                    worker, boot_ms, ..
                }) if worker == cfg.name => {
                    return Ok(boot_ms);
                }
                Ok(other) => eprintln!("endpoint: {other:?}"),
                Err(e) => return Err(format!("endpoint events: {e}")),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(boot_ms)) => eprintln!(
            "agent connected {:?} after launch (guest uptime {boot_ms} ms)",
            started.elapsed()
        ),
        other => panic!(
            "agent did not connect ({other:?})\n--- console ---\n{}",
            console(&cfg)
        ),
    }

    let status = vm.query_status().await.expect("query-status");
    assert!(status.is_running(), "status {status}");

    let mut events = vm.events();
    let t = Instant::now();
    vm.powerdown().await.expect("system_powerdown");
    expect_event(&mut events, Duration::from_secs(5), |e| {
        *e == QmpEvent::Powerdown
    })
    .await
    .unwrap_or_else(|e| panic!("POWERDOWN: {e}"));
    let shutdown = expect_event(&mut events, EXIT_TIMEOUT, |e| {
        matches!(e, QmpEvent::Shutdown { .. })
    })
    .await
    .unwrap_or_else(|e| panic!("SHUTDOWN: {e}\n--- console ---\n{}", console(&cfg)));
    eprintln!("{shutdown:?} {:?} after system_powerdown", t.elapsed());
    assert!(
        matches!(&shutdown, QmpEvent::Shutdown { guest: true, .. }),
        "the guest shut itself down: {shutdown:?}"
    );
    assert!(
        vm.wait_exit(EXIT_TIMEOUT).await.expect("wait"),
        "QEMU exits by itself after the guest powered off"
    );
    eprintln!("QEMU gone {:?} after system_powerdown", t.elapsed());
    expect_event(&mut events, Duration::from_secs(5), |e| {
        *e == QmpEvent::Closed
    })
    .await
    .unwrap_or_else(|e| panic!("Closed: {e}"));
    assert!(!vm.is_alive());
    assert!(!cfg.run_dir.join("qemu.pid").exists(), "pidfile removed");
}

#[tokio::test]
async fn quit_and_kill_stop_qemu() {
    let _one = VM_TESTS.lock().await;
    let fx = fixture();

    let cfg = fx.config("vm-quit", None, "unused");
    let _reaper = reaper(&cfg);
    let mut vm = launch(&cfg).await;
    assert!(vm.is_alive());
    let t = Instant::now();
    vm.quit().await.expect("quit");
    assert!(
        vm.wait_exit(EXIT_TIMEOUT).await.expect("wait"),
        "gone after quit"
    );
    eprintln!("quit: gone after {:?}", t.elapsed());

    let cfg = fx.config("vm-kill", None, "unused");
    let _reaper2 = reaper(&cfg);
    let mut vm = launch(&cfg).await;
    let mut events = vm.events();
    let pid = vm.pid();
    let t = Instant::now();
    vm.kill().expect("kill");
    assert!(
        vm.wait_exit(EXIT_TIMEOUT).await.expect("wait"),
        "gone after kill"
    );
    expect_event(&mut events, Duration::from_secs(5), |e| {
        *e == QmpEvent::Closed
    })
    .await
    .unwrap_or_else(|e| panic!("Closed after kill: {e}"));
    eprintln!("kill: gone and Closed after {:?}", t.elapsed());
    // Gone, or a zombie nobody reaps (a daemonized QEMU is re-parented to this machine's init).
    // wait_exit sees it gone once its memory is released; on a loaded machine the kernel can
    // still be finishing its exit (state D) for a moment after that.
    let state_of = |stat: &str| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .map(str::to_string)
    };
    let exited = Instant::now() + Duration::from_secs(5);
    let stat = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if matches!(state_of(&stat).as_deref(), None | Some("Z")) || Instant::now() >= exited {
            break stat;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(state_of(&stat).as_deref(), None | Some("Z")),
        "pid {pid}: {stat}"
    );
    // After SIGKILL QEMU could not remove its files; wait_exit did.
    assert!(!cfg.run_dir.join("qemu.pid").exists());
    assert!(!cfg.run_dir.join("qmp.sock").exists());
    // A late subscriber still learns that the VM is gone.
    let mut late = vm.events();
    assert_eq!(late.try_recv().ok(), Some(QmpEvent::Closed));
    // Killing again is a no-op, not an error, and signals nobody.
    vm.kill().expect("second kill is a no-op");
}

#[tokio::test]
async fn adopt_finds_the_same_vm_and_never_a_stranger() {
    let _one = VM_TESTS.lock().await;
    let fx = fixture();
    let cfg = fx.config("vm-adopt", None, "unused");
    let _reaper = reaper(&cfg);

    let vm = launch(&cfg).await;
    let pid = vm.pid();
    // Our process "dies": the QMP connection goes, QEMU stays.
    drop(vm);

    // Another engine must not launch a second QEMU on the same run directory.
    match Vm::launch(&cfg).await {
        Err(QemuError::AlreadyRunning { pid: p, .. }) => assert_eq!(p, pid),
        other => panic!("second launch on a live run dir: {other:?}"),
    }

    // Strangers: a different uuid, or the right uuid with another name, are not adopted,
    // and the VM and its files are left alone.
    let t = Instant::now();
    let other = Vm::adopt(&cfg.run_dir, &cfg.name, &uuid())
        .await
        .expect("adopt with a foreign uuid");
    assert!(other.is_none(), "adopted a VM with a different uuid");
    let other = Vm::adopt(&cfg.run_dir, "vm-someone-else", &cfg.uuid)
        .await
        .expect("adopt with a foreign name");
    assert!(other.is_none(), "adopted a VM with a different name");
    assert!(cfg.run_dir.join("qemu.pid").exists());
    assert!(cfg.run_dir.join("qmp.sock").exists());

    let mut vm = Vm::adopt(&cfg.run_dir, &cfg.name, &cfg.uuid)
        .await
        .expect("adopt")
        .expect("our VM is adopted");
    eprintln!("adopt checks took {:?}", t.elapsed());
    assert_eq!(vm.pid(), pid, "same QEMU");
    assert_eq!(vm.name(), cfg.name);
    assert!(vm.is_alive());
    let status = vm.query_status().await.expect("query-status after adopt");
    assert!(status.is_running(), "status {status}");

    // Control works through the adopted handle.
    let mut events = vm.events();
    vm.kill().expect("kill adopted");
    assert!(vm.wait_exit(EXIT_TIMEOUT).await.expect("wait"));
    expect_event(&mut events, Duration::from_secs(5), |e| {
        *e == QmpEvent::Closed
    })
    .await
    .unwrap_or_else(|e| panic!("Closed: {e}"));

    // Stale files of a dead QEMU: a pidfile naming a PID that no longer exists and a socket
    // file nobody listens on.
    let stale_dir = fx.dir.path().join("vms").join("vm-stale");
    std::fs::create_dir_all(&stale_dir).expect("mkdir");
    let dead = {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap true");
        pid
    };
    std::fs::write(stale_dir.join("qemu.pid"), format!("{dead}\n")).expect("pidfile");
    drop(std::os::unix::net::UnixListener::bind(stale_dir.join("qmp.sock")).expect("sock"));
    assert!(stale_dir.join("qmp.sock").exists());
    let adopted = Vm::adopt(&stale_dir, "vm-stale", &uuid())
        .await
        .expect("adopt stale");
    assert!(adopted.is_none());
    assert!(
        !stale_dir.join("qemu.pid").exists(),
        "stale pidfile cleaned"
    );
    assert!(!stale_dir.join("qmp.sock").exists(), "stale socket cleaned");

    // A pidfile naming a live process that is not a QEMU at all (PID reuse): not adopted,
    // not signalled, files treated as stale.
    std::fs::write(
        stale_dir.join("qemu.pid"),
        format!("{}\n", std::process::id()),
    )
    .expect("pidfile");
    let adopted = Vm::adopt(&stale_dir, "vm-stale", &uuid())
        .await
        .expect("adopt reused pid");
    assert!(adopted.is_none());
    assert!(!stale_dir.join("qemu.pid").exists());
}

#[tokio::test]
async fn launch_errors_are_clear() {
    let fx_dir = tempfile::Builder::new()
        .prefix("mfq")
        .tempdir()
        .expect("tmp");
    let kernel = fx_dir.path().join("kernel");
    std::fs::write(&kernel, vec![0u8; 4096]).expect("write");

    let mut cfg = VmConfig::new("vm-err", &uuid(), &kernel);
    cfg.accel = Accel::Tcg;
    // More CPUs than the machine supports: QEMU fails while setting up, before detaching.
    cfg.cpus = 10_000;
    cfg.machine = Machine::Pc;
    cfg.run_dir = fx_dir.path().join("vm-err");
    let _reaper = reaper(&cfg);

    let mut missing = cfg.clone();
    missing.qemu_binary = PathBuf::from("qemu-system-nonexistent");
    let e = Vm::launch(&missing).await.expect_err("missing binary");
    assert!(matches!(e, QemuError::BinaryNotFound(_)), "{e}");
    assert!(e.to_string().contains("hack/install-deps.sh"), "{e}");

    let mut missing = cfg.clone();
    missing.kernel = fx_dir.path().join("nope");
    let e = Vm::launch(&missing).await.expect_err("missing kernel");
    assert!(matches!(e, QemuError::KernelNotFound(_)), "{e}");

    let e = Vm::launch(&cfg).await.expect_err("impossible CPU count");
    let QemuError::StartFailed { stderr, .. } = &e else {
        panic!("expected StartFailed, got {e}");
    };
    assert!(
        stderr.contains("qemu-system"),
        "QEMU's own message is quoted: {e}"
    );
    eprintln!("{e}");
}

#[tokio::test]
async fn probe_accel_says_tcg_here_quickly_and_caches() {
    let qemu = PathBuf::from("qemu-system-x86_64");
    let t = Instant::now();
    let accel = probe_accel(&qemu).await;
    let first = t.elapsed();
    let t = Instant::now();
    let again = probe_accel(&qemu).await;
    let cached = t.elapsed();
    eprintln!("probe_accel: {accel:?} in {first:?}, cached answer in {cached:?}");
    // This machine's /dev/kvm opens but cannot run guests at speed (notes/environment.md).
    assert_eq!(accel, Accel::Tcg);
    assert_eq!(again, accel);
    assert!(first < Duration::from_secs(5), "probe took {first:?}");
    assert!(
        cached < Duration::from_millis(50),
        "cached probe took {cached:?}"
    );
}

/// A QMP peer speaking a QEMU newer than the `qapi` schema: unknown events before replies, an
/// unknown enum value in a reply, a SHUTDOWN cause the schema lacks, a non-JSON line, a reply
/// to an id nobody asked for and an error class the schema lacks. The connection must survive
/// all of it and later commands must work.
#[tokio::test]
async fn qmp_tolerates_a_newer_qemu() {
    let dir = tempfile::Builder::new()
        .prefix("mfq")
        .tempdir()
        .expect("tmp");
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        // Any line, JSON or not, as the peer's next message.
        let mut send = async |v: Value| {
            let mut s = match v {
                Value::String(raw) => raw,
                v => v.to_string(),
            };
            s.push('\n');
            write
                .write_all(s.as_bytes())
                .await
                .map_err(|e| e.to_string())
        };
        send(
            json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 42},
                    "package": ""}, "capabilities": ["oob", "teleport"]}}),
        )
        .await?;
        let ts = json!({"seconds": 1, "microseconds": 2});
        while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
            let msg: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
            let id = msg.get("id").cloned().unwrap_or(Value::Null);
            let cmd = msg.get("execute").and_then(Value::as_str).unwrap_or("");
            match cmd {
                "qmp_capabilities" => send(json!({"return": {}, "id": id})).await?,
                "query-status" => {
                    send(
                        json!({"event": "QUANTUM_FLUX", "data": {"level": 9000}, "timestamp": ts}),
                    )
                    .await?;
                    send(json!({"event": "SHUTDOWN",
                                "data": {"guest": true, "reason": "guest-hibernate-to-cloud"},
                                "timestamp": ts}))
                    .await?;
                    send(Value::String("this is not json".into())).await?;
                    send(json!({"return": {}, "id": 999_999})).await?;
                    send(json!({"return": {"status": "hibernating", "running": false,
                                           "singlestep": false}, "id": id}))
                    .await?;
                }
                "query-name" => send(json!({"return": {"name": "fake"}, "id": id})).await?,
                "frobnicate" => {
                    send(json!({"error": {"class": "QuantumError", "desc": "no"}, "id": id}))
                        .await?
                }
                "quit" => {
                    send(json!({"return": {}, "id": id})).await?;
                    return Ok::<(), String>(());
                }
                other => return Err(format!("unexpected command {other}")),
            }
        }
        Ok(())
    });

    let qmp = Qmp::connect(&path, Duration::from_secs(5))
        .await
        .expect("handshake with a newer QEMU");
    let mut events = qmp.events();

    let status = qmp
        .execute(&qapi::qmp::query_status {})
        .await
        .expect("query-status with an unknown run state");
    let status = RunState::from_status_reply(status).expect("status kept as a string");
    assert_eq!(status, RunState::Unknown("hibernating".into()));

    let ev = expect_event(&mut events, Duration::from_secs(5), |_| true)
        .await
        .expect("unknown event");
    assert_eq!(
        ev,
        QmpEvent::Other {
            event: "QUANTUM_FLUX".into(),
            data: json!({"level": 9000})
        }
    );
    let ev = expect_event(&mut events, Duration::from_secs(5), |_| true)
        .await
        .expect("shutdown event");
    assert_eq!(
        ev,
        QmpEvent::Shutdown {
            guest: true,
            reason: "guest-hibernate-to-cloud".into()
        }
    );

    // Still alive: a typed command round-trips.
    let name = qmp
        .execute(&qapi::qmp::query_name {})
        .await
        .expect("query-name after all that");
    assert!(
        matches!(&name, microfaas::drivers::qmp::Decoded::Typed(n) if n.name.as_deref() == Some("fake")),
        "{name:?}"
    );
    match qmp.execute_raw("frobnicate", Value::Null).await {
        Err(QmpError::Command {
            command,
            class,
            desc,
        }) => {
            assert_eq!(
                (command.as_str(), class.as_str(), desc.as_str()),
                ("frobnicate", "QuantumError", "no")
            );
        }
        other => panic!("error reply: {other:?}"),
    }
    assert!(!qmp.is_closed());
    qmp.execute_raw("quit", Value::Null).await.expect("quit");
    expect_event(&mut events, Duration::from_secs(5), |e| {
        *e == QmpEvent::Closed
    })
    .await
    .expect("Closed when the peer hangs up");
    assert!(matches!(
        qmp.execute_raw("query-name", Value::Null).await,
        Err(QmpError::Closed)
    ));
    peer.await.expect("peer task").expect("peer");
}

fn pid_of(cfg: &VmConfig) -> Option<i32> {
    std::fs::read_to_string(cfg.run_dir.join("qemu.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z"))
}

/// Waits until the driver holds a standby for `name`; its pid.
async fn standby_ready(driver: &QemuVms, name: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = driver.standby_pid(name) {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no standby for {name} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Standbys through the engine's driver: `prepare` launches the worker's VM paused (the guest
/// does not run: no agent, an empty console of its own, the last boot's console untouched);
/// `launch` resumes that very QEMU and its agent connects; a new driver (an engine restarted
/// after a crash) finds a standby again and keeps it as one; a launch with another config
/// (here: memory) drops it for a cold start; `close` leaves no QEMU behind.
#[tokio::test]
async fn standby_is_prepared_resumed_adopted_and_closed() {
    let _one = VM_TESTS.lock().await;
    let fx = fixture();
    let token = "standbytoken";
    let endpoint = Endpoint::bind("127.0.0.1:0", token.as_bytes().to_vec())
        .await
        .expect("bind endpoint");
    let mut agents = endpoint.subscribe();
    let mut cfg = fx.config("vm-standby", Some(&endpoint), token);
    cfg.kernel = fx.vmlinux.clone();
    let _reaper = reaper(&cfg);
    std::fs::create_dir_all(&cfg.run_dir).expect("run dir");
    std::fs::write(cfg.run_dir.join("console.log"), "the last boot\n").expect("console");

    let driver = QemuVms::new().with_standby();
    driver.prepare(&cfg);
    let standby = standby_ready(&driver, &cfg.name).await;
    assert_eq!(
        pid_of(&cfg),
        Some(standby),
        "the standby is the worker's own VM"
    );
    assert!(
        !driver.is_running(&cfg.name),
        "a standby is not a running VM"
    );
    let quiet = tokio::time::timeout(Duration::from_secs(2), agents.recv()).await;
    assert!(quiet.is_err(), "the paused guest said something: {quiet:?}");
    assert_eq!(
        std::fs::read_to_string(cfg.run_dir.join("console.log")).expect("console"),
        "the last boot\n",
        "a standby must not touch the last boot's console"
    );

    let t = Instant::now();
    assert_eq!(
        driver.launch(&cfg).await.expect("launch from standby"),
        Launched::FromStandby
    );
    assert!(driver.is_running(&cfg.name));
    assert_eq!(pid_of(&cfg), Some(standby), "launch resumed the standby");
    let hello = tokio::time::timeout(BOOT_TIMEOUT, async {
        loop {
            if let Ok(AgentEvent::Connected {
                worker, boot_ms, ..
            }) = agents.recv().await
                && worker == cfg.name
            {
                return boot_ms;
            }
        }
    })
    .await;
    assert!(
        hello.is_ok(),
        "no agent after resume\n--- console ---\n{}",
        console(&cfg)
    );
    eprintln!(
        "standby resumed → agent hello in {:?} (guest uptime {} ms)",
        t.elapsed(),
        hello.unwrap_or_default()
    );
    assert!(
        !console(&cfg).contains("the last boot"),
        "the resumed boot's console replaced the last one"
    );

    assert!(
        driver
            .stop(&cfg.name, StopHow::Kill, EXIT_TIMEOUT)
            .await
            .expect("stop"),
        "killed"
    );
    driver.prepare(&cfg);
    let second = standby_ready(&driver, &cfg.name).await;
    assert_ne!(second, standby);
    // The engine dies (nothing is stopped) and a new one starts.
    drop(driver);
    let driver = QemuVms::new().with_standby();
    assert!(
        !driver.adopt(&cfg).await.expect("adopt"),
        "a standby is adopted as a standby, not as a running VM"
    );
    assert_eq!(driver.standby_pid(&cfg.name), Some(second));

    let mut bigger = cfg.clone();
    bigger.memory_mib += 64;
    assert_eq!(
        driver.launch(&bigger).await.expect("cold launch"),
        Launched::Cold
    );
    let cold = pid_of(&cfg).expect("pidfile");
    assert_ne!(cold, second, "a standby with another config is not used");
    assert!(!alive(second), "the unfit standby was killed");
    driver
        .stop(&cfg.name, StopHow::Kill, EXIT_TIMEOUT)
        .await
        .expect("stop");

    driver.prepare(&cfg);
    let third = standby_ready(&driver, &cfg.name).await;
    driver.close().await;
    assert!(!alive(third), "close killed the standby");
    assert_eq!(driver.standby_pid(&cfg.name), None);
    assert!(!cfg.run_dir.join("qemu.pid").exists());
    driver.prepare(&cfg);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        driver.standby_pid(&cfg.name),
        None,
        "a closed driver prepares nothing"
    );
}
