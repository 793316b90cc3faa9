//! An in-process microfaas host for gateway tests and benches: store + engine + agent
//! endpoint + gateway on loopback ephemeral ports, and a VM driver whose "VMs" are
//! `microfaas-agent` processes dialling the endpoint (booting in milliseconds, exiting on
//! poweroff), so power-on, cold starts and power-off happen for real without QEMU.

use microfaas::engine::vm::{Launched, StopHow, VmConfig, VmDriver};
use microfaas::engine::{Config, Engine};
use microfaas::gateway::client::{self, Response};
use microfaas::gateway::{self, Credentials, Running};
use microfaas::manifest::{self, validate::Options};
use microfaas::orchestrator::{Endpoint, Sessions, dispatch};
use microfaas::store::{DesiredObject, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{broadcast, watch};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Agent processes as VMs. Every child is killed (by its own PID) when the driver drops.
pub struct AgentProcs {
    agent: PathBuf,
    children: Mutex<HashMap<String, Child>>,
    exits: broadcast::Sender<String>,
    pub launches: Mutex<Vec<String>>,
    /// How long an agent waits before dialling (a slow boot).
    delay: Mutex<Option<Duration>>,
}

impl AgentProcs {
    pub fn new(agent: PathBuf) -> Arc<Self> {
        let d = Arc::new(AgentProcs {
            agent,
            children: Mutex::new(HashMap::new()),
            exits: broadcast::channel(1024).0,
            launches: Mutex::new(Vec::new()),
            delay: Mutex::new(None),
        });
        // Reap exited agents and report them, as QEMU exits are reported.
        let weak = Arc::downgrade(&d);
        std::thread::spawn(move || {
            while let Some(d) = weak.upgrade() {
                let gone: Vec<String> = lock(&d.children)
                    .iter_mut()
                    .filter_map(|(n, c)| (!matches!(c.try_wait(), Ok(None))).then(|| n.clone()))
                    .collect();
                for n in gone {
                    lock(&d.children).remove(&n);
                    let _ = d.exits.send(n);
                }
                drop(d);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        d
    }

    /// Agents started from now on wait `d` before dialling.
    pub fn booting_after(self: Arc<Self>, d: Duration) -> Arc<Self> {
        *lock(&self.delay) = Some(d);
        self
    }

    fn arg<'a>(cmdline: &'a str, key: &str) -> &'a str {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("")
    }
}

impl AgentProcs {
    /// Kills every agent this driver started (by its own PID). The engine's tasks may keep the
    /// driver alive until the process ends, so tests call this rather than rely on `Drop`.
    /// Whether `name`'s agent process still runs (the engine's view, through the driver).
    pub fn is_running_now(&self, name: &str) -> bool {
        self.is_running(name)
    }

    pub fn kill_all(&self) {
        for (_, mut c) in lock(&self.children).drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for AgentProcs {
    fn drop(&mut self) {
        self.kill_all();
    }
}

impl VmDriver for AgentProcs {
    async fn launch(&self, spec: &VmConfig) -> Result<Launched, String> {
        let delay = *lock(&self.delay);
        // A slow boot: a shell that sleeps, then becomes the agent (same PID).
        let mut cmd = match delay {
            Some(d) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("sleep {}; exec \"$0\" \"$@\"", d.as_secs())])
                    .arg(&self.agent);
                c
            }
            None => Command::new(&self.agent),
        };
        let child = cmd
            .args([
                "--orchestrator",
                &format!(
                    "127.0.0.1:{}",
                    Self::arg(&spec.cmdline, "microfaas.orchestrator=")
                        .rsplit(':')
                        .next()
                        .unwrap_or("")
                ),
                "--name",
                &spec.name,
                "--token",
                Self::arg(&spec.cmdline, "microfaas.token="),
                "--lifecycle",
                Self::arg(&spec.cmdline, "microfaas.lifecycle="),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("agent: {e}"))?;
        lock(&self.launches).push(spec.name.clone());
        lock(&self.children).insert(spec.name.clone(), child);
        Ok(Launched::Cold)
    }

    async fn adopt(&self, spec: &VmConfig) -> Result<bool, String> {
        Ok(self.is_running(&spec.name))
    }

    fn is_running(&self, name: &str) -> bool {
        lock(&self.children)
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    async fn stop(&self, name: &str, how: StopHow, wait: Duration) -> Result<bool, String> {
        let deadline = std::time::Instant::now() + wait;
        if how == StopHow::Kill
            && let Some(c) = lock(&self.children).get_mut(name)
        {
            let _ = c.kill();
        }
        // An agent told to power off exits by itself; anything else is killed.
        while self.is_running(name) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(mut c) = lock(&self.children).remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(true)
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }
}

/// Engine, endpoint and gateway of one "daemon".
pub struct Host<D: VmDriver> {
    pub engine: Arc<Engine<D, Sessions>>,
    pub endpoint: Endpoint,
    pub gateway: Running<D>,
    stop: watch::Sender<bool>,
    runner: tokio::task::JoinHandle<()>,
}

pub struct HostOptions {
    /// `127.0.0.1:0` for a fresh port; the same address to restart where agents redial.
    pub agent_listen: String,
    pub token: String,
    pub credentials: Option<Credentials>,
}

impl<D: VmDriver> Host<D> {
    pub async fn start(state: &Path, driver: Arc<D>, o: &HostOptions) -> Host<D> {
        Self::start_with(state, driver, o, |_, _| {}).await
    }

    /// Like `start`, with `setup` run on the engine and the bound agent endpoint before the
    /// engine runs (simulated power buttons, board timings).
    pub async fn start_with(
        state: &Path,
        driver: Arc<D>,
        o: &HostOptions,
        setup: impl FnOnce(&Arc<Engine<D, Sessions>>, &Endpoint),
    ) -> Host<D> {
        Self::start_full(state, driver, o, setup, false).await
    }

    /// Like `start_with`; with `ui` the web view is served on the gateway under `/ui/`.
    pub async fn start_full(
        state: &Path,
        driver: Arc<D>,
        o: &HostOptions,
        setup: impl FnOnce(&Arc<Engine<D, Sessions>>, &Endpoint),
        ui: bool,
    ) -> Host<D> {
        let store = Store::open(state).expect("store");
        // A previous host's listener on the same address goes when its aborted task is dropped,
        // which the runtime does shortly after.
        let mut tries = 0;
        let endpoint = loop {
            match Endpoint::bind(&o.agent_listen, o.token.clone().into_bytes()).await {
                Ok(e) => break e,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("agent endpoint {}: {e}", o.agent_listen),
            }
        };
        let engine = Engine::new(
            store,
            driver,
            endpoint.sessions.clone(),
            Config {
                state_dir: state.to_path_buf(),
                orchestrator_port: endpoint.addr.port(),
                token: o.token.clone(),
                default_initrd: None,
                concurrency: 8,
                resync: Duration::from_secs(2),
            },
        );
        let events = endpoint.events_sender();
        let (e2, ev2) = (engine.clone(), events.clone());
        engine.set_starter(Arc::new(move |name| {
            dispatch::spawn(e2.clone(), ev2.clone(), name)
        }));
        setup(&engine, &endpoint);
        let (stop, rx) = watch::channel(false);
        let runner = tokio::spawn(engine.clone().run(rx, Some(endpoint.subscribe())));
        engine.enqueue_all();
        let extra = ui.then(|| {
            let view = microfaas::ui::Ui::start(engine.clone(), state, stop.subscribe())
                .expect("web view");
            microfaas::ui::router(view, "/ui")
        });
        let gateway = gateway::start(
            engine.clone(),
            events,
            gateway::Options {
                listen: "127.0.0.1:0".into(),
                credentials: o.credentials.clone(),
                secrets_dir: state.join("secrets"),
                extra,
            },
        )
        .await
        .expect("gateway");
        Host {
            engine,
            endpoint,
            gateway,
            stop,
            runner,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addr)
    }

    /// Stops the gateway, then the engine, then the endpoint (agents lose their sessions).
    pub async fn stop(self) {
        self.gateway.stop().await;
        let _ = self.stop.send(true);
        let _ = self.runner.await;
        drop(self.endpoint);
    }
}

// ---------------------------------------------------------------- HTTP helpers

pub const AUTH: &str = "Basic YWRtaW46cHc="; // admin:pw

/// Options for a host on a fresh loopback port with `token` and no gateway credentials.
pub fn loopback(token: &str) -> HostOptions {
    HostOptions {
        agent_listen: "127.0.0.1:0".into(),
        token: token.into(),
        credentials: None,
    }
}

/// Stores, as `apply` would, a Cluster, one worker `vm-0` labelled `pool: p` with spec
/// `worker`, a Function `fl` with spec `function`, and a Workload `w` on `pool: p` whose other
/// spec lines (indented two spaces) are `workload`.
pub fn declare_one_worker(state: &Path, worker: &str, function: &str, workload: &str) {
    let yaml = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  defaults: {{bootTimeout: 20s, powerOnHoldoff: 0s, jobTimeout: 30s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: vm-0, labels: {{pool: p}}}}\nspec: {worker}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: fl}}\nspec: {function}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  workers: {{matchLabels: {{pool: p}}}}\n{workload}"
    );
    microfaas::store::Store::open(state)
        .expect("store")
        .apply(&objects(&yaml), None, false, false)
        .expect("apply");
}

