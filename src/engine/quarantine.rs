//! Quarantine of a worker whose agent keeps failing calls. A hung, dropped or garbled call
//! already ends in a named Warning (`AgentUnresponsive`, `AgentLost`, `AgentProtocolError`) and a
//! reboot; but a reboot lets the agent connect again, which resets the boot ladder, so a worker
//! whose agent fails every call would be retried forever. Here the faults are counted over
//! boots, reset only by a call the agent answers; `quarantineAfter` of them in a row mark the
//! worker Bad (`Healthy=False`, reason `AgentFaults`) until an operator's `uncordon`.

use super::status::{CondStatus, Status};
use super::vm::{Presence, VmDriver};
use super::{Engine, lock};
use crate::manifest::Kind;
use crate::store::EventType;
use serde_json::json;

/// The `Healthy` condition's reason on a worker quarantined for its agent's faults.
pub const AGENT_FAULTS: &str = "AgentFaults";

impl<D: VmDriver, P: Presence> Engine<D, P> {
    /// One more call `worker`'s agent failed (`reason`: the Warning it was named by). At the
    /// `quarantineAfter`-th in a row the worker is quarantined by its next reconcile (the one
    /// writer of its status) and the count starts again, so an uncordoned worker gets as many.
    pub fn agent_fault(&self, worker: &str, reason: &str) {
        let limit = u32::try_from(self.defaults().quarantine_after)
            .unwrap_or(3)
            .max(1);
        let quarantined = {
            let mut rt = lock(&self.runtime);
            let r = rt.entry(worker.to_string()).or_default();
            r.agent_faults += 1;
            if r.agent_faults < limit {
                return;
            }
            r.agent_faults = 0;
            let why = format!("{limit} agent faults in a row, the last {reason}");
            r.quarantine = Some(why.clone());
            why
        };
        self.event(
            Kind::Worker,
            worker,
            EventType::Warning,
            "Quarantined",
            &format!(
                "{quarantined}; marked Bad, its work goes to other workers, until `microfaasctl uncordon worker {worker}`"
            ),
        );
        self.queue.add((Kind::Worker, worker.to_string()));
    }

    /// `worker`'s agent answered a call (with an output or a function's own error): its
    /// faults are no longer in a row.
    pub fn agent_answered(&self, worker: &str) {
        if let Some(r) = lock(&self.runtime).get_mut(worker) {
            r.agent_faults = 0;
        }
    }

    /// Why `worker` is being quarantined, from the fault that decided it until its reconcile
    /// has written it: no call may go to it meanwhile.
    pub fn quarantine_pending(&self, worker: &str) -> Option<String> {
        lock(&self.runtime)
            .get(worker)
            .and_then(|r| r.quarantine.clone())
    }

    /// Writes a quarantine [`Self::agent_fault`] decided into `st` (and the store, at once:
    /// the reconcile may end early); true when there was one.
    pub(super) fn apply_quarantine(&self, name: &str, st: &mut Status) -> bool {
        let Some(why) = lock(&self.runtime)
            .get_mut(name)
            .and_then(|r| r.quarantine.take())
        else {
            return false;
        };
        st.set("health", json!("Bad"))
            .set_phase("Failed")
            .condition("Healthy", CondStatus::False, AGENT_FAULTS, &why)
            .condition("Ready", CondStatus::False, "Quarantined", &why);
        self.write_status(Kind::Worker, name, st);
        true
    }
}
