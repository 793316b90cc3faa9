//! Where a VM worker's QEMU runs, recorded in the worker's status (`vm.host`, `vm.bootId`,
//! `vm.orchestrator`, `vm.runDir`), and what an engine does when the record names a place
//! other than its own: the orchestrator that held the worker died (or lost its lease) and
//! left the VM running in its own state dir, where this engine's adoption never looks.
//!
//! - Same host (same kernel boot id): the VM is stopped through its run directory (verified by
//!   /proc and QMP, `drivers::qemu::takeover`) before this engine starts its own, so there is
//!   one QEMU per worker. It is not adopted: its agent dials the address and proves the token
//!   on its kernel command line, which are the dead orchestrator's (its own `--listen` port,
//!   and its state dir's token unless the Cluster names a shared one); a fresh boot costs
//!   about a second under TCG, and its in-flight call is retried anyway.
//! - Another host: not touched from here (no PID or socket of it means anything here). Its
//!   agent powers itself off once it has heard nothing from its orchestrator for the failsafe
//!   watchdog's time (`microfaas.watchdog`, 120 s by default).
//! - Same host name, another boot id: the machine rebooted since; nothing of it runs.

use super::status::Status;
use super::vm::{Presence, VmDriver};
use super::{Engine, Next};
use crate::drivers::qemu::VmConfig;
use crate::manifest::Kind;
use crate::store::EventType;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a foreign VM that cannot be stopped is retried before it is reported.
const RETIRE_PATIENCE: Duration = Duration::from_secs(30);

/// Where one VM runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub host: String,
    /// The kernel's boot id: PIDs and sockets mean something only within one boot of one host.
    pub boot_id: String,
    /// The orchestrator that launched it (`serve --name`), when the store is shared.
    pub orchestrator: Option<String>,
    pub run_dir: PathBuf,
}

/// What a recorded place means to an engine at `here`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing recorded, or this engine's own place, or a boot of this host that is over.
    Nothing,
    /// Another run directory on this very boot of this host: stop what runs there.
    SameHost(Place),
    /// Another host: leave it.
    OtherHost(Place),
}

fn this_host() -> &'static (String, String) {
    static HOST: OnceLock<(String, String)> = OnceLock::new();
    HOST.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        (
            read("/proc/sys/kernel/hostname"),
            read("/proc/sys/kernel/random/boot_id"),
        )
    })
}

impl Place {
    /// This process's host and boot, with `run_dir`.
    pub fn here(orchestrator: Option<&str>, run_dir: PathBuf) -> Place {
        let (host, boot_id) = this_host().clone();
        Place {
            host,
            boot_id,
            orchestrator: orchestrator.map(str::to_string),
            run_dir,
        }
    }

    /// From a worker's `status.vm`; `None` when it records no place (older engines).
    pub fn from_status(vm: Option<&Value>) -> Option<Place> {
        let vm = vm?;
        let s = |k: &str| vm.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Place {
            host: s("host")?,
            boot_id: s("bootId")?,
            orchestrator: s("orchestrator"),
            run_dir: PathBuf::from(s("runDir")?),
        })
    }

    /// The fields it adds to `status.vm`.
    pub fn extend(&self, vm: &mut Value) {
        if let Some(m) = vm.as_object_mut() {
            m.insert("host".into(), json!(self.host));
            m.insert("bootId".into(), json!(self.boot_id));
            m.insert("runDir".into(), json!(self.run_dir.display().to_string()));
            match &self.orchestrator {
                Some(o) => m.insert("orchestrator".into(), json!(o)),
                None => m.remove("orchestrator"),
            };
        }
    }

    /// Who left it, for messages.
    fn who(&self) -> String {
        match &self.orchestrator {
            Some(o) => format!("orchestrator {o}"),
            None => "another engine".to_string(),
        }
    }
}

/// What the `recorded` place means to an engine at `here`.
pub fn verdict(recorded: Option<&Place>, here: &Place) -> Verdict {
    match recorded {
        None => Verdict::Nothing,
        Some(r) if r.boot_id.is_empty() || here.boot_id.is_empty() => {
            // Without a boot id nothing can be told apart safely: only the exact own place
            // is known, and a foreign one is never signalled.
            if r.host == here.host && r.run_dir == here.run_dir {
                Verdict::Nothing
            } else {
                Verdict::OtherHost(r.clone())
            }
        }
        Some(r) if r.boot_id == here.boot_id => {
            if r.run_dir == here.run_dir {
                Verdict::Nothing
            } else {
                Verdict::SameHost(r.clone())
            }
        }
        Some(r) if r.host == here.host => Verdict::Nothing,
        Some(r) => Verdict::OtherHost(r.clone()),
    }
}

impl<D: VmDriver, P: Presence> Engine<D, P> {
    /// Where this engine runs `name`'s VM.
    pub(super) fn vm_place(&self, name: &str) -> Place {
        Place::here(
            self.ownership().map(|o| o.name.as_str()),
            self.cfg.state_dir.join("vms").join(name),
        )
    }

