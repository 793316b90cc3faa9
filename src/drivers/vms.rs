//! The engine's `VmDriver` over real QEMU: one `Vm` per worker, QMP events turned into
//! "this worker's VM exited" triggers for the reconcile loop, and standbys: a QEMU launched
//! paused for a worker that is off, so that powering it on only starts the guest.
//!
//! Why standbys: under TCG about half of a cold start (power-on → agent hello) is QEMU setting
//! itself up before the guest runs its first instruction; a paused QEMU has paid that already.
//! A standby is the worker's own VM (same uuid, pidfile and QMP socket; the guest never ran), so
//! adoption finds it like any VM and tells it apart by its run state, `prelaunch`.
//!
//! Snapshot workers (`VmConfig::snapshot`): the first power-on boots, snapshots the guest
//! where its agent parked and lets it go; the standby of such a worker is a QEMU restored
//! from that snapshot and left paused (run state `paused`), and power-on resumes it and sends
//! the go line. A snapshot that will not load is deleted and the worker boots instead; the
//! next launch reports it (`Launched::ColdSnapshotDiscarded`) for the engine's Warning event.

use super::qemu::snapshot::{self, Lookup};
use super::qemu::{Vm, VmConfig, binary_stamp, emulator_for};
use super::qmp::QmpEvent;
use crate::engine::vm::{Launched, StopHow, VmDriver};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Where guests on user networking reach the orchestrator (forwarded to the host endpoint).
pub const GUEST_ORCHESTRATOR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

/// Beside a standby's pidfile: the key of the config it was launched with, so an engine that
/// adopts it knows whether it still fits the worker's spec.
const STANDBY_KEY_FILE: &str = "standby.key";

type Shared<T> = Arc<tokio::sync::Mutex<T>>;

pub struct QemuVms {
    inner: Arc<Inner>,
}

struct Inner {
    vms: Mutex<HashMap<String, Shared<Vm>>>,
    standbys: Mutex<HashMap<String, Standby>>,
    /// Snapshots found broken while preparing a standby, until the next launch reports them.
    discarded: Mutex<HashMap<String, String>>,
    /// Workers with a standby launch queued or under way (one at a time per worker).
    preparing: Mutex<HashSet<String>>,
    /// One launch, adoption or standby change at a time per worker.
    gates: Mutex<HashMap<String, Shared<()>>>,
    exits: broadcast::Sender<String>,
    binary: PathBuf,
    arm_binary: PathBuf,
    relay: Option<String>,
    standby: bool,
    closing: AtomicBool,
}

struct Standby {
    vm: Vm,
    key: String,
}

impl Default for QemuVms {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl QemuVms {
    pub fn new() -> Self {
        let binary = std::env::var_os("MICROFAAS_QEMU")
            .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from);
        let arm_binary = std::env::var_os("MICROFAAS_QEMU_ARM")
            .map_or_else(|| PathBuf::from("qemu-system-arm"), PathBuf::from);
        QemuVms {
            inner: Arc::new(Inner {
                arm_binary,
                vms: Mutex::new(HashMap::new()),
                standbys: Mutex::new(HashMap::new()),
                discarded: Mutex::new(HashMap::new()),
                preparing: Mutex::new(HashSet::new()),
                gates: Mutex::new(HashMap::new()),
                exits: broadcast::channel(1024).0,
                binary,
                // This very program relays guest connections (`microfaasctl relay`); QEMU runs
                // the command through a shell, so the path is quoted.
                relay: std::env::current_exe()
                    .ok()
                    .filter(|p| p.file_name().is_some_and(|n| n == "microfaasctl"))
                    .map(|p| format!("'{}' relay", p.display().to_string().replace('\'', "'\\''"))),
                standby: false,
                closing: AtomicBool::new(false),
            }),
        }
    }

    /// Guest connections relayed by `command` (a shell command taking `HOST:PORT`), for hosts
    /// of the engine that are not `microfaasctl` itself (tests).
    pub fn with_relay(mut self, command: String) -> Self {
        self.inner_mut().relay = Some(command);
        self
    }

    /// Keep a paused QEMU ready for each OnDemand worker that is off (see the module doc).
    /// For engines that run a while (`apply`, `serve`), which call [`VmDriver::close`] when
    /// they stop; one-off commands leave it off.
    pub fn with_standby(mut self) -> Self {
        self.inner_mut().standby = true;
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        // Only the builder methods call this, before the driver is shared.
        Arc::get_mut(&mut self.inner).unwrap_or_else(|| unreachable!("configured after sharing"))
    }

    /// The worker whose standby is ready now, if any (for tests and diagnostics).
    pub fn standby_pid(&self, name: &str) -> Option<i32> {
        lock(&self.inner.standbys).get(name).map(|s| s.vm.pid())
    }
}

