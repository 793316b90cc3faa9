//! The SNMP switch driver against real agents, never skipped:
//!
//! - net-snmp `snmpd` on 127.0.0.1 (ephemeral port, private config and persistent dir): v2c
//!   and v3 users (SHA/AES, SHA-256/AES, MD5/DES) read sysName, sysUpTime and this machine's
//!   own interface table, checked against `snmpbulkwalk` and /sys/class/net; wrong community
//!   and wrong v3 passwords are classified as authentication failures. Nothing is SET there:
//!   its ifAdminStatus is the host's own links.
//! - `snmpsim` serving `tests/data/snmp/switch24.snmprec`, a 24-port switch: ifIndex 10101-10112
//!   and 10201-10212 (two modules, non-contiguous) plus Vl1 (1), two stack ports sharing the
//!   ifDescr "Stack Port" (30001, 30002), `mgmt0`/`MGMT0` (6001, 6002); ifName `Gi1/0/N`
//!   differs from ifDescr `GigabitEthernet1/0/N`; Gi1/0/5 and 7 oper down, 13 admin down, 20
//!   lowerLayerDown, 24 notPresent. sysUpTime, ifAdminStatus and ifOperStatus use the
//!   `writecache` variation, so the test changes them with `snmpset` between polls (a link
//!   going down, a reboot) and the driver's bounce is remembered by the simulator.
//! - a UDP port where nobody answers: `Timeout` within timeout × (retries + 1) plus a margin.
//!
//! Every agent is started by the test on loopback, in a temp dir, and stopped by its PID.
//! `hack/install-deps.sh` installs snmpd, the net-snmp tools and the snmpsim venv.

use microfaas::drivers::snmp::{
    Credentials, IfStatus, Secret, SnmpError, SnmpSwitch, SwitchConfig,
};
mod support;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};
use support::snmp_agents::*;

// ------------------------------------------------------------------ configs

fn config(port: u16, credentials: Credentials, timeout: Duration, retries: u32) -> SwitchConfig {
    SwitchConfig {
        name: "test-sw".into(),
        address: format!("127.0.0.1:{port}"),
        credentials,
        timeout,
        retries,
    }
}

fn v2c(community: &str) -> Credentials {
    Credentials::V2c {
        community: Secret::new(community),
    }
}

fn v3(
    user: &str,
    auth: microfaas::drivers::snmp::AuthProtocol,
    auth_pw: &str,
    privacy: microfaas::drivers::snmp::PrivProtocol,
) -> Credentials {
    Credentials::V3 {
        user: user.into(),
        auth: Some((auth, Secret::new(auth_pw))),
        privacy: Some((privacy, Secret::new(V3_PRIV))),
    }
}

fn quick(port: u16, credentials: Credentials) -> SnmpSwitch {
    SnmpSwitch::new(config(port, credentials, Duration::from_millis(800), 1))
}

// ------------------------------------------------------------------ snmpd

