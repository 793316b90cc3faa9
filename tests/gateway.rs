//! The OpenFaaS-compatible gateway against an in-process host whose workers are real
//! `microfaas-agent` processes on loopback (powered on and off by the engine): the faas-provider
//! routes, auth, deploys stored as `apply` would store them, sync calls with cold starts and
//! scale-to-zero, the async queue across a restart with exactly one callback, and metrics.
//! The same flow through a real QEMU VM is in tests/gateway_qemu.rs.

mod support;

use microfaas::gateway::Credentials;
use microfaas::gateway::client;
use microfaas::store::Store;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::host::{
    AUTH, AgentProcs, Host, HostOptions, body_text, call, delete_function, deploy, faas_cli_deploy,
    http, json_of, objects, scale, wait_function,
};

const T: Duration = Duration::from_secs(60);

fn agent() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent"))
}

/// A cluster of `n` OnDemand Warm workers (off until wanted), labelled `pool: lo`.
fn cluster(state: &Path, n: usize) {
    cluster_with(state, n, "");
}

/// [`cluster`] plus the documents in `more`.
fn cluster_with(state: &Path, n: usize, more: &str) {
    let mut yaml = String::from(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {bootTimeout: 20s, powerOnHoldoff: 0s, jobTimeout: 30s}\n",
    );
    yaml.push_str(&format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {{name: lo}}\nspec:\n  replicas: {n}\n  template:\n    metadata: {{labels: {{pool: lo}}}}\n    spec: {{power: OnDemand, lifecycle: {{mode: Warm}}, vm: {{kernel: /k}}}}\n"
    ));
    yaml.push_str(more);
    let mut store = Store::open(state).expect("store");
    store
        .apply(&objects(&yaml), None, false, false)
        .expect("apply");
}

fn opts(listen: &str) -> HostOptions {
    HostOptions {
        agent_listen: listen.to_string(),
        token: "gateway-test-token".into(),
        credentials: Some(Credentials::new("admin", "pw")),
    }
}

/// A strict reader of the OpenMetrics text format: every sample belongs to a family declared
/// by `# TYPE`, values are numbers, and the exposition ends with `# EOF`. Returns the samples
/// by `name{labels}` (labels sorted).
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF terminator");
    let mut families: Vec<(String, String)> = Vec::new();
    let mut samples = BTreeMap::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(
                matches!(kw, "HELP" | "TYPE" | "UNIT"),
                "unknown descriptor: {line}"
            );
            if kw == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    [
                        "counter",
                        "gauge",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown"
                    ]
                    .contains(&t),
                    "bad type: {line}"
                );
                families.push((name.to_string(), t.to_string()));
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the exposition");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut pairs: Vec<String> = Vec::new();
                for p in l.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = p
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(
                        k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                        "bad label name: {line}"
                    );
                    pairs.push(format!("{k}={}", v.trim_end_matches('"')));
                }
                pairs.sort();
                (n, pairs.join(","))
            }
            None => (series, String::new()),
        };
        let family = families
            .iter()
            .filter(|(f, _)| {
                name == f
                    || name.strip_prefix(f.as_str()).is_some_and(|s| {
                        ["_total", "_bucket", "_sum", "_count", "_created"].contains(&s)
                    })
            })
            .max_by_key(|(f, _)| f.len())
            .unwrap_or_else(|| panic!("sample of no declared family: {line}"));
        if family.1 == "counter" {
            assert!(
                name.ends_with("_total") || name.ends_with("_created"),
                "counter sample without _total: {line}"
            );
        }
        samples.insert(format!("{name}{{{labels}}}"), v);
    }
    samples
}

/// The `/metrics` exposition, checked to be served as OpenMetrics.
async fn metrics_text(h: &Host<AgentProcs>) -> String {
    let r = http("GET", &h.url("/metrics"), false, vec![]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.headers
    );
    body_text(&r)
}

async fn metrics(h: &Host<AgentProcs>) -> BTreeMap<String, f64> {
    parse_openmetrics(&metrics_text(h).await)
}

