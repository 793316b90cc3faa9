//! Hosting the engine: the agent endpoint, the engine with its workload starter, the reconcile
//! runner, and any extra long-lived services (the HTTP gateway) that share them. `apply`
//! (in-process, until converged) and `serve` (until signalled) both run the engine through
//! this one type, so there is one engine code path.

use crate::engine::vm::VmDriver;
use crate::engine::{Config, Engine};
use crate::manifest::Kind;
use crate::manifest::types::{AuthSpec, ClusterSpec};
use crate::orchestrator::{AgentEvent, Endpoint, Sessions, dispatch};
use crate::store::Store;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// How to host an engine.
#[derive(Debug, Clone)]
pub struct HostOptions {
    pub state_dir: PathBuf,
    /// Initramfs for VMs that name none (the built agent image).
    pub default_initrd: Option<PathBuf>,
    /// Period of the resync that re-queues every object.
    pub resync: Duration,
    pub concurrency: usize,
    /// Where agents dial in, instead of `Cluster.spec.orchestrator.listen` (`serve --listen`:
    /// each orchestrator sharing a store listens on its own host).
    pub listen: Option<String>,
    /// On a store shared with other orchestrators: act only on what this holds.
    pub ownership: Option<Arc<crate::engine::ownership::Ownership>>,
}

impl HostOptions {
    pub fn new(state_dir: &Path) -> Self {
        HostOptions {
            state_dir: state_dir.to_path_buf(),
            default_initrd: None,
            resync: Duration::from_secs(10),
            concurrency: 8,
            listen: None,
            ownership: None,
        }
    }
}

/// What a hosted service gets: the engine (and through it the store), the agent sessions and
/// their events, the Cluster as it was when the host started, and a stop signal it must honour
/// by returning.
pub struct ServiceContext<D: VmDriver> {
    pub engine: Arc<Engine<D, Sessions>>,
    pub sessions: Arc<Sessions>,
    pub agent_events: broadcast::Sender<AgentEvent>,
    pub cluster: Option<ClusterSpec>,
    pub state_dir: PathBuf,
    /// Turns `true` when the host is stopping.
    pub stop: watch::Receiver<bool>,
}

