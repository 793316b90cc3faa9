//! The Worker reconciler. VM workers: launch, adopt, boot timeout, recovery and quarantine,
//! recreate on a spec change that needs a new VM, and the power-off ladder (agent → ACPI →
//! QMP quit → SIGKILL). Board workers go to `board.rs`.

use super::status::{CondStatus, Status};
use super::vm::{Launched, Presence, StopHow, VmDriver};
use super::{Engine, Next, lock};
use crate::drivers::qemu::{VmConfig, VmNet};
use crate::manifest::Kind;
use crate::manifest::types::{
    LifecycleMode, PowerPolicy, VmNetworkMode, VmSpec, VmStart, WorkerSpec,
};
use crate::store::EventType;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a QEMU that does not answer on QMP is waited for before it counts as a failure.
const ADOPT_PATIENCE: Duration = Duration::from_secs(30);

/// What the engine knows about a worker beyond its stored status.
#[derive(Debug, Default)]
pub struct WorkerRuntime {
    pub boot_started: Option<Instant>,
    /// Since when adoption keeps failing (a QEMU that does not answer on QMP).
    pub adopt_error_since: Option<Instant>,
    /// Since when a VM another engine left running keeps resisting being stopped.
    pub retire_error_since: Option<Instant>,
    /// When the VM last stopped, for the power-on holdoff.
    pub stopped_at: Option<Instant>,
    pub busy: bool,
    /// The function it runs while busy (shown as the worker's `function`).
    pub function: Option<String>,
    /// The stored status was last written saying Busy.
    pub busy_shown: bool,
    /// Calls sent to it so far (tells a call that is still running from a later one).
    pub calls: u64,
    /// Its power policy as of its last reconcile (`None`: not reconciled yet).
    pub power: Option<PowerPolicy>,
    /// The agent connected since the last launch: later disconnects are not boot failures.
    pub was_ready: bool,
    /// Calls its agent failed in a row, over boots (see `quarantine.rs`).
    pub agent_faults: u32,
    /// A quarantine for those faults, for the next reconcile to write: why.
    pub quarantine: Option<String>,
}

/// How long a call runs before the worker's stored status says Busy. A shorter call is not
/// worth two status writes (Busy, then Ready again) that nobody could have seen: energy
/// charges calls from their records, not from this phase.
pub const BUSY_SHOWN_AFTER: Duration = Duration::from_millis(100);

