//! `cargo bench --bench scale_out`: 1,000 VM workers with `power: On` on the in-memory fake
//! driver, spread over 4 orchestrators (`orchestrators: [o-K]`, K = i mod 4), each an engine
//! with its own etcd connection, lease keeper, claims and agent endpoint, all on one 3-member
//! etcd on loopback started for the run. Each worker's agent is the real agent code
//! (`agent::client`, Warm) on a thread of this process, dialling its orchestrator's endpoint
//! on loopback (a thousand processes would not fit a two-core machine beside etcd).
//! Measured: apply -> every worker Ready, the writes (etcd revisions) that took and their
//! rate, how many each orchestrator holds, the writes of 10 s of steady state (lease
//! renewals are not writes; claim rounds only read), then a workload of `INVOCATIONS` calls
//! run by the orchestrator that claims it on the 250 workers it holds: its duration and the
//! store's writes (revisions, one per transaction) from the run's start to its end, by all
//! four orchestrators. The agents' log lines go to a file (its path is printed).

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use microfaas::daemon::lease::Keeper;
use microfaas::engine::ownership::Ownership;
use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::Kind;
use microfaas::orchestrator::{Endpoint, dispatch};
use microfaas::store::{DesiredObject, RunPhase, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const N: usize = 1000;
const ORCHESTRATORS: usize = 4;
const INVOCATIONS: u64 = 2000;
const TOKEN: &str = "bench-token";

/// Sends this process's stderr (where the agents log) to `path`; panics still show on stdout.
fn agent_logs_to(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(path).expect("agent log");
    // SAFETY: dup2 onto fd 2 of descriptors this process owns; `f` stays open until then.
    unsafe {
        libc::dup2(f.as_raw_fd(), 2);
    }
    std::panic::set_hook(Box::new(|info| println!("{info}")));
}

/// A Warm agent for `worker` on its own thread, dialling `endpoint` for as long as the
/// process lives (again after every disconnect).
fn agent(worker: String, endpoint: std::net::SocketAddr) {
    let cfg = microfaas::agent::Config {
        worker,
        orchestrator: endpoint.to_string(),
        token: TOKEN.as_bytes().to_vec(),
        lifecycle: microfaas::protocol::Lifecycle::Warm,
        watchdog: None,
        failsafe: Default::default(),
        heartbeat: microfaas::agent::DEFAULT_HEARTBEAT,
        no_poweroff: true,
    };
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let watchdog = microfaas::agent::watchdog::Watchdog::new();
            microfaas::agent::client::run(&cfg, &watchdog);
        })
        .expect("agent thread");
}

fn object(kind: Kind, name: &str, spec: serde_json::Value) -> DesiredObject {
    DesiredObject {
        kind,
        name: name.into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec,
        owner: None,
        source: None,
    }
}

