//! `cargo bench --bench dispatch`: the orchestrator's own cost per invocation. Warm agents run
//! as plain processes on loopback; 10,000 invocations of a near no-op function
//! (`float_operations` with n = 1) go through the real endpoint, scheduler and recorder, for 1,
//! 4 and 16 agents. Overhead = round trip measured by the orchestrator − exec time measured by
//! the agent; throughput includes recording every attempt durably (SQLite, synchronous=FULL).

use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::Kind;
use microfaas::orchestrator::{Endpoint, dispatch};
use microfaas::store::{DesiredObject, Store};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const INVOCATIONS: i64 = 10_000;

fn obj(kind: Kind, name: &str, spec: serde_json::Value) -> DesiredObject {
    DesiredObject {
        kind,
        name: name.into(),
        labels: [("pool".to_string(), "bench".to_string())].into(),
        annotations: Default::default(),
        spec,
        owner: None,
        source: None,
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("store");
    let mut objects = vec![
        obj(
            Kind::Cluster,
            "c",
            json!({"defaults": {"powerOnHoldoff": "0s"}}),
        ),
        obj(
            Kind::Function,
            "f",
            json!({"runtime": "builtin", "handler": "float_operations"}),
        ),
        obj(
            Kind::Workload,
            "w",
            json!({"functions": [{"function": "f", "count": INVOCATIONS, "inputs": [{"n": 1}]}],
                   "arrival": {"pattern": "fixed", "rate": "1000000/s"}, "concurrency": n,
                   "workers": {"matchLabels": {"pool": "bench"}}}),
        ),
    ];
    for i in 0..n {
        objects.push(obj(
            Kind::Worker,
            &format!("w-{i}"),
            json!({"power": "On", "lifecycle": {"mode": "Warm"}, "vm": {"kernel": "/k"}}),
        ));
    }
    store.apply(&objects, None, false, false).expect("apply");
    let endpoint = Endpoint::bind("127.0.0.1:0", b"bench-token".to_vec())
        .await
        .expect("bind");
    let agents = Agents(
        (0..n)
            .map(|i| {
                Command::new(env!("CARGO_BIN_EXE_microfaas-agent"))
                    .args([
                        "--orchestrator",
                        &endpoint.addr.to_string(),
                        "--name",
                        &format!("w-{i}"),
                    ])
                    .args([
                        "--token",
                        "bench-token",
                        "--lifecycle",
                        "warm",
                        "--no-poweroff",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("agent")
            })
            .collect(),
    );
    while endpoint.sessions.connected().len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let driver = Arc::new(FakeDriver::default());
    let engine = Engine::new(
        store,
        driver,
        endpoint.sessions.clone(),
        Config {
            state_dir: dir.path().to_path_buf(),
            orchestrator_port: endpoint.addr.port(),
            token: "bench-token".into(),
            default_initrd: None,
            concurrency: 4,
            resync: Duration::from_secs(3600),
        },
    );
    let (stop, rx) = watch::channel(false);
    let runner = tokio::spawn(engine.clone().run(rx, Some(endpoint.subscribe())));
    let events = endpoint.events_sender();
    let e2 = engine.clone();
    engine.set_starter(Arc::new(move |name| {
        dispatch::spawn(e2.clone(), events.clone(), name)
    }));
    let t = Instant::now();
    engine.enqueue_all();
    loop {
        let run = engine.with_store(|s| s.latest_run("w")).ok().flatten();
        if run.is_some_and(|r| r.phase != microfaas::store::RunPhase::Running) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = t.elapsed();
    let attempts = engine.with_store(|s| s.attempts("w", 1)).expect("attempts");
    let mut overhead: Vec<f64> = attempts
        .iter()
        .filter_map(|a| Some((a.rtt_us? - a.exec_us?) as f64 / 1000.0))
        .collect();
    overhead.sort_by(f64::total_cmp);
    let ok = attempts
        .iter()
        .filter(|a| a.status == microfaas::store::AttemptStatus::Succeeded)
        .count();
    println!(
        "dispatch: {n:>2} agents: {ok}/{INVOCATIONS} succeeded in {:.2} s = {:.0} invocations/s; overhead (rtt - exec) p50 {:.3} ms, p99 {:.3} ms",
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        pct(&overhead, 50.0),
        pct(&overhead, 99.0)
    );
    let _ = stop.send(true);
    let _ = runner.await;
    drop(agents);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    for n in [1, 4, 16] {
        run(n).await;
    }
}
