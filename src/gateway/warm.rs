//! scale-function: how many Warm workers the gateway keeps powered for a function. Each kept
//! worker is one `want` on the engine (OnDemand workers power on and stay on); scaling down
//! releases them, so 0 means boards off until work arrives. The numbers are in the store and
//! taken up again by the next gateway.

use super::{Gateway, lock};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::manifest::types::LifecycleMode;

impl<D: VmDriver> Gateway<D> {
    /// Healthy Warm workers (boards and VMs), by name.
    fn warm_capable(&self) -> Vec<String> {
        self.workers()
            .into_iter()
            .filter(|(_, s)| s.lifecycle.mode == LifecycleMode::Warm)
            .map(|(w, _)| w.name)
            .collect()
    }

    /// Keeps `replicas` Warm workers powered for `function` (as many as there are); returns
    /// how many are held.
    pub(super) fn scale(&self, function: &str, replicas: u32) -> Result<usize, String> {
        self.engine
            .with_store(|s| s.set_scale(function, replicas))
            .map_err(|e| e.to_string())?;
        Ok(self.hold(function, replicas as usize))
    }

    fn hold(&self, function: &str, replicas: usize) -> usize {
        let mut warm = lock(&self.warm);
        let held = warm.entry(function.to_string()).or_default();
        while held.len() > replicas {
            if let Some(w) = held.pop() {
                self.engine.release(&w);
            }
        }
        if held.len() < replicas {
            // Spread functions over workers: least-held workers first.
            let mut load: std::collections::HashMap<String, usize> = Default::default();
            for w in warm.values().flatten() {
                *load.entry(w.clone()).or_default() += 1;
            }
            let held = warm.entry(function.to_string()).or_default();
            let mut capable: Vec<String> = self
                .warm_capable()
                .into_iter()
                .filter(|w| !held.contains(w))
                .collect();
            capable.sort_by_key(|w| (load.get(w).copied().unwrap_or(0), w.clone()));
            for w in capable.into_iter().take(replicas - held.len()) {
                self.engine.want(&w);
                held.push(w);
            }
        }
        let n = warm.get(function).map_or(0, Vec::len);
        if n < replicas {
            tracing::warn!(
                function,
                replicas,
                held = n,
                "fewer healthy Warm workers than replicas asked for"
            );
        }
        n
    }

    /// Drops the holds of a deleted function and its stored scale.
    pub(super) fn forget_scale(&self, function: &str) {
        if let Some(held) = lock(&self.warm).remove(function) {
            for w in held {
                self.engine.release(&w);
            }
        }
        let _ = self.engine.with_store(|s| s.delete_scale(function));
    }

    pub(super) fn restore_warm(&self) {
        let scales = self.engine.with_store(|s| s.scales()).unwrap_or_default();
        for (f, n) in scales {
            if self.engine.get(Kind::Function, &f).is_some() {
                self.hold(&f, n as usize);
            }
        }
    }

    pub(super) fn release_all_warm(&self) {
        let all: Vec<String> = lock(&self.warm).drain().flat_map(|(_, v)| v).collect();
        for w in all {
            self.engine.release(&w);
        }
    }
}
