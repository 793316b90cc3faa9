//! The gateway in front of a real QEMU VM worker (TCG): deploy with the body `faas-cli deploy`
//! sends, invoke synchronously (cold start), list, scale to 1 (warm call), scale to 0 (the VM
//! powers off) and invoke again (cold start), delete; 401 and 400 on the way.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"` (hack/test does it). Nothing is skipped when
//! they are missing: the test fails saying so.

mod support;

use microfaas::drivers::vms::QemuVms;
use microfaas::gateway::Credentials;
use microfaas::store::Store;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::host::{
    Host, HostOptions, body_text, call, delete_function, faas_cli_deploy, http, json_of, objects,
    scale, wait_function,
};
use support::{AGENT_VAR, KERNEL_VAR, artifact};

/// Kills (by verified PID) any QEMU still running for this state dir, whatever failed.
struct QemuGuard(PathBuf);

impl QemuGuard {
    fn pids(&self) -> Vec<i32> {
        support::qemu::running_for(&self.0)
            .into_iter()
            .map(|(_, pid)| pid)
            .collect()
    }
}

impl QemuGuard {
    async fn wait_gone(&self, what: &str) {
        let start = Instant::now();
        while !self.pids().is_empty() {
            assert!(start.elapsed() < Duration::from_secs(60), "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for QemuGuard {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: a PID just found running QEMU with our own state dir in its argv.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_cli_flow_through_a_qemu_worker() {
    let kernel = artifact(KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    let agent = artifact(AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tmp");
    let built = microfaas::image::build(&microfaas::image::BuildOptions {
        kernel: microfaas::image::KernelSource::Path(kernel),
        agent,
        out_dir: dir.path().join("image"),
        token: None,
        cache_dir: None,
        pvh: false,
    })
    .expect("image build");
    let state = dir.path().join("state");
    let guard = QemuGuard(state.clone());
    let yaml = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: q}}\nspec:\n  defaults: {{bootTimeout: 90s, powerOnHoldoff: 0s, jobTimeout: 120s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: vm-0}}\nspec:\n  power: OnDemand\n  lifecycle: {{mode: Warm}}\n  vm: {{kernel: {}, initrd: {}, memory: 256Mi, machine: pc, accel: tcg}}\n",
        built.bzimage.display(),
        built.initramfs.display()
    );
    Store::open(&state)
        .expect("store")
        .apply(&objects(&yaml), None, false, false)
        .expect("apply");
    let relay = format!("'{}' relay", env!("CARGO_BIN_EXE_microfaasctl"));
    let driver = Arc::new(QemuVms::new().with_relay(relay));
    let h = Host::start(
        &state,
        driver,
        &HostOptions {
            agent_listen: "127.0.0.1:0".into(),
            token: "qemu-gateway-token".into(),
            credentials: Some(Credentials::new("admin", "pw")),
        },
    )
    .await;

    assert_eq!(
        http("GET", &h.url("/system/functions"), false, vec![])
            .await
            .status,
        401
    );
    let mut bad = faas_cli_deploy("sha", "builtin:cascading_sha256");
    bad["limits"] = json!({"cpu": "500m"});
    let r = http(
        "POST",
        &h.url("/system/functions"),
        true,
        bad.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(body_text(&r).contains("limits.cpu"), "{}", body_text(&r));

    let r = http(
        "POST",
        &h.url("/system/functions"),
        true,
        faas_cli_deploy("sha", "builtin:cascading_sha256")
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));

    // The VM is off: the call waits for it to boot.
    let input = json!({"rounds": 100, "data": "qemu"});
    let want = microfaas::functions::run("cascading_sha256", &input).expect("local");
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-worker"), Some("vm-0"));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));

    let list = json_of(&http("GET", &h.url("/system/functions"), true, vec![]).await);
    assert_eq!(list[0]["name"], "sha");
    assert_eq!(list[0]["invocationCount"], 1);

    // Kept warm: the next call does not wait for a boot.
    scale(&h, "sha", 1).await;
    wait_function(&h, "sha", "vm-0 ready", |v| v["availableReplicas"] == 1).await;
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("false"));

    // Scale to zero: the VM powers off; the next call boots it again.
    scale(&h, "sha", 0).await;
    wait_function(&h, "sha", "vm-0 off", |v| v["replicas"] == 0).await;
    guard.wait_gone("QEMU still running after scale to 0").await;
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));

    delete_function(&h, "sha").await;
    // The VM goes off once the last call released it.
    guard.wait_gone("QEMU still running at the end").await;
    h.stop().await;
}
