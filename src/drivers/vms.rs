//! The engine's `VmDriver` over real QEMU: one `Vm` per worker, QMP events turned into
//! "this worker's VM exited" triggers for the reconcile loop.

use super::qemu::{Vm, VmConfig, emulator_for};
use super::qmp::QmpEvent;
use crate::engine::vm::{StopHow, VmDriver};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Where guests on user networking reach the orchestrator (forwarded to the host endpoint).
pub const GUEST_ORCHESTRATOR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);

pub struct QemuVms {
    vms: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Vm>>>>,
    exits: broadcast::Sender<String>,
    binary: PathBuf,
    arm_binary: PathBuf,
    relay: Option<String>,
}

impl Default for QemuVms {
    fn default() -> Self {
        Self::new()
    }
}

impl QemuVms {
    pub fn new() -> Self {
        let binary = std::env::var_os("MICROFAAS_QEMU")
            .map_or_else(|| PathBuf::from("qemu-system-x86_64"), PathBuf::from);
        let arm_binary = std::env::var_os("MICROFAAS_QEMU_ARM")
            .map_or_else(|| PathBuf::from("qemu-system-arm"), PathBuf::from);
        QemuVms {
            arm_binary,
            vms: Mutex::new(HashMap::new()),
            exits: broadcast::channel(1024).0,
            binary,
            // This very program relays guest connections (`microfaasctl relay`); QEMU runs the
            // command through a shell, so the path is quoted.
            relay: std::env::current_exe()
                .ok()
                .filter(|p| p.file_name().is_some_and(|n| n == "microfaasctl"))
                .map(|p| format!("'{}' relay", p.display().to_string().replace('\'', "'\\''"))),
        }
    }

    /// Guest connections relayed by `command` (a shell command taking `HOST:PORT`), for hosts
    /// of the engine that are not `microfaasctl` itself (tests).
    pub fn with_relay(mut self, command: String) -> Self {
        self.relay = Some(command);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<Vm>>>> {
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, name: &str) -> Option<Arc<tokio::sync::Mutex<Vm>>> {
        self.lock().get(name).cloned()
    }

    /// Keeps a VM and forwards its exit to the engine.
    fn track(&self, name: &str, vm: Vm) {
        let mut events = vm.events();
        let vm = Arc::new(tokio::sync::Mutex::new(vm));
        self.lock().insert(name.to_string(), vm);
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
    }

    fn config(&self, spec: &VmConfig) -> VmConfig {
        VmConfig {
            qemu_binary: emulator_for(spec.machine, &self.binary, &self.arm_binary).to_owned(),
            relay: self.relay.clone(),
            ..spec.clone()
        }
    }
}

impl VmDriver for QemuVms {
    async fn launch(&self, spec: &VmConfig) -> Result<(), String> {
        let vm = Vm::launch(&self.config(spec))
            .await
            .map_err(|e| e.to_string())?;
        self.track(&spec.name, vm);
        Ok(())
    }

    async fn adopt(&self, spec: &VmConfig) -> Result<bool, String> {
        match Vm::adopt(&spec.run_dir, &spec.name, &spec.uuid).await {
            Ok(Some(vm)) => {
                self.track(&spec.name, vm);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    fn is_running(&self, name: &str) -> bool {
        let Some(vm) = self.get(name) else {
            return false;
        };
        let alive = vm.try_lock().map_or(true, |v| v.is_alive());
        if !alive {
            self.lock().remove(name);
        }
        alive
    }

    async fn stop(&self, name: &str, how: StopHow, wait: Duration) -> Result<bool, String> {
        let Some(vm) = self.get(name) else {
            return Ok(true);
        };
        let mut vm = vm.lock().await;
        if !vm.is_alive() {
            drop(vm);
            self.lock().remove(name);
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
            self.lock().remove(name);
        }
        Ok(gone)
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }
}