    /// `status.vm` for a VM of this engine: its uuid, spec hash and place.
    pub(super) fn vm_record(&self, name: &str, uuid: &str, spec_hash: &str) -> Value {
        let mut v = json!({"uuid": uuid, "specHash": spec_hash});
        self.vm_place(name).extend(&mut v);
        v
    }

    /// Before a VM worker's reconcile decides anything: when its status says its VM runs
    /// somewhere else, deal with that (module doc) and record this engine's place. `Some` to
    /// return at once (a foreign VM that could not be stopped yet: never start a second one).
    pub(super) async fn settle_foreign_vm(
        &self,
        name: &str,
        st: &mut Status,
        launch: &VmConfig,
    ) -> Option<Next> {
        let here = self.vm_place(name);
        let recorded = Place::from_status(st.get("vm"));
        match verdict(recorded.as_ref(), &here) {
            Verdict::Nothing => return None,
            Verdict::SameHost(there) => {
                let foreign = VmConfig {
                    run_dir: there.run_dir.clone(),
                    ..launch.clone()
                };
                match self.driver.retire(&foreign).await {
                    Ok(Some(pid)) => {
                        let msg = format!(
                            "stopped QEMU pid {pid}, which {} left running in {}; this worker's VM runs from {} now",
                            there.who(),
                            there.run_dir.display(),
                            here.run_dir.display()
                        );
                        self.event(Kind::Worker, name, EventType::Normal, "OrphanStopped", &msg);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let since = *super::lock(&self.runtime)
                            .entry(name.to_string())
                            .or_default()
                            .retire_error_since
                            .get_or_insert_with(Instant::now);
                        if since.elapsed() >= RETIRE_PATIENCE {
                            self.event(
                                Kind::Worker,
                                name,
                                EventType::Warning,
                                "OrphanNotStopped",
                                &format!(
                                    "the VM {} left in {} cannot be stopped ({e}); not starting a second one",
                                    there.who(),
                                    there.run_dir.display()
                                ),
                            );
                            return Some(Next::RequeueAfter(Duration::from_secs(10)));
                        }
                        return Some(Next::RequeueAfter(Duration::from_secs(1)));
                    }
                }
                if let Some(r) = super::lock(&self.runtime).get_mut(name) {
                    r.retire_error_since = None;
                }
            }
            Verdict::OtherHost(there) => {
                self.event(
                    Kind::Worker,
                    name,
                    EventType::Normal,
                    "OrphanElsewhere",
                    &format!(
                        "{} may have left this worker's VM running on host {}: not touched from here; its agent powers itself off after its failsafe watchdog (microfaas.watchdog, 120 s by default) without word from its orchestrator",
                        there.who(),
                        there.host
                    ),
                );
            }
        }
        // Recorded at once, so the foreign VM is dealt with once, whatever this reconcile
        // does next.
        let mut vm = st.get("vm").cloned().unwrap_or_else(|| json!({}));
        here.extend(&mut vm);
        st.set("vm", vm);
        self.write_status(Kind::Worker, name, st);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(host: &str, boot: &str, dir: &str) -> Place {
        Place {
            host: host.into(),
            boot_id: boot.into(),
            orchestrator: Some("o".into()),
            run_dir: dir.into(),
        }
    }

    #[test]
    fn verdicts() {
        let here = place("h", "b1", "/s-b/vms/w");
        assert_eq!(verdict(None, &here), Verdict::Nothing);
        assert_eq!(verdict(Some(&here), &here), Verdict::Nothing);
        let other_dir = place("h", "b1", "/s-a/vms/w");
        assert_eq!(
            verdict(Some(&other_dir), &here),
            Verdict::SameHost(other_dir.clone())
        );
        // Same host name, another boot: the machine rebooted, nothing of it runs.
        assert_eq!(
            verdict(Some(&place("h", "b0", "/s-a/vms/w")), &here),
            Verdict::Nothing
        );
        let far = place("g", "b9", "/s-b/vms/w");
        assert_eq!(verdict(Some(&far), &here), Verdict::OtherHost(far.clone()));
        // Without a boot id a foreign place is never taken for this host's.
        let unknown = place("h", "", "/s-a/vms/w");
        assert_eq!(
            verdict(Some(&unknown), &here),
            Verdict::OtherHost(unknown.clone())
        );
        assert_eq!(
            verdict(
                Some(&place("h", "", "/s-b/vms/w")),
                &place("h", "", "/s-b/vms/w")
            ),
            Verdict::Nothing
        );
    }

    #[test]
    fn status_round_trip() {
        let p = place("h", "b1", "/s/vms/w");
        let mut vm = json!({"uuid": "u", "specHash": "x"});
        p.extend(&mut vm);
        assert_eq!(vm["uuid"], "u");
        assert_eq!(Place::from_status(Some(&vm)), Some(p));
        assert_eq!(
            Place::from_status(Some(&json!({"uuid": "u", "specHash": "x"}))),
            None,
            "no place recorded by an older engine"
        );
        let here = Place::here(None, "/x".into());
        assert!(!here.boot_id.is_empty(), "Linux has a boot id");
    }
}
