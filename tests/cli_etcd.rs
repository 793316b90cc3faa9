//! The CLI against a shared etcd store (`--store etcd://...` / `MICROFAAS_STORE`): what one
//! machine applies, another reads (get, describe, diff, report), each with a state dir of
//! its own; a bad store URL is refused before anything is read; and apply on a shared store
//! waits on the orchestrators serving it instead of starting an engine of its own.

mod support;

use microfaas::store::{Attempt, AttemptStatus, RunCounts, RunPhase, Store};
use std::process::Command;
use support::etcd::EtcdCluster;
use support::testbed::ctl_on_store as ctl;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const MANIFEST: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: vm-0, labels: {rack: a}}
spec: {vm: {kernel: /k, memory: 256Mi}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: vm-1, labels: {rack: b}}
spec: {vm: {kernel: /k}}
";

#[test]
fn cli_commands_share_one_etcd_store_across_state_dirs() {
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("cli");
    let machine_a = tempfile::tempdir().expect("tmp");
    let machine_b = tempfile::tempdir().expect("tmp");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("vms.yaml");
    std::fs::write(&f, MANIFEST).expect("write");
    let f = f.to_str().expect("utf8");

    let a = ctl(
        machine_a.path(),
        &url,
        &["apply", "-f", f, "--no-fs-checks", "--no-wait"],
    );
    assert_eq!(
        (a.status.code(), text(&a.stdout).as_str()),
        (Some(0), "worker/vm-0 created\nworker/vm-1 created\n"),
        "{}",
        text(&a.stderr)
    );
    assert!(
        !machine_a.path().join("state.db").exists(),
        "the SQLite store was used although etcd was selected"
    );
    // the other machine sees it all
    let g = ctl(machine_b.path(), &url, &["get", "workers", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&g.stdout).expect("json");
    let names: Vec<&str> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["vm-0", "vm-1"], "{}", text(&g.stderr));
    // a spec change from machine B bumps the generation machine A reads
    std::fs::write(f, MANIFEST.replace("256Mi", "512Mi")).expect("write");
    let diff = ctl(machine_b.path(), &url, &["diff", "-f", f, "--no-fs-checks"]);
    assert_eq!(diff.status.code(), Some(1));
    assert!(
        text(&diff.stdout).contains("+    memory: 512Mi"),
        "{}",
        text(&diff.stdout)
    );
    let a = ctl(
        machine_b.path(),
        &url,
        &["apply", "-f", f, "--no-fs-checks", "--no-wait"],
    );
    assert_eq!(
        text(&a.stdout),
        "worker/vm-0 configured\nworker/vm-1 unchanged\n"
    );
    let desc = ctl(machine_a.path(), &url, &["describe", "worker", "vm-0"]);
    for want in [
        "Name:         vm-0",
        "Generation:   2",
        "memory: 512Mi",
        "Events:",
    ] {
        assert!(
            text(&desc.stdout).contains(want),
            "missing {want:?} in\n{}",
            text(&desc.stdout)
        );
    }
    // the same store through the flag rather than the environment
    let flag = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["--store", &url, "get", "worker", "vm-1", "-o", "json"])
        .env("MICROFAAS_STATE_DIR", machine_b.path())
        .env_remove("MICROFAAS_STORE")
        .output()
        .expect("run");
    let v: serde_json::Value = serde_json::from_slice(&flag.stdout).expect("json");
    assert_eq!(v["metadata"]["labels"]["rack"], "b");
    // another prefix is another store
    let other = ctl(
        machine_b.path(),
        &cluster.url("other"),
        &["get", "workers", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&other.stdout).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(0));

    // report reads the runs and attempts an orchestrator recorded in etcd
    let mut s = Store::open_etcd(&cluster.location("cli")).expect("open");
    let run = s.start_run("wl", 1).expect("run");
    for (i, status) in [AttemptStatus::Succeeded, AttemptStatus::Failed]
        .into_iter()
        .enumerate()
    {
        s.record_attempt(&Attempt {
            invocation_id: format!("inv-{i}"),
            workload: "wl".into(),
            run,
            generation: 1,
            seq: i as u64,
            function: "fib".into(),
            worker: Some("vm-0".into()),
            attempt: 1,
            queued_ms: 1_000,
            dispatched_ms: Some(1_001),
            finished_ms: 1_010,
            exec_us: Some(5_000),
            rtt_us: Some(9_000),
            cold_start_ms: None,
            status,
            error: None,
            output_size: Some(2),
            output_sha256: None,
        })
        .expect("attempt");
    }
    let counts = RunCounts {
        total: 2,
        succeeded: 1,
        failed: 1,
        retried: 0,
    };
    s.finish_run("wl", run, RunPhase::Failed, &counts, "1 failed")
        .expect("finish");
    let r = ctl(
        machine_b.path(),
        &url,
        &["report", "wl", "--format", "json"],
    );
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&r.stdout)));
    assert_eq!(
        (v["total"].as_u64(), v["failed"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["functions"]["fib"]["succeeded"], 1, "{v}");
    assert_eq!(v["workers"]["vm-0"]["total"], 2, "{v}");

    // apply on a shared store does not converge here: it waits on the orchestrators serving
    // the store (none runs, so it times out saying what did not converge) and takes no lock
    let w = ctl(
        machine_a.path(),
        &url,
        &["apply", "-f", f, "--no-fs-checks", "--timeout", "1s"],
    );
    assert_eq!(w.status.code(), Some(1), "{}", text(&w.stderr));
    let err = text(&w.stderr);
    assert!(
        err.contains("is shared: waiting on the orchestrators"),
        "{err}"
    );
    assert!(err.contains("not converged"), "{err}");
}

/// `apply -f` of a Cluster whose `spec.store` names etcd stores there; `--store sqlite`
/// overrides the manifest.
#[test]
fn apply_uses_the_store_the_cluster_declares_unless_told_otherwise() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: lab}}\nspec:\n  store: {{etcd: {{endpoints: [{}], prefix: declared}}}}\n---\n{MANIFEST}",
            cluster.endpoints().join(", ")
        ),
    )
    .expect("write");
    let f = f.to_str().expect("utf8");
    let state = tempfile::tempdir().expect("tmp");
    let a = ctl(
        state.path(),
        "",
        &["apply", "-f", f, "--no-fs-checks", "--no-wait"],
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert!(!state.path().join("state.db").exists(), "applied to SQLite");
    let g = ctl(
        state.path(),
        &cluster.url("declared"),
        &["get", "workers", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&g.stdout).expect("json");
    assert_eq!(v["items"].as_array().map(Vec::len), Some(2), "{v}");
    let a = ctl(
        state.path(),
        "sqlite",
        &["apply", "-f", f, "--no-fs-checks", "--no-wait"],
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert!(
        text(&a.stdout).contains("worker/vm-0 created"),
        "{}",
        text(&a.stdout)
    );
    assert!(
        state.path().join("state.db").exists(),
        "--store sqlite did not win"
    );
}

#[test]
fn a_bad_store_url_is_refused_before_anything_is_read() {
    let state = tempfile::tempdir().expect("tmp");
    for (url, want) in [
        ("postgres://h/x", "starts with etcd://"),
        ("etcd:///p", "no etcd endpoint"),
        ("etcd://host/p", "has no port"),
    ] {
        let o = ctl(state.path(), url, &["get", "workers"]);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains(want), "{url}: {}", text(&o.stderr));
    }
    // a well-formed URL nobody answers on: the store cannot be used (exit 3), and the error
    // names the endpoints
    let port = support::services::free_tcp_port();
    let o = ctl(
        state.path(),
        &format!("etcd://127.0.0.1:{port}/p"),
        &["get", "workers"],
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o.stderr).contains(&format!("no etcd endpoint answered (127.0.0.1:{port})")),
        "{}",
        text(&o.stderr)
    );
    assert!(!state.path().join("state.db").exists());
    // empty, or `sqlite`: the state dir's own file
    for url in ["", "sqlite"] {
        let o = ctl(state.path(), url, &["get", "workers"]);
        assert_eq!(o.status.code(), Some(0), "{url:?}: {}", text(&o.stderr));
    }
    assert!(state.path().join("state.db").exists());
}
