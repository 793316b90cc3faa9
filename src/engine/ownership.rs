//! What this engine may act on when several orchestrators share one etcd store: the workers
//! and workloads it holds under its etcd lease (`store::etcd::lease`), and only while that
//! lease was renewed recently. Kept by `daemon::lease`; read by every reconcile, dispatch and
//! record. Without an `Ownership` (the SQLite store: one engine per state dir) everything is
//! this engine's.

use super::Key;
use crate::manifest::Kind;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct State {
    owned: BTreeSet<Key>,
    /// The last time the lease was renewed, `None` while there is no lease.
    renewed: Option<Instant>,
    /// Held objects whose reconcile was skipped for want of a recent renewal: queued again
    /// at the next one.
    deferred: BTreeSet<Key>,
}

#[derive(Debug)]
pub struct Ownership {
    /// This orchestrator's name (`serve --name`).
    pub name: String,
    /// Acting stops this long after the last renewal: well before the lease (TTL) can expire
    /// and another orchestrator take over, so two never act on one worker.
    stale_after: Duration,
    state: Mutex<State>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a worker whose spec lists `orchestrators` may be held by `name` (an empty list:
/// by any).
pub fn eligible(orchestrators: &[String], name: &str) -> bool {
    orchestrators.is_empty() || orchestrators.iter().any(|o| o == name)
}

impl Ownership {
    pub fn new(name: &str, ttl: Duration) -> Ownership {
        Ownership {
            name: name.to_string(),
            stale_after: ttl / 2,
            state: Mutex::new(State {
                owned: BTreeSet::new(),
                renewed: None,
                deferred: BTreeSet::new(),
            }),
        }
    }

    /// Whether the lease was renewed recently enough to act at all.
    pub fn acting(&self) -> bool {
        lock(&self.state)
            .renewed
            .is_some_and(|t| t.elapsed() < self.stale_after)
    }

    /// Whether this engine may act on `kind/name` now: workers and workloads only while held,
    /// anything else (switches, status of declared-only kinds) while the lease is live.
    pub fn may_act(&self, kind: Kind, name: &str) -> bool {
        if !self.acting() {
            return false;
        }
        match kind {
            Kind::Worker | Kind::Workload => {
                lock(&self.state).owned.contains(&(kind, name.to_string()))
            }
            _ => true,
        }
    }

    /// Like [`Self::may_act`]; a held object refused only because the lease was not renewed
    /// lately is remembered, to be reconciled at the next renewal.
    pub fn may_reconcile(&self, kind: Kind, name: &str) -> bool {
        if self.may_act(kind, name) {
            return true;
        }
        let key = (kind, name.to_string());
        let mut st = lock(&self.state);
        if !matches!(kind, Kind::Worker | Kind::Workload) || st.owned.contains(&key) {
            st.deferred.insert(key);
        }
        false
    }

    pub fn take_deferred(&self) -> Vec<Key> {
        std::mem::take(&mut lock(&self.state).deferred)
            .into_iter()
            .collect()
    }

    /// Whether `kind/name` is held by this engine (acting or not).
    pub fn holds(&self, kind: Kind, name: &str) -> bool {
        lock(&self.state).owned.contains(&(kind, name.to_string()))
    }

    pub fn renewed(&self, at: Instant) {
        lock(&self.state).renewed = Some(at);
    }

    /// The lease is gone: nothing is held any more.
    pub fn lost(&self) {
        let mut st = lock(&self.state);
        st.renewed = None;
        st.owned.clear();
    }

    /// Replaces the held set; returns what was gained and what was lost.
    pub fn set_owned(&self, owned: BTreeSet<Key>) -> (Vec<Key>, Vec<Key>) {
        let mut st = lock(&self.state);
        let gained = owned.difference(&st.owned).cloned().collect();
        let lost = st.owned.difference(&owned).cloned().collect();
        st.owned = owned;
        (gained, lost)
    }

    pub fn owned(&self) -> Vec<Key> {
        lock(&self.state).owned.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acts_only_on_what_it_holds_and_only_while_renewed() {
        let o = Ownership::new("a", Duration::from_secs(10));
        let w = (Kind::Worker, "w".to_string());
        o.set_owned([w.clone()].into());
        assert!(!o.may_act(Kind::Worker, "w"), "no lease yet");
        o.renewed(Instant::now());
        assert!(o.may_act(Kind::Worker, "w"));
        assert!(!o.may_act(Kind::Worker, "other"));
        assert!(o.may_act(Kind::Switch, "tor"));
        o.renewed(Instant::now() - Duration::from_secs(6));
        assert!(!o.may_act(Kind::Worker, "w"), "renewal older than TTL/2");
        assert!(!o.may_act(Kind::Switch, "tor"));
        assert!(!o.may_reconcile(Kind::Worker, "w"));
        assert!(!o.may_reconcile(Kind::Worker, "other"));
        assert_eq!(
            o.take_deferred(),
            vec![w.clone()],
            "only what it holds waits"
        );
        assert!(o.take_deferred().is_empty());
        o.renewed(Instant::now());
        o.lost();
        assert!(!o.may_act(Kind::Worker, "w"));
        assert!(o.owned().is_empty());
    }

    #[test]
    fn eligibility_by_name() {
        assert!(eligible(&[], "x"));
        assert!(eligible(&["x".into()], "x"));
        assert!(!eligible(&["y".into()], "x"));
    }
}
