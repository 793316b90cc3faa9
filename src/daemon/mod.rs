//! `microfaasctl serve`: the engine as a daemon. It holds the state-dir lock, hosts the agent
//! endpoint and any extra services (the HTTP gateway) through `host::Host`, re-reads the
//! manifests on every saved change (`--watch`) or SIGHUP, notices desired state written by
//! `apply`/`delete`/`rerun` from other processes, and on SIGTERM/SIGINT drains, then leaves
//! workers as `Cluster.spec.shutdownPolicy` says.
//!
//! To host another long-lived service next to the engine: `Daemon::start`, then
//! `daemon.host_mut().spawn_service("gateway", |ctx| async move { ... })`, then `run`.

pub mod declare;
pub mod host;
pub mod lease;
pub mod watch;

use crate::engine::vm::VmDriver;
use crate::manifest::types::ShutdownPolicy;
use crate::manifest::{self, Kind, Loaded, validate};
use crate::store::{ApplyOutcome, EventType, LockError, StateLock, Store, StoreError};
use host::{Host, HostOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How `serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub files: Vec<PathBuf>,
    /// Check that files named in manifests (kernels, initrds) exist.
    pub fs_checks: bool,
    pub watch: bool,
    pub prune: bool,
    pub resync: Duration,
    pub debounce: Duration,
    /// How long runs in flight may take to finish on SIGTERM/SIGINT.
    pub grace: Duration,
    pub default_initrd: Option<PathBuf>,
    /// This orchestrator's name on a shared store (`--name`, default the host name).
    pub name: String,
    /// TTL of its etcd lease: others take over its workers this long after it stops renewing.
    pub lease_ttl: Duration,
    /// Agent endpoint address instead of the Cluster's `orchestrator.listen`.
    pub listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The manifests at startup are invalid; each entry is one rendered diagnostic.
    #[error("{} error(s) in the manifests; nothing was changed", .0.len())]
    Invalid(Vec<String>),
    #[error("{0}")]
    Start(String),
}

pub struct Daemon<D: VmDriver> {
    host: Host<D>,
    opts: ServeOptions,
    /// This daemon's own connection (the engine has another): manifests in, revisions out.
    store: Store,
    /// The desired-state revision of every object when last looked at.
    revisions: BTreeMap<(Kind, String), String>,
    /// Undeclared objects already reported, so each is logged once per change of the set.
    undeclared: Vec<(Kind, String)>,
    /// On a shared etcd store: the lease and claims of this orchestrator.
    keeper: Option<lease::Keeper>,
    _lock: StateLock,
}

/// Errors of a loaded set, rendered with the offending line, and their `FILE:LINE:COL`s.
fn errors(loaded: &Loaded) -> Vec<(String, String, String)> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            (
                d.file.to_string(),
                format!("{}: {}", d.location(), d.message),
                d.render(loaded.source_text(&d.file)),
            )
        })
        .collect()
}

impl<D: VmDriver> Daemon<D> {
    /// Takes the state dir (refused, naming the holder's PID, when another engine has it),
    /// stores the manifests (invalid ones at startup are an error: nothing is changed), binds
    /// the agent endpoint and starts reconciling everything stored.
    pub async fn start(
        state_dir: &Path,
        driver: Arc<D>,
        opts: ServeOptions,
    ) -> Result<Self, DaemonError> {
        let lock = StateLock::acquire(state_dir)?;
        let loaded = manifest::load_and_validate(
            &opts.files,
            validate::Options {
                fs_checks: opts.fs_checks,
            },
        );
        let errs = errors(&loaded);
        if !errs.is_empty() {
            return Err(DaemonError::Invalid(
                errs.into_iter().map(|(_, _, r)| r).collect(),
            ));
        }
        declare::select_declared_store(&loaded);
        // Only a shared store needs the name (a host name that is no valid one is fine alone),
        // checked before anything is stored.
        if crate::store::selected_etcd().is_some() {
            crate::manifest::load::check_orchestrator_name(&opts.name).map_err(|why| {
                DaemonError::Start(format!(
                    "orchestrator name `{}` (--name, MICROFAAS_ORCHESTRATOR or the host name): {why}",
                    opts.name
                ))
            })?;
        }
        let mut store = Store::open(state_dir)?;
        let declared = declare::declare(&mut store, &loaded, &opts.files, opts.prune, false)?;
        let mut hopts = HostOptions::new(state_dir);
        hopts.default_initrd = opts.default_initrd.clone();
        hopts.resync = opts.resync;
        hopts.listen = opts.listen.clone();
        let shared = crate::store::selected_etcd().cloned();
        let ownership = shared.as_ref().map(|_| {
            Arc::new(crate::engine::ownership::Ownership::new(
                &opts.name,
                opts.lease_ttl,
            ))
        });
        hopts.ownership = ownership.clone();
        let host = Host::start(Store::open(state_dir)?, driver, hopts)
            .await
            .map_err(DaemonError::Start)?;
        let keeper = match (&shared, ownership) {
            (Some(loc), Some(own)) => Some(lease::Keeper::start(
                loc,
                own,
                host.engine.queue.clone(),
                opts.lease_ttl,
            )?),
            _ => None,
        };
        tracing::info!(
            pid = std::process::id(),
            agents = %host.agent_addr(),
            state_dir = %state_dir.display(),
            "serving"
        );
        let mut daemon = Daemon {
            host,
            opts,
            revisions: store.desired_revisions()?,
            store,
            undeclared: Vec::new(),
            keeper,
            _lock: lock,
        };
        daemon.report(&declared);
        // Everything stored, not only what the files declare: adopt, resume, finalize.
        daemon.host.engine.enqueue_all();
        Ok(daemon)
    }

    /// The host, to spawn services sharing the engine (see the module doc).
    pub fn host_mut(&mut self) -> &mut Host<D> {
        &mut self.host
    }

    pub fn host(&self) -> &Host<D> {
        &self.host
    }

    /// Runs until SIGTERM or SIGINT, then drains and stops (see `shutdown`).
    pub async fn run(mut self) -> Result<(), String> {
        let mut watcher = if self.opts.watch {
            Some(watch::Watcher::new(&self.opts.files, self.opts.debounce)?)
        } else {
            None
        };
        let sig = |k: SignalKind| signal(k).map_err(|e| format!("cannot watch signals: {e}"));
        let (mut term, mut int, mut hup) = (
            sig(SignalKind::terminate())?,
            sig(SignalKind::interrupt())?,
            sig(SignalKind::hangup())?,
        );
        // Other processes write desired state into the store; look for it this often.
        let mut poll = tokio::time::interval(Duration::from_millis(300));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let why = loop {
            tokio::select! {
                changed = async {
                    match watcher.as_mut() {
                        Some(w) => w.changed().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some(paths) = changed else {
                        tracing::warn!("the file watcher stopped; changes are picked up on SIGHUP only");
                        watcher = None;
                        continue;
                    };
                    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                    self.reload(&format!("changed: {}", shown.join(", ")));
                }
                _ = hup.recv() => self.reload("SIGHUP"),
                _ = poll.tick() => self.poll_revisions(),
                _ = term.recv() => break "SIGTERM",
                _ = int.recv() => break "SIGINT",
            }
        };
        drop(watcher);
        self.shutdown(why).await;
        Ok(())
    }

    /// Re-reads the files and stores them as `apply` would. An invalid set changes nothing:
    /// the last good desired state stays, and a Warning event names each error's position.
    pub fn reload(&mut self, why: &str) {
        let loaded = manifest::load_and_validate(
            &self.opts.files,
            validate::Options {
                fs_checks: self.opts.fs_checks,
            },
        );
        let errs = errors(&loaded);
        if !errs.is_empty() {
            for (file, message, _) in &errs {
                tracing::warn!(
                    reason = "InvalidManifest",
                    "{message} (the last good desired state stays)"
                );
                self.warn_invalid(file, message);
            }
            return;
        }
        tracing::info!("re-reading the manifests ({why})");
        match declare::declare(
            &mut self.store,
            &loaded,
            &self.opts.files,
            self.opts.prune,
            false,
        ) {
            Ok(declared) => {
                self.report(&declared);
                for key in declared.keys() {
                    self.host.engine.queue.add(key);
                }
            }
            Err(e) => tracing::error!("cannot store the manifests: {e}"),
        }
    }

    /// Records the Warning on the objects declared in `file` (the ones the bad edit was meant
    /// for), or on the Cluster when the file declared nothing stored yet.
    fn warn_invalid(&mut self, file: &str, message: &str) {
        let all = self.store.list(None).unwrap_or_default();
        let from_file = |o: &&crate::store::StoredObject| {
            o.source
                .as_deref()
                .and_then(|s| s.rsplitn(3, ':').nth(2))
                .is_some_and(|f| f == file)
        };
        let mut targets: Vec<(Kind, String)> = all
            .iter()
            .filter(from_file)
            .map(|o| (o.kind, o.name.clone()))
            .collect();
        if targets.is_empty() {
            targets = all
                .iter()
                .filter(|o| o.kind == Kind::Cluster)
                .map(|o| (o.kind, o.name.clone()))
                .collect();
        }
        let text = format!("{message}; the last good desired state stays");
        for (kind, name) in targets {
            if let Err(e) =
                self.store
                    .record_event(kind, &name, EventType::Warning, "InvalidManifest", &text)
            {
                tracing::warn!("cannot record event: {e}");
            }
        }
    }

    /// One info line per decision taken on the declared set.
    fn report(&mut self, declared: &declare::Declared) {
        for (kind, name, outcome) in &declared.outcomes {
            let object = format!("{}/{name}", kind.singular());
            match outcome {
                ApplyOutcome::Unchanged => tracing::debug!(%object, "unchanged"),
                ApplyOutcome::Pruned => tracing::info!(
                    %object,
                    reason = "Pruned",
                    "no longer declared: tearing down and deleting"
                ),
                o => tracing::info!(%object, reason = o.as_str(), "desired state stored"),
            }
        }
        for key in &declared.undeclared {
            if !self.undeclared.contains(key) {
                tracing::info!(
                    object = %format!("{}/{}", key.0.singular(), key.1),
                    reason = "NotDeclared",
                    "no longer declared in the files; kept (serve without --prune)"
                );
            }
        }
        self.undeclared = declared.undeclared.clone();
    }

    /// Queues every object whose desired state changed since the last look (written by this
    /// daemon or by `apply`/`delete`/`rerun` in another process), and every one that went.
    fn poll_revisions(&mut self) {
        let now = match self.store.desired_revisions() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the desired state: {e}");
                return;
            }
        };
        for (key, rev) in &now {
            if self.revisions.get(key) != Some(rev) {
                tracing::debug!(object = %format!("{}/{}", key.0.singular(), key.1), "desired state changed");
                if key.0 == Kind::Cluster {
                    self.cluster_changed();
                }
                self.host.engine.queue.add(key.clone());
            }
        }
        for key in self.revisions.keys() {
            if !now.contains_key(key) {
                self.host.engine.queue.add(key.clone());
            }
        }
        self.revisions = now;
    }

    /// Defaults and the shutdown policy are read live; the addresses the daemon listens on are
    /// bound once, so say when they no longer match.
    fn cluster_changed(&self) {
        let Some(now) = host::stored_cluster(&self.store) else {
            return;
        };
        let was = self.host.cluster();
        let listen = |c: Option<&crate::manifest::types::ClusterSpec>| {
            (
                c.map(|c| c.orchestrator.listen.clone()),
                c.and_then(|c| c.gateway.as_ref().map(|g| g.listen.clone())),
            )
        };
        if listen(was) != listen(Some(&now)) {
            tracing::warn!(
                object = "cluster",
                reason = "RestartNeeded",
                "the Cluster's listen addresses changed; they take effect when serve restarts"
            );
        }
    }

    /// Stop accepting new work (services, new workload runs), give runs in flight `grace` to
    /// finish, stop reconciling, then leave the workers as the Cluster's shutdown policy says.
    async fn shutdown(mut self, why: &str) {
        let engine = self.host.engine.clone();
        tracing::info!(
            "{why}: stopping; runs in flight get {:?} to finish",
            self.opts.grace
        );
        self.host.stop_services().await;
        engine.stop_starting();
        let deadline = tokio::time::Instant::now() + self.opts.grace;
        let mut changes = engine.subscribe_changes();
        while !engine.runs_in_flight().is_empty() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline, changes.changed()).await;
        }
        let left = engine.runs_in_flight();
        if !left.is_empty() {
            tracing::warn!(
                "runs still in flight after {:?}: {}; the next engine records them Cancelled",
                self.opts.grace,
                left.join(", ")
            );
        }
        self.host.stop_engine().await;
        let policy = engine
            .cluster()
            .map(|c| c.shutdown_policy)
            .unwrap_or_default();
        let workers: Vec<String> = engine
            .with_store(|s| s.list(Some(Kind::Worker)))
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.name)
            .collect();
        match policy {
            ShutdownPolicy::LeaveRunning => tracing::info!(
                "shutdownPolicy LeaveRunning: {} worker(s) left as they are for the next engine to adopt",
                workers.len()
            ),
            ShutdownPolicy::PowerOff => {
                tracing::info!(
                    "shutdownPolicy PowerOff: powering {} worker(s) off",
                    workers.len()
                );
                let mut set = tokio::task::JoinSet::new();
                for w in workers {
                    let e = engine.clone();
                    set.spawn(async move { e.power_off_for_shutdown(&w).await });
                }
                while set.join_next().await.is_some() {}
            }
        }
        if let Some(k) = self.keeper.take() {
            let _ = tokio::task::spawn_blocking(move || k.stop()).await;
        }
        self.host.shutdown().await;
        tracing::info!("stopped");
    }
}