impl<D: VmDriver> Clone for ServiceContext<D> {
    fn clone(&self) -> Self {
        ServiceContext {
            engine: self.engine.clone(),
            sessions: self.sessions.clone(),
            agent_events: self.agent_events.clone(),
            cluster: self.cluster.clone(),
            state_dir: self.state_dir.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// A running engine with its agent endpoint. Dropping it without `shutdown` aborts the tasks.
pub struct Host<D: VmDriver> {
    pub engine: Arc<Engine<D, Sessions>>,
    endpoint: Endpoint,
    cluster: Option<ClusterSpec>,
    state_dir: PathBuf,
    /// Stops the hosted services.
    services_stop: watch::Sender<bool>,
    /// Stops the reconcile workers.
    engine_stop: watch::Sender<bool>,
    runner: Option<JoinHandle<()>>,
    /// The power meters' sampler: runs as long as the engine, so every run has its energy.
    sampler: Option<JoinHandle<()>>,
    services: Vec<(String, JoinHandle<Result<(), String>>)>,
}

/// The stored Cluster spec, if one is declared (the first by name).
pub fn stored_cluster(store: &Store) -> Option<ClusterSpec> {
    store
        .list(Some(Kind::Cluster))
        .ok()
        .and_then(|l| l.into_iter().next())
        .and_then(|c| serde_json::from_value(c.spec).ok())
}

impl<D: VmDriver> Host<D> {
    /// Binds the agent endpoint on `Cluster.spec.orchestrator.listen` and starts reconciling
    /// (nothing is queued yet: callers add what they want, or `engine.enqueue_all()`).
    pub async fn start(store: Store, driver: Arc<D>, opts: HostOptions) -> Result<Self, String> {
        let cluster = stored_cluster(&store);
        let token = cluster_token(cluster.as_ref(), &opts.state_dir)?;
        let listen = opts.listen.clone().unwrap_or_else(|| {
            cluster.as_ref().map_or_else(
                || "127.0.0.1:63302".to_string(),
                |c| c.orchestrator.listen.clone(),
            )
        });
        let endpoint = Endpoint::bind(&listen, token.clone().into_bytes())
            .await
            .map_err(|e| format!("cannot listen for agents on {listen}: {e}"))?;
        let engine = Engine::new(
            store,
            driver,
            endpoint.sessions.clone(),
            Config {
                state_dir: opts.state_dir.clone(),
                orchestrator_port: endpoint.addr.port(),
                token,
                default_initrd: opts.default_initrd.clone(),
                concurrency: opts.concurrency,
                resync: opts.resync,
            },
        );
        if let Some(o) = &opts.ownership {
            engine.set_ownership(o.clone());
        }
        let events = endpoint.events_sender();
        let e2 = engine.clone();
        engine.set_starter(Arc::new(move |name| {
            dispatch::spawn(e2.clone(), events.clone(), name)
        }));
        let (engine_stop, stop_rx) = watch::channel(false);
        let sampler = crate::energy::sampler::spawn(&opts.state_dir, stop_rx.clone())
            .map_err(|e| format!("cannot start the power meters: {e}"))?;
        let runner = tokio::spawn(engine.clone().run(stop_rx, Some(endpoint.subscribe())));
        Ok(Host {
            engine,
            endpoint,
            cluster,
            state_dir: opts.state_dir,
            services_stop: watch::channel(false).0,
            engine_stop,
            runner: Some(runner),
            sampler: Some(sampler),
            services: Vec::new(),
        })
    }

    /// Where agents dial in.
    pub fn agent_addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    pub fn sessions(&self) -> Arc<Sessions> {
        self.endpoint.sessions.clone()
    }

    pub fn cluster(&self) -> Option<&ClusterSpec> {
        self.cluster.as_ref()
    }

    pub fn context(&self) -> ServiceContext<D> {
        ServiceContext {
            engine: self.engine.clone(),
            sessions: self.endpoint.sessions.clone(),
            agent_events: self.endpoint.events_sender(),
            cluster: self.cluster.clone(),
            state_dir: self.state_dir.clone(),
            stop: self.services_stop.subscribe(),
        }
    }

    /// Starts a long-lived service sharing this host's engine and sessions (e.g. the HTTP
    /// gateway). It must return once `ctx.stop` turns true; an error it returns is logged.
    pub fn spawn_service<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce(ServiceContext<D>) -> Fut,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let fut = f(self.context());
        let label = name.to_string();
        let task = tokio::spawn(async move {
            let r = fut.await;
            match &r {
                Ok(()) => tracing::info!(service = %label, "service stopped"),
                Err(e) => tracing::error!(service = %label, "service failed: {e}"),
            }
            r
        });
        self.services.push((name.to_string(), task));
    }

    /// Asks every service to stop and waits for them (10 s each at most): no new requests.
    pub async fn stop_services(&mut self) {
        let _ = self.services_stop.send(true);
        for (name, task) in std::mem::take(&mut self.services) {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!(service = %name, "service did not stop within 10s");
            }
        }
    }

    /// Stops the reconcile workers once their current reconciles end. The endpoint stays up,
    /// so agents can still be asked to power off.
    pub async fn stop_engine(&mut self) {
        let _ = self.engine_stop.send(true);
        if let Some(r) = self.runner.take() {
            let _ = r.await;
        }
        if let Some(s) = self.sampler.take() {
            let _ = s.await;
        }
    }

    /// Services first (no new requests), then the reconcile workers, then the endpoint.
    /// Workers (VMs) are left as they are: callers decide what happens to them before this.
    /// Standby VMs (paused, never booted) are not workers' state: they go.
    pub async fn shutdown(mut self) {
        self.stop_services().await;
        self.stop_engine().await;
        self.engine.driver.close().await;
    }
}

impl<D: VmDriver> Drop for Host<D> {
    fn drop(&mut self) {
        let _ = self.services_stop.send(true);
        let _ = self.engine_stop.send(true);
        for (_, t) in &self.services {
            t.abort();
        }
        for t in self.runner.iter().chain(&self.sampler) {
            t.abort();
        }
    }
}

/// The cluster token: from the Cluster's auth source, else one generated once per state dir.
pub fn cluster_token(cluster: Option<&ClusterSpec>, state_dir: &Path) -> Result<String, String> {
    if let Some(AuthSpec {
        token_env,
        token_file,
    }) = cluster.and_then(|c| c.auth.as_ref())
    {
        if let Some(var) = token_env {
            return std::env::var(var)
                .map_err(|_| format!("the cluster token variable {var} is not set"));
        }
        if let Some(f) = token_file {
            return std::fs::read_to_string(f)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the cluster token file {f}: {e}"));
        }
    }
    let path = state_dir.join("token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    let token = crate::orchestrator::endpoint::random_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(f, "{token}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(token)
}
