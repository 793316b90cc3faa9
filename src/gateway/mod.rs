//! The OpenFaaS-compatible HTTP gateway (faas-provider routes) and the Prometheus metrics,
//! served next to the engine by whoever hosts the agent endpoint (`serve`, tests, benches).
//! Functions deployed here are `Function` objects in the store, exactly as `apply` stores them;
//! invocations go through the same attempt path as workload runs and are recorded under the
//! workload name `gateway`.

mod auth;
pub mod client;
mod deploy;
mod invoke;
pub(crate) mod logs;
mod metrics;
mod queue;
mod refused;
mod secrets;
mod system;
mod warm;

pub use auth::Credentials;
pub use deploy::{FunctionDeployment, to_desired};
pub use system::router;

use crate::engine::Engine;
use crate::engine::vm::VmDriver;
use crate::manifest::types::GatewaySpec;
use crate::orchestrator::{AgentEvent, Sessions};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, broadcast, watch};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(
        "the gateway would listen on {0}, which is not loopback, without `gateway.basicAuth`: refusing"
    )]
    OpenListen(String),
    #[error("gateway listen address `{0}`: {1}")]
    Listen(String, String),
    #[error("gateway password: {0}")]
    Password(String),
}

/// How the gateway is set up.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: String,
    pub credentials: Option<Credentials>,
    /// Where secrets are kept (0700 folder, 0600 files).
    pub secrets_dir: PathBuf,
    /// More routes served behind the gateway's basic auth (the web view under `/ui/`).
    pub extra: Option<axum::Router>,
}

impl Options {
    /// From the Cluster's `gateway` block; the password is read from its file or variable now.
    pub fn from_spec(
        spec: &GatewaySpec,
        state_dir: &std::path::Path,
    ) -> Result<Self, GatewayError> {
        Ok(Options {
            listen: spec.listen.clone(),
            credentials: spec
                .basic_auth
                .as_ref()
                .map(Credentials::from_spec)
                .transpose()?,
            secrets_dir: state_dir.join("secrets"),
            extra: None,
        })
    }
}

