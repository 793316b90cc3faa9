//! The gateway in front of a real QEMU VM worker (TCG): deploy with the body `faas-cli deploy`
//! sends, invoke synchronously (cold start), list, scale to 1 (warm call), scale to 0 (the VM
//! powers off) and invoke again (cold start), delete; 401 and 400 on the way. And a snapshot
//! worker whose second call is served by a restore: still a cold start to the caller.
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
    Host, HostOptions, body_text, call, delete_function, deploy, faas_cli_deploy, http, json_of,
    objects, scale, wait_function,
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

/// A host (gateway and engine with the QEMU driver) on a state dir in `dir` holding a Cluster
/// and one Worker `vm-0` whose spec is `worker` (`KERNEL` and `INITRD` replaced by a freshly
/// built image's files), and the guard that kills its QEMUs.
async fn qemu_host(dir: &std::path::Path, worker: &str, token: &str) -> (Host<QemuVms>, QemuGuard) {
    let kernel = artifact(KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    let agent = artifact(AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
    let built = microfaas::image::build(&microfaas::image::BuildOptions {
        kernel: microfaas::image::KernelSource::Path(kernel),
        agent,
        out_dir: dir.join("image"),
        token: None,
        cache_dir: None,
        pvh: false,
    })
    .expect("image build");
    let state = dir.join("state");
    let worker = worker
        .replace("KERNEL", &built.bzimage.display().to_string())
        .replace("INITRD", &built.initramfs.display().to_string());
    let yaml = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: q}}\nspec:\n  defaults: {{bootTimeout: 90s, powerOnHoldoff: 0s, jobTimeout: 120s}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: vm-0}}\nspec:\n  {worker}\n"
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
            token: token.into(),
            credentials: Some(Credentials::new("admin", "pw")),
        },
    )
    .await;
    (h, QemuGuard(state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faas_cli_flow_through_a_qemu_worker() {
    let dir = tempfile::tempdir().expect("tmp");
    let (h, guard) = qemu_host(
        dir.path(),
        "power: OnDemand\n  lifecycle: {mode: Warm}\n  vm: {kernel: KERNEL, initrd: INITRD, memory: 256Mi, machine: pc, accel: tcg}",
        "qemu-gateway-token",
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

/// A snapshot worker (`vm.start: snapshot`, OneShot) behind the gateway: the first call boots
/// it and the boot takes the snapshot; the second call is served by a VM restored from that
/// snapshot. To the caller both are cold starts (`X-Microfaas-Cold-Start: true`): a restore
/// is much faster than a boot, but the call still waited for its worker to come up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_served_by_a_restored_snapshot_is_a_cold_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let (h, guard) = qemu_host(
        dir.path(),
        "power: OnDemand\n  lifecycle: {mode: OneShot}\n  vm: {kernel: KERNEL, initrd: INITRD, memory: 128Mi, cpus: 1, accel: tcg, network: {mode: user}, start: snapshot}",
        "qemu-snapshot-token",
    )
    .await;
    deploy(&h, "sha", "builtin:cascading_sha256").await;

    let input = json!({"rounds": 10, "data": "snapshot"});
    let want = microfaas::functions::run("cascading_sha256", &input).expect("local");
    let started = |h: &Host<QemuVms>| -> Vec<String> {
        h.engine
            .with_store(|s| s.events(microfaas::manifest::Kind::Worker, "vm-0", 100))
            .expect("events")
            .into_iter()
            .filter(|e| e.message.starts_with("VM started"))
            .map(|e| format!("{} ×{}", e.message, e.count))
            .collect()
    };

    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    let snapshot = guard.0.join("vms/vm-0/snapshot.bin");
    let t = Instant::now();
    while !snapshot.is_file() {
        assert!(t.elapsed() < Duration::from_secs(60), "no snapshot taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // OneShot: the worker powers off after its call.
    guard
        .wait_gone("QEMU still running after the OneShot call")
        .await;

    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    let starts = started(&h);
    assert!(
        starts
            .iter()
            .any(|s| s.starts_with("VM started (restored from its snapshot)")),
        "the second call was not served by a restore: {starts:?}"
    );
    guard.wait_gone("QEMU still running at the end").await;
    h.stop().await;
}