impl<D: VmDriver, P: Presence> Engine<D, P> {
    /// Marks the worker busy running `function`, or idle with `None`. The status follows only
    /// for calls that last [`BUSY_SHOWN_AFTER`], or that a reconcile meanwhile showed as Busy.
    pub fn set_busy(&self, worker: &str, function: Option<&str>) {
        let key = (Kind::Worker, worker.to_string());
        let mut rt = lock(&self.runtime);
        let r = rt.entry(worker.to_string()).or_default();
        r.busy = function.is_some();
        r.function = function.map(str::to_string);
        if function.is_none() {
            if std::mem::take(&mut r.busy_shown) {
                drop(rt);
                self.queue.add(key);
            }
            return;
        }
        r.calls = r.calls.wrapping_add(1);
        let call = r.calls;
        drop(rt);
        let (runtime, queue) = (self.runtime.clone(), self.queue.clone());
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.queue.add(key);
            return;
        };
        handle.spawn(async move {
            tokio::time::sleep(BUSY_SHOWN_AFTER).await;
            let still = lock(&runtime)
                .get(&key.1)
                .is_some_and(|r| r.busy && r.calls == call);
            if still {
                queue.add(key);
            }
        });
    }

    /// Whether the worker's status is to say Busy, and the function it runs (null when idle);
    /// remembered, so that the call's end rewrites the status only when it said Busy.
    pub(super) fn busy_for_status(&self, worker: &str) -> (bool, serde_json::Value) {
        let mut rt = lock(&self.runtime);
        let r = rt.entry(worker.to_string()).or_default();
        r.busy_shown = r.busy;
        (r.busy, json!(r.function.clone()))
    }

    fn launch_spec(
        &self,
        name: &str,
        spec: &WorkerSpec,
        vm: &VmSpec,
        uuid: &str,
    ) -> Result<VmConfig, String> {
        let memory = vm.memory.parse().map_err(|e| e.to_string())?;
        let lifecycle = match spec.lifecycle.mode {
            LifecycleMode::OneShot => "oneshot",
            LifecycleMode::Warm => "warm",
        };
        let port = self.cfg.orchestrator_port;
        // User networking forwards one guest address to the endpoint; on a tap network the
        // guest dials the address the Cluster advertises.
        let (orchestrator, network) = match vm.network.mode {
            VmNetworkMode::User => {
                let guest = crate::drivers::vms::GUEST_ORCHESTRATOR;
                let host = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
                (
                    format!("{guest}:{port}"),
                    VmNet::User {
                        guestfwd: Some((guest, port, host)),
                    },
                )
            }
            VmNetworkMode::Tap => (
                self.cluster()
                    .and_then(|c| c.orchestrator.advertise)
                    .ok_or(
                        "a VM on tap networking needs the Cluster's orchestrator.advertise address",
                    )?,
                VmNet::Tap {
                    bridge: vm.network.bridge.clone().unwrap_or_default(),
                    mac: vm.network.mac.clone(),
                },
            ),
        };
        let console = crate::drivers::qemu::guest_console(vm.machine());
        let mut cmdline = format!(
            "console={console} panic=-1 microfaas.worker={name} microfaas.orchestrator={orchestrator} microfaas.token={} microfaas.lifecycle={lifecycle}",
            self.cfg.token
        );
        // The agent has no DHCP client: a tap VM's address reaches it as the kernel's `ip=`,
        // before the manifest's own words (a later `ip=` there wins).
        if vm.network.mode == VmNetworkMode::Tap
            && let Some(addr) = &vm.network.address
        {
            let addr = crate::manifest::tapaddr::TapAddress::parse(addr)?;
            let gateway = match &vm.network.gateway {
                Some(g) => Some(
                    g.parse()
                        .map_err(|_| format!("gateway `{g}` is not an IPv4 address"))?,
                ),
                None => None,
            };
            cmdline.push(' ');
            cmdline.push_str(&addr.kernel_arg(gateway));
        }
        if let Some(extra) = &vm.cmdline {
            cmdline.push(' ');
            cmdline.push_str(extra);
        }
        let mut cfg = VmConfig::new(name, uuid, &vm.kernel);
        cfg.initrd = vm
            .initrd
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| self.cfg.default_initrd.clone());
        cfg.cmdline = cmdline;
        cfg.memory_mib = memory / (1 << 20);
        cfg.cpus = u32::try_from(vm.cpus).unwrap_or(1);
        cfg.machine = vm.machine();
        cfg.accel = vm.accel;
        cfg.snapshot = vm.start == VmStart::Snapshot;
        if matches!(network, VmNet::User { .. }) {
            cfg.service_forwards =
                crate::orchestrator::services::guest_forwards(self.cluster().as_ref())
                    .into_iter()
                    .map(|f| (f.guest, f.port, f.target))
                    .collect();
        }
        cfg.network = network;
        cfg.run_dir = self.run_dir(name);
        Ok(cfg)
    }

    /// Where a VM worker's pidfile, sockets, console logs and snapshot live.
    fn run_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join("vms").join(name)
    }

    /// Whether the worker should be powered now.
    pub(super) fn wants_on(&self, name: &str, spec: &WorkerSpec) -> bool {
        match spec.power {
            PowerPolicy::On => true,
            PowerPolicy::Off => false,
            PowerPolicy::OnDemand => {
                self.wanted(name) || lock(&self.runtime).get(name).is_some_and(|r| r.busy)
            }
        }
    }

    pub(super) async fn reconcile_worker(&self, name: &str) -> Result<Next, String> {
        let Some(obj) = self.get(Kind::Worker, name) else {
            // Gone from the store: its teardown ran before the record went (see `teardown`).
            lock(&self.runtime).remove(name);
            self.board_gone(name);
            self.presence.declare_v1(name, None);
            return Ok(Next::Done);
        };
        let spec: WorkerSpec =
            serde_json::from_value(obj.spec.clone()).map_err(|e| format!("stored spec: {e}"))?;
        lock(&self.runtime)
            .entry(name.to_string())
            .or_default()
            .power = Some(spec.power);
        self.presence.declare_v1(name, v1_address(&spec));
        let mut st = Status::from_value(&obj.status);
        let mut health = st
            .get("health")
            .and_then(|h| h.as_str())
            .unwrap_or("Good")
            .to_string();
        st.set("health", json!(health));
        if self.apply_quarantine(name, &mut st) {
            health = "Bad".to_string();
        }

        let Some(vm) = &spec.vm else {
            let Some(board) = &spec.board else {
                return Err("a worker needs a board or a vm".into());
            };
            return self
                .reconcile_board(name, &obj, &spec, board, st, &health)
                .await;
        };

        let uuid = match st
            .get("vm")
            .and_then(|v| v.get("uuid"))
            .and_then(|u| u.as_str())
        {
            Some(u) => u.to_string(),
            None => crate::drivers::qemu::new_uuid(),
        };
        let launch = self.launch_spec(name, &spec, vm, &uuid)?;
        let want_hash = launch_hash(&launch);
        let running_hash = st
            .get("vm")
            .and_then(|v| v.get("specHash"))
            .and_then(|h| h.as_str())
            .map(str::to_string);

        // Its VM may run from another orchestrator's state dir (that one died or lost it).
        if !self.driver.is_running(name)
            && let Some(next) = self.settle_foreign_vm(name, &mut st, &launch).await
        {
            return Ok(next);
        }
        // A VM of this worker may run without this process knowing it: started by an engine
        // that died, or still starting up. Find it before deciding anything, so there is never
        // a second QEMU for one worker.
        if !self.driver.is_running(name) && running_hash.is_some() {
            match self.driver.adopt(&launch).await {
                Ok(true) => {
                    let mut rt = lock(&self.runtime);
                    let r = rt.entry(name.to_string()).or_default();
                    r.adopt_error_since = None;
                    // Its agent redials the new endpoint with backoff: give it a boot timeout.
                    r.boot_started = Some(Instant::now());
                    drop(rt);
                    self.event(
                        Kind::Worker,
                        name,
                        EventType::Normal,
                        "Adopted",
                        "re-attached to the running VM",
                    );
                }
                Ok(false) => {
                    lock(&self.runtime)
                        .entry(name.to_string())
                        .or_default()
                        .adopt_error_since = None;
                }
                Err(e) => {
                    // Typically a QEMU still starting (no QMP socket yet): look again shortly.
                    let since = *lock(&self.runtime)
                        .entry(name.to_string())
                        .or_default()
                        .adopt_error_since
                        .get_or_insert_with(Instant::now);
                    if since.elapsed() < ADOPT_PATIENCE {
                        return Ok(Next::RequeueAfter(Duration::from_secs(1)));
                    }
                    self.event(Kind::Worker, name, EventType::Warning, "AdoptFailed", &e);
                }
            }
        }

        let defaults = self.defaults();
        let boot_timeout = defaults
            .boot_timeout
            .parse()
            .unwrap_or(Duration::from_secs(60));
        let holdoff = defaults
            .power_on_holdoff
            .parse()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(2));
        let quarantine_after = u32::try_from(defaults.quarantine_after).unwrap_or(3);
        let running = self.driver.is_running(name);
        let connected = running && self.presence.is_connected(name);
        // An operator's request (`microfaasctl power`, the web view) wins over the policy until
        // it is done; what it leaves holds until the spec changes, as on boards.
        let request = super::board::request_of(&st);
        let cycling_on = request.as_ref().is_some_and(|r| r.action == "cycle")
            && st
                .get(super::board::POWER_REQUEST)
                .and_then(|r| r.get("stage"))
                .and_then(|s| s.as_str())
                == Some("on");
        let want_on = match &request {
            Some(r) => r.action == "on" || cycling_on,
            None => {
                super::board::override_of(&st, obj.generation)
                    .unwrap_or_else(|| self.wants_on(name, &spec))
                    && health == "Good"
            }
        };
        let mut next = Next::Done;

        if running && want_on && running_hash.as_deref().is_some_and(|h| h != want_hash) {
            self.event(
                Kind::Worker,
                name,
                EventType::Normal,
                "Recreating",
                "the VM's kernel, memory, cpus, machine or network changed",
            );
            self.power_off(name, connected).await;
            return Ok(Next::RequeueAfter(Duration::ZERO));
        }

        if want_on {
            st.set("power", json!("On"));
            if !running {
                let died_booting = {
                    let mut rt = lock(&self.runtime);
                    let r = rt.entry(name.to_string()).or_default();
                    let died = r.boot_started.is_some() && !r.was_ready;
                    if died {
                        r.boot_started = None;
                        r.stopped_at = Some(Instant::now());
                    }
                    died
                };
                if died_booting {
                    self.event(Kind::Worker, name, EventType::Warning, "BootFailed", "the VM stopped before its agent connected (see `microfaasctl logs worker`)");
                    return self
                        .boot_failed(
                            name,
                            &mut st,
                            obj.generation,
                            quarantine_after,
                            "VM stopped while booting",
                        )
                        .await;
                }
                let since_stop = lock(&self.runtime)
                    .get(name)
                    .and_then(|r| r.stopped_at)
                    .map(|t| t.elapsed());
                if let Some(e) = since_stop
                    && e < holdoff
                {
                    return Ok(Next::RequeueAfter(holdoff - e));
                }
                // The uuid is stored before QEMU starts, so a crash right after the launch still
                // lets the next engine adopt this VM rather than start a second one.
                st.set_phase("PoweringOn")
                    .set("vm", self.vm_record(name, &uuid, &want_hash));
                self.write_status(Kind::Worker, name, &mut st);
                let how = match self.driver.launch(&launch).await {
                    Ok(how) => how,
                    Err(e) => {
                        self.event(Kind::Worker, name, EventType::Warning, "LaunchFailed", &e);
                        return self
                            .boot_failed(
                                name,
                                &mut st,
                                obj.generation,
                                quarantine_after,
                                &format!("launch failed: {e}"),
                            )
                            .await;
                    }
                };
                {
                    let mut rt = lock(&self.runtime);
                    let r = rt.entry(name.to_string()).or_default();
                    r.boot_started = Some(Instant::now());
                    r.was_ready = false;
                }
                if let Launched::ColdSnapshotDiscarded(why) = &how {
                    self.event(
                        Kind::Worker,
                        name,
                        EventType::Warning,
                        "SnapshotDiscarded",
                        &format!(
                            "the snapshot would not load and was deleted; booting instead: {why}"
                        ),
                    );
                }
                self.event(
                    Kind::Worker,
                    name,
                    EventType::Normal,
                    "PoweredOn",
                    match how {
                        Launched::Cold | Launched::ColdSnapshotDiscarded(_) => "VM started",
                        Launched::FromStandby => "VM started (standby resumed)",
                        Launched::FromSnapshot => "VM started (restored from its snapshot)",
                    },
                );
                st.set("vm", self.vm_record(name, &uuid, &want_hash))
                    .set_phase("Booting")
                    .condition("PoweredOn", CondStatus::True, "Launched", "")
                    .condition("AgentConnected", CondStatus::False, "Booting", "")
                    .condition("Ready", CondStatus::False, "Booting", "");
                next = Next::RequeueAfter(boot_timeout);
            } else if connected {
                let first = {
                    let mut rt = lock(&self.runtime);
                    let r = rt.entry(name.to_string()).or_default();
                    let first = !std::mem::replace(&mut r.was_ready, true);
                    first.then(|| r.boot_started.map(|t| t.elapsed())).flatten()
                };
                let (busy, function) = self.busy_for_status(name);
                if let Some(boot) = first {
                    st.set("bootSeconds", json!(boot.as_secs_f64()));
                    self.event(
                        Kind::Worker,
                        name,
                        EventType::Normal,
                        "Ready",
                        &format!(
                            "agent connected {:.2} s after the VM was started or adopted",
                            boot.as_secs_f64()
                        ),
                    );
                }
                st.set(
                    "vm",
                    self.vm_record(name, &uuid, &running_hash.unwrap_or(want_hash)),
                )
                .set_phase(if busy { "Busy" } else { "Ready" })
                .set("function", function)
                .set("failedBoots", serde_json::Value::Null)
                .condition("PoweredOn", CondStatus::True, "Running", "")
                .condition("AgentConnected", CondStatus::True, "Connected", "")
                .condition("Ready", CondStatus::True, "AgentConnected", "")
                .condition("Healthy", CondStatus::True, "Good", "");
                if let Some(req) = &request {
                    self.request_done(
                        name,
                        obj.generation,
                        &mut st,
                        req,
                        (true, "the VM is on and its agent connected"),
                        Some(true),
                    );
                }
            } else {
                let (started, was_ready) = {
                    let rt = lock(&self.runtime);
                    let r = rt.get(name);
                    (
                        r.and_then(|r| r.boot_started),
                        r.is_some_and(|r| r.was_ready),
                    )
                };
                let elapsed = started.map_or(Duration::ZERO, |t| t.elapsed());
                if was_ready {
                    // The agent left a running VM (a OneShot agent going down): wait for the exit.
                    st.set_phase("PoweringOff");
                    next = Next::RequeueAfter(Duration::from_secs(5));
                    if self.await_exit(name).await {
                        self.stopped(name);
                        next = Next::RequeueAfter(Duration::ZERO);
                    }
                } else if started.is_none() || elapsed >= boot_timeout {
                    self.event(
                        Kind::Worker,
                        name,
                        EventType::Warning,
                        "BootTimeout",
                        &format!("no agent within {boot_timeout:?}"),
                    );
                    let _ = self
                        .driver
                        .stop(name, StopHow::Kill, Duration::from_secs(5))
                        .await;
                    self.stopped(name);
                    return self
                        .boot_failed(
                            name,
                            &mut st,
                            obj.generation,
                            quarantine_after,
                            "boot timeout",
                        )
                        .await;
                } else {
                    st.set_phase("Booting");
                    next = Next::RequeueAfter(boot_timeout - elapsed);
                }
            }
        } else {
            st.set("power", json!("Off"));
            if running {
                st.set_phase("PoweringOff");
                self.write_status(Kind::Worker, name, &mut st);
                self.power_off(name, connected).await;
            }
            // A boot this engine no longer wants is over, however it ended (a quarantined
            // worker's VM may stop on its own): it is no failed boot once wanted again.
            if let Some(r) = lock(&self.runtime).get_mut(name) {
                r.boot_started = None;
                r.was_ready = false;
            }
            let phase = if health == "Good" { "Off" } else { "Failed" };
            // Likely wanted again soon: let the driver get a VM ready for that (a standby).
            // Only with a uuid in the status (a standby must be adoptable after a crash), and
            // not for a worker an operator switched off or one that is not healthy: off then
            // means no QEMU at all.
            if spec.power == PowerPolicy::OnDemand
                && health == "Good"
                && request.is_none()
                && super::board::override_of(&st, obj.generation).is_none()
                && running_hash.is_some()
            {
                self.driver.prepare(&launch);
            } else {
                self.driver.discard(name).await;
            }
            st.set_phase(phase)
                .condition("PoweredOn", CondStatus::False, "PoweredOff", "")
                .condition("AgentConnected", CondStatus::False, "PoweredOff", "")
                .condition("Ready", CondStatus::False, "PoweredOff", "");
            match &request {
                Some(req) if req.action == "cycle" => {
                    st.set(
                        super::board::POWER_REQUEST,
                        json!({"id": req.id, "action": "cycle", "stage": "on"}),
                    );
                    next = Next::RequeueAfter(Duration::ZERO);
                }
                Some(req) => self.request_done(
                    name,
                    obj.generation,
                    &mut st,
                    req,
                    (true, "the VM is off"),
                    Some(false),
                ),
                None => {}
            }
        }
        st.observed(obj.generation);
        // `st` carries on from any write on the way: the final one goes only when it changes
        // something.
        self.write_changed_status(Kind::Worker, name, &mut st);
        Ok(next)
    }

    fn stopped(&self, name: &str) {
        let mut rt = lock(&self.runtime);
        let r = rt.entry(name.to_string()).or_default();
        r.stopped_at = Some(Instant::now());
        r.boot_started = None;
        r.was_ready = false;
    }

    /// One more failed recovery: retry with backoff, or quarantine (health Bad) after
    /// `quarantineAfter` of them in a row.
    pub(super) async fn boot_failed(
        &self,
        name: &str,
        st: &mut Status,
        generation: i64,
        quarantine_after: u32,
        why: &str,
    ) -> Result<Next, String> {
        let failures = failed_boots(st) + 1;
        st.set("failedBoots", json!(failures));
        if failures >= quarantine_after {
            self.event(Kind::Worker, name, EventType::Warning, "Quarantined", &format!("{failures} failed recoveries in a row ({why}); marked Bad until `microfaasctl uncordon worker {name}`"));
            st.set("health", json!("Bad"))
                .set_phase("Failed")
                .condition("Healthy", CondStatus::False, "Quarantined", why)
                .condition("Ready", CondStatus::False, "Quarantined", why)
                .observed(generation);
            self.write_status(Kind::Worker, name, st);
            return Ok(Next::Done);
        }
        st.set_phase("Failed")
            .condition("Ready", CondStatus::False, "BootFailed", why);
        self.write_status(Kind::Worker, name, st);
        Err(format!("{why} ({failures}/{quarantine_after})"))
    }

    /// Waits for a VM whose agent is powering it off, quitting it if it lingers; true once gone.
    async fn await_exit(&self, name: &str) -> bool {
        self.driver
            .stop(name, StopHow::Quit, Duration::from_secs(10))
            .await
            .unwrap_or(false)
    }

    /// Asks the worker's agent to power off (an event); false when there is no agent to ask.
    pub(super) async fn ask_poweroff(&self, name: &str) -> bool {
        let asked = self.presence.request_poweroff(name).await;
        if asked {
            self.event(
                Kind::Worker,
                name,
                EventType::Normal,
                "PowerOff",
                "asked the agent to power off",
            );
        }
        asked
    }

    /// The power-off ladder; every step is an event.
    pub async fn power_off(&self, name: &str, connected: bool) {
        if connected && self.ask_poweroff(name).await && self.await_exit(name).await {
            self.stopped(name);
            return;
        }
        for (how, reason) in [
            (StopHow::Powerdown, "ACPI power button"),
            (StopHow::Quit, "QMP quit"),
            (StopHow::Kill, "SIGKILL"),
        ] {
            self.event(Kind::Worker, name, EventType::Normal, "PowerOff", reason);
            if self
                .driver
                .stop(name, how, Duration::from_secs(5))
                .await
                .unwrap_or(false)
            {
                break;
            }
        }
        self.stopped(name);
    }

    /// Finalizer of a worker: stop its VM before its record is deleted.
    pub async fn teardown(&self, name: &str) {
        if let Some(obj) = self.get(Kind::Worker, name)
            && let Ok(spec) = serde_json::from_value::<WorkerSpec>(obj.spec.clone())
            && let Some(board) = &spec.board
        {
            self.board_teardown(name, &obj, board).await;
        } else if self.driver.is_running(name) {
            let connected = self.presence.is_connected(name);
            self.power_off(name, connected).await;
        } else if let Some(obj) = self.get(Kind::Worker, name)
            && let Ok(spec) = serde_json::from_value::<WorkerSpec>(obj.spec)
            && let Some(vm) = &spec.vm
        {
            let uuid = obj
                .status
                .get("vm")
                .and_then(|v| v.get("uuid"))
                .and_then(|u| u.as_str())
                .map(str::to_string);
            if let Some(uuid) = uuid
                && let Ok(launch) = self.launch_spec(name, &spec, vm, &uuid)
                && self.driver.adopt(&launch).await.unwrap_or(false)
            {
                self.power_off(name, false).await;
            }
        }
        self.driver.discard(name).await;
        // Nothing would restore it again, and each is the size of the guest's used memory.
        crate::drivers::qemu::snapshot::remove(&self.run_dir(name));
        lock(&self.runtime).remove(name);
    }
}