/// The gateway's shared state.
pub struct Gateway<D: VmDriver> {
    engine: Arc<Engine<D, Sessions>>,
    events: broadcast::Sender<AgentEvent>,
    credentials: Option<Credentials>,
    secrets_dir: PathBuf,
    metrics: metrics::Metrics,
    /// The `gateway` run invocations are recorded in (started on the first one) and its next
    /// sequence number.
    recording: Mutex<Option<(i64, u64)>>,
    /// Calls in flight per worker, to spread calls over workers.
    inflight: Mutex<HashMap<String, usize>>,
    /// Per worker, the session that was told to power off or failed: never used again.
    stale: Mutex<HashMap<String, u64>>,
    /// Workers held powered per function by scale-function.
    warm: Mutex<HashMap<String, Vec<String>>>,
    /// Wakes the async queue.
    queue_wake: Notify,
    /// Bumped after every attempt the gateway records: wakes `/system/logs?follow=true`.
    logged: watch::Sender<u64>,
    /// Turns true (or its sender goes) when the gateway stops: ends the log followers, whose
    /// open responses would otherwise hold the graceful shutdown.
    stopping: watch::Receiver<bool>,
    /// Calls in progress (by a token) and when they started, unix ms: energy is attributed
    /// only up to the oldest, whose attempts are not all recorded yet.
    calls: Mutex<BTreeMap<u64, i64>>,
    next_call: AtomicU64,
    /// Energy of the run's invocations attributed so far (see `metrics::energy_step`).
    energy: Mutex<Option<crate::energy::live::Live>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running gateway; `stop` ends it (dropping it only aborts its tasks).
pub struct Running<D: VmDriver> {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway<D>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl<D: VmDriver> Drop for Running<D> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl<D: VmDriver> Running<D> {
    /// Stops serving, abandons calls in progress (queued ones stay queued in the store for the
    /// next gateway), releases the Warm workers it held and closes its run.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.gateway.release_all_warm();
        self.gateway.close_run();
    }
}

/// Binds `opts.listen` and serves the gateway for `engine`; `events` are the agent endpoint's.
pub async fn start<D: VmDriver>(
    engine: Arc<Engine<D, Sessions>>,
    events: broadcast::Sender<AgentEvent>,
    opts: Options,
) -> Result<Running<D>, GatewayError> {
    let addr_text = opts.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr_text)
        .await
        .map_err(|e| GatewayError::Listen(addr_text.clone(), e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| GatewayError::Listen(addr_text.clone(), e.to_string()))?;
    if opts.credentials.is_none() && !addr.ip().is_loopback() {
        return Err(GatewayError::OpenListen(addr.to_string()));
    }
    let (stop, stop_rx) = watch::channel(false);
    let gateway = Arc::new(Gateway {
        engine: engine.clone(),
        events,
        credentials: opts.credentials,
        secrets_dir: opts.secrets_dir,
        metrics: metrics::Metrics::new(),
        recording: Mutex::new(None),
        inflight: Mutex::new(HashMap::new()),
        stale: Mutex::new(HashMap::new()),
        warm: Mutex::new(HashMap::new()),
        queue_wake: Notify::new(),
        logged: watch::channel(0).0,
        stopping: stop_rx.clone(),
        calls: Mutex::new(BTreeMap::new()),
        next_call: AtomicU64::new(0),
        energy: Mutex::new(None),
    });
    let _ = engine.with_store(|s| {
        s.close_runs(
            crate::store::gateway::WORKLOAD,
            false,
            "the gateway that recorded it stopped without closing it",
        )
    });
    gateway.restore_warm();
    let app = system::router(gateway.clone(), opts.extra);
    let serve = serve_until(listener, app, stop_rx, "gateway");
    let q = tokio::spawn(queue::run(gateway.clone()));
    tracing::info!(%addr, auth = gateway.credentials.is_some(), "gateway listening");
    Ok(Running {
        addr,
        gateway,
        stop,
        tasks: vec![serve, q],
    })
}

/// Serves `app` on `listener` until `stop` turns true (or its sender goes); requests in
/// progress finish first. Shared by the gateway and the web view's own listener.
pub(crate) fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("{what} stopped: {e}");
        }
    })
}

impl<D: VmDriver> Gateway<D> {
    /// The run and sequence number for a new invocation, starting the run when needed.
    fn next_slot(&self) -> Option<(i64, u64)> {
        let mut rec = lock(&self.recording);
        if rec.is_none() {
            let run = tokio::task::block_in_place(|| {
                self.engine
                    .with_store(|s| s.start_run(crate::store::gateway::WORKLOAD, 0))
            });
            match run {
                Ok(r) => *rec = Some((r, 0)),
                Err(e) => {
                    tracing::error!("cannot start the gateway's run record: {e}");
                    return None;
                }
            }
        }
        let (run, seq) = rec.as_mut()?;
        *seq += 1;
        Some((*run, *seq))
    }

    /// Marks a call in progress until the returned guard drops (the call ended or was
    /// abandoned: either way nothing more of it will be recorded).
    fn call_started(&self) -> CallGuard<'_> {
        let token = self.next_call.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).insert(token, crate::store::clock::now_millis());
        CallGuard {
            calls: &self.calls,
            token,
        }
    }

    /// When the oldest call in progress started.
    fn oldest_call(&self) -> Option<i64> {
        lock(&self.calls).values().min().copied()
    }

    fn close_run(&self) {
        let _ = self.engine.with_store(|s| {
            s.close_runs(crate::store::gateway::WORKLOAD, true, "the gateway stopped")
        });
        *lock(&self.recording) = None;
    }
}

/// A call in progress; see [`Gateway::call_started`].
struct CallGuard<'a> {
    calls: &'a Mutex<BTreeMap<u64, i64>>,
    token: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        lock(self.calls).remove(&self.token);
    }
}
