//! Finalizers and draining. An object marked for deletion (by `delete`, or pruned by `apply` /
//! `serve --prune`) is torn down by the reconcile of its own key — so never concurrently with
//! another reconcile of it — and only then removed from the store. Draining stops new workload
//! runs from starting while the ones in flight finish (`serve` on SIGTERM).

use super::status::{CondStatus, Status};
use super::vm::{Presence, VmDriver};
use super::{Engine, Key, Next, lock};
use crate::manifest::Kind;
use crate::store::{EventType, StoreError};
use std::time::Duration;

impl<D: VmDriver, P: Presence> Engine<D, P> {
    pub(super) fn deletion_requested(&self, key: &Key) -> bool {
        self.with_store(|s| s.deletion_requested(key.0, &key.1))
            .unwrap_or(false)
    }

    /// Tears the object down, then deletes its record. A WorkerSet goes once the workers it
    /// made are gone (each is finalized under its own key).
    pub(super) async fn finalize(&self, key: &Key) -> Result<Next, String> {
        let (kind, name) = (key.0, key.1.as_str());
        match kind {
            Kind::Worker => self.teardown(name).await,
            Kind::WorkerSet => {
                let owned: Vec<String> = self
                    .with_store(|s| s.list(Some(Kind::Worker)))
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|w| w.owner.as_deref() == Some(name))
                    .map(|w| w.name)
                    .collect();
                if !owned.is_empty() {
                    for w in owned {
                        let _ = self.with_store(|s| s.request_deletion(Kind::Worker, &w));
                        self.queue.add((Kind::Worker, w));
                    }
                    return Ok(Next::RequeueAfter(Duration::from_millis(500)));
                }
            }
            Kind::Workload if lock(&self.running).contains(name) => {
                // Its run holds workers; deleting under it would orphan the run's records.
                return Ok(Next::RequeueAfter(Duration::from_secs(1)));
            }
            _ => {}
        }
        match self.with_store(|s| s.delete(kind, name)) {
            Ok(_) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        tracing::info!(object = %format!("{}/{name}", kind.singular()), reason = "Deleted", "torn down and deleted");
        lock(&self.seen).remove(key);
        self.bump();
        Ok(Next::Done)
    }

    /// Finalizes `keys` one after the other without the reconcile loop (`delete` with no engine
    /// running): a WorkerSet after its workers. Returns what could not be finalized, and why.
    pub async fn finalize_now(&self, keys: &[Key]) -> Vec<(Key, String)> {
        let mut failed = Vec::new();
        let (sets, rest): (Vec<&Key>, Vec<&Key>) =
            keys.iter().partition(|k| k.0 == Kind::WorkerSet);
        for key in rest.into_iter().chain(sets) {
            match self.finalize(key).await {
                Ok(Next::Done) => {}
                Ok(Next::RequeueAfter(_)) => {
                    failed.push((key.clone(), "still has objects to tear down".to_string()))
                }
                Err(e) => failed.push((key.clone(), e)),
            }
        }
        failed
    }

    /// Powers a worker off because the engine stops (`shutdownPolicy: PowerOff`) and says so
    /// in its status; the next engine powers it on again if its spec wants it on. Boards go
    /// through their own teardown (agent first, then the button), which records their power.
    pub async fn power_off_for_shutdown(&self, name: &str) {
        if !self.may_act(Kind::Worker, name) {
            return;
        }
        let Some(obj) = self.get(Kind::Worker, name) else {
            return;
        };
        self.teardown(name).await;
        if obj.spec.get("vm").is_none_or(serde_json::Value::is_null) {
            return;
        }
        let mut st = Status::from_value(&obj.status);
        st.set_phase("Off").condition(
            "Ready",
            CondStatus::False,
            "EngineStopped",
            "powered off when the engine stopped (shutdownPolicy PowerOff)",
        );
        self.write_status(Kind::Worker, name, &mut st);
        self.event(
            Kind::Worker,
            name,
            EventType::Normal,
            "PoweredOff",
            "powered off: the engine stopped (shutdownPolicy PowerOff)",
        );
    }

    /// No new workload runs start from now on; runs in flight go on.
    pub fn stop_starting(&self) {
        *lock(&self.starter) = None;
    }

    /// Workloads with a run in progress in this process.
    pub fn runs_in_flight(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.running).iter().cloned().collect();
        v.sort();
        v
    }
}
