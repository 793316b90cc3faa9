//! A 200 from `/function/NAME` means the call's record survives kill -9, with group commit in
//! the way. A child process (this test binary again) hosts store, engine, agent endpoint and
//! gateway; 16 Warm `microfaas-agent` processes serve it on loopback; 16 clients make N calls
//! between them, and the child is SIGKILLed the moment the Nth 200 arrives — no shutdown, no
//! flush. The store then holds exactly the N acknowledged calls, each with its worker.

mod support;

use microfaas::gateway::client::Conn;
use microfaas::store::{AttemptStatus, Store};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::host::{Host, HostOptions, deploy, objects};

/// Set in the child's environment: the state directory it hosts.
const CHILD_STATE: &str = "MICROFAAS_CRASH_CHILD_STATE";
const TOKEN: &str = "crash-test-token";
const AGENTS: usize = 16;
const CLIENTS: usize = 16;
const CALLS: usize = 2000;

/// Processes this test started, killed (by their own PID) however the test ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The child: a gateway host over `state` whose workers are the parent's agents. Prints its
/// addresses, then `ready` once every agent is connected and the function is deployed, and
/// serves until it is killed.
fn child(state: &Path) {
    let rt = runtime();
    rt.block_on(async {
        let yaml = format!(
            "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  defaults: {{powerOnHoldoff: 0s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {{name: w}}\nspec:\n  replicas: {AGENTS}\n  template:\n    spec: {{power: On, lifecycle: {{mode: Warm}}, vm: {{kernel: /k}}}}\n"
        );
        Store::open(state)
            .expect("store")
            .apply(&objects(&yaml), None, false, false)
            .expect("apply");
        let driver = Arc::new(microfaas::engine::vm::FakeDriver::default());
        let h = Host::start(
            state,
            driver,
            &HostOptions {
                agent_listen: "127.0.0.1:0".into(),
                token: TOKEN.into(),
                credentials: None,
            },
        )
        .await;
        println!(
            "CRASHCHILD agent={} gateway={}",
            h.endpoint.addr, h.gateway.addr
        );
        while h.endpoint.sessions.connected().len() < AGENTS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        deploy(&h, "noop", "builtin:float_operations").await;
        println!("CRASHCHILD ready");
        std::future::pending::<()>().await;
    });
}

/// Reads the child's `CRASHCHILD` lines into a channel.
fn child_lines(c: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = c.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(l) = line.strip_prefix("CRASHCHILD ") {
                let _ = tx.send(l.to_string());
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the child host did not report in time")
}

#[test]
fn acknowledged_calls_survive_kill_9() {
    if let Some(state) = std::env::var_os(CHILD_STATE) {
        child(Path::new(&state));
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let mut procs = Procs(Vec::new());
    let mut host = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "acknowledged_calls_survive_kill_9",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_STATE, &state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child host");
    let pid = host.id() as libc::pid_t;
    let lines = child_lines(&mut host);
    procs.0.push(host);
    let addrs = next_line(&lines);
    let field = |k: &str| {
        addrs
            .split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {addrs:?}"))
            .to_string()
    };
    let (agent_addr, gateway) = (field("agent="), field("gateway="));
    for i in 0..AGENTS {
        let agent = Command::new(env!("CARGO_BIN_EXE_microfaas-agent"))
            .args(["--orchestrator", &agent_addr, "--name", &format!("w-{i}")])
            .args(["--token", TOKEN, "--lifecycle", "warm", "--no-poweroff"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent");
        procs.0.push(agent);
    }
    assert_eq!(next_line(&lines), "ready");

    // N calls in all over CLIENTS connections; the child dies the instant the Nth 200 lands.
    let issued = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (issued, acked, gateway) = (issued.clone(), acked.clone(), gateway.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(&gateway, Duration::from_secs(10))
                    .await
                    .expect("connect");
                while issued.fetch_add(1, Ordering::SeqCst) < CALLS {
                    let r = c
                        .send(
                            "POST",
                            "/function/noop",
                            &[],
                            br#"{"n": 1}"#.to_vec(),
                            Duration::from_secs(30),
                        )
                        .await
                        .expect("call");
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let id = r.header("x-call-id").expect("call id").to_string();
                    let worker = r.header("x-microfaas-worker").expect("worker").to_string();
                    let mut a = acked.lock().unwrap_or_else(|p| p.into_inner());
                    a.push((id, worker));
                    if a.len() == CALLS {
                        // SAFETY: a signal to the child this test started and has not reaped.
                        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                        assert_eq!(rc, 0, "kill -9 {pid}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
    });
    let status = procs.0[0].wait().expect("wait");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the host was not killed"
    );
    drop(procs);

    let acked: BTreeSet<(String, String)> = acked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect();
    assert_eq!(acked.len(), CALLS, "call ids are not unique");
    let store = Store::open(&state).expect("reopen");
    let run = store
        .latest_run("gateway")
        .expect("run")
        .expect("the gateway's run");
    let attempts = store.attempts("gateway", run.run).expect("attempts");
    assert!(
        attempts
            .iter()
            .all(|a| a.status == AttemptStatus::Succeeded),
        "a recorded attempt failed"
    );
    let recorded: BTreeSet<(String, String)> = attempts
        .into_iter()
        .map(|a| (a.invocation_id, a.worker.unwrap_or_default()))
        .collect();
    let missing: Vec<_> = acked.difference(&recorded).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged calls are not in the store after kill -9, e.g. {missing:?}",
        acked.difference(&recorded).count()
    );
    assert_eq!(
        recorded, acked,
        "the store holds calls nobody was answered for"
    );
}
