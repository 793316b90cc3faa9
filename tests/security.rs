//! Hostile peers and callers, against a real host (store, engine, agent endpoint, gateway on
//! loopback ephemeral ports): each attempt is refused, shows in the log (tracing), and leaves
//! nothing in the store or on disk.
//!
//! Agents: a wrong or missing HMAC, a replayed handshake, a replayed result frame, a second
//! agent claiming a connected worker's name, an oversized frame. Gateway: no or wrong basic
//! auth, path traversal in function and secret names, oversized bodies.

mod support;

use microfaas::engine::vm::{FakeDriver, VmDriver};
use microfaas::gateway::Credentials;
use microfaas::gateway::client;
use microfaas::manifest::Kind;
use microfaas::orchestrator::AgentEvent;
use microfaas::protocol::{
    Auth, Capabilities, Hello, Invoke, InvokeResult, Lifecycle, Message, Outcome, PROTOCOL_VERSION,
    RUNTIME_BUILTIN, auth, decode, encode,
};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::host::{AUTH, Host, HostOptions, http};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const TOKEN: &str = "security-test-token";

// ---------------------------------------------------------------- captured log

/// Everything logged at info and above by this test binary (the tests run in parallel, so
/// each looks for names of its own).
fn log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct W;
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                log()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_writer(|| W)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .try_init();
        Mutex::new(Vec::new())
    })
}

fn logged(needles: &[&str]) -> bool {
    let text =
        String::from_utf8_lossy(&log().lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    text.lines().any(|l| needles.iter().all(|n| l.contains(n)))
}

async fn wait_logged(needles: &[&str]) {
    for _ in 0..200 {
        if logged(needles) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let text =
        String::from_utf8_lossy(&log().lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    panic!("no log line with {needles:?} in:\n{text}");
}

// ---------------------------------------------------------------- a host and raw agents

async fn host(state: &std::path::Path) -> Host<FakeDriver> {
    log();
    Host::start(
        state,
        Arc::new(FakeDriver::default()),
        &HostOptions {
            agent_listen: "127.0.0.1:0".into(),
            token: TOKEN.into(),
            credentials: Some(Credentials::new("admin", "pw")),
        },
    )
    .await
}

/// A raw agent connection speaking the wire protocol by hand.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn dial<D: VmDriver>(h: &Host<D>) -> Raw {
        let s = TcpStream::connect(h.endpoint.addr).await.expect("connect");
        let (r, w) = s.into_split();
        Raw {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        // The orchestrator may already have closed: that is an answer too.
        let _ = self.w.write_all(bytes).await;
    }

    async fn send(&mut self, m: &Message) {
        self.send_raw(&encode(m)).await;
    }

    /// The next frame, or `None` when the orchestrator closed the connection.
    async fn recv(&mut self) -> Option<Message> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(20), self.r.read_line(&mut line)).await {
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(_)) => Some(decode(line.as_bytes()).expect("orchestrator frame")),
            Err(_) => panic!("no frame from the orchestrator within 20 s"),
        }
    }

    async fn closed(&mut self) -> bool {
        self.recv().await.is_none()
    }
}

fn hello(worker: &str) -> Message {
    Message::Hello(Hello {
        worker: worker.into(),
        agent_version: "test".into(),
        protocol_version: PROTOCOL_VERSION,
        uptime_ms: 1,
        capabilities: Capabilities {
            runtimes: vec![RUNTIME_BUILTIN.into()],
            functions: vec![],
            lifecycle: Lifecycle::Warm,
        },
        start: None,
    })
}

/// Says hello and returns the challenge's nonce.
async fn challenged(a: &mut Raw, worker: &str) -> String {
    a.send(&hello(worker)).await;
    match a.recv().await {
        Some(Message::Challenge(c)) => c.nonce,
        other => panic!("expected a challenge, got {other:?}"),
    }
}

