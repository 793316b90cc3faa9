//! Tap networking end to end: `microfaasctl apply` runs inside a network namespace this test
//! creates (nothing in it but loopback, a bridge and a veth pair with both ends in it, so no
//! packet can leave it), two OneShot VM workers are attached to the bridge through
//! qemu-bridge-helper, each agent gets its own static address from `vm.network.address` (the
//! kernel's `ip=`) and dials the orchestrator's `advertise` address on the bridge, a workload
//! runs and is recorded, and no QEMU is left.
//!
//! Needs root (namespaces, taps) and the bridge allowed in /etc/qemu/bridge.conf, which
//! `hack/install-deps.sh` sets up; artefacts as for every QEMU test (`hack/test-artifacts.sh`).

mod support;

use std::process::{Command, Output, Stdio};
use support::testbed::{Env, ok};

/// The bridge name hack/install-deps.sh allows in qemu-bridge-helper's ACL. It exists only
/// inside each test's own namespace, so tests never see each other's.
const BRIDGE: &str = "mfaastest0";
const PORT: &str = "mfaasport0";
const PEER: &str = "mfaaspeer0";
const HOST_IP: &str = "10.213.7.1";

/// A network namespace of this test's own, deleted when dropped (also after a failed assert).
struct Netns {
    name: String,
}

impl Netns {
    fn new() -> Netns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("mfaas-tap-{}-{nanos}", std::process::id());
        ok(&run("ip", &["netns", "add", &name]));
        Netns { name }
    }

    fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The namespace's interfaces by name, `lo` first, then sorted.
    fn links(&self) -> Vec<String> {
        let out = self.ip(&["-o", "link", "show"]);
        ok(&out);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
            .collect();
        names.sort_by_key(|n| (n != "lo", n.clone()));
        names
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// Whether qemu-bridge-helper's ACL (following `include`s) allows `bridge`.
fn acl_allows(file: &str, bridge: &str, depth: u32) -> bool {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(str::trim).any(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("allow"), Some(b)) => b == bridge || b == "all",
            (Some("include"), Some(f)) if depth < 4 => acl_allows(f, bridge, depth + 1),
            _ => false,
        }
    })
}

fn manifest(env: &Env) -> String {
    format!(
        "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {{name: t}}
spec:
  orchestrator: {{listen: '{HOST_IP}:{port}', advertise: '{HOST_IP}:{port}'}}
  defaults: {{bootTimeout: 60s, powerOnHoldoff: 0s, quarantineAfter: 2}}
---
apiVersion: microfaas.dev/v1alpha1
kind: WorkerSet
metadata: {{name: tap}}
spec:
  replicas: 2
  template:
    metadata: {{labels: {{pool: t}}}}
    spec:
      power: OnDemand
      lifecycle: {{mode: OneShot}}
      vm:
        kernel: {kernel}
        initrd: {initrd}
        memory: 128Mi
        machine: pc
        accel: tcg
        network: {{mode: tap, bridge: {BRIDGE}, address: 10.213.7.10/24}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {{name: fl}}
spec: {{runtime: builtin, handler: float_operations, timeout: 60s}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {{name: w}}
spec:
  functions: [{{function: fl, count: 4, inputs: [{{n: 1000}}]}}]
  workers: {{matchLabels: {{pool: t}}}}
  concurrency: 2
",
        port = env.port,
        kernel = env.kernel.display(),
        initrd = env.initrd.display(),
    )
}

#[test]
fn vms_on_a_bridge_get_their_addresses_dial_advertise_and_run_a_workload() {
    assert!(
        acl_allows("/etc/qemu/bridge.conf", BRIDGE, 0),
        "/etc/qemu/bridge.conf does not allow bridge {BRIDGE}: run hack/install-deps.sh"
    );
    let env = Env::new();
    let ns = Netns::new();
    ok(&ns.ip(&["link", "set", "lo", "up"]));
    ok(&ns.ip(&["link", "add", BRIDGE, "type", "bridge"]));
    ok(&ns.ip(&["addr", "add", &format!("{HOST_IP}/24"), "dev", BRIDGE]));
    ok(&ns.ip(&["link", "set", BRIDGE, "up"]));
    // A port that goes nowhere (a veth pair with both ends in the namespace) keeps the
    // bridge's carrier up between VMs, so the neighbour entries the guests leave are not
    // flushed before they are read below.
    ok(&ns.ip(&["link", "add", PORT, "type", "veth", "peer", "name", PEER]));
    ok(&ns.ip(&["link", "set", PORT, "master", BRIDGE, "up"]));
    ok(&ns.ip(&["link", "set", PEER, "up"]));
    // Nothing connects the namespace to anything else: no physical NIC, no veth leading out.
    let inside = ["lo", PEER, PORT, BRIDGE];
    assert_eq!(ns.links(), inside);

    let f = env.write("tap.yaml", &manifest(&env));
    let apply = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["apply", "-f", &f, "--timeout", "8m"])
        .env("MICROFAAS_STATE_DIR", &env.state)
        .stdin(Stdio::null())
        .output()
        .expect("ip netns exec microfaasctl apply");
    ok(&apply);

    let report = env.json(&["report", "w", "--format", "json"]);
    assert_eq!(report["total"], 4, "{report}");
    assert_eq!(report["succeeded"], 4, "{report}");
    let workers = report["workers"]
        .as_object()
        .map(|w| w.keys().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    assert_eq!(workers, ["tap-0", "tap-1"], "{report}");

    // Each agent configured the address its replica was given, from the kernel's `ip=`.
    for (worker, ip) in [("tap-0", "10.213.7.10"), ("tap-1", "10.213.7.11")] {
        let console =
            std::fs::read_to_string(env.state.join("vms").join(worker).join("console.log"))
                .unwrap_or_default();
        assert!(
            console.contains(&format!("eth0: {ip}/255.255.255.0")),
            "{worker}'s console:\n{console}"
        );
    }
    // ... and reached the orchestrator over the bridge from it, each with its own MAC: the
    // bridge's neighbour table has both.
    let neigh = ns.ip(&["neigh", "show", "dev", BRIDGE]);
    ok(&neigh);
    let neigh = String::from_utf8_lossy(&neigh.stdout).into_owned();
    let mac_of = |ip: &str| {
        neigh
            .lines()
            .find(|l| l.split_whitespace().next() == Some(ip))
            .and_then(|l| l.split_whitespace().skip_while(|w| *w != "lladdr").nth(1))
            .map(str::to_string)
    };
    let (a, b) = (mac_of("10.213.7.10"), mac_of("10.213.7.11"));
    assert!(a.is_some() && b.is_some() && a != b, "{neigh}");

    // The VMs are off, their standbys killed with the engine, and with QEMU their taps gone.
    assert!(
        env.qemus().is_empty(),
        "QEMU left running: {:?}",
        env.qemus()
    );
    assert_eq!(ns.links(), inside);
}
