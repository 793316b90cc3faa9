//! The page's actions: power on/off/cycle a worker, set its health (Maintenance / Good), rerun
//! a workload. Each is written through `engine::operator` exactly as the CLI writes it, then
//! the object is queued for this process's engine. POSTs must carry `X-Microfaas-Ui: 1` (a
//! page of another origin cannot set it without a CORS preflight, which is never granted) and
//! an `Origin`, when sent, must name this host.

use super::{Ui, text};
use crate::engine::operator;
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::store::{EventType, StoreError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// The header the page sets on every POST.
pub const CSRF_HEADER: &str = "x-microfaas-ui";

/// How long the view keeps a power request stored against racing status writes.
const REQUEST_PATIENCE: Duration = Duration::from_secs(300);

/// A 403 for a request that does not come from the view's own page; None when it does.
fn refused(h: &HeaderMap) -> Option<Response> {
    if h.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Some(text(
            StatusCode::FORBIDDEN,
            format!(
                "missing {CSRF_HEADER}: 1 (actions are accepted from the web view's own page only)"
            ),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest.trim_end_matches('/'));
        if host.is_none() || origin_host != host {
            return Some(text(StatusCode::FORBIDDEN, "cross-origin request refused"));
        }
    }
    None
}

fn store_failure(what: &str, e: StoreError) -> Response {
    match e {
        StoreError::NotFound(_) => text(StatusCode::NOT_FOUND, format!("{what} not found")),
        e => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerBody {
    action: String,
    #[serde(default)]
    force: bool,
}

/// `POST api/workers/{name}/power {"action": "on"|"off"|"cycle", "force": false}`: 202 with
/// the request's id; the engine carries it out (its result shows on the worker's tile).
pub async fn power<D: VmDriver>(
    State(ui): State<Arc<Ui<D>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<PowerBody>,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    if !operator::POWER_ACTIONS.contains(&body.action.as_str()) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("action: expected on, off or cycle, got `{}`", body.action),
        );
    }
    let what = format!("worker/{name}");
    let req = operator::power_request(&body.action, body.force);
    let by = if body.force { " (force)" } else { "" };
    let stored = ui.engine.with_store(|s| {
        s.get(Kind::Worker, &name)?
            .ok_or_else(|| StoreError::NotFound(what.clone()))?;
        s.record_event(
            Kind::Worker,
            &name,
            EventType::Normal,
            "PowerRequested",
            &format!("web view: power {}{by}", body.action),
        )?;
        operator::store_power_request(s, &name, &req)
    });
    if let Err(e) = stored {
        return store_failure(&what, e);
    }
    ui.engine.queue.add((Kind::Worker, name.clone()));
    tokio::spawn(keep_request(ui.clone(), name, req.clone()));
    (StatusCode::ACCEPTED, Json(json!({"id": req["id"]}))).into_response()
}

/// A reconcile that read the status before the request was stored writes it back without it:
/// store it again until the engine has answered it (as `microfaasctl power` does).
async fn keep_request<D: VmDriver>(ui: Arc<Ui<D>>, worker: String, req: serde_json::Value) {
    let id = req["id"].as_str().unwrap_or_default().to_string();
    let deadline = tokio::time::Instant::now() + REQUEST_PATIENCE;
    let mut changes = ui.engine.subscribe_changes();
    while tokio::time::Instant::now() < deadline {
        let again = ui.engine.with_store(|s| {
            if operator::power_result(s, &worker, &id).is_some() {
                return Ok(None);
            }
            if operator::power_request_pending(s, &worker)? {
                return Ok(Some(false));
            }
            operator::store_power_request(s, &worker, &req).map(|()| Some(true))
        });
        match again {
            Ok(None) | Err(_) => return,
            Ok(Some(true)) => ui.engine.queue.add((Kind::Worker, worker.clone())),
            Ok(Some(false)) => {}
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), changes.changed()).await;
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    health: String,
}

/// `POST api/workers/{name}/health {"health": "Maintenance"|"Good"}` (cordon / uncordon).
pub async fn health<D: VmDriver>(
    State(ui): State<Arc<Ui<D>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<HealthBody>,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    if body.health != "Maintenance" && body.health != "Good" {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "health: expected Maintenance or Good, got `{}`",
                body.health
            ),
        );
    }
    match ui
        .engine
        .with_store(|s| operator::set_health(s, &name, &body.health))
    {
        Ok(reason) => {
            ui.engine.queue.add((Kind::Worker, name.clone()));
            Json(json!({"worker": name, "result": reason})).into_response()
        }
        Err(e) => store_failure(&format!("worker/{name}"), e),
    }
}

/// `POST api/workloads/{name}/rerun`: one more run of the current generation.
pub async fn rerun<D: VmDriver>(
    State(ui): State<Arc<Ui<D>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refused(&headers) {
        return r;
    }
    match ui.engine.with_store(|s| operator::request_rerun(s, &name)) {
        Ok(()) => {
            ui.engine.event(
                Kind::Workload,
                &name,
                EventType::Normal,
                "RerunRequested",
                "web view: rerun",
            );
            ui.engine.queue.add((Kind::Workload, name.clone()));
            (StatusCode::ACCEPTED, Json(json!({"workload": name}))).into_response()
        }
        Err(e) => store_failure(&format!("workload/{name}"), e),
    }
}