/// `microfaasctl ARGS` on `state`, which must succeed: its standard output.
fn run_ctl(state: &Path, args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(args)
        .env("MICROFAAS_STATE_DIR", state)
        .output()
        .expect("microfaasctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// [`run_ctl`] of a command that prints JSON.
fn ctl(state: &Path, args: &[&str]) -> Value {
    serde_json::from_slice(&run_ctl(state, args)).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_provider_api_end_to_end_on_loopback_agents() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    cluster(&state, 2);
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &opts("127.0.0.1:0")).await;

    // Open routes, and 401 everywhere else without the right credentials.
    assert_eq!(
        http("GET", &h.url("/healthz"), false, vec![]).await.status,
        200
    );
    for (m, p) in [
        ("GET", "/system/functions"),
        ("POST", "/system/functions"),
        ("GET", "/system/info"),
        ("GET", "/system/secrets"),
        ("POST", "/function/sha"),
        ("POST", "/async-function/sha"),
    ] {
        let r = http(m, &h.url(p), false, b"{}".to_vec()).await;
        assert_eq!(r.status, 401, "{m} {p}");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Basic"))
        );
    }
    let wrong = client::request(
        "GET",
        &h.url("/system/functions"),
        &[("authorization", "Basic YWRtaW46cHd4".to_string())],
        vec![],
        T,
    )
    .await
    .expect("request");
    assert_eq!(wrong.status, 401);

    // Malformed deploys: 400 naming the field; nothing is stored.
    let mut no_image = faas_cli_deploy("sha", "builtin:cascading_sha256");
    no_image.as_object_mut().expect("obj").remove("image");
    let mut typo = faas_cli_deploy("sha", "builtin:cascading_sha256");
    typo["network"] = json!("func_functions");
    let mut bad_type = faas_cli_deploy("sha", "builtin:cascading_sha256");
    bad_type["envVars"] = json!(["MODE=test"]);
    for (body, field) in [
        (no_image, "image"),
        (typo, "network"),
        (bad_type, "envVars"),
        (
            faas_cli_deploy("sha", "ghcr.io/openfaas/figlet:latest"),
            "image",
        ),
        (faas_cli_deploy("sha", "builtin:sha"), "image"),
    ] {
        let r = http(
            "POST",
            &h.url("/system/functions"),
            true,
            body.to_string().into_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{}", body_text(&r));
        assert!(
            body_text(&r).contains(field),
            "400 does not name `{field}`: {}",
            body_text(&r)
        );
    }
    assert!(
        h.engine
            .get(microfaas::manifest::Kind::Function, "sha")
            .is_none()
    );

    // Deploy: stored exactly as a manifest would store it, seen by `get functions`.
    let r = http(
        "POST",
        &h.url("/system/functions"),
        true,
        faas_cli_deploy("sha", "builtin:cascading_sha256")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let stored = h
        .engine
        .get(microfaas::manifest::Kind::Function, "sha")
        .expect("stored");
    let declared = objects(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: sha, labels: {com.openfaas.scale.zero: 'true'}, annotations: {topic: hashing}}\nspec: {runtime: builtin, handler: cascading_sha256, memory: 64Mi, env: {MODE: test}}\n",
    );
    assert_eq!(stored.spec, declared[0].spec);
    assert_eq!(stored.labels, declared[0].labels);
    assert_eq!(stored.annotations, declared[0].annotations);
    let got = ctl(&state, &["get", "functions", "-o", "json"]);
    assert_eq!(got["items"][0]["metadata"]["name"], "sha", "{got}");
    let again = http(
        "POST",
        &h.url("/system/functions"),
        true,
        faas_cli_deploy("sha", "builtin:cascading_sha256")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(again.status, 409);
    let mut changed = faas_cli_deploy("sha", "builtin:cascading_sha256");
    changed["envVars"] = json!({"MODE": "prod"});
    let r = http(
        "PUT",
        &h.url("/system/functions"),
        true,
        changed.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 202);
    let stored = h
        .engine
        .get(microfaas::manifest::Kind::Function, "sha")
        .expect("stored");
    assert_eq!(
        (stored.generation, &stored.spec["env"]["MODE"]),
        (2, &json!("prod"))
    );

    let before = metrics(&h).await;
    let key = "gateway_function_invocation_total{code=200,function_name=sha}";
    assert_eq!(before.get(key), None, "no call yet");

    // Sync call: the workers are off (OnDemand), so the first call waits for a cold start.
    let input = json!({"rounds": 7, "data": "microfaas"});
    let want = microfaas::functions::run("cascading_sha256", &input).expect("local run");
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    let worker = r
        .header("x-microfaas-worker")
        .expect("worker header")
        .to_string();
    assert!(worker.starts_with("lo-"), "{worker}");
    assert!(
        r.header("x-duration-seconds")
            .and_then(|d| d.parse::<f64>().ok())
            .is_some()
    );

    // Scale to 1: one Warm worker is kept powered and the next call finds it ready.
    scale(&h, "sha", 1).await;
    wait_function(&h, "sha", "a ready replica", |v| {
        v["availableReplicas"] == 1
    })
    .await;
    let r = call(&h, "/function/sha/some/path", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-cold-start"), Some("false"));

    // Scale to 0: the worker powers off; the next call cold-starts one again.
    scale(&h, "sha", 0).await;
    wait_function(&h, "sha", "no replica", |v| v["replicas"] == 0).await;
    // An empty body runs the function with its default input.
    let r = http("GET", &h.url("/function/sha"), true, vec![]).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    assert!(
        json_of(&r)["digest"]
            .as_str()
            .is_some_and(|d| d.len() == 64)
    );
    assert!(
        driver.launches.lock().expect("launches").len() >= 2,
        "powered on again"
    );

    // 404 for an unknown function; list; logs; invocation counts; the report.
    assert_eq!(
        http("POST", &h.url("/function/nope"), true, vec![])
            .await
            .status,
        404
    );
    let list = json_of(&http("GET", &h.url("/system/functions"), true, vec![]).await);
    assert_eq!(list[0]["name"], "sha");
    assert_eq!(list[0]["image"], "builtin:cascading_sha256");
    assert_eq!(list[0]["invocationCount"], 3, "{list}");
    assert_eq!(list[0]["envVars"]["MODE"], "prod");
    let logs = http("GET", &h.url("/system/logs?name=sha&tail=10"), true, vec![]).await;
    assert_eq!(logs.status, 200);
    let lines: Vec<Value> = body_text(&logs)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    assert_eq!(lines.len(), 3, "{}", body_text(&logs));
    assert!(
        lines
            .iter()
            .all(|l| l["text"].as_str().is_some_and(|t| t.contains("succeeded")))
    );
    let report = ctl(&state, &["report", "gateway", "--format", "json"]);
    assert_eq!(
        (report["total"].as_u64(), report["succeeded"].as_u64()),
        (Some(3), Some(3)),
        "{report}"
    );

    // Metrics: OpenMetrics, and the counters moved with the calls.
    let after = metrics(&h).await;
    assert_eq!(after.get(key), Some(&3.0), "{after:#?}");
    assert_eq!(
        after.get("gateway_functions_seconds_count{function_name=sha}"),
        Some(&3.0)
    );
    // A name that is no function gets no series: made-up names would grow /metrics forever.
    assert!(
        !after.keys().any(|k| k.contains("function_name=nope")),
        "{after:#?}"
    );
    assert!(
        after
            .get("microfaas_worker_boots_total{worker=lo-0}")
            .is_some_and(|b| *b >= 1.0)
            || after
                .get("microfaas_worker_boots_total{worker=lo-1}")
                .is_some_and(|b| *b >= 1.0)
    );
    assert!(after.contains_key("microfaas_worker_phase{phase=Off,worker=lo-0}"));
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200);
    let text = metrics_text(&h).await;
    assert_eq!(parse_openmetrics(&text).get(key), Some(&4.0));
    // No PowerMeter is declared: no energy metrics at all, not even their descriptors.
    assert!(!text.contains("energy"), "{text}");

    // info, namespaces, secrets (never returned in clear; 0600 in the state dir).
    let info = json_of(&http("GET", &h.url("/system/info"), true, vec![]).await);
    assert_eq!(
        (info["provider"].as_str(), info["orchestration"].as_str()),
        (Some("microfaas"), Some("microfaas"))
    );
    let ns = json_of(&http("GET", &h.url("/system/namespaces"), true, vec![]).await);
    assert_eq!(ns, json!(["microfaas"]));
    let r = http(
        "POST",
        &h.url("/system/secrets"),
        true,
        json!({"name": "db-pass", "value": "hunter2"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", body_text(&r));
    let r = http("GET", &h.url("/system/secrets"), true, vec![]).await;
    assert_eq!(
        json_of(&r),
        json!([{"name": "db-pass", "namespace": "microfaas"}])
    );
    assert!(!body_text(&r).contains("hunter2"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("secrets/db-pass"))
        .expect("secret file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let r = http(
        "DELETE",
        &h.url("/system/secrets"),
        true,
        json!({"name": "db-pass"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 200);

    // Delete: gone from the store and from the API.
    delete_function(&h, "sha").await;
    assert_eq!(
        http("POST", &h.url("/function/sha"), true, vec![])
            .await
            .status,
        404
    );
    assert!(
        h.engine
            .get(microfaas::manifest::Kind::Function, "sha")
            .is_none()
    );
    h.stop().await;
    driver.kill_all();
}

/// Callbacks received: (X-Call-Id, X-Function-Status, body).
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Records every callback it receives.
async fn callback_listener() -> (String, Received) {
    let got: Received = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/cb",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let g = g.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    g.lock().expect("lock").push((
                        h("x-call-id"),
                        h("x-function-status"),
                        body.to_vec(),
                    ));
                    "ok"
                }
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/cb", l.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_call_survives_a_restart_and_calls_back_exactly_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    cluster(&state, 1);
    let (cb, got) = callback_listener().await;
    // First daemon: its worker's agent takes an hour to "boot", so the call is still waiting
    // for it when the daemon stops.
    let slow = AgentProcs::new(agent()).booting_after(Duration::from_secs(3600));
    let h1 = Host::start(&state, slow.clone(), &opts("127.0.0.1:0")).await;
    let agent_addr = h1.endpoint.addr.to_string();
    let r = http(
        "POST",
        &h1.url("/system/functions"),
        true,
        faas_cli_deploy("md5", "builtin:cascading_md5")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 202);
    let bad = client::request(
        "POST",
        &h1.url("/async-function/md5"),
        &[
            ("authorization", AUTH.to_string()),
            ("x-callback-url", "https://example.test/cb".to_string()),
        ],
        vec![],
        T,
    )
    .await
    .expect("req");
    assert_eq!(bad.status, 400, "only http callbacks");
    let input = json!({"rounds": 3, "data": "restart"});
    let r = client::request(
        "POST",
        &h1.url("/async-function/md5"),
        &[
            ("authorization", AUTH.to_string()),
            ("x-callback-url", cb.clone()),
        ],
        input.to_string().into_bytes(),
        T,
    )
    .await
    .expect("enqueue");
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let call_id = r.header("x-call-id").expect("X-Call-Id").to_string();
    // Wait until the call is being served: its worker is booting for it.
    let start = Instant::now();
    while slow.launches.lock().expect("launches").is_empty() {
        assert!(start.elapsed() < T, "the call never asked for a worker");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h1.stop().await;
    slow.kill_all();
    assert!(
        got.lock().expect("lock").is_empty(),
        "no result before the restart"
    );

    // Second daemon on the same state dir and agent address: it runs the queued call.
    let d2 = AgentProcs::new(agent());
    let h2 = Host::start(&state, d2.clone(), &opts(&agent_addr)).await;
    let start = Instant::now();
    while got.lock().expect("lock").is_empty() {
        assert!(start.elapsed() < T, "no callback");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give a duplicate every chance to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = got.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (id, status, body) = &calls[0];
    assert_eq!((id.as_str(), status.as_str()), (call_id.as_str(), "200"));
    let want = microfaas::functions::run("cascading_md5", &input).expect("local");
    assert_eq!(serde_json::from_slice::<Value>(body).expect("json"), want);
    let state_now = h2
        .engine
        .with_store(|s| s.call_state(&call_id))
        .expect("state");
    assert_eq!(
        state_now,
        Some(microfaas::store::gateway::CallState::Delivered)
    );
    h2.stop().await;
    d2.kill_all();
    // A third start finds nothing left to deliver.
    let d3 = AgentProcs::new(agent());
    let h3 = Host::start(&state, d3.clone(), &opts("127.0.0.1:0")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(got.lock().expect("lock").len(), 1);
    h3.stop().await;
    d3.kill_all();
}

/// `microfaasctl serve` hosts the gateway of the Cluster it is given, and refuses an open
/// listen address without basic auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_hosts_the_declared_gateway() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let manifest = |listen: &str| {
        format!(
            "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  orchestrator: {{listen: 127.0.0.1:0}}\n  gateway: {{listen: '{listen}'}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: sha}}\nspec: {{runtime: builtin, handler: cascading_sha256}}\n"
        )
    };
    let serve = |file: &Path, state: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(["serve", "-f"])
            .arg(file)
            .env("MICROFAAS_STATE_DIR", dir.path().join(state))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve")
    };
    let open = dir.path().join("open.yaml");
    std::fs::write(&open, manifest("0.0.0.0:0")).expect("write");
    let out = serve(&open, "s1").wait_with_output().expect("serve");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without `gateway.basicAuth`"));

    let ok = dir.path().join("ok.yaml");
    std::fs::write(&ok, manifest(&format!("127.0.0.1:{port}"))).expect("write");
    let mut child = serve(&ok, "s2");
    let url = format!("http://127.0.0.1:{port}/system/functions");
    let start = Instant::now();
    let listed = loop {
        if let Ok(r) = client::request("GET", &url, &[], vec![], T).await {
            break r;
        }
        assert!(start.elapsed() < T, "serve's gateway never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(listed.status, 200);
    assert_eq!(json_of(&listed)[0]["name"], "sha");
    // SAFETY: signalling the serve process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
}

/// An open `/system/logs?...&follow=true` response, read as it arrives (raw HTTP/1.1 so the
/// test sees each line when the gateway writes it, not when the response ends).
struct Follow {
    sock: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Follow {
    async fn open(addr: std::net::SocketAddr, query: &str) -> Follow {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /system/logs?{query} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {AUTH}\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.expect("send");
        Follow {
            sock,
            buf: Vec::new(),
        }
    }

    /// Reads until `until` holds for what arrived so far, or `T` passes (None), or the stream
    /// ends (Some(false) when `until` never held).
    async fn read_until(&mut self, until: impl Fn(&str) -> bool) -> Option<bool> {
        self.read_until_within(T, until).await
    }

    async fn read_until_within(
        &mut self,
        limit: Duration,
        until: impl Fn(&str) -> bool,
    ) -> Option<bool> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if until(&String::from_utf8_lossy(&self.buf)) {
                return Some(true);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.sock.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => return Some(until(&String::from_utf8_lossy(&self.buf))),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The log messages received so far (the JSON lines between the chunk framing).
    fn messages(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.buf)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).expect("a JSON log message"))
            .collect()
    }
}

fn log_lines(r: &client::Response) -> Vec<Value> {
    body_text(r)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_tail_since_and_follow() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    cluster(&state, 1);
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &opts("127.0.0.1:0")).await;
    deploy(&h, "sha", "builtin:cascading_sha256").await;
    // Held powered, so that back-to-back calls are one attempt each (a worker released after a
    // call may be powering off when the next one picks it: that attempt is lost and retried).
    scale(&h, "sha", 1).await;
    wait_function(&h, "sha", "a ready replica", |v| {
        v["availableReplicas"] == 1
    })
    .await;
    let before = microfaas::store::clock::now_millis();
    for _ in 0..2 {
        let r = call(&h, "/function/sha", &json!({"rounds": 1, "data": "x"})).await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
    }

    // tail and since, with times as RFC 3339 clients send them (any offset).
    let logs = |q: String| {
        let url = h.url(&format!("/system/logs?name=sha{q}"));
        async move { http("GET", &url, true, vec![]).await }
    };
    let all = logs(String::new()).await;
    assert_eq!(log_lines(&all).len(), 2, "{}", body_text(&all));
    assert_eq!(log_lines(&logs("&tail=1".into()).await).len(), 1);
    let at = |ms: i64| microfaas::store::clock::format_unix_millis(ms);
    assert_eq!(
        log_lines(&logs(format!("&since={}", at(before))).await).len(),
        2
    );
    let future = at(before + 3_600_000);
    assert_eq!(log_lines(&logs(format!("&since={future}")).await).len(), 0);
    // `before` written an hour ahead with a +01:00 offset (`+` escaped in the query).
    let offset = future.replace('Z', "%2B01:00");
    assert_eq!(log_lines(&logs(format!("&since={offset}")).await).len(), 2);
    for (q, field) in [
        ("&since=yesterday", "since"),
        ("&since=2026-11-29T16:39:27", "since"),
        ("&follow=maybe", "follow"),
        ("&tail=many", "tail"),
    ] {
        let r = logs(q.into()).await;
        assert_eq!(r.status, 400, "{q}: {}", body_text(&r));
        assert!(body_text(&r).starts_with(field), "{q}: {}", body_text(&r));
    }

    // follow: the tail first, then each new call as it is recorded, on the open response.
    let idle_refs = Arc::strong_count(&h.gateway.gateway);
    let mut f = Follow::open(h.gateway.addr, "name=sha&tail=1&follow=true").await;
    assert_eq!(
        f.read_until(|s| s.contains("\"text\"")).await,
        Some(true),
        "the tail line"
    );
    assert!(
        f.buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&f.buf)
    );
    assert!(String::from_utf8_lossy(&f.buf).contains("application/x-ndjson"));
    assert_eq!(f.messages().len(), 1);
    let r = call(&h, "/function/sha", &json!({"rounds": 2, "data": "y"})).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let id = r.header("x-call-id").expect("X-Call-Id").to_string();
    let worker = r.header("x-microfaas-worker").expect("worker").to_string();
    assert_eq!(
        f.read_until(|s| s.contains(&id)).await,
        Some(true),
        "the new call's line on the open stream: {}",
        String::from_utf8_lossy(&f.buf)
    );
    let msgs = f.messages();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let new = &msgs[1];
    assert_eq!(
        (new["name"].as_str(), new["namespace"].as_str()),
        (Some("sha"), Some("microfaas"))
    );
    assert_eq!(new["instance"].as_str(), Some(worker.as_str()));
    assert!(
        new["text"]
            .as_str()
            .is_some_and(|t| t.contains(&id) && t.contains("succeeded")),
        "{new}"
    );
    assert!(
        new["timestamp"]
            .as_str()
            .and_then(microfaas::store::clock::parse_rfc3339_millis)
            .is_some_and(|t| t >= before),
        "{new}"
    );
    // A call of another function does not show up on this stream.
    deploy(&h, "md5", "builtin:cascading_md5").await;
    let r = call(&h, "/function/md5", &json!({"rounds": 1, "data": "z"})).await;
    assert_eq!(r.status, 200);
    let other = r.header("x-call-id").expect("X-Call-Id").to_string();
    // (Its line would arrive within milliseconds, as the one above did.)
    let wait = Duration::from_secs(2);
    assert_eq!(
        f.read_until_within(wait, |s| s.contains(&other)).await,
        None
    );
    assert_eq!(f.messages().len(), 2);

    // The client goes: its follower ends (it held a reference to the gateway).
    drop(f);
    let start = Instant::now();
    while Arc::strong_count(&h.gateway.gateway) > idle_refs {
        assert!(start.elapsed() < T, "the follower outlived its client");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A follower still open when the gateway stops ends its response.
    let mut f = Follow::open(h.gateway.addr, "name=sha&follow=true").await;
    assert_eq!(f.read_until(|s| s.contains(&id)).await, Some(true));
    let stop = tokio::spawn(h.stop());
    assert_eq!(
        f.read_until(|s| s.ends_with("0\r\n\r\n")).await,
        Some(true),
        "the response ends: {}",
        String::from_utf8_lossy(&f.buf)
    );
    tokio::time::timeout(T, stop)
        .await
        .expect("the gateway stops with a follower open")
        .expect("stop");
    driver.kill_all();
}

/// With a `model` PowerMeter covering the loopback workers (sampled by the real sampler), the
/// per-function energy counter appears, only grows, and once every call's energy is final it
/// holds what the `gateway` run's energy report charges those calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_metrics_match_the_report_with_a_model_meter() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    cluster_with(
        &state,
        2,
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: PowerMeter\nmetadata: {name: lo-model}\nspec:\n  model: {interval: 100ms, vm: {off: 0.5, booting: 4.0, idle: 2.0, busy: 6.0}}\n  covers: {matchLabels: {pool: lo}}\n",
    );
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &opts("127.0.0.1:0")).await;
    let (stop_sampler, rx) = tokio::sync::watch::channel(false);
    let sampler = microfaas::energy::sampler::spawn(&state, rx).expect("sampler");

    let r = call(
        &h,
        "/system/functions",
        &faas_cli_deploy("sha", "builtin:cascading_sha256"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let counter = "microfaas_invocation_energy_joules_total{function_name=sha}";
    let count = "microfaas_function_invocation_energy_joules_count{function_name=sha}";
    let sum = "microfaas_function_invocation_energy_joules_sum{function_name=sha}";
    assert_eq!(metrics(&h).await.get(counter), None, "no call yet");

    const CALLS: usize = 6;
    for i in 0..CALLS {
        let r = call(
            &h,
            "/function/sha",
            &json!({"rounds": 20_000, "data": format!("call {i}")}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
    }
    // Energy is final once the samples cover a call's end: poll, bounded, and see the
    // counter never go down meanwhile.
    let start = Instant::now();
    let mut last = 0.0;
    let m = loop {
        let m = metrics(&h).await;
        let j = m.get(counter).copied().unwrap_or(0.0);
        assert!(j >= last, "the counter went down: {last} -> {j}");
        last = j;
        if j > 0.0 && m.get(count) == Some(&(CALLS as f64)) {
            break m;
        }
        assert!(start.elapsed() < T, "energy never became final: {m:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The report's attribution of the same calls, from the store.
    let store = Store::open(&state).expect("store");
    let run = store
        .latest_run(microfaas::store::gateway::WORKLOAD)
        .expect("read")
        .expect("the gateway's run");
    let attempts = store.attempts(&run.workload, run.run).expect("attempts");
    let e = microfaas::energy::report::compute(
        &store,
        &run,
        &attempts,
        microfaas::store::clock::now_millis(),
    )
    .expect("compute")
    .expect("energy section");
    let calls: Vec<f64> = e
        .per_invocation
        .values()
        .filter(|i| i.function == "sha")
        .map(|i| i.joules)
        .collect();
    assert_eq!(calls.len(), CALLS, "{e:?}");
    let want: f64 = calls.iter().sum();
    let got = m[counter];
    assert!(want > 0.0, "{e:?}");
    assert!(
        (got - want).abs() <= 0.01 * want,
        "metric {got} J, report {want} J"
    );
    assert!((m[sum] - got).abs() <= 1e-9 * got.max(1.0), "{m:#?}");
    // The same as `microfaasctl report gateway` prints.
    let report = ctl(&state, &["report", "gateway", "--format", "json"]);
    let reported = report["energy"]["perFunction"]["sha"]["joules"]
        .as_f64()
        .expect("perFunction.sha.joules");
    assert!((got - reported).abs() <= 0.01 * reported, "{report}");

    let _ = stop_sampler.send(true);
    let _ = tokio::time::timeout(T, sampler).await;
    h.stop().await;
    driver.kill_all();
}

/// `microfaasctl apply` from another process while the gateway serves: the next call runs the
/// Function as just applied. The gateway answers object reads from memory while their kind's
/// counter is unchanged (src/store/reads.rs); the counter's triggers, in the database, are
/// what tell it that another process wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_call_runs_what_another_process_just_applied() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let function = |handler: &str| {
        format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: f}}\nspec: {{runtime: builtin, handler: {handler}}}\n"
        )
    };
    cluster_with(&state, 1, &function("cascading_sha256"));
    let driver = AgentProcs::new(agent());
    let h = Host::start(&state, driver.clone(), &opts("127.0.0.1:0")).await;
    let input = json!({"rounds": 3, "data": "another process"});
    let local = |handler: &str| microfaas::functions::run(handler, &input).expect("local");

    for _ in 0..2 {
        let r = call(&h, "/function/f", &input).await;
        assert_eq!(r.status, 200, "{}", body_text(&r));
        assert_eq!(json_of(&r), local("cascading_sha256"));
    }
    let file = dir.path().join("f.yaml");
    std::fs::write(&file, function("cascading_md5")).expect("write");
    let file = file.to_str().expect("utf-8 temp path");
    run_ctl(&state, &["apply", "-f", file, "--no-fs-checks"]);
    let r = call(&h, "/function/f", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(
        json_of(&r),
        local("cascading_md5"),
        "the call ran the Function as it was before the apply"
    );
    h.stop().await;
    driver.kill_all();
}
