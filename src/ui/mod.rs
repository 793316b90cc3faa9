//! The live web view of the rack, served by `serve`: on the gateway under `/ui/` (behind its
//! basic auth) and/or on `Cluster.spec.ui.listen` (loopback only, no auth). One producer task
//! follows the store's change feed and fans snapshots out to every open page over SSE; the
//! page's actions (power, Maintenance, rerun) are written through `engine::operator`, the
//! same requests the CLI makes. Assets are embedded: no build step, no network.

mod actions;
mod feed;
pub mod snapshot;

use crate::engine::Engine;
use crate::engine::vm::VmDriver;
use crate::orchestrator::Sessions;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("web view listen address `{0}`: {1}")]
    Listen(String, String),
    #[error(
        "the web view would listen on {0}, which is not loopback: it has no authentication of its own (serve it through the gateway's basicAuth)"
    )]
    OpenListen(String),
    #[error("web view: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The web view's shared state: the engine its actions go to and the snapshot feed.
pub struct Ui<D: VmDriver> {
    engine: Arc<Engine<D, Sessions>>,
    feed: Arc<feed::Feed>,
}

impl<D: VmDriver> Ui<D> {
    /// Starts the snapshot producer for the store in `state_dir`; it runs until `stop`.
    pub fn start(
        engine: Arc<Engine<D, Sessions>>,
        state_dir: &Path,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<Self>, UiError> {
        let feed = feed::Feed::start(state_dir, engine.subscribe_changes(), stop)?;
        Ok(Arc::new(Ui { engine, feed }))
    }
}

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/ui.js");
const STYLE: &str = include_str!("assets/ui.css");

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The view's routes under `prefix` (`""` on its own listener, `"/ui"` on the gateway).
pub fn router<D: VmDriver>(ui: Arc<Ui<D>>, prefix: &str) -> Router {
    let p = |path: &str| format!("{prefix}{path}");
    let mut r = Router::new()
        .route(
            &p("/"),
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            &p("/ui.js"),
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            &p("/ui.css"),
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(&p("/api/state"), get(feed::state::<D>))
        .route(&p("/api/events"), get(feed::events::<D>))
        .route(&p("/api/workers/{name}/power"), post(actions::power::<D>))
        .route(&p("/api/workers/{name}/health"), post(actions::health::<D>))
        .route(&p("/api/workloads/{name}/rerun"), post(actions::rerun::<D>));
    if !prefix.is_empty() {
        // Relative asset URLs need the trailing slash.
        let to = p("/");
        r = r.route(prefix, get(move || async move { Redirect::permanent(&to) }));
    }
    r.with_state(ui)
}

/// A web view on its own listener; `stop` ends it.
pub struct Running {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Binds `listen` (loopback only) and serves `app` until `stop` turns true.
pub async fn listen(
    listen: &str,
    app: Router,
    stop: watch::Receiver<bool>,
) -> Result<Running, UiError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| UiError::Listen(listen.to_string(), e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| UiError::Listen(listen.to_string(), e.to_string()))?;
    if !addr.ip().is_loopback() {
        return Err(UiError::OpenListen(addr.to_string()));
    }
    let task = crate::gateway::serve_until(listener, app, stop, "web view");
    tracing::info!(%addr, "web view listening");
    Ok(Running { addr, task })
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}
