//! What the engine needs from a VM driver, as a small trait, plus an in-memory fake for unit
//! tests and benchmarks. The real implementation over QEMU lives in `drivers::qemu`.

pub use crate::drivers::qemu::VmConfig;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopHow {
    /// ACPI power button: the agent shuts down cleanly.
    Powerdown,
    /// QMP `quit`.
    Quit,
    /// SIGKILL of the verified PID.
    Kill,
}

/// How a launched VM came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launched {
    /// A new VM process.
    Cold,
    /// The standby `prepare` got ready was resumed.
    FromStandby,
    /// The guest was restored from the worker's snapshot (a standby or not).
    FromSnapshot,
    /// Booted because the worker's snapshot would not load; it was deleted (the message says
    /// which file and why).
    ColdSnapshotDiscarded(String),
}

pub trait VmDriver: Send + Sync + 'static {
    /// Starts the VM detached, so it survives the engine's process. The engine decides
    /// everything in `spec` but the QEMU binary and the relay command, which are the driver's.
    fn launch(&self, spec: &VmConfig) -> impl Future<Output = Result<Launched, String>> + Send;
    /// Re-attaches to a VM a previous engine started; `Ok(false)` when there is none alive.
    fn adopt(&self, spec: &VmConfig) -> impl Future<Output = Result<bool, String>> + Send;
    fn is_running(&self, name: &str) -> bool;
    /// Stops the VM the given way and waits up to `wait`; `Ok(true)` once it is gone.
    fn stop(
        &self,
        name: &str,
        how: StopHow,
        wait: Duration,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Names of workers whose VM exited or whose control connection closed (the fake also
    /// uses it for its agents connecting).
    fn exits(&self) -> broadcast::Receiver<String>;
    /// The worker is off and will likely be powered on again: the driver may get a VM for
    /// `spec` ready in the background, so the next `launch` only has to start the guest.
    /// Returns at once; a driver without standbys ignores it.
    fn prepare(&self, _spec: &VmConfig) {}
    /// Stops a VM of this worker that another engine on this host launched from
    /// `spec.run_dir` (not this driver's own directory): its orchestrator died or lost the
    /// worker. It must prove it is `spec`'s VM (uuid, name) first; anything else there is left
    /// alone. `Ok(Some(pid))` when one was stopped. A driver without foreign VMs has none.
    fn retire(&self, _spec: &VmConfig) -> impl Future<Output = Result<Option<i32>, String>> + Send {
        async { Ok(None) }
    }
    /// Drops what `prepare` got ready for this worker (it is being deleted).
    fn discard(&self, _name: &str) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// The engine is stopping: drop every standby and prepare no more.
    fn close(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Whether a worker's agent is connected and authenticated.
pub trait Presence: Send + Sync + 'static {
    fn is_connected(&self, worker: &str) -> bool;
    /// Asks the worker's agent to power off; `false` when there is no agent to ask.
    fn request_poweroff(&self, worker: &str) -> impl Future<Output = bool> + Send;
    /// Tells the endpoint which source address a MicroFaaS v1 worker dials from (`None`: it
    /// is no v1 worker, or gone). v1 workers say no name, so this is how they are known.
    fn declare_v1(&self, _worker: &str, _address: Option<std::net::IpAddr>) {}
}

impl Presence for crate::orchestrator::Sessions {
    fn is_connected(&self, worker: &str) -> bool {
        self.get(worker).is_some()
    }

    async fn request_poweroff(&self, worker: &str) -> bool {
        match self.get(worker) {
            Some(s) => s
                .follow_up(crate::orchestrator::FollowUp::Poweroff)
                .await
                .is_ok(),
            None => false,
        }
    }

    fn declare_v1(&self, worker: &str, address: Option<std::net::IpAddr>) {
        self.set_v1_address(worker, address);
    }
}

/// A driver whose VMs boot instantly and whose agents are connected as soon as they launch.
pub struct FakeDriver {
    running: Mutex<HashSet<String>>,
    exits: broadcast::Sender<String>,
    pub launches: Mutex<Vec<String>>,
    /// Workers whose VM starts but whose agent never connects (boot failures).
    pub never_boot: Mutex<HashSet<String>>,
    /// When set, a launch waits for it to be notified (a reconcile held mid-way).
    pub launch_gate: Mutex<Option<std::sync::Arc<tokio::sync::Notify>>>,
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver {
            running: Mutex::new(HashSet::new()),
            exits: broadcast::channel(4096).0,
            launches: Mutex::new(Vec::new()),
            never_boot: Mutex::new(HashSet::new()),
            launch_gate: Mutex::new(None),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeDriver {
    /// Simulates a VM dying on its own.
    pub fn crash(&self, name: &str) {
        lock(&self.running).remove(name);
        let _ = self.exits.send(name.to_string());
    }

    pub fn running(&self) -> usize {
        lock(&self.running).len()
    }
}

impl VmDriver for FakeDriver {
    async fn launch(&self, spec: &VmConfig) -> Result<Launched, String> {
        let gate = lock(&self.launch_gate).clone();
        if let Some(gate) = gate {
            gate.notified().await;
        }
        lock(&self.launches).push(spec.name.clone());
        lock(&self.running).insert(spec.name.clone());
        // The real world's "agent connected" trigger: the instantly booted agent says hello.
        let _ = self.exits.send(spec.name.clone());
        Ok(Launched::Cold)
    }

    async fn adopt(&self, spec: &VmConfig) -> Result<bool, String> {
        Ok(lock(&self.running).contains(&spec.name))
    }

    fn is_running(&self, name: &str) -> bool {
        lock(&self.running).contains(name)
    }

    async fn stop(&self, name: &str, _how: StopHow, _wait: Duration) -> Result<bool, String> {
        lock(&self.running).remove(name);
        Ok(true)
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }
}

impl Presence for FakeDriver {
    fn is_connected(&self, worker: &str) -> bool {
        lock(&self.running).contains(worker) && !lock(&self.never_boot).contains(worker)
    }

    async fn request_poweroff(&self, worker: &str) -> bool {
        lock(&self.running).remove(worker)
    }
}
