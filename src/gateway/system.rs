//! The routes: faas-provider `/system/*`, sync `/function/{name}` and `/async-function/{name}`
//! behind basic auth; `/healthz` and `/metrics` open.

use super::deploy::{self, FunctionDeployment, NAMESPACE};
use super::invoke::{Reply, new_call_id};
use super::metrics::Snapshot;
use super::{Gateway, auth, logs, queue, secrets};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::store::StoredObject;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

type Gw<D> = State<Arc<Gateway<D>>>;

pub fn router<D: VmDriver>(gw: Arc<Gateway<D>>, extra: Option<Router>) -> Router {
    let authed = Router::new()
        .route(
            "/system/functions",
            get(list::<D>)
                .post(deploy_new::<D>)
                .put(update::<D>)
                .delete(remove::<D>),
        )
        .route("/system/function/{name}", get(one::<D>))
        .route("/system/scale-function/{name}", post(scale::<D>))
        .route("/system/info", get(info))
        .route("/system/logs", get(logs::logs::<D>))
        .route(
            "/system/secrets",
            get(secret_list::<D>)
                .post(secret_create::<D>)
                .put(secret_update::<D>)
                .delete(secret_delete::<D>),
        )
        .route("/system/namespaces", get(namespaces))
        .route("/function/{name}", any(invoke::<D>))
        .route("/function/{name}/", any(invoke::<D>))
        .route("/function/{name}/{*path}", any(invoke_path::<D>))
        .route("/async-function/{name}", post(enqueue::<D>))
        .route("/async-function/{name}/", post(enqueue::<D>))
        .route("/async-function/{name}/{*path}", post(enqueue_path::<D>))
        .route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            auth::require::<D>,
        ));
    let extra = extra.map(|r| {
        r.route_layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            auth::require::<D>,
        ))
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "OK\n" }))
        .route("/metrics", get(metrics::<D>))
        .merge(authed)
        .with_state(gw);
    let app = match extra {
        Some(r) => app.merge(r),
        None => app,
    };
    app.layer(axum::middleware::from_fn(super::refused::log))
}

pub(super) fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    let mut m = msg.into();
    m.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

pub(super) fn internal(e: impl std::fmt::Display) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Workers that could run a function: healthy boards and VMs, with their phase.
fn runnable_workers<D: VmDriver>(gw: &Gateway<D>) -> Vec<StoredObject> {
    gw.workers().into_iter().map(|(w, _)| w).collect()
}

fn phase(o: &StoredObject) -> &str {
    o.status
        .get("phase")
        .and_then(Value::as_str)
        .unwrap_or("Unknown")
}

/// (replicas = Ready or Busy, available = Ready) over the workers that can run functions.
fn replicas<D: VmDriver>(gw: &Gateway<D>) -> (u64, u64) {
    let ws = runnable_workers(gw);
    let up = ws
        .iter()
        .filter(|w| matches!(phase(w), "Ready" | "Busy"))
        .count();
    let ready = ws.iter().filter(|w| phase(w) == "Ready").count();
    (up as u64, ready as u64)
}

fn status_json<D: VmDriver>(gw: &Gateway<D>, o: &StoredObject, reps: (u64, u64)) -> Value {
    let count = gw
        .engine
        .with_store(|s| s.gateway_invocations(&o.name))
        .unwrap_or(0);
    deploy::status_of(o, reps.0, reps.1, count)
}

async fn list<D: VmDriver>(State(gw): Gw<D>) -> Response {
    let fs = match gw.engine.with_store(|s| s.list(Some(Kind::Function))) {
        Ok(f) => f,
        Err(e) => return internal(e),
    };
    let reps = replicas(&gw);
    let out: Vec<Value> = fs.iter().map(|o| status_json(&gw, o, reps)).collect();
    axum::Json(out).into_response()
}

async fn one<D: VmDriver>(State(gw): Gw<D>, Path(name): Path<String>) -> Response {
    match gw.engine.get(Kind::Function, &name) {
        Some(o) => axum::Json(status_json(&gw, &o, replicas(&gw))).into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            format!("function `{name}` not found"),
        ),
    }
}