#[tokio::test]
async fn snmpd_v2c_reads_system_and_this_machines_interfaces() {
    let agent = start_snmpd();
    let sw = quick(agent.port, v2c("public"));
    let obs = sw.poll_all().await.expect("poll_all");

    let expected_name = walk(&agent, ".1.3.6.1.2.1.1.5")
        .into_values()
        .next()
        .expect("sysName from snmpwalk");
    assert_eq!(obs.sys_name, expected_name);
    assert!(
        obs.uptime < Duration::from_secs(300),
        "snmpd just started, uptime {:?}",
        obs.uptime
    );

    // Every interface of this machine, with the kernel's ifindex.
    let mut kernel = BTreeMap::new();
    for e in std::fs::read_dir("/sys/class/net").expect("/sys/class/net") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let idx: u32 = std::fs::read_to_string(e.path().join("ifindex"))
            .expect("ifindex")
            .trim()
            .parse()
            .expect("numeric ifindex");
        kernel.insert(idx, name);
    }
    let seen: BTreeMap<u32, String> = obs
        .ports
        .iter()
        .map(|p| (p.index, p.descr.clone().unwrap_or_default()))
        .collect();
    assert_eq!(seen, kernel, "ifIndex/ifDescr vs /sys/class/net");

    let admin = walk(&agent, ".1.3.6.1.2.1.2.2.1.7");
    let oper = walk(&agent, ".1.3.6.1.2.1.2.2.1.8");
    let high = walk(&agent, ".1.3.6.1.2.1.31.1.1.1.15");
    for p in &obs.ports {
        let n = |m: &BTreeMap<u32, String>| m.get(&p.index).and_then(|v| v.parse::<i64>().ok());
        assert_eq!(Some(p.admin), n(&admin).map(IfStatus::from_raw), "{p:?}");
        assert_eq!(Some(p.oper), n(&oper).map(IfStatus::from_raw), "{p:?}");
        assert_eq!(p.speed_mbps, n(&high).map(|v| v as u64), "{p:?}");
        assert_eq!(p.name, p.descr, "Linux ifName = ifDescr: {p:?}");
    }
    let lo = obs.ports.iter().find(|p| p.descr.as_deref() == Some("lo"));
    assert_eq!(lo.map(|p| p.oper), Some(IfStatus::Up));

    // The engine's path: named keys in one batched GET give the same answers.
    let keys: Vec<&str> = kernel.values().map(String::as_str).collect();
    let before = sw.stats().await;
    let polled = sw.poll(&keys).await.expect("poll");
    let after = sw.stats().await;
    assert!(polled.unresolved.is_empty(), "{:?}", polled.unresolved);
    for p in &polled.ports {
        let full = obs
            .ports
            .iter()
            .find(|q| q.index == p.index)
            .expect("same port");
        assert_eq!(
            (p.admin, p.oper, p.speed_mbps),
            (full.admin, full.oper, full.speed_mbps)
        );
    }
    assert_eq!(
        after.transport.requests - before.transport.requests,
        1,
        "one GET for sysName, sysUpTime and {} ports (map cached by poll_all)",
        keys.len()
    );
}

#[tokio::test]
async fn snmpd_v3_auth_priv_users_read_the_same_as_v2c() {
    use microfaas::drivers::snmp::{AuthProtocol as A, PrivProtocol as P};
    let agent = start_snmpd();
    let reference = quick(agent.port, v2c("public"))
        .poll(&["lo"])
        .await
        .expect("v2c");
    for (user, auth, privacy) in [
        ("mfsha", A::Sha1, P::Aes128),
        ("mfsha256", A::Sha256, P::Aes128),
        ("mfmd5", A::Md5, P::Des),
    ] {
        let sw = quick(agent.port, v3(user, auth, V3_AUTH, privacy));
        let obs = sw
            .poll(&["lo"])
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(obs.sys_name, reference.sys_name, "{user}");
        assert_eq!(obs.ports, reference.ports, "{user}");
        assert!(obs.uptime >= reference.uptime, "{user}");
    }
}

