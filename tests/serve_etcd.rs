//! `microfaasctl serve` on the etcd store with real QEMU (TCG): the daemon keeps everything in
//! the 3-member etcd cluster its Cluster's `spec.store` names, a CLI with another state dir
//! (another machine) watches its worker boot and its workload run there, and the report it
//! reads counts every invocation once.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::etcd::EtcdCluster;
use support::testbed::Env;
use support::testbed::ctl_on_store as ctl;

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time.
const LIMIT: Duration = Duration::from_secs(240);

#[test]
fn serve_keeps_its_testbed_in_etcd_and_another_machine_reads_it() {
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("serve");
    let env = Env::new();
    // The daemon learns the store from its Cluster (no --store, no MICROFAAS_STORE).
    let cluster_doc = format!(
        "{}  store: {{etcd: {{endpoints: [{}], prefix: serve}}}}\n",
        env.cluster(""),
        cluster.endpoints().join(", ")
    );
    let manifest = format!(
        "{cluster_doc}---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {{name: vm-0, labels: {{pool: t}}}}
spec:
  power: On
  lifecycle: {{mode: Warm}}
  vm: {{kernel: {}, initrd: {}, memory: 128Mi, machine: pc, accel: tcg}}
{}",
        env.kernel.display(),
        env.initrd.display(),
        Env::builtin_workload("float_operations", 5, "10/s", "")
    );
    let f = env.write("m.yaml", &manifest);
    let log = env.dir.path().join("serve.log");
    let serve = support::testbed::serve_command(&env.state, &log)
        .args(["serve", "-f", &f])
        .spawn()
        .expect("serve");
    // Killed by its PID if the test fails before the SIGTERM at its end.
    let mut serve = support::testbed::Daemon(Some(serve));
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let machine_b = tempfile::tempdir().expect("tmp");
    let started = Instant::now();
    let report = loop {
        if let Some(Ok(Some(st))) = serve.0.as_mut().map(std::process::Child::try_wait) {
            panic!("serve exited ({st}):\n{}", serve_log());
        }
        assert!(
            started.elapsed() < LIMIT,
            "the workload did not finish:\n{}",
            serve_log()
        );
        let r = ctl(
            machine_b.path(),
            &url,
            &["report", "wl", "--format", "json"],
        );
        if let Ok(v) = serde_json::from_slice::<Value>(&r.stdout)
            && v["total"] == 5
            && v["succeeded"].as_u64().unwrap_or(0) + v["failed"].as_u64().unwrap_or(0) == 5
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(report["succeeded"], 5, "{report}\n{}", serve_log());
    let w = ctl(
        machine_b.path(),
        &url,
        &["get", "worker", "vm-0", "-o", "json"],
    );
    let v: Value = serde_json::from_slice(&w.stdout).expect("json");
    assert!(
        matches!(v["status"]["phase"].as_str(), Some("Ready" | "Busy")),
        "{v}"
    );
    let wl = ctl(machine_b.path(), &url, &["describe", "workload", "wl"]);
    assert!(
        String::from_utf8_lossy(&wl.stdout).contains("Events:"),
        "{}",
        String::from_utf8_lossy(&wl.stdout)
    );
    // every invocation recorded once, in etcd, and nothing in the state dir's SQLite file
    let store = microfaas::store::Store::open_etcd(&cluster.location("serve")).expect("open");
    let run = store.latest_run("wl").expect("run").expect("a run");
    let attempts = store.attempts("wl", run.run).expect("attempts");
    let mut ids: Vec<&str> = attempts.iter().map(|a| a.invocation_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "{attempts:?}");
    assert!(
        !env.state.join("state.db").exists(),
        "serve wrote a SQLite store"
    );
    support::testbed::stop(serve);
}