/// Parses a deploy body; a 400 that names the offending field otherwise.
fn parse_deployment(body: &[u8]) -> Result<FunctionDeployment, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("body: expected a JSON object".to_string());
    };
    match serde_json::from_value::<FunctionDeployment>(v.clone()) {
        Ok(d) => Ok(d),
        Err(e) => {
            // serde names unknown and missing fields itself; for a value of the wrong type, find
            // the field by trying each one alone.
            let mut msg = e.to_string();
            for (k, val) in obj {
                let mut probe = json!({"service": "a", "image": "b"});
                probe[k] = val.clone();
                if let Err(e) = serde_json::from_value::<FunctionDeployment>(probe) {
                    msg = format!("{k}: {e}");
                    break;
                }
            }
            Err(msg)
        }
    }
}

async fn store_deployment<D: VmDriver>(gw: &Gateway<D>, body: &[u8], create: bool) -> Response {
    let d = match parse_deployment(body) {
        Ok(d) => d,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let obj = match deploy::to_desired(&d) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let exists = gw.engine.get(Kind::Function, &obj.name).is_some();
    if create && exists {
        return text(
            StatusCode::CONFLICT,
            format!("function `{}` already exists: update it with PUT", obj.name),
        );
    }
    if !create && !exists {
        return text(
            StatusCode::NOT_FOUND,
            format!("function `{}` not found", obj.name),
        );
    }
    let stored = tokio::task::block_in_place(|| {
        gw.engine
            .with_store(|s| s.apply(std::slice::from_ref(&obj), None, false, false))
    });
    if let Err(e) = stored {
        return internal(e);
    }
    gw.engine.queue.add((Kind::Function, obj.name.clone()));
    StatusCode::ACCEPTED.into_response()
}

async fn deploy_new<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    store_deployment(&gw, &body, true).await
}

async fn update<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    store_deployment(&gw, &body, false).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteBody {
    function_name: String,
}

async fn remove<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    let d: DeleteBody = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("functionName: {e}")),
    };
    let removed = tokio::task::block_in_place(|| {
        gw.engine
            .with_store(|s| s.delete(Kind::Function, &d.function_name))
    });
    match removed {
        Ok(_) => {
            gw.forget_scale(&d.function_name);
            StatusCode::ACCEPTED.into_response()
        }
        Err(crate::store::StoreError::NotFound(_)) => text(
            StatusCode::NOT_FOUND,
            format!("function `{}` not found", d.function_name),
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScaleBody {
    #[serde(default)]
    service_name: Option<String>,
    replicas: u32,
    #[serde(default)]
    #[allow(dead_code)] // accepted as faas-cli sends it; there is one namespace
    namespace: Option<String>,
}

async fn scale<D: VmDriver>(State(gw): Gw<D>, Path(name): Path<String>, body: Bytes) -> Response {
    let b: ScaleBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("replicas: {e}")),
    };
    if b.service_name
        .as_deref()
        .is_some_and(|s| !s.is_empty() && s != name)
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "serviceName: `{}` does not match the path's `{name}`",
                b.service_name.unwrap_or_default()
            ),
        );
    }
    if gw.engine.get(Kind::Function, &name).is_none() {
        return text(
            StatusCode::NOT_FOUND,
            format!("function `{name}` not found"),
        );
    }
    match gw.scale(&name, b.replicas) {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(e) => internal(e),
    }
}

async fn info() -> Response {
    axum::Json(json!({
        "provider": "microfaas",
        "orchestration": "microfaas",
        "version": {"release": env!("CARGO_PKG_VERSION"), "sha": "", "commit_message": ""},
        "arch": std::env::consts::ARCH,
    }))
    .into_response()
}

async fn namespaces() -> Response {
    axum::Json(json!([NAMESPACE])).into_response()
}

async fn secret_list<D: VmDriver>(State(gw): Gw<D>) -> Response {
    match secrets::list(&gw.secrets_dir) {
        Ok(names) => axum::Json(
            names
                .into_iter()
                .map(|n| json!({"name": n, "namespace": NAMESPACE}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    name: String,
    #[serde(default)]
    value: Option<String>,
    /// base64 in faas-cli's JSON ([]byte); taken as given here.
    #[serde(default)]
    raw_value: Option<String>,
    #[serde(default)]
    #[allow(dead_code)] // accepted as faas-cli sends it; there is one namespace
    namespace: Option<String>,
}

fn secret_status(e: secrets::SecretError) -> Response {
    use secrets::SecretError as E;
    match e {
        E::Name(_) => text(StatusCode::BAD_REQUEST, e.to_string()),
        E::Exists(_) => text(StatusCode::CONFLICT, e.to_string()),
        E::NotFound(_) => text(StatusCode::NOT_FOUND, e.to_string()),
        E::Io(_) => internal(e),
    }
}

fn write_secret<D: VmDriver>(gw: &Gateway<D>, body: &[u8], create: bool) -> Response {
    let b: SecretBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("secret: {e}")),
    };
    let Some(value) = b.value.or(b.raw_value) else {
        return text(
            StatusCode::BAD_REQUEST,
            "value: a secret needs `value` or `rawValue`",
        );
    };
    match secrets::write(&gw.secrets_dir, &b.name, value.as_bytes(), create) {
        Ok(()) if create => StatusCode::CREATED.into_response(),
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => secret_status(e),
    }
}

async fn secret_create<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    write_secret(&gw, &body, true)
}

async fn secret_update<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    write_secret(&gw, &body, false)
}