impl Inner {
    fn get(&self, name: &str) -> Option<Shared<Vm>> {
        lock(&self.vms).get(name).cloned()
    }

    fn gate(&self, name: &str) -> Shared<()> {
        lock(&self.gates)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Keeps a VM and forwards its exit to the engine.
    fn track(&self, name: &str, vm: Vm) -> Shared<Vm> {
        let mut events = vm.events();
        let vm = Arc::new(tokio::sync::Mutex::new(vm));
        lock(&self.vms).insert(name.to_string(), vm.clone());
        let exits = self.exits.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(QmpEvent::Shutdown { .. } | QmpEvent::Closed)
                    | Err(broadcast::error::RecvError::Closed) => {
                        let _ = exits.send(name.clone());
                        break;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        });
        vm
    }

    fn config(&self, spec: &VmConfig) -> VmConfig {
        VmConfig {
            qemu_binary: emulator_for(spec.machine, &self.binary, &self.arm_binary).to_owned(),
            relay: self.relay.clone(),
            ..spec.clone()
        }
    }

    /// Whether a VM of this worker runs (dead ones are forgotten on the way).
    fn running(&self, name: &str) -> bool {
        let Some(vm) = self.get(name) else {
            return false;
        };
        let alive = vm.try_lock().map_or(true, |v| v.is_alive());
        if !alive {
            lock(&self.vms).remove(name);
        }
        alive
    }

    /// Launches a standby for `cfg` unless one that fits is there; the caller holds the gate.
    async fn prepare_gated(&self, cfg: &VmConfig) {
        let name = &cfg.name;
        if self.closing.load(Ordering::SeqCst) || self.running(name) {
            return;
        }
        let key = standby_key(cfg);
        let current = lock(&self.standbys).remove(name);
        if let Some(sb) = current {
            if sb.key == key && sb.vm.is_alive() {
                lock(&self.standbys).insert(name.clone(), sb);
                return;
            }
            drop_standby(sb).await;
        }
        let launched = if cfg.snapshot {
            // Without a snapshot there is no standby: the next power-on boots and takes one.
            let Lookup::Valid(file) = snapshot::lookup(&cfg.run_dir, &key) else {
                return;
            };
            match restored(cfg, &file).await {
                Ok(vm) => Ok(vm),
                Err(e) => {
                    snapshot::remove(&cfg.run_dir);
                    lock(&self.discarded).insert(name.clone(), e);
                    return;
                }
            }
        } else {
            Vm::launch_paused(cfg).await
        };
        match launched {
            Ok(vm) => {
                let key_file = cfg.run_dir.join(STANDBY_KEY_FILE);
                if let Err(e) = std::fs::write(&key_file, &key) {
                    tracing::warn!("{}: {e}", key_file.display());
                }
                let sb = Standby { vm, key };
                if self.closing.load(Ordering::SeqCst) {
                    drop_standby(sb).await;
                } else {
                    lock(&self.standbys).insert(name.clone(), sb);
                }
            }
            // The next launch is a cold one and reports whatever is wrong.
            Err(e) => tracing::debug!("no standby for {name}: {e}"),
        }
    }

    async fn discard_gated(&self, name: &str) {
        let sb = lock(&self.standbys).remove(name);
        if let Some(sb) = sb {
            drop_standby(sb).await;
        }
    }
}

/// Kills a standby (its guest never ran: nothing to shut down) and tidies its run directory.
async fn drop_standby(mut sb: Standby) {
    let name = sb.vm.name().to_string();
    if let Err(e) = sb.vm.kill() {
        tracing::warn!("standby of {name}: {e}");
    }
    if !sb
        .vm
        .wait_exit(Duration::from_secs(5))
        .await
        .unwrap_or(false)
    {
        tracing::warn!("standby of {name} (pid {}) did not exit", sb.vm.pid());
    }
    let files = sb.vm.files();
    for f in [files.console_next.clone(), files.dir.join(STANDBY_KEY_FILE)] {
        let _ = std::fs::remove_file(f);
    }
}

/// A QEMU for `cfg` with the guest state of `file` loaded, paused; the error names the file
/// (the QEMU is gone by then).
async fn restored(cfg: &VmConfig, file: &Path) -> Result<Vm, String> {
    let mut vm = Vm::launch_incoming(cfg)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    match vm.restore(file).await {
        Ok(()) => Ok(vm),
        Err(e) => {
            kill(vm).await;
            Err(e.to_string())
        }
    }
}