/// net-snmp drops a v2c request with a wrong community without a word (it only bumps
/// snmpInBadCommunityNames), so on the wire this is a timeout; the driver's SNMPv3
/// engine-discovery probe, raced with the last attempt, shows the agent is alive and turns it
/// into `AuthFailure` in the same time bound.
#[tokio::test]
async fn snmpd_wrong_community_is_an_auth_failure_after_the_timeouts() {
    let agent = start_snmpd();
    let timeout = Duration::from_millis(400);
    let sw = SnmpSwitch::new(config(agent.port, v2c("not-the-community"), timeout, 1));
    let t0 = Instant::now();
    let err = sw.poll(&["lo"]).await.expect_err("wrong community");
    let took = t0.elapsed();
    assert!(
        matches!(&err, SnmpError::AuthFailure { reason, .. } if reason.contains("community")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "AuthFailure");
    assert!(took >= timeout * 2 - Duration::from_millis(50), "{took:?}");
    assert!(took < timeout * 2 + Duration::from_millis(700), "{took:?}");
    assert!(!format!("{err} {err:?}").contains("not-the-community"));
}

/// A wrong v3 password gets an unauthenticated report PDU (usmStatsWrongDigests) at once: no
/// waiting for timeouts, no retries.
#[tokio::test]
async fn snmpd_wrong_v3_password_or_user_is_an_auth_failure_at_once() {
    use microfaas::drivers::snmp::{AuthProtocol as A, PrivProtocol as P};
    let agent = start_snmpd();
    for (what, creds) in [
        (
            "auth password",
            v3("mfsha", A::Sha1, "wrong-password", P::Aes128),
        ),
        ("user", v3("nobody-here", A::Sha1, V3_AUTH, P::Aes128)),
        ("auth protocol", v3("mfsha", A::Sha256, V3_AUTH, P::Aes128)),
    ] {
        let sw = SnmpSwitch::new(config(agent.port, creds, Duration::from_secs(2), 2));
        let t0 = Instant::now();
        let err = sw.poll(&["lo"]).await.expect_err(what);
        assert!(
            matches!(err, SnmpError::AuthFailure { .. }),
            "{what}: {err:?}"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{what}: {:?}",
            t0.elapsed()
        );
        let text = format!("{err} {err:?}");
        assert!(!text.contains(V3_AUTH) && !text.contains(V3_PRIV), "{text}");
        assert_eq!(
            sw.stats().await.transport.requests,
            1,
            "{what}: not retried"
        );
    }
}

// ------------------------------------------------------------------ no agent

#[tokio::test]
async fn no_agent_is_a_timeout_within_timeout_times_attempts() {
    // A bound socket that never answers (a switch that drops everything) and a closed port
    // (ICMP port unreachable on loopback): both end as Timeout in the same bound.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let closed = free_udp_port();
    let timeout = Duration::from_millis(300);
    let retries = 2;
    for (what, port, creds) in [
        (
            "silent v2c",
            silent.local_addr().expect("addr").port(),
            v2c("public"),
        ),
        ("closed v2c", closed, v2c("public")),
        (
            "silent v3",
            silent.local_addr().expect("addr").port(),
            v3(
                "mfsha",
                microfaas::drivers::snmp::AuthProtocol::Sha1,
                V3_AUTH,
                microfaas::drivers::snmp::PrivProtocol::Aes128,
            ),
        ),
    ] {
        let sw = SnmpSwitch::new(config(port, creds, timeout, retries));
        let t0 = Instant::now();
        let err = sw.poll(&["Gi1/0/1"]).await.expect_err(what);
        let took = t0.elapsed();
        match &err {
            SnmpError::Timeout { attempts, .. } => assert_eq!(*attempts, retries + 1, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(err.reason(), "Timeout");
        let bound = timeout * (retries + 1);
        assert!(
            took >= bound - Duration::from_millis(30),
            "{what}: {took:?}"
        );
        assert!(
            took < bound + Duration::from_millis(500),
            "{what}: {took:?}"
        );
        assert_eq!(
            sw.stats().await.transport.timeouts,
            u64::from(retries + 1),
            "{what}"
        );
    }
}

// ------------------------------------------------------------------ simulated switch

#[tokio::test]
async fn sim_resolves_ports_by_ifname_ifdescr_and_sparse_ifindex() {
    let agent = start_snmpsim();
    let sw = quick(agent.port, v2c("public"));
    for (key, index) in [
        ("Gi1/0/3", 10103),
        ("GigabitEthernet1/0/14", 10202),
        ("10212", 10212),
        ("gi1/0/24", 10212),
        ("GIGABITETHERNET1/0/1", 10101),
        ("mgmt0", 6001),
        ("ifIndex:1", 1),
        ("ifName:St2", 30002),
    ] {
        let got = sw
            .resolve(key)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(got.index, index, "{key}");
    }
    let got = sw.resolve("Gi1/0/13").await.expect("Gi1/0/13");
    assert_eq!(got.descr.as_deref(), Some("GigabitEthernet1/0/13"));

    match sw.resolve("Stack Port").await {
        Err(SnmpError::Ambiguous { candidates, .. }) => {
            assert_eq!(candidates.len(), 2);
            assert!(candidates[0].contains("30001") && candidates[1].contains("30002"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        sw.resolve("Mgmt0").await,
        Err(SnmpError::Ambiguous { .. })
    ));
    let before = sw.stats().await.map_refreshes;
    match sw.resolve("Gi1/0/25").await {
        Err(e @ SnmpError::NotFound { .. }) => assert_eq!(e.reason(), "PortNotFound"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sw.stats().await.map_refreshes,
        before + 1,
        "a miss re-reads the interface table once"
    );
    assert!(matches!(
        sw.resolve("10113").await,
        Err(SnmpError::NotFound { .. })
    ));
}

#[tokio::test]
async fn sim_poll_reads_every_port_in_a_few_requests_and_sees_links_change() {
    let agent = start_snmpsim();
    let sw = quick(agent.port, v2c("public"));
    let keys: Vec<String> = (1..=24).map(|n| format!("Gi1/0/{n}")).collect();
    let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    keys.push("Stack Port");
    keys.push("Gi9/9/9");

    let obs = sw.poll(&keys).await.expect("poll");
    assert_eq!(obs.sys_name, "sim-sw-24");
    assert_eq!(obs.uptime, Duration::from_secs(42_000));
    assert_eq!(obs.ports.len(), 24);
    let unresolved: Vec<_> = obs
        .unresolved
        .iter()
        .map(|u| (u.key.as_str(), u.error.reason()))
        .collect();
    assert_eq!(
        unresolved,
        [("Stack Port", "PortAmbiguous"), ("Gi9/9/9", "PortNotFound")]
    );
    let state = |o: &microfaas::drivers::snmp::SwitchObservation, k: &str| {
        let p = o.port(k).unwrap_or_else(|| panic!("{k}"));
        (p.admin, p.oper)
    };
    use IfStatus::*;
    assert_eq!(state(&obs, "Gi1/0/1"), (Up, Up));
    assert_eq!(state(&obs, "Gi1/0/5"), (Up, Down));
    assert_eq!(state(&obs, "Gi1/0/13"), (Down, Down));
    assert_eq!(state(&obs, "Gi1/0/20"), (Up, LowerLayerDown));
    assert_eq!(state(&obs, "Gi1/0/24"), (Up, NotPresent));
    let p = obs.port("Gi1/0/14").expect("Gi1/0/14");
    assert_eq!((p.index, p.speed_mbps), (10202, Some(1000)));
    assert_eq!(p.descr.as_deref(), Some("GigabitEthernet1/0/14"));

    // The board on Gi1/0/3 loses its link, the one on Gi1/0/5 gets one.
    sim_set(&agent, ".1.3.6.1.2.1.2.2.1.8.10103", "i", "2");
    sim_set(&agent, ".1.3.6.1.2.1.2.2.1.8.10105", "i", "1");
    let s0 = sw.stats().await;
    let obs2 = sw.poll(&keys).await.expect("second poll");
    let s1 = sw.stats().await;
    assert_eq!(state(&obs2, "Gi1/0/3"), (Up, Down));
    assert_eq!(state(&obs2, "Gi1/0/5"), (Up, Up));
    // 2 + 24 × 4 varbinds in GETs of 40; the map cached: a key that is still unknown does not
    // trigger a walk every poll (at most every MISS_REFRESH_INTERVAL).
    assert_eq!(s1.transport.requests - s0.transport.requests, 3);
    assert_eq!(s1.map_refreshes, s0.map_refreshes);
}

#[tokio::test]
async fn sim_reboot_seen_as_sysuptime_going_back_refreshes_the_map() {
    let agent = start_snmpsim();
    let sw = quick(agent.port, v2c("public"));
    sw.poll(&["Gi1/0/1"]).await.expect("first poll");
    let before = sw.stats().await.map_refreshes;
    sw.poll(&["Gi1/0/1"]).await.expect("steady poll");
    assert_eq!(
        sw.stats().await.map_refreshes,
        before,
        "no walk while uptime grows"
    );
    sim_set(&agent, ".1.3.6.1.2.1.1.3.0", "t", "500");
    let obs = sw.poll(&["Gi1/0/1"]).await.expect("poll after reboot");
    assert_eq!(obs.uptime, Duration::from_secs(5));
    assert_eq!(sw.stats().await.map_refreshes, before + 1);
}

#[tokio::test]
async fn sim_bounce_sets_only_that_port_down_then_up() {
    let agent = start_snmpsim();
    let sw = std::sync::Arc::new(quick(agent.port, v2c("public")));
    let all_before = sw.poll_all().await.expect("poll_all");

    let hold = Duration::from_millis(1500);
    let bouncer = {
        let sw = sw.clone();
        tokio::spawn(async move { sw.bounce("Gi1/0/8", hold).await })
    };
    // Watch from the same switch object: polls interleave with the bounce's two SETs.
    let mut seen = Vec::new();
    let t0 = Instant::now();
    while !bouncer.is_finished() && t0.elapsed() < Duration::from_secs(10) {
        let obs = sw.poll(&["Gi1/0/8"]).await.expect("watch poll");
        let admin = obs.ports[0].admin;
        if seen.last() != Some(&admin) {
            seen.push(admin);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bouncer.await.expect("join").expect("bounce");
    let after = sw.poll(&["Gi1/0/8"]).await.expect("after");
    if seen.last() != Some(&after.ports[0].admin) {
        seen.push(after.ports[0].admin);
    }
    assert!(
        seen.ends_with(&[IfStatus::Down, IfStatus::Up]),
        "the simulator saw {seen:?}"
    );
    let rest_before: Vec<_> = all_before
        .ports
        .iter()
        .filter(|p| p.index != 10108)
        .collect();
    let all_after = sw.poll_all().await.expect("poll_all after");
    let rest_after: Vec<_> = all_after
        .ports
        .iter()
        .filter(|p| p.index != 10108)
        .collect();
    assert_eq!(rest_before, rest_after, "no other port touched");

    // The simulator's own record of the requests: two SETs, both on ifAdminStatus.10108.
    let log = std::fs::read_to_string(&agent.log).expect("snmpsim log");
    let sets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("1.3.6.1.2.1.2.2.1.7."))
        .filter(|l| l.contains("SET"))
        .collect();
    assert!(
        !sets.is_empty() && sets.iter().all(|l| l.contains("1.3.6.1.2.1.2.2.1.7.10108")),
        "{sets:?}"
    );
}

#[test]
fn cli_switch_ports_lists_the_simulated_switch() {
    let agent = start_snmpsim();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("m.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: microfaas.dev/v1alpha1
kind: Switch
metadata: {{name: sim}}
spec:
  address: 127.0.0.1:{}
  snmp: {{version: v2c, communityFile: {}}}
  timeout: 800ms
  retries: 1
",
            agent.port,
            dir.path().join("community").display()
        ),
    )
    .expect("manifest");
    std::fs::write(dir.path().join("community"), "public\n").expect("community file");
    let bin = env!("CARGO_BIN_EXE_microfaasctl");
    let out = Command::new(bin)
        .args(["switch", "ports", "sim", "-f"])
        .arg(&manifest)
        .output()
        .expect("run microfaasctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sim-sw-24"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.contains("GigabitEthernet1/0/20"))
        .expect("row of Gi1/0/20");
    assert!(
        row.contains("10208") && row.contains("lowerLayerDown"),
        "{row}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("GigabitEthernet"))
            .count(),
        24
    );

    let out = Command::new(bin)
        .args([
            "switch",
            "ports",
            "sim",
            "--port",
            "Stack Port",
            "-o",
            "json",
            "-f",
        ])
        .arg(&manifest)
        .output()
        .expect("run microfaasctl");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ambiguous") && stderr.contains("30002"),
        "{stderr}"
    );
}
