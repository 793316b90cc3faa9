//! `cargo bench --bench engine`: 1,000 VM workers with `power: On` on the in-memory fake driver
//! (instant boot): time from the first reconcile until all are Ready, peak RSS, and the time
//! of a no-op resync of all 1,000 (everything already converged). With
//! `MICROFAAS_BENCH_STORE=etcd` the same on the etcd store, a 3-member cluster on loopback
//! started for the run, plus the writes (etcd revisions) it took and their rate.

#[allow(dead_code)]
#[path = "../tests/support/etcd.rs"]
mod etcd;

use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const N: usize = 1000;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn wait_all(
    engine: &Engine<FakeDriver, FakeDriver>,
    pred: impl Fn(&serde_json::Value, i64) -> bool,
) {
    let mut changes = engine.subscribe_changes();
    loop {
        let all = engine
            .with_store(|s| s.list(Some(Kind::Worker)))
            .expect("list");
        if all.iter().filter(|o| pred(&o.status, o.generation)).count() == N {
            return;
        }
        // A listing of 1,000 objects costs as much as several reconciles, and this waiter ran
        // on every status write (40% of the CPU in a profile): look at most every 10 ms, so
        // the measurement competes less with what it measures (adds <= 10 ms to the figure).
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tmp");
    let on_etcd = std::env::var("MICROFAAS_BENCH_STORE").is_ok_and(|v| v == "etcd");
    let etcd = on_etcd.then(|| etcd::EtcdCluster::start(3));
    let mut store = match &etcd {
        Some(c) => Store::open_etcd(&c.location("bench")).expect("etcd store"),
        None => Store::open(dir.path()).expect("store"),
    };
    let revision = || etcd.as_ref().map_or(0, etcd::EtcdCluster::revision);
    let cluster = DesiredObject {
        kind: Kind::Cluster,
        name: "c".into(),
        labels: Default::default(),
        annotations: Default::default(),
        spec: serde_json::json!({"defaults": {"powerOnHoldoff": "0s"}}),
        owner: None,
        source: None,
    };
    let mut objects = vec![cluster];
    for i in 0..N {
        objects.push(DesiredObject {
            kind: Kind::Worker,
            name: format!("vm-{i}"),
            labels: Default::default(),
            annotations: Default::default(),
            spec: serde_json::json!({"power": "On", "vm": {"kernel": "/k"}}),
            owner: None,
            source: None,
        });
    }
    let t = Instant::now();
    store.apply(&objects, None, false, false).expect("apply");
    let stored = t.elapsed();
    let driver = Arc::new(FakeDriver::default());
    let engine = Engine::new(
        store,
        driver.clone(),
        driver.clone(),
        Config {
            state_dir: dir.path().to_path_buf(),
            orchestrator_port: 1,
            token: "t".into(),
            default_initrd: None,
            concurrency: 8,
            resync: Duration::from_secs(3600),
        },
    );
    let (stop, rx) = watch::channel(false);
    let runner = tokio::spawn(engine.clone().run(rx, None));
    let t = Instant::now();
    let rev0 = revision();
    engine.enqueue_all();
    wait_all(&engine, |s, g| {
        s["phase"] == "Ready" && s["observedGeneration"] == g
    })
    .await;
    let converge = t.elapsed();
    let writes = revision() - rev0;
    let t = Instant::now();
    engine.enqueue_all();
    while !engine.queue.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // the queue drains as reconciles start; wait for the last ones to finish
    let mut changes = engine.subscribe_changes();
    while tokio::time::timeout(Duration::from_millis(50), changes.changed())
        .await
        .is_ok()
    {}
    let resync = t.elapsed().saturating_sub(Duration::from_millis(50));
    let _ = stop.send(true);
    let _ = runner.await;
    if etcd.is_some() {
        println!(
            "engine on etcd (3 members): apply -> all Ready took {writes} writes, {:.0} writes/s",
            writes as f64 / converge.as_secs_f64()
        );
    }
    println!(
        "engine: {N} workers: store {:.3} s; apply -> all Ready {:.3} s; no-op resync {:.3} s; peak RSS {:.1} MiB; launches {}",
        stored.as_secs_f64(),
        converge.as_secs_f64(),
        resync.as_secs_f64(),
        peak_rss_mib(),
        driver.launches.lock().map(|l| l.len()).unwrap_or(0)
    );
}