/// Failed recoveries in a row, as stored (`failedBoots`): the stored count is the one an
/// operator's `uncordon` clears, so a returned worker starts its ladder again.
pub(super) fn failed_boots(st: &Status) -> u32 {
    st.get("failedBoots")
        .and_then(serde_json::Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Identity of what a VM was started with: a change means a new VM. The endpoint's port is
/// left out (an ephemeral port changes with every engine, and the relay follows it), and the
/// text is the one earlier versions hashed, so running VMs are not recreated by an upgrade.
fn launch_hash(l: &VmConfig) -> String {
    let (mode, bridge, mac) = match &l.network {
        VmNet::User { .. } => (VmNetworkMode::User, None, None),
        VmNet::Tap { bridge, mac } => (VmNetworkMode::Tap, Some(bridge), mac.as_ref()),
    };
    let mut text = format!(
        "{:?}|{:?}|{}|{}|{}|{:?}|{:?}|{:?}|{:?}|{:?}",
        l.kernel, l.initrd, l.cmdline, l.memory_mib, l.cpus, l.machine, l.accel, mode, bridge, mac
    );
    // Only when set, so VMs that boot keep the hash they had.
    if l.snapshot {
        text += "|snapshot";
    }
    // Only when there are any, so VMs without services keep the hash they had.
    if !l.service_forwards.is_empty() {
        text += &format!("|{:?}", l.service_forwards);
    }
    crate::functions::hex(&Sha256::digest(text.as_bytes())[..8])
}

/// The source address a MicroFaaS v1 worker dials from, when the worker speaks v1.
fn v1_address(spec: &WorkerSpec) -> Option<std::net::IpAddr> {
    if spec.protocol != crate::manifest::types::WorkerProtocol::MicrofaasV1 {
        return None;
    }
    spec.board
        .as_ref()?
        .network
        .as_ref()?
        .address
        .as_ref()?
        .parse()
        .ok()
}
