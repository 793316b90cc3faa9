//! A workload that cannot be placed ends Failed with a clear condition instead of hanging.

use serde_json::Value;
use std::process::{Command, Stdio};

#[test]
fn a_workload_no_worker_can_run_fails_fast() {
    let dir = tempfile::tempdir().expect("tmp");
    let text = "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {name: t}
spec:
  orchestrator: {listen: 127.0.0.1:0}
---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: vm-0, labels: {pool: a}}
spec: {vm: {kernel: /k}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {name: sha}
spec: {runtime: builtin, handler: cascading_sha256}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {name: nowhere}
spec:
  functions: [{function: sha, count: 3}]
  workers: {matchLabels: {pool: b}}
";
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, text).expect("write");
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(args)
            .env("MICROFAAS_STATE_DIR", dir.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .expect("microfaasctl")
    };
    let out = ctl(&[
        "apply",
        "-f",
        f.to_str().expect("utf8"),
        "--no-fs-checks",
        "--timeout",
        "60s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("workload/nowhere: failed"), "{stderr}");
    // a selector warning was printed by validation, and the run says why it failed
    let w: Value =
        serde_json::from_slice(&ctl(&["get", "workload", "nowhere", "-o", "json"]).stdout)
            .expect("json");
    assert_eq!(w["status"]["phase"], "Failed", "{w}");
    let cond = w["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Scheduled").cloned())
        .unwrap_or(Value::Null);
    assert_eq!(cond["status"], "False", "{w}");
    assert_eq!(cond["reason"], "Unschedulable", "{w}");
}
