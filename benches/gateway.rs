//! `cargo bench --bench gateway`: requests per second and p50/p99 latency of synchronous
//! `/function/{name}` calls through the gateway, with 16 Warm agents kept powered on loopback
//! (real `microfaas-agent` processes) and a near no-op function (`float_operations`, n = 1),
//! for 1 and 16 concurrent clients, each on one kept-alive connection. Every call is recorded
//! durably (SQLite, synchronous=FULL) before its 200, as in production: first with one
//! transaction and fsync per record (the committer limited to batches of one, as before group
//! commit), then with group commit (whatever is queued shares one transaction).

#[path = "../tests/support/host.rs"]
#[allow(dead_code)]
mod host;

use host::{AgentProcs, Host, HostOptions, faas_cli_deploy, objects};
use microfaas::gateway::client::{Conn, request};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AGENTS: usize = 16;
const CALLS: usize = 20000;

fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

async fn run(h: &Host<AgentProcs>, clients: usize, commit: &str) {
    let per = CALLS / clients;
    let addr = h.gateway.addr.to_string();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&addr, Duration::from_secs(10))
                .await
                .expect("connect");
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let s = Instant::now();
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
                lat.push(s.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let wall = t.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    println!(
        "gateway: {commit:<15} {clients:>2} clients: {} calls in {wall:.2} s = {:.0} req/s; latency p50 {:.3} ms, p99 {:.3} ms",
        all.len(),
        all.len() as f64 / wall,
        pct(&all, 50.0),
        pct(&all, 99.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let yaml = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  defaults: {{powerOnHoldoff: 0s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {{name: lo}}\nspec:\n  replicas: {AGENTS}\n  template:\n    spec: {{power: On, lifecycle: {{mode: Warm}}, vm: {{kernel: /k}}}}\n"
    );
    microfaas::store::Store::open(&state)
        .expect("store")
        .apply(&objects(&yaml), None, false, false)
        .expect("apply");
    let driver = AgentProcs::new(PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent")));
    let h = Host::start(
        &state,
        driver.clone(),
        &HostOptions {
            agent_listen: "127.0.0.1:0".into(),
            token: "bench".into(),
            credentials: None,
        },
    )
    .await;
    while h.endpoint.sessions.connected().len() < AGENTS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = request(
        "POST",
        &h.url("/system/functions"),
        &[],
        faas_cli_deploy("noop", "builtin:float_operations")
            .to_string()
            .into_bytes(),
        Duration::from_secs(10),
    )
    .await
    .expect("deploy");
    assert_eq!(r.status, 202);
    for (commit, batch) in [
        ("fsync-per-call", 1),
        ("group-commit", microfaas::store::committer::UNLIMITED),
    ] {
        h.engine.recorder.set_max_batch(batch);
        for clients in [1, 16] {
            run(&h, clients, commit).await;
        }
    }
    h.stop().await;
    driver.kill_all();
}
