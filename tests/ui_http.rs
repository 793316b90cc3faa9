//! The web view's HTTP side against an in-process host whose workers are real
//! `microfaas-agent` processes on loopback: served on the gateway under `/ui/` behind its basic
//! auth, snapshots streamed over SSE as the engine changes things, and the page's actions
//! (power on, Maintenance, rerun) carried out by the engine; requests without the page's
//! header refused. The browser side, with QEMU workers, is tests/ui_browser.rs.

mod support;

use microfaas::gateway::Credentials;
use microfaas::store::Store;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use support::host::{AUTH, AgentProcs, Host, HostOptions, http, objects};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(60);

/// An open `GET /ui/api/events` stream.
struct Events {
    conn: tokio::net::TcpStream,
    buf: String,
}

impl Events {
    async fn open(addr: std::net::SocketAddr) -> Events {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /ui/api/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {AUTH}\r\nAccept: text/event-stream\r\n\r\n"
        );
        conn.write_all(req.as_bytes()).await.expect("write");
        let mut ev = Events {
            conn,
            buf: String::new(),
        };
        ev.fill().await;
        assert!(
            ev.buf.starts_with("HTTP/1.1 200")
                && ev
                    .buf
                    .to_ascii_lowercase()
                    .contains("content-type: text/event-stream"),
            "{}",
            ev.buf
        );
        ev
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = tokio::time::timeout(T, self.conn.read(&mut chunk))
            .await
            .expect("no event within the limit")
            .expect("read");
        assert!(n > 0, "the event stream ended");
        self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }

    /// The next snapshot on the stream.
    async fn next(&mut self) -> Value {
        loop {
            if let Some(i) = self.buf.find("data: ")
                && let Some(j) = self.buf[i..].find("\n\n")
            {
                let data = self.buf[i + 6..i + j].to_string();
                self.buf.drain(..i + j + 2);
                return serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            }
            self.fill().await;
        }
    }

    /// Reads snapshots until `ok` holds for one, returning it.
    async fn until(&mut self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let started = std::time::Instant::now();
        loop {
            let s = self.next().await;
            if std::env::var_os("UI_DEBUG").is_some() {
                eprintln!("{what}: {} {}", s["workers"], s["workloads"][0]["phase"]);
            }
            if ok(&s) {
                return s;
            }
            assert!(started.elapsed() < T, "{what}: last snapshot {s}");
        }
    }
}

fn worker<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["name"] == name))
        .unwrap_or(&Value::Null)
}

async fn post(h: &Host<AgentProcs>, path: &str, body: Value, page: bool) -> u16 {
    let mut headers = vec![
        ("content-type", "application/json".to_string()),
        ("authorization", AUTH.to_string()),
    ];
    if page {
        headers.push(("x-microfaas-ui", "1".to_string()));
    }
    microfaas::gateway::client::request(
        "POST",
        &h.url(path),
        &headers,
        body.to_string().into_bytes(),
        T,
    )
    .await
    .expect("post")
    .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_streams_changes_and_carries_out_the_pages_actions() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().to_path_buf();
    let yaml = "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {bootTimeout: 20s, powerOnHoldoff: 0s, jobTimeout: 30s}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: lo-0, labels: {pool: lo}}\nspec: {power: OnDemand, lifecycle: {mode: Warm}, vm: {kernel: /k}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: builtin, handler: float_operations}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {name: once}\nspec:\n  functions: [{function: f, count: 2, inputs: [{n: 1000}]}]\n  workers: {matchLabels: {pool: lo}}\n";
    Store::open(&state)
        .expect("store")
        .apply(&objects(yaml), None, false, false)
        .expect("apply");
    let driver = AgentProcs::new(PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent")));
    let opts = HostOptions {
        agent_listen: "127.0.0.1:0".into(),
        token: "ui-test-token".into(),
        credentials: Some(Credentials::new("admin", "pw")),
    };
    let h = Host::start_full(&state, driver.clone(), &opts, |_, _| {}, true).await;

    // Behind the gateway's auth; the bare prefix redirects to the page.
    assert_eq!(http("GET", &h.url("/ui/"), false, vec![]).await.status, 401);
    let page = http("GET", &h.url("/ui/"), true, vec![]).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("ui.js"));
    let js = http("GET", &h.url("/ui/ui.js"), true, vec![]).await;
    assert!(String::from_utf8_lossy(&js.body).contains("EventSource"));
    let bare = http("GET", &h.url("/ui"), true, vec![]).await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), Some("/ui/"));

    // The workload runs once: the stream shows its run finishing and the worker back off.
    let mut ev = Events::open(h.gateway.addr).await;
    let done = ev
        .until("the run to finish and lo-0 to be off", |s| {
            s["workloads"][0]["phase"] == "Succeeded" && worker(s, "lo-0")["phase"] == "Off"
        })
        .await;
    assert_eq!(done["workloads"][0]["succeeded"], 2, "{done}");
    assert_eq!(
        done["workloads"][0]["attempts"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        done["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["object"] == "worker/lo-0")),
        "{}",
        done["events"]
    );

    // Refused: no page header; unknown worker; bad action.
    let power = "/ui/api/workers/lo-0/power";
    assert_eq!(post(&h, power, json!({"action": "on"}), false).await, 403);
    assert_eq!(
        post(
            &h,
            "/ui/api/workers/nope/power",
            json!({"action": "on"}),
            true
        )
        .await,
        404
    );
    assert_eq!(
        post(&h, power, json!({"action": "sideways"}), true).await,
        400
    );

    // Power on: an OnDemand worker nobody wants is booted and kept on by the request.
    assert_eq!(post(&h, power, json!({"action": "on"}), true).await, 202);
    let on = ev
        .until("lo-0 Ready through the power request", |s| {
            let w = worker(s, "lo-0");
            w["phase"] == "Ready" && w["powerResult"]["ok"] == true
        })
        .await;
    assert_eq!(worker(&on, "lo-0")["power"]["state"], "On", "{on}");

    // Maintenance powers it off and keeps it unused (out of service: not Off but Failed).
    let health = "/ui/api/workers/lo-0/health";
    assert_eq!(
        post(&h, health, json!({"health": "Maintenance"}), true).await,
        200
    );
    let off = ev
        .until("lo-0 off in Maintenance", |s| {
            let w = worker(s, "lo-0");
            w["health"] == "Maintenance" && w["power"]["state"] == "Off"
        })
        .await;
    assert_ne!(worker(&off, "lo-0")["phase"], "Ready", "{off}");
    assert_eq!(post(&h, health, json!({"health": "Good"}), true).await, 200);

    // Rerun: a second run of the same generation.
    assert_eq!(
        post(&h, "/ui/api/workloads/once/rerun", json!({}), true).await,
        202
    );
    ev.until("run 2 finished", |s| {
        s["workloads"][0]["run"] == 2 && s["workloads"][0]["phase"] == "Succeeded"
    })
    .await;
    drop(ev);
    h.stop().await;
    driver.kill_all();
}
