//! The gateway target: an HTTP request (method, path, headers, body, written as text so every
//! part mutates) through the gateway's real router, in process, with basic auth on and a store
//! in a temporary folder. Properties: no panic, no 500, and nothing but `/healthz` and
//! `/metrics` answers 2xx without the exact credentials.

use super::super::Target;
use super::super::host::{AUTH, Host, HostOptions};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Uri};
use microfaas::engine::vm::FakeDriver;
use microfaas::gateway::{self, Credentials};
use std::sync::Arc;
use tower::ServiceExt;

/// Every `X-Callback-Url` is rewritten to this: the async queue would otherwise POST results
/// wherever a mutated URL points, and tests talk to loopback only (port 9, discard: refused).
const CALLBACK: &str = "http://127.0.0.1:9/cb";

pub struct Gateway {
    rt: tokio::runtime::Runtime,
    host: Option<Host<FakeDriver>>,
    router: axum::Router,
    _state: tempfile::TempDir,
}

impl Gateway {
    pub fn new() -> Self {
        let state = tempfile::tempdir().expect("tmp");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let host = rt.block_on(Host::start(
            state.path(),
            Arc::new(FakeDriver::default()),
            &HostOptions {
                agent_listen: "127.0.0.1:0".into(),
                token: "fuzz-token".into(),
                credentials: Some(Credentials::new("admin", "pw")),
            },
        ));
        let router = gateway::router(host.gateway.gateway.clone(), None);
        Gateway {
            rt,
            host: Some(host),
            router,
            _state: state,
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(h) = self.host.take() {
            self.rt.block_on(h.stop());
        }
    }
}

/// `METHOD PATH\nName: value\n...\n\nBODY`; `None` when the request line cannot be built (the
/// HTTP server would have refused it before routing).
fn request(input: &[u8]) -> Option<(Request<Body>, bool, String)> {
    let (head, body) = match input.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&input[..i], input[i + 2..].to_vec()),
        None => (input, Vec::new()),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let mut parts = first.splitn(2, |&b| b == b' ');
    let method = Method::from_bytes(parts.next()?).ok()?;
    let uri = Uri::try_from(parts.next()?).ok()?;
    let path = uri.path().to_string();
    let mut req = Request::builder().method(method).uri(uri);
    let mut authed = false;
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(&line[..i]),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        if name == "x-callback-url" {
            value = HeaderValue::from_static(CALLBACK);
        }
        if name == "authorization" && value == AUTH {
            authed = true;
        }
        req = req.header(name, value);
    }
    let req = req.body(Body::from(body)).ok()?;
    // Two Authorization headers: the gateway reads the first; count it as unauthenticated
    // unless that one is right.
    let authed = authed
        && req
            .headers()
            .get("authorization")
            .is_some_and(|v| v == AUTH);
    Some((req, authed, path))
}

impl Target for Gateway {
    fn name(&self) -> &'static str {
        "gateway"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let auth = format!("Authorization: {AUTH}\nContent-Type: application/json");
        let deploy = r#"{"service":"fn-a","image":"builtin:float_operations","namespace":"","envProcess":"","envVars":{"MODE":"test"},"constraints":[],"secrets":[],"labels":{"com.openfaas.scale.zero":"true"},"annotations":{"topic":"hashing"},"limits":{"memory":"64Mi"},"requests":null,"readOnlyRootFilesystem":false}"#;
        [
            format!("POST /system/functions\n{auth}\n\n{deploy}"),
            format!("PUT /system/functions\n{auth}\n\n{deploy}"),
            format!("DELETE /system/functions\n{auth}\n\n{{\"functionName\":\"fn-a\"}}"),
            format!(
                "POST /system/scale-function/fn-a\n{auth}\n\n{{\"serviceName\":\"fn-a\",\"replicas\":0,\"namespace\":\"\"}}"
            ),
            format!("POST /system/secrets\n{auth}\n\n{{\"name\":\"db-pass\",\"value\":\"pw\"}}"),
            format!("PUT /system/secrets\n{auth}\n\n{{\"name\":\"db-pass\",\"rawValue\":\"cHc=\"}}"),
            format!("DELETE /system/secrets\n{auth}\n\n{{\"name\":\"db-pass\"}}"),
            format!("GET /system/secrets\n{auth}\n\n"),
            format!("GET /system/functions\n{auth}\n\n"),
            format!("GET /system/function/fn-a\n{auth}\n\n"),
            format!("GET /system/logs?name=fn-a&tail=5&since=2026-12-01T00:00:00Z\n{auth}\n\n"),
            format!("GET /system/info\n{auth}\n\n"),
            format!("POST /function/fn-b\n{auth}\n\n{{\"n\":3}}"),
            format!("POST /function/fn-b/sub/path?x=1\n{auth}\n\nplain text"),
            format!("POST /async-function/fn-b\n{auth}\nX-Callback-Url: {CALLBACK}\n\n{{}}"),
            "GET /metrics\n\n".to_string(),
            "GET /healthz\n\n".to_string(),
            "POST /system/functions\nAuthorization: Basic YWRtaW46cHd4\n\n{}".to_string(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect()
    }

    fn max_len(&self) -> usize {
        64 * 1024
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let Some((req, authed, path)) = request(input) else {
            return Ok(());
        };
        let router = self.router.clone();
        // Spawned: handlers use block_in_place, which needs a runtime worker thread.
        let res = self
            .rt
            .block_on(async move { tokio::spawn(router.oneshot(req)).await });
        let res = match res {
            Ok(Ok(r)) => r,
            Ok(Err(never)) => match never {},
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => return Err(format!("handler task: {e}")),
        };
        let code = res.status();
        if code.is_server_error() && code != 502 {
            return Err(format!("{path}: status {code}"));
        }
        if code.is_success() && !authed && path != "/healthz" && path != "/metrics" {
            return Err(format!("{path}: {code} without the credentials"));
        }
        Ok(())
    }
}