pub fn objects(yaml: &str) -> Vec<DesiredObject> {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, yaml).expect("write");
    let loaded = manifest::load_and_validate(&[f], Options { fs_checks: false });
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    // Stored exactly as `apply` stores them.
    loaded
        .resources
        .iter()
        .map(microfaas::daemon::declare::desired)
        .collect()
}

pub async fn http(method: &str, url: &str, auth: bool, body: Vec<u8>) -> Response {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if auth {
        headers.push(("authorization", AUTH.to_string()));
    }
    client::request(method, url, &headers, body, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub fn body_text(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

pub fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", body_text(r)))
}

/// Polls `GET /system/function/NAME` until `ok` holds for it.
pub async fn wait_function<D: VmDriver>(
    h: &Host<D>,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) {
    let start = Instant::now();
    loop {
        let r = http(
            "GET",
            &h.url(&format!("/system/function/{name}")),
            true,
            vec![],
        )
        .await;
        let v = json_of(&r);
        if ok(&v) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{what}: still {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `faas-cli deploy` sends for a stack.yml function.
pub fn faas_cli_deploy(service: &str, image: &str) -> Value {
    json!({
        "service": service, "image": image, "namespace": "", "envProcess": "",
        "envVars": {"MODE": "test"}, "constraints": [], "secrets": [],
        "labels": {"com.openfaas.scale.zero": "true"}, "annotations": {"topic": "hashing"},
        "limits": {"memory": "64Mi"}, "requests": null, "readOnlyRootFilesystem": false
    })
}

/// An authenticated call with a JSON body: `target` is a path (POST) or `METHOD /path`.
pub async fn call<D: VmDriver>(h: &Host<D>, target: &str, body: &Value) -> Response {
    let (method, path) = target.split_once(' ').unwrap_or(("POST", target));
    http(method, &h.url(path), true, body.to_string().into_bytes()).await
}

/// `POST /system/functions` of what `faas-cli deploy` sends, which must be accepted.
pub async fn deploy<D: VmDriver>(h: &Host<D>, service: &str, image: &str) {
    let r = call(h, "/system/functions", &faas_cli_deploy(service, image)).await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
}

/// `POST /system/scale-function/NAME`, which must be accepted.
pub async fn scale<D: VmDriver>(h: &Host<D>, function: &str, replicas: u32) {
    let body = json!({"serviceName": function, "replicas": replicas});
    let r = call(h, &format!("/system/scale-function/{function}"), &body).await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
}

/// `DELETE /system/functions`, accepted; the function is gone from the API afterwards.
pub async fn delete_function<D: VmDriver>(h: &Host<D>, name: &str) {
    let r = call(
        h,
        "DELETE /system/functions",
        &json!({"functionName": name}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let url = h.url(&format!("/system/function/{name}"));
    assert_eq!(http("GET", &url, true, vec![]).await.status, 404);
}