/// A full, correct handshake; returns the frames sent (for replaying).
async fn authenticate(a: &mut Raw, worker: &str) -> Vec<Message> {
    let nonce = challenged(a, worker).await;
    let proof = Message::Auth(Auth {
        proof: auth::prove(TOKEN.as_bytes(), &nonce),
    });
    a.send(&proof).await;
    match a.recv().await {
        Some(Message::AuthOk(_)) => {}
        other => panic!("expected authOk, got {other:?}"),
    }
    vec![hello(worker), proof]
}

async fn rejected(
    events: &mut tokio::sync::broadcast::Receiver<AgentEvent>,
    worker: Option<&str>,
) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
            Ok(Ok(AgentEvent::Rejected {
                worker: w, reason, ..
            })) if w.as_deref() == worker => return reason,
            Ok(Ok(_)) => {}
            other => panic!("no rejection of {worker:?}: {other:?}"),
        }
    }
}

/// The reason `worker`'s session ended.
async fn disconnected(
    events: &mut tokio::sync::broadcast::Receiver<AgentEvent>,
    worker: &str,
) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
            Ok(Ok(AgentEvent::Disconnected { worker: w, reason })) if w == worker => {
                return reason;
            }
            Ok(Ok(_)) => {}
            other => panic!("{worker}'s session did not end: {other:?}"),
        }
    }
}

