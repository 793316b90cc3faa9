//! The agent's network set-up against the real kernel: the test re-runs itself inside a
//! private network and UTS namespace (`unshare -n -u`, needs root), makes a veth pair there and
//! checks what `ip` sees after `agent::net::configure`. No address outside that namespace is
//! touched.

use std::net::Ipv4Addr;
use std::process::Command;

use microfaas::agent::cmdline::{IpConfig, IpSetting};
use microfaas::agent::net;

const CHILD: &str = "MICROFAAS_NETNS_CHILD";
const TEST: &str = "configures_a_nic_inside_a_private_network_namespace";

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn configures_a_nic_inside_a_private_network_namespace() {
    if std::env::var_os(CHILD).is_some() {
        return inside_namespace();
    }
    let usable = Command::new("unshare")
        .args(["-n", "-u", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !usable {
        eprintln!("SKIPPED: cannot create network namespaces here (needs root and unshare)");
        return;
    }
    let status = Command::new("unshare")
        .args(["-n", "-u"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .status()
        .unwrap();
    assert!(status.success(), "the test inside the namespace failed");
}

fn inside_namespace() {
    sh("ip link add mf0 type veth peer name mf1");
    net::configure(&IpSetting::Static(IpConfig {
        client: Ipv4Addr::new(192, 168, 77, 2),
        gateway: Some(Ipv4Addr::new(192, 168, 77, 1)),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        hostname: Some("worker77".into()),
        device: "mf0".into(),
    }))
    .expect("configure");

    let addr = sh("ip -4 -o addr show dev mf0");
    assert!(addr.contains("inet 192.168.77.2/24"), "{addr}");
    let link = sh("ip -o link show dev mf0");
    assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
    let lo = sh("ip -o link show dev lo");
    assert!(lo.contains(",UP"), "{lo}");
    let routes = sh("ip -4 route show default");
    assert!(
        routes.contains("default via 192.168.77.1 dev mf0"),
        "{routes}"
    );
    assert_eq!(sh("cat /proc/sys/kernel/hostname").trim(), "worker77");
    // Configuring again (a reconnect, a second boot stage) is harmless.
    net::configure(&IpSetting::Static(IpConfig {
        client: Ipv4Addr::new(192, 168, 77, 2),
        gateway: Some(Ipv4Addr::new(192, 168, 77, 1)),
        netmask: Ipv4Addr::new(255, 255, 255, 0),
        hostname: None,
        device: "mf0".into(),
    }))
    .expect("configure twice");
    // Loopback only: `ip=off` leaves the NIC alone but lo comes up.
    sh("ip link set lo down");
    net::configure(&IpSetting::Off).expect("off");
    assert!(sh("ip -o link show dev lo").contains(",UP"));
    // A name the kernel would truncate is refused, not mangled.
    let long = IpConfig {
        device: "a-very-long-interface-name".into(),
        ..IpConfig::qemu_user()
    };
    assert!(net::configure(&IpSetting::Static(long)).is_err());
}