async fn secret_delete<D: VmDriver>(State(gw): Gw<D>, body: Bytes) -> Response {
    let b: SecretBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("secret: {e}")),
    };
    match secrets::delete(&gw.secrets_dir, &b.name) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => secret_status(e),
    }
}

fn reply_response(r: Reply, function: &str) -> Response {
    let mut resp = Response::builder().status(r.code);
    for (k, v) in r.headers(function) {
        // A name from the URL may hold bytes no header may (NUL, CR, LF: found by hack/fuzz);
        // such a header is left out rather than failing the whole reply with a 500.
        if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
            resp = resp.header(k, v);
        }
    }
    resp.body(axum::body::Body::from(r.body))
        .unwrap_or_else(internal)
}

async fn invoke<D: VmDriver>(State(gw): Gw<D>, Path(name): Path<String>, body: Bytes) -> Response {
    let id = new_call_id();
    let reply = gw.call(&name, &body, &id).await;
    reply_response(reply, &name)
}

async fn invoke_path<D: VmDriver>(
    State(gw): Gw<D>,
    Path((name, _path)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let id = new_call_id();
    let reply = gw.call(&name, &body, &id).await;
    reply_response(reply, &name)
}

async fn enqueue<D: VmDriver>(
    State(gw): Gw<D>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    enqueue_call(&gw, &name, &headers, &body)
}

async fn enqueue_path<D: VmDriver>(
    State(gw): Gw<D>,
    Path((name, _path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    enqueue_call(&gw, &name, &headers, &body)
}

fn enqueue_call<D: VmDriver>(
    gw: &Gateway<D>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let id = new_call_id();
    if let Err(r) = gw.runnable(name, &id) {
        return reply_response(r, name);
    }
    let callback = match headers.get("x-callback-url").map(|v| v.to_str()) {
        None => None,
        Some(Ok(url)) => {
            if let Err(e) = queue::check_callback(url) {
                return text(StatusCode::BAD_REQUEST, e);
            }
            Some(url.to_string())
        }
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "X-Callback-Url: not valid text"),
    };
    // Kept as text: the call runs it through the same input rules as a sync call.
    let input = Value::String(String::from_utf8_lossy(body).into_owned());
    let stored = tokio::task::block_in_place(|| {
        gw.engine
            .with_store(|s| s.enqueue_call(&id, name, &input, callback.as_deref()))
    });
    if let Err(e) = stored {
        return internal(e);
    }
    gw.queue_wake.notify_one();
    (StatusCode::ACCEPTED, [("X-Call-Id", id)]).into_response()
}

async fn metrics<D: VmDriver>(State(gw): Gw<D>) -> Response {
    let workers = gw
        .engine
        .with_store(|s| s.list(Some(Kind::Worker)))
        .unwrap_or_default();
    let (up, _) = replicas(&gw);
    let functions = gw
        .engine
        .with_store(|s| s.list(Some(Kind::Function)))
        .unwrap_or_default()
        .into_iter()
        .map(|f| (f.name, up))
        .collect();
    let snap = Snapshot {
        functions,
        workers: workers
            .iter()
            .map(|w| {
                (
                    w.name.clone(),
                    phase(w).to_string(),
                    w.status.get("power").and_then(Value::as_str) == Some("On"),
                    w.status.get("bootSeconds").and_then(Value::as_f64),
                )
            })
            .collect(),
        boots: gw
            .engine
            .with_store(|s| s.event_counts(Kind::Worker, "PoweredOn"))
            .unwrap_or_default(),
        queue_depths: gw.engine.queue_depths(),
        reconcile_errors: gw
            .engine
            .reconcile_errors()
            .into_iter()
            .map(|(k, n)| (k.as_str().to_string(), n))
            .collect(),
        energy: gw.energy_step(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.render(snap),
    )
        .into_response()
}
