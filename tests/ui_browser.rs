//! The web view in a real browser: `microfaasctl serve` with a QEMU worker (TCG) and the view
//! on its own loopback listener; headless Chromium through chromedriver (W3C WebDriver) opens
//! the page once and, without a reload, sees the worker's tile go Off → Booting → Ready → Busy
//! → Off while a workload runs; a power action clicked on the page (confirmed in its dialog)
//! powers the worker on and off again. POSTs without the page's header are refused.
//!
//! `MICROFAAS_UI_SCREENSHOT=FILE` also saves a PNG of the page while the last invocation runs
//! (the README's picture).
//!
//! Needs chromium and chromium-driver (hack/install-deps.sh) and the QEMU artefacts
//! (`eval "$(hack/test-artifacts.sh)"`; hack/test does it).

mod support;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::testbed::{Env, ok};
use support::webdriver::Browser;

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
const LIMIT: Duration = Duration::from_secs(240);

struct Serve(Child, std::path::PathBuf);

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SAFETY: signalling the child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        while self.0.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The float_operations input: long enough under TCG that each invocation is seen Busy.
const N: u64 = 500_000;

fn manifests(env: &Env, ui_port: u16) -> String {
    format!(
        "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {{name: lab}}
spec:
  orchestrator: {{listen: 127.0.0.1:{port}}}
  ui: {{listen: 127.0.0.1:{ui_port}}}
  defaults: {{bootTimeout: 60s, powerOnHoldoff: 0s, quarantineAfter: 3}}
  shutdownPolicy: PowerOff
---
apiVersion: microfaas.dev/v1alpha1
kind: PowerMeter
metadata: {{name: model}}
spec:
  model: {{}}
  covers: {{matchLabels: {{pool: t}}}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {{name: vm-0, labels: {{pool: t}}}}
spec:
  power: OnDemand
  lifecycle: {{mode: Warm, idleTimeout: 15s}}
  vm: {{kernel: {kernel}, initrd: {initrd}, memory: 128Mi, machine: pc, accel: tcg}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {{name: flops}}
spec: {{runtime: builtin, handler: float_operations, timeout: 120s}}
",
        port = env.port,
        kernel = env.kernel.display(),
        initrd = env.initrd.display(),
    )
}

const WORKLOAD: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {name: flops}
spec:
  functions:
    - {function: flops, count: 3, inputs: [{n: N}]}
  arrival: {pattern: fixed, rate: 10/m}
  workers: {matchLabels: {pool: t}}
  concurrency: 1
";

/// The tile's phase as the page shows it (`data-phase`), or "" without a tile.
fn tile_phase(b: &Browser, worker: &str) -> String {
    b.script(
        "const t = document.querySelector(`[data-worker=\"${arguments[0]}\"]`); return t ? t.dataset.phase : '';",
        json!([worker]),
    )
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// How many snapshots the page has rendered since it was loaded (a reload starts again at 0).
fn rendered(b: &Browser) -> u64 {
    b.script("return window.microfaasSnapshots || 0;", json!([]))
        .as_u64()
        .unwrap_or(0)
}

fn wait_phase(b: &Browser, serve: &Serve, worker: &str, want: &str) {
    let started = Instant::now();
    while tile_phase(b, worker) != want {
        assert!(
            started.elapsed() < LIMIT,
            "the tile of {worker} never showed {want} (shows {}):\n{}",
            tile_phase(b, worker),
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One raw HTTP/1.1 POST to the view, for the CSRF check: the status code.
fn post_status(port: u16, path: &str, extra: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let body = r#"{"action":"on"}"#;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The ordered, de-duplicated phases `seen` contains `want` as a subsequence.
fn has_in_order(seen: &[String], want: &[&str]) -> bool {
    let mut it = seen.iter();
    want.iter().all(|w| it.any(|s| s == w))
}

#[test]
fn the_rack_view_follows_a_workload_live_and_powers_a_worker_from_the_page() {
    let env = Env::new();
    let ui_port = free_port();
    let m = env.write("cluster.yaml", &manifests(&env, ui_port));
    let log = env.dir.path().join("serve.log");
    let serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(["serve", "-f", &m])
            .env("MICROFAAS_STATE_DIR", &env.state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("serve"),
        log,
    );
    let url = format!("http://127.0.0.1:{ui_port}/");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", ui_port)).is_err() {
        assert!(
            started.elapsed() < LIMIT,
            "the view never listened:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Actions need the page's header; another origin is refused too.
    let power = "/api/workers/vm-0/power";
    assert_eq!(post_status(ui_port, power, ""), 403);
    assert_eq!(
        post_status(
            ui_port,
            power,
            "X-Microfaas-Ui: 1\r\nOrigin: http://evil.example\r\n"
        ),
        403
    );
    assert_eq!(
        post_status(ui_port, "/api/workers/nope/power", "X-Microfaas-Ui: 1\r\n"),
        404
    );

    let b = Browser::start();
    b.goto(&url);
    wait_phase(&b, &serve, "vm-0", "Off");
    let loaded = rendered(&b);

    // The workload arrives through `apply` against the daemon; the page only listens.
    let w = env.write(
        "workload.yaml",
        &WORKLOAD.replace("n: N", &format!("n: {N}")),
    );
    ok(&env.ctl(&["apply", "-f", &m, "-f", &w, "--no-wait"]));
    let mut seen: Vec<String> = vec!["Off".into()];
    let started = Instant::now();
    let mut functions = Vec::new();
    let mut shot = std::env::var_os("MICROFAAS_UI_SCREENSHOT");
    loop {
        // Phase and function of one rendering, read together.
        let tile = b.script(
            "const t = document.querySelector('[data-worker=\"vm-0\"]'); return t ? [t.dataset.phase, t.querySelector('.function').textContent] : ['', ''];",
            json!([]),
        );
        let p = tile[0].as_str().unwrap_or_default().to_string();
        if !p.is_empty() && seen.last() != Some(&p) {
            seen.push(p.clone());
        }
        if p == "Busy" {
            functions.push(tile[1].as_str().unwrap_or_default().to_string());
        }
        let done = env.json(&["get", "workload", "flops", "-o", "json"]);
        let finished = done["status"]["phase"] == "Succeeded";
        // The README's picture: the last invocation running, the others plotted.
        if let Some(out) = shot.take_if(|_| p == "Busy" && done["status"]["succeeded"] == 2) {
            std::fs::write(out, b.screenshot()).expect("screenshot");
        }
        if finished && p == "Off" && seen.iter().any(|s| s == "Busy") {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "phases seen so far: {seen:?}\nworkload: {}\n{}",
            done["status"],
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        has_in_order(&seen, &["Off", "Booting", "Ready", "Busy", "Off"]),
        "phases seen: {seen:?}"
    );
    assert!(
        functions.iter().all(|f| f == "flops") && !functions.is_empty(),
        "{functions:?}"
    );
    assert!(
        rendered(&b) > loaded,
        "the page was reloaded or never updated"
    );
    // The run's progress and plots are drawn from the same feed.
    let card = b.script(
        "const c = document.querySelector('[data-workload=\"flops\"]'); return c ? [c.dataset.phase, c.textContent, c.querySelectorAll('circle').length] : null;",
        json!([]),
    );
    assert_eq!(card[0], "Succeeded", "{card}");
    assert!(
        card[1].as_str().unwrap_or("").contains("3/3 done"),
        "{card}"
    );
    assert_eq!(card[2], 3, "one latency dot per invocation: {card}");

    // Power on from the page: the confirm dialog, then the worker boots and stays on.
    b.click("[data-worker=\"vm-0\"] button[data-action=\"on\"]");
    let question = b.alert_text().expect("a confirm dialog");
    assert!(question.contains("vm-0"), "{question}");
    b.accept_alert();
    wait_phase(&b, &serve, "vm-0", "Ready");
    assert_eq!(env.qemus().len(), 1, "{:?}", env.qemus());
    let st: Value = env.json(&["get", "worker", "vm-0", "-o", "json"]);
    assert_eq!(st["status"]["powerResult"]["ok"], true, "{}", st["status"]);
    // And off again.
    b.click("[data-worker=\"vm-0\"] button[data-action=\"off\"]");
    assert!(b.alert_text().is_some());
    b.accept_alert();
    wait_phase(&b, &serve, "vm-0", "Off");
    let started = Instant::now();
    while !env.qemus().is_empty() {
        assert!(
            started.elapsed() < LIMIT,
            "QEMU still runs: {:?}",
            env.qemus()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = b.script(
        "return Array.from(document.querySelectorAll('#events tr')).map(r => r.textContent).join('\\n');",
        json!([]),
    );
    assert!(
        events.as_str().unwrap_or("").contains("PowerRequestDone"),
        "{events}"
    );
}