fn ready(store: &Store) -> usize {
    store
        .list(Some(Kind::Worker))
        .expect("list")
        .iter()
        .filter(|o| o.status["phase"] == "Ready" && o.status["observedGeneration"] == o.generation)
        .count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = etcd::EtcdCluster::start(3);
    let location = cluster.location("scale");
    let mut store = Store::open_etcd(&location).expect("etcd store");
    let mut objects = vec![object(
        Kind::Cluster,
        "c",
        serde_json::json!({"defaults": {"powerOnHoldoff": "0s"}}),
    )];
    for i in 0..N {
        objects.push(object(
            Kind::Worker,
            &format!("vm-{i}"),
            serde_json::json!({"power": "On", "lifecycle": {"mode": "Warm"}, "vm": {"kernel": "/k"},
                               "orchestrators": [format!("o-{}", i % ORCHESTRATORS)]}),
        ));
    }
    let t = Instant::now();
    store.apply(&objects, None, false, false).expect("apply");
    let stored = t.elapsed();
    let dir = tempfile::tempdir().expect("tmp");
    let log = std::env::temp_dir().join("microfaas-scale-out-agents.log");
    agent_logs_to(&log);
    let rev0 = cluster.revision();
    let t = Instant::now();
    let mut running = Vec::new();
    for k in 0..ORCHESTRATORS {
        let endpoint = Endpoint::bind("127.0.0.1:0", TOKEN.as_bytes().to_vec())
            .await
            .expect("endpoint");
        for i in (k..N).step_by(ORCHESTRATORS) {
            agent(format!("vm-{i}"), endpoint.addr);
        }
        let driver = Arc::new(FakeDriver::default());
        let engine = Engine::new(
            Store::open_etcd(&location).expect("etcd store"),
            driver,
            endpoint.sessions.clone(),
            Config {
                state_dir: dir.path().join(format!("o-{k}")),
                orchestrator_port: endpoint.addr.port(),
                token: TOKEN.into(),
                default_initrd: None,
                concurrency: 8,
                resync: Duration::from_secs(3600),
            },
        );
        let ttl = Duration::from_secs(10);
        let own = Arc::new(Ownership::new(&format!("o-{k}"), ttl));
        engine.set_ownership(own.clone());
        let keeper =
            Keeper::start(&location, own.clone(), engine.queue.clone(), ttl).expect("keeper");
        let (stop, rx) = watch::channel(false);
        let runner = tokio::spawn(engine.clone().run(rx, Some(endpoint.subscribe())));
        let events = endpoint.events_sender();
        let e2 = engine.clone();
        engine.set_starter(Arc::new(move |name| {
            dispatch::spawn(e2.clone(), events.clone(), name)
        }));
        running.push((engine, own, keeper, stop, runner, endpoint));
    }
    loop {
        let n = tokio::task::block_in_place(|| ready(&store));
        if n == N {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converge = t.elapsed();
    let writes = cluster.revision() - rev0;
    let held: Vec<usize> = running
        .iter()
        .map(|(_, own, ..)| {
            own.owned()
                .iter()
                .filter(|(kind, _)| *kind == Kind::Worker)
                .count()
        })
        .collect();
    let rev1 = cluster.revision();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = cluster.revision() - rev1;

    // A workload: the orchestrator that claims it runs it on the workers it holds.
    let workload = [
        object(
            Kind::Function,
            "f",
            serde_json::json!({"runtime": "builtin", "handler": "float_operations"}),
        ),
        object(
            Kind::Workload,
            "w",
            serde_json::json!({"functions": [{"function": "f", "count": INVOCATIONS, "inputs": [{"n": 1}]}],
                               "arrival": {"pattern": "fixed", "rate": "1000000/s"},
                               "concurrency": N / ORCHESTRATORS}),
        ),
    ];
    tokio::task::block_in_place(|| store.apply(&workload, None, false, false)).expect("apply");
    let run = |store: &Store| store.latest_run("w").ok().flatten();
    let (rev_start, started) = loop {
        if tokio::task::block_in_place(|| run(&store)).is_some() {
            break (cluster.revision(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let finished = loop {
        let r = tokio::task::block_in_place(|| run(&store));
        if r.as_ref().is_some_and(|r| r.phase != RunPhase::Running) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run_secs = started.elapsed().as_secs_f64();
    let run_writes = cluster.revision() - rev_start;
    let holder = running
        .iter()
        .find(|(_, own, ..)| own.holds(Kind::Workload, "w"))
        .map_or("nobody".to_string(), |(_, own, ..)| own.name.clone());
    let attempts = tokio::task::block_in_place(|| store.attempts("w", 1)).expect("attempts");
    let ok = attempts
        .iter()
        .filter(|a| a.status == microfaas::store::AttemptStatus::Succeeded)
        .count();
    let workers: std::collections::BTreeSet<_> =
        attempts.iter().filter_map(|a| a.worker.clone()).collect();
    for (_, _, keeper, stop, runner, _) in running {
        let _ = stop.send(true);
        let _ = runner.await;
        tokio::task::block_in_place(|| keeper.stop());
    }
    println!(
        "scale-out: {N} workers, {ORCHESTRATORS} orchestrators on one 3-member etcd: store {:.3} s; apply -> all Ready {:.3} s, {writes} writes, {:.0} writes/s; held {held:?}; steady state {steady} writes in 10 s",
        stored.as_secs_f64(),
        converge.as_secs_f64(),
        writes as f64 / converge.as_secs_f64(),
    );
    println!(
        "scale-out workload: {INVOCATIONS} invocations run by {holder} on {} workers, {ok} succeeded, run {:?}, {run_secs:.3} s ({:.0} invocations/s); store writes during the run {run_writes} ({:.0} writes/s, {:.2} per invocation)",
        workers.len(),
        finished.map(|r| r.phase),
        ok as f64 / run_secs,
        run_writes as f64 / run_secs,
        run_writes as f64 / INVOCATIONS as f64,
    );
    println!("(agent logs: {})", log.display());
}
