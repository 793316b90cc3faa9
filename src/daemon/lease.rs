//! The lease keeper of a `serve` on a shared etcd store, on its own thread and connection: it
//! holds an etcd lease (renewed every TTL/5), claims the workers this orchestrator is
//! eligible for and the workloads nobody holds, and tells the engine (`engine::ownership`)
//! what it holds. When the lease cannot be renewed (no quorum, etcd unreachable) the engine
//! stops acting within TTL/2; once etcd answers again the keeper says how long it was cut off
//! (a `QuorumLost` event on the Cluster) and the engine acts again, with a new lease and new
//! claims if the old lease expired meanwhile.

use crate::engine::Key;
use crate::engine::ownership::{Ownership, eligible};
use crate::engine::queue::WorkQueue;
use crate::manifest::Kind;
use crate::store::etcd::EtcdStore;
use crate::store::etcd::lease::{Holder, Leases};
use crate::store::{EtcdLocation, EventType, Result, StoreError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running keeper; `stop` ends it and revokes the lease, so others take over at once.
pub struct Keeper {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// The renewing half and, on its own thread and connection, the claiming half: a claim round
/// over many objects must never delay a renewal (the engine stops acting after TTL/2 without
/// one).
struct State {
    own: Arc<Ownership>,
    leases: Leases,
    store: EtcdStore,
    queue: Arc<WorkQueue<Key>>,
    ttl: Duration,
    /// The lease, shared by both halves (`None`: none yet, or it expired).
    lease: Arc<std::sync::Mutex<Option<i64>>>,
    /// Since when etcd has not renewed the lease, and the first error.
    cut_off: Option<(Instant, String)>,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keeper {
    /// Grants the first lease and makes the first claims before returning, so the engine
    /// starts with what it holds.
    pub fn start(
        location: &EtcdLocation,
        own: Arc<Ownership>,
        queue: Arc<WorkQueue<Key>>,
        ttl: Duration,
    ) -> Result<Keeper> {
        let lease = Arc::new(std::sync::Mutex::new(None));
        let half = || -> Result<State> {
            Ok(State {
                leases: Leases::new(location),
                store: EtcdStore::open(location)?,
                own: own.clone(),
                queue: queue.clone(),
                ttl,
                lease: lease.clone(),
                cut_off: None,
            })
        };
        let (mut renewer, mut claimer) = (half()?, half()?);
        renewer.renew_tick();
        claimer.claim_tick();
        let stop = Arc::new(AtomicBool::new(false));
        let period = (ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let spawn = |name: &str, stop: Arc<AtomicBool>, mut f: Box<dyn FnMut() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(period);
                        f();
                    }
                })
                .map_err(|e| StoreError::Etcd(format!("cannot start the lease keeper: {e}")))
        };
        let claims = spawn(
            "lease-claims",
            stop.clone(),
            Box::new(move || claimer.claim_tick()),
        )?;
        let s2 = stop.clone();
        let renewals = std::thread::Builder::new()
            .name("lease-renewals".into())
            .spawn(move || {
                while !s2.load(Ordering::Relaxed) {
                    std::thread::sleep(period);
                    renewer.renew_tick();
                }
                let held = *lock(&renewer.lease);
                if let Some(l) = held
                    && let Err(e) = renewer.leases.revoke(l)
                {
                    tracing::warn!("cannot revoke the etcd lease (it expires by itself): {e}");
                }
            })
            .map_err(|e| StoreError::Etcd(format!("cannot start the lease keeper: {e}")))?;
        Ok(Keeper {
            stop,
            threads: vec![claims, renewals],
        })
    }

    /// Stops renewing and revokes the lease: everything held is free for the others.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl State {
    fn renew_tick(&mut self) {
        let started = Instant::now();
        match self.renew() {
            Ok(()) => {
                self.own.renewed(started);
                if let Some((since, why)) = self.cut_off.take() {
                    self.back(since, &why);
                }
                // Reconciles skipped while the renewal was late.
                for k in self.own.take_deferred() {
                    self.queue.add(k);
                }
            }
            Err(e) => {
                if self.cut_off.is_none() {
                    tracing::warn!(
                        orchestrator = %self.own.name,
                        reason = "QuorumLost",
                        "cannot renew the etcd lease ({e}); no power presses or dispatch until etcd answers again"
                    );
                    self.cut_off = Some((started, e.to_string()));
                }
            }
        }
    }

    fn claim_tick(&mut self) {
        if !self.own.acting() {
            return;
        }
        if let Err(e) = self.claim_round() {
            tracing::warn!("cannot claim workers: {e}");
        }
    }

    /// Keeps the lease alive, or gets a new one when it expired (its claims went with it).
    fn renew(&mut self) -> Result<()> {
        let held = *lock(&self.lease);
        if let Some(l) = held {
            if self.leases.keep_alive(l)? {
                return Ok(());
            }
            tracing::warn!(
                orchestrator = %self.own.name,
                reason = "LeaseExpired",
                "the etcd lease expired: everything this orchestrator held is free for others; claiming anew"
            );
            self.own.lost();
            *lock(&self.lease) = None;
        }
        let secs = i64::try_from(self.ttl.as_secs()).unwrap_or(10).max(1);
        *lock(&self.lease) = Some(self.leases.grant(secs)?);
        Ok(())
    }

    /// Etcd answers again after `since`: say so where `describe cluster` shows it, and
    /// reconcile everything held (reconciles were skipped meanwhile).
    fn back(&mut self, since: Instant, why: &str) {
        let msg = format!(
            "orchestrator {} could not renew its etcd lease for {:.1} s ({why}): it pressed no power button and dispatched nothing meanwhile; acting again",
            self.own.name,
            since.elapsed().as_secs_f64()
        );
        tracing::info!(orchestrator = %self.own.name, reason = "QuorumLost", "{msg}");
        let clusters = self.store.list(Some(Kind::Cluster)).unwrap_or_default();
        for c in clusters {
            if let Err(e) = self.store.record_event(
                Kind::Cluster,
                &c.name,
                EventType::Warning,
                "QuorumLost",
                &msg,
            ) {
                tracing::warn!("cannot record event: {e}");
            }
        }
        for k in self.own.owned() {
            self.queue.add(k);
        }
    }

    /// Holds every eligible worker and workload nobody holds; gives up keys of objects gone.
    fn claim_round(&mut self) -> Result<()> {
        let Some(lease) = *lock(&self.lease) else {
            return Ok(());
        };
        let me = Holder {
            orchestrator: self.own.name.clone(),
            lease,
        };
        let mut owned = BTreeSet::new();
        // Workers first: a workload claimed in the same round runs on them.
        for kind in [Kind::Worker, Kind::Workload] {
            let objs = self.store.list(Some(kind))?;
            let holders = self.leases.holders(kind)?;
            for o in &objs {
                if kind == Kind::Worker {
                    let names: Vec<String> = o
                        .spec
                        .get("orchestrators")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default();
                    if !eligible(&names, &me.orchestrator) {
                        // No longer this one's (its list changed): free it for those it names.
                        if holders.get(&o.name).is_some_and(|h| h.lease == lease) {
                            self.leases.release(kind, &o.name, lease)?;
                        }
                        continue;
                    }
                }
                let held = match holders.get(&o.name) {
                    Some(h) => h.lease == lease,
                    None => {
                        let h = self.leases.claim(kind, &o.name, &me)?;
                        let won = h.lease == lease;
                        if won {
                            self.claimed(kind, &o.name);
                        }
                        won
                    }
                };
                if held {
                    owned.insert((kind, o.name.clone()));
                }
            }
            for (name, h) in &holders {
                if h.lease == lease && !objs.iter().any(|o| &o.name == name) {
                    self.leases.release(kind, name, lease)?;
                }
            }
        }
        let (gained, lost) = self.own.set_owned(owned);
        for k in gained {
            self.queue.add(k);
        }
        for (kind, name) in lost {
            tracing::warn!(
                object = %format!("{}/{name}", kind.singular()),
                orchestrator = %self.own.name,
                "no longer held by this orchestrator: hands off"
            );
        }
        Ok(())
    }

    fn claimed(&mut self, kind: Kind, name: &str) {
        let msg = format!("held by orchestrator {}", self.own.name);
        tracing::info!(object = %format!("{}/{name}", kind.singular()), reason = "Claimed", "{msg}");
        if let Err(e) = self
            .store
            .record_event(kind, name, EventType::Normal, "Claimed", &msg)
        {
            tracing::warn!("cannot record event: {e}");
        }
    }
}