/// Starts a standby's guest; a restored one also gets its go line.
async fn start_standby(vm: &mut Vm, snapshot: bool) -> Result<(), String> {
    vm.resume().await.map_err(|e| e.to_string())?;
    if snapshot {
        vm.release(true).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn kill(mut vm: Vm) {
    if let Err(e) = vm.kill() {
        tracing::warn!("{}: {e}", vm.name());
    }
    let _ = vm.wait_exit(Duration::from_secs(5)).await;
}

/// How long a booting snapshot worker's agent may take to park; the engine's boot timeout
/// normally kills the VM (and so ends the wait) long before.
const PARK_TIMEOUT: Duration = Duration::from_secs(600);

/// After a snapshot worker's boot: once its agent parks, snapshot it if there is no valid
/// snapshot for `key` yet, then let it go. Ends quietly if the VM goes away meanwhile.
async fn snapshot_then_release(vm: Shared<Vm>, cfg: VmConfig, key: String) {
    let name = &cfg.name;
    let started = std::time::Instant::now();
    loop {
        // Briefly locked, so the engine can stop the VM while it boots.
        match vm.lock().await.has_parked() {
            Ok(true) => break,
            Ok(false) if started.elapsed() < PARK_TIMEOUT => {}
            Ok(false) => {
                tracing::warn!("{name}: the agent did not park within {PARK_TIMEOUT:?}");
                return;
            }
            Err(e) => {
                tracing::debug!("{name}: {e}");
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut vm = vm.lock().await;
    if !matches!(snapshot::lookup(&cfg.run_dir, &key), Lookup::Valid(_)) {
        let file = cfg.run_dir.join(snapshot::SNAPSHOT_FILE);
        let t = std::time::Instant::now();
        match vm.take_snapshot(&file).await {
            Ok(bytes) => match snapshot::write_key(&cfg.run_dir, &key) {
                Ok(()) => tracing::info!(
                    "{name}: took a snapshot ({} MiB in {:.3} s): {}",
                    bytes >> 20,
                    t.elapsed().as_secs_f64(),
                    file.display()
                ),
                Err(e) => {
                    tracing::warn!("{name}: snapshot key: {e}");
                    snapshot::remove(&cfg.run_dir);
                }
            },
            Err(e) => tracing::warn!("{name}: no snapshot: {e}"),
        }
        if let Err(e) = vm.cont().await {
            tracing::warn!("{name}: {e}");
        }
    }
    if let Err(e) = vm.release(false).await {
        tracing::warn!("{name}: {e}");
    }
}

/// What a standby must have been launched with to stand in for `cfg`: everything on QEMU's
/// command line, plus the size and mtime of the kernel and initrd (a standby holds the files
/// as they were when it started; a rebuilt image must not boot the old one) and of the QEMU
/// binary. It also keys a snapshot worker's snapshot.
fn standby_key(cfg: &VmConfig) -> String {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok()))
    };
    let text = format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{:?}|{:?}|{}",
        cfg.kernel,
        stamp(&cfg.kernel),
        cfg.initrd,
        cfg.initrd.as_deref().map(stamp),
        cfg.cmdline,
        cfg.memory_mib,
        cfg.cpus,
        cfg.machine,
        cfg.accel,
        cfg.network,
        cfg.service_forwards,
        cfg.uuid,
        cfg.qemu_binary,
        cfg.relay,
        binary_stamp(&cfg.qemu_binary),
        cfg.snapshot,
    );
    crate::functions::hex(&Sha256::digest(text.as_bytes())[..16])
}

impl VmDriver for QemuVms {
    async fn launch(&self, spec: &VmConfig) -> Result<Launched, String> {
        let inner = &self.inner;
        let cfg = inner.config(spec);
        let gate = inner.gate(&spec.name);
        let _one = gate.lock().await;
        let key = standby_key(&cfg);
        let mut discarded = lock(&inner.discarded).remove(&spec.name);
        let standby = lock(&inner.standbys).remove(&spec.name);
        if let Some(mut sb) = standby {
            if sb.key == key && sb.vm.is_alive() {
                match start_standby(&mut sb.vm, cfg.snapshot).await {
                    Ok(()) => {
                        let _ = std::fs::remove_file(spec.run_dir.join(STANDBY_KEY_FILE));
                        tracing::info!("{}: resumed the standby (pid {})", spec.name, sb.vm.pid());
                        inner.track(&spec.name, sb.vm);
                        return Ok(if cfg.snapshot {
                            Launched::FromSnapshot
                        } else {
                            Launched::FromStandby
                        });
                    }
                    Err(e) => tracing::warn!("{}: standby did not resume: {e}", spec.name),
                }
            }
            drop_standby(sb).await;
        }
        if cfg.snapshot {
            match snapshot::lookup(&cfg.run_dir, &key) {
                Lookup::Valid(file) => match restored(&cfg, &file).await {
                    Ok(mut vm) => match start_standby(&mut vm, true).await {
                        Ok(()) => {
                            tracing::info!(
                                "{}: restored from its snapshot (pid {})",
                                spec.name,
                                vm.pid()
                            );
                            inner.track(&spec.name, vm);
                            return Ok(Launched::FromSnapshot);
                        }
                        Err(e) => {
                            kill(vm).await;
                            snapshot::remove(&cfg.run_dir);
                            discarded = Some(format!("{}: {e}", file.display()));
                        }
                    },
                    Err(e) => {
                        snapshot::remove(&cfg.run_dir);
                        discarded = Some(e);
                    }
                },
                Lookup::Stale | Lookup::None => {}
            }
        }
        let vm = Vm::launch(&cfg).await.map_err(|e| e.to_string())?;
        let vm = inner.track(&spec.name, vm);
        if cfg.snapshot {
            tokio::spawn(snapshot_then_release(vm, cfg, key));
        }
        Ok(match discarded {
            Some(why) => {
                tracing::warn!("{}: snapshot discarded: {why}", spec.name);
                Launched::ColdSnapshotDiscarded(why)
            }
            None => Launched::Cold,
        })
    }

    async fn adopt(&self, spec: &VmConfig) -> Result<bool, String> {
        let inner = &self.inner;
        let gate = inner.gate(&spec.name);
        let _one = gate.lock().await;
        if inner.running(&spec.name) {
            return Ok(true);
        }
        if lock(&inner.standbys).contains_key(&spec.name) {
            return Ok(false);
        }
        match Vm::adopt(&spec.run_dir, &spec.name, &spec.uuid).await {
            Ok(Some(mut vm)) => {
                // A previous engine's standby: still one (nothing runs), kept if it fits.
                // A restored one is `paused` (or `inmigrate` if the engine died loading it).
                let status = vm.query_status().await.map(|s| s.as_str().to_owned());
                if status.is_ok_and(|s| {
                    s == "prelaunch" || (spec.snapshot && (s == "paused" || s == "inmigrate"))
                }) {
                    let key = std::fs::read_to_string(spec.run_dir.join(STANDBY_KEY_FILE))
                        .unwrap_or_default();
                    tracing::info!("{}: adopted a standby (pid {})", spec.name, vm.pid());
                    lock(&inner.standbys).insert(spec.name.clone(), Standby { vm, key });
                    return Ok(false);
                }
                inner.track(&spec.name, vm);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn is_running(&self, name: &str) -> bool {
        self.inner.running(name)
    }

    async fn retire(&self, spec: &VmConfig) -> Result<Option<i32>, String> {
        // Not this driver's VM (another run directory), but one at a time per worker anyway.
        let gate = self.inner.gate(&spec.name);
        let _one = gate.lock().await;
        super::qemu::takeover::stop_foreign(&spec.run_dir, &spec.name, &spec.uuid)
            .await
            .map_err(|e| e.to_string())
    }

    async fn stop(&self, name: &str, how: StopHow, wait: Duration) -> Result<bool, String> {
        let inner = &self.inner;
        let Some(vm) = inner.get(name) else {
            return Ok(true);
        };
        let mut vm = vm.lock().await;
        if !vm.is_alive() {
            drop(vm);
            lock(&inner.vms).remove(name);
            return Ok(true);
        }
        let sent = match how {
            StopHow::Powerdown => vm.powerdown().await,
            StopHow::Quit => vm.wait_exit(wait).await.map(|_| ()),
            StopHow::Kill => vm.kill(),
        };
        if let Err(e) = sent {
            tracing::debug!("stopping {name} ({how:?}): {e}");
        }
        let gone = if how == StopHow::Quit && vm.is_alive() {
            let _ = vm.quit().await;
            vm.wait_exit(Duration::from_secs(5)).await.unwrap_or(false)
        } else {
            vm.wait_exit(wait).await.unwrap_or(false)
        };
        drop(vm);
        if gone {
            lock(&inner.vms).remove(name);
        }
        Ok(gone)
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.inner.exits.subscribe()
    }

    fn prepare(&self, spec: &VmConfig) {
        let inner = self.inner.clone();
        if !inner.standby || inner.closing.load(Ordering::SeqCst) {
            return;
        }
        if !lock(&inner.preparing).insert(spec.name.clone()) {
            return;
        }
        let cfg = inner.config(spec);
        tokio::spawn(async move {
            let gate = inner.gate(&cfg.name);
            {
                let _one = gate.lock().await;
                inner.prepare_gated(&cfg).await;
            }
            lock(&inner.preparing).remove(&cfg.name);
        });
    }

    async fn discard(&self, name: &str) {
        let gate = self.inner.gate(name);
        let _one = gate.lock().await;
        self.inner.discard_gated(name).await;
    }

    async fn close(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Every worker that has or may be getting a standby; taking each gate waits out a
        // launch under way, which then sees `closing`.
        let names: Vec<String> = lock(&self.inner.gates).keys().cloned().collect();
        for name in names {
            self.discard(&name).await;
        }
    }
}
