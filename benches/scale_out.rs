//! `cargo bench --bench scale_out`: 1,000 VM workers with `power: On` on the in-memory fake
//! driver, spread over 4 orchestrators (`orchestrators: [o-K]`, K = i mod 4), each an engine
//! with its own etcd connection, lease keeper and claims, all on one 3-member etcd on loopback
//! started for the run: apply -> every worker Ready, the writes (etcd revisions) that took and
//! their rate, how many each orchestrator holds, then the writes of 10 s of steady state
//! (lease renewals are not writes; claim rounds only read).

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use microfaas::daemon::lease::Keeper;
use microfaas::engine::ownership::Ownership;
use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const N: usize = 1000;
const ORCHESTRATORS: usize = 4;

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
            serde_json::json!({"power": "On", "vm": {"kernel": "/k"},
                               "orchestrators": [format!("o-{}", i % ORCHESTRATORS)]}),
        ));
    }
    let t = Instant::now();
    store.apply(&objects, None, false, false).expect("apply");
    let stored = t.elapsed();
    let dir = tempfile::tempdir().expect("tmp");
    let rev0 = cluster.revision();
    let t = Instant::now();
    let mut running = Vec::new();
    for k in 0..ORCHESTRATORS {
        let driver = Arc::new(FakeDriver::default());
        let engine = Engine::new(
            Store::open_etcd(&location).expect("etcd store"),
            driver.clone(),
            driver,
            Config {
                state_dir: dir.path().join(format!("o-{k}")),
                orchestrator_port: 1,
                token: "t".into(),
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
        let runner = tokio::spawn(engine.clone().run(rx, None));
        running.push((engine, own, keeper, stop, runner));
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
    for (_, _, keeper, stop, runner) in running {
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
}