/// `worker`'s session once it is registered.
async fn session_of<D: VmDriver>(
    h: &Host<D>,
    worker: &str,
) -> microfaas::orchestrator::SessionHandle {
    for _ in 0..2000 {
        if let Some(s) = h.endpoint.sessions.get(worker) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no session for {worker}");
}

/// Nothing about `worker` reached the store: no object, no event.
fn nothing_stored<D: VmDriver>(h: &Host<D>, worker: &str) {
    assert!(h.engine.get(Kind::Worker, worker).is_none());
    let events = h
        .engine
        .with_store(|s| s.recent_events(10_000))
        .expect("events");
    assert!(
        events.iter().all(|e| !format!("{e:?}").contains(worker)),
        "an event mentions {worker}"
    );
}

// ---------------------------------------------------------------- agents

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_with_a_wrong_or_missing_hmac_are_refused_and_logged() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let mut events = h.endpoint.subscribe();

    // Wrong proof: a well-formed HMAC under another token.
    let mut a = Raw::dial(&h).await;
    let nonce = challenged(&mut a, "intruder-wrong").await;
    a.send(&Message::Auth(Auth {
        proof: auth::prove(b"not-the-token", &nonce),
    }))
    .await;
    assert!(matches!(a.recv().await, Some(Message::Denied(_))));
    assert!(a.closed().await);
    let why = rejected(&mut events, Some("intruder-wrong")).await;
    assert!(why.contains("authentication failed"), "{why}");

    // Not hex at all, and an empty proof.
    for (name, proof) in [("intruder-garbage", "zz"), ("intruder-empty", "")] {
        let mut a = Raw::dial(&h).await;
        challenged(&mut a, name).await;
        a.send(&Message::Auth(Auth {
            proof: proof.into(),
        }))
        .await;
        assert!(matches!(a.recv().await, Some(Message::Denied(_))));
        rejected(&mut events, Some(name)).await;
    }

    // Missing: another frame where the proof should be, or the connection closed instead.
    let mut a = Raw::dial(&h).await;
    challenged(&mut a, "intruder-noauth").await;
    a.send(&Message::Heartbeat(microfaas::protocol::Heartbeat {
        seq: 1,
    }))
    .await;
    assert!(a.closed().await);
    let why = rejected(&mut events, Some("intruder-noauth")).await;
    assert!(why.contains("expected auth"), "{why}");
    let mut a = Raw::dial(&h).await;
    challenged(&mut a, "intruder-gone").await;
    drop(a);
    let why = rejected(&mut events, Some("intruder-gone")).await;
    assert!(why.contains("closed before auth"), "{why}");

    // No hello at all: straight to a result.
    let mut a = Raw::dial(&h).await;
    a.send(&Message::Result(InvokeResult {
        id: "x".into(),
        outcome: Outcome::Output(json!(1)),
        exec_us: 1,
    }))
    .await;
    assert!(a.closed().await);
    let why = rejected(&mut events, None).await;
    assert!(why.contains("expected hello"), "{why}");

    // An endless first frame: refused at the frame limit, not buffered.
    let mut a = Raw::dial(&h).await;
    let big = vec![b'x'; microfaas::protocol::MAX_FRAME + 4096];
    a.send_raw(&big).await;
    assert!(a.closed().await);
    let why = rejected(&mut events, None).await;
    assert!(why.contains("exceeds the maximum"), "{why}");

    for name in [
        "intruder-wrong",
        "intruder-garbage",
        "intruder-empty",
        "intruder-noauth",
        "intruder-gone",
    ] {
        wait_logged(&["agent rejected", name]).await;
        assert!(
            h.endpoint.sessions.get(name).is_none(),
            "{name} has a session"
        );
        nothing_stored(&h, name);
    }
    wait_logged(&["agent rejected", "exceeds the maximum"]).await;
    assert!(h.endpoint.sessions.connected().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_handshake_is_refused_because_every_nonce_is_fresh() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let mut events = h.endpoint.subscribe();

    let mut real = Raw::dial(&h).await;
    let frames = authenticate(&mut real, "replayed").await;
    drop(real);
    // Wait until that session is gone, so the replay is judged on its proof alone.
    for _ in 0..400 {
        if h.endpoint.sessions.get("replayed").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.endpoint.sessions.get("replayed").is_none());

    // An eavesdropper replays the recorded hello and auth, byte for byte.
    let mut replay = Raw::dial(&h).await;
    let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
    replay.send_raw(&bytes).await;
    assert!(matches!(replay.recv().await, Some(Message::Challenge(_))));
    assert!(matches!(replay.recv().await, Some(Message::Denied(_))));
    assert!(replay.closed().await);
    let why = rejected(&mut events, Some("replayed")).await;
    assert!(why.contains("authentication failed"), "{why}");
    wait_logged(&["agent rejected", "replayed", "authentication failed"]).await;
    assert!(h.endpoint.sessions.get("replayed").is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_result_frame_ends_the_session_and_counts_once() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let mut events = h.endpoint.subscribe();
    let mut agent = Raw::dial(&h).await;
    authenticate(&mut agent, "result-replay").await;
    let session = session_of(&h, "result-replay").await;

    let call = tokio::spawn(async move {
        session
            .invoke(
                Invoke {
                    id: "call-1".into(),
                    function: "float_operations".into(),
                    runtime: RUNTIME_BUILTIN.into(),
                    handler: "float_operations".into(),
                    input: json!({"n": 1}),
                    deadline_ms: 5000,
                    services: Default::default(),
                    code: None,
                },
                Duration::from_secs(20),
            )
            .await
    });
    let Some(Message::Invoke(inv)) = agent.recv().await else {
        panic!("no invoke");
    };
    let result = Message::Result(InvokeResult {
        id: inv.id.clone(),
        outcome: Outcome::Output(json!({"ok": true})),
        exec_us: 10,
    });
    agent.send(&result).await;
    let done = call
        .await
        .expect("join")
        .expect("the first copy is the result");
    assert_eq!(done.result.id, "call-1");

    // The same frame again: no call is waiting for it, so the session ends.
    agent.send(&result).await;
    assert!(agent.closed().await);
    let reason = disconnected(&mut events, "result-replay").await;
    assert!(reason.contains("unexpected `result`"), "{reason}");
    wait_logged(&["agent disconnected", "result-replay", "unexpected `result`"]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_cannot_take_a_connected_workers_name() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let mut events = h.endpoint.subscribe();
    let mut first = Raw::dial(&h).await;
    authenticate(&mut first, "claimed").await;
    let id = session_of(&h, "claimed").await.id;

    // Same name, right token: still refused while the first is connected.
    let mut second = Raw::dial(&h).await;
    let nonce = challenged(&mut second, "claimed").await;
    second
        .send(&Message::Auth(Auth {
            proof: auth::prove(TOKEN.as_bytes(), &nonce),
        }))
        .await;
    match second.recv().await {
        Some(Message::Denied(d)) => assert!(d.reason.contains("already connected"), "{d:?}"),
        other => panic!("expected denied, got {other:?}"),
    }
    assert!(second.closed().await);
    let why = rejected(&mut events, Some("claimed")).await;
    assert!(why.contains("already connected"), "{why}");
    wait_logged(&["agent rejected", "claimed", "already connected"]).await;

    // The first session is untouched and still answers.
    assert_eq!(h.endpoint.sessions.get("claimed").map(|s| s.id), Some(id));
    first
        .send(&Message::Heartbeat(microfaas::protocol::Heartbeat {
            seq: 9,
        }))
        .await;
    assert!(matches!(
        first.recv().await,
        Some(Message::Heartbeat(microfaas::protocol::Heartbeat {
            seq: 9
        }))
    ));
    h.stop().await;
}

// ---------------------------------------------------------------- gateway

async fn request<D: VmDriver>(
    h: &Host<D>,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Vec<u8>,
) -> client::Response {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(a) = authorization {
        headers.push(("authorization", a.to_string()));
    }
    client::request(
        method,
        &h.url(path),
        &headers,
        body,
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn deploy_body(service: &str) -> Vec<u8> {
    json!({"service": service, "image": "builtin:float_operations"})
        .to_string()
        .into_bytes()
}

fn secret_files(state: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    let mut stack = vec![state.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                all.push(p.display().to_string());
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_callers_without_the_right_basic_auth_are_refused_and_logged() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let wrong = "Basic YWRtaW46eA=="; // admin:x
    for (who, authz) in [
        ("none", None),
        ("wrong", Some(wrong)),
        ("not-basic", Some("Bearer abc")),
        ("prefix", Some(&AUTH[..AUTH.len() - 1])),
    ] {
        let name = format!("unauth-{who}");
        let r = request(&h, "POST", "/system/functions", authz, deploy_body(&name)).await;
        assert_eq!(r.status, 401, "{who}");
        let secret = json!({"name": name, "value": "v"}).to_string().into_bytes();
        let r = request(&h, "POST", "/system/secrets", authz, secret).await;
        assert_eq!(r.status, 401, "{who}");
        let r = request(
            &h,
            "POST",
            &format!("/function/{name}"),
            authz,
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(r.status, 401, "{who}");
        assert!(
            h.engine.get(Kind::Function, &name).is_none(),
            "{who}: stored"
        );
    }
    wait_logged(&["gateway refused", "/system/functions", "401", "basic auth"]).await;
    wait_logged(&["gateway refused", "/system/secrets", "401"]).await;
    assert!(secret_files(&state.path().join("secrets")).is_empty());
    // With the credentials the same deploy is taken: the refusals were about auth alone.
    let r = http(
        "POST",
        &h.url("/system/functions"),
        true,
        deploy_body("authed"),
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(h.engine.get(Kind::Function, "authed").is_some());
    h.stop().await;
}

/// Names that try to leave their place: parent folders, absolute paths, NUL, very long.
fn hostile_names() -> Vec<String> {
    vec![
        "../escape".into(),
        "../../etc/passwd".into(),
        "..".into(),
        "/tmp/absolute".into(),
        "a/b".into(),
        "nul\0byte".into(),
        ".hidden".into(),
        "x".repeat(300),
        "%2e%2e%2fescape".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_in_function_and_secret_names_is_refused_and_stores_nothing() {
    // The state folder inside a folder of its own: an escape would land next to it.
    let outer = tempfile::tempdir().expect("tmp");
    let state = outer.path().join("state");
    std::fs::create_dir(&state).expect("state");
    let h = host(&state).await;
    for name in hostile_names() {
        let r = http(
            "POST",
            &h.url("/system/functions"),
            true,
            deploy_body(&name),
        )
        .await;
        assert_eq!(r.status, 400, "deploy {name:?}");
        assert!(h.engine.get(Kind::Function, &name).is_none());
        for method in ["POST", "PUT", "DELETE"] {
            let body = json!({"name": name, "value": "stolen"})
                .to_string()
                .into_bytes();
            let r = http(method, &h.url("/system/secrets"), true, body).await;
            assert_eq!(r.status, 400, "{method} secret {name:?}");
        }
    }
    // In the URL too, percent-encoded: nothing by that name exists, nothing is recorded.
    for path in [
        "/function/..%2f..%2fetc%2fpasswd",
        "/function/%2fetc%2fpasswd",
        "/async-function/..%2fescape",
        "/system/function/..%2f..%2fetc",
        // Bytes no header may carry (the reply names the function in X-Function-Name): a 404,
        // not a 500 (found by hack/fuzz, seed 20261207, gateway inputs 30698 and 268689).
        "/function/fn-b%00",
        "/async-function/fn-b%00",
        "/function/fn%0d%0aX-Injected:%201",
    ] {
        let method = if path.starts_with("/system") {
            "GET"
        } else {
            "POST"
        };
        let r = http(method, &h.url(path), true, b"{}".to_vec()).await;
        assert_eq!(r.status, 404, "{path}");
    }
    let functions = h
        .engine
        .with_store(|s| s.list(Some(Kind::Function)))
        .expect("list");
    assert!(functions.is_empty(), "{functions:?}");
    let runs = h
        .engine
        .with_store(|s| s.latest_run(microfaas::store::gateway::WORKLOAD))
        .expect("runs");
    assert!(runs.is_none(), "an invocation was recorded: {runs:?}");
    assert!(secret_files(&state.join("secrets")).is_empty());
    let outside: Vec<_> = std::fs::read_dir(outer.path())
        .expect("outer")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("state")]);
    let written: Vec<String> = secret_files(outer.path())
        .into_iter()
        .filter(|f| {
            ["escape", "passwd", "absolute", "hidden", "nul"]
                .iter()
                .any(|n| f.contains(n))
        })
        .collect();
    assert!(written.is_empty(), "{written:?}");
    assert!(!std::path::Path::new("/tmp/absolute").exists());
    wait_logged(&["gateway refused", "/system/secrets", "400"]).await;
    wait_logged(&["gateway refused", "/system/functions", "400"]).await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_gateway_bodies_are_refused_and_store_nothing() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let huge = "x".repeat(3 << 20);
    let deploy = json!({"service": "big", "image": "builtin:float_operations",
                        "annotations": {"pad": huge}});
    let r = http(
        "POST",
        &h.url("/system/functions"),
        true,
        deploy.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 413);
    let secret = json!({"name": "big", "value": huge});
    let r = http(
        "POST",
        &h.url("/system/secrets"),
        true,
        secret.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(h.engine.get(Kind::Function, "big").is_none());
    assert!(secret_files(&state.path().join("secrets")).is_empty());
    wait_logged(&["gateway refused", "/system/functions", "413"]).await;
    wait_logged(&["gateway refused", "/system/secrets", "413"]).await;
    h.stop().await;
}

/// The other side of refusing a second claim: a Warm agent that stops beating (a board cut
/// off without closing its socket) loses its session, so the worker can come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_warm_session_ends_so_its_worker_can_come_back() {
    let state = tempfile::tempdir().expect("tmp");
    let h = host(state.path()).await;
    let mut events = h.endpoint.subscribe();
    let mut gone = Raw::dial(&h).await;
    authenticate(&mut gone, "came-back").await;
    // No heartbeats from here on, and the socket stays open.
    let reason = disconnected(&mut events, "came-back").await;
    assert!(reason.contains("no heartbeat"), "{reason}");
    assert!(gone.closed().await);
    let mut back = Raw::dial(&h).await;
    authenticate(&mut back, "came-back").await;
    h.stop().await;
}
