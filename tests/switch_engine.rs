//! Switches in the engine, against the snmpsim 24-port switch: `apply` polls the ports boards
//! use, the Switch status shows them, boards get `LinkUp` True/False/Unknown; a switch that
//! does not answer is `Reachable=False` (Timeout) and its links are Unknown, never "down".
//! Without GPIO chips on this machine the boards get `PowerControl=False` and press nothing.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use support::snmp_agents::start_snmpsim;

fn board(name: &str, pin: &str, switch: &str, port: &str) -> String {
    format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}}}\nspec:\n  board:\n    powerButton: {{pin: {pin}}}\n    network: {{switch: {switch}, port: \"{port}\"}}\n"
    )
}

fn switch(name: &str, port: u16) -> String {
    format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Switch\nmetadata: {{name: {name}}}\nspec:\n  address: 127.0.0.1:{port}\n  snmp: {{version: v2c, communityEnv: TEST_SW_COMMUNITY}}\n  timeout: 300ms\n  retries: 1\n  pollInterval: 1s\n"
    )
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[test]
fn boards_get_link_state_from_their_switch() {
    let sim = start_snmpsim();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let text = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  orchestrator: {{listen: 127.0.0.1:0}}\n{}{}{}{}{}{}",
        switch("tor", sim.port),
        switch("gone", silent_port),
        board("bbb-a", "P9_12", "tor", "Gi1/0/1"),
        board("bbb-b", "P9_15", "tor", "Gi1/0/5"),
        board("bbb-c", "P9_23", "tor", "Gi1/0/99"),
        board("bbb-d", "P9_25", "gone", "1"),
    );
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, text).expect("write");
    let ctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(args)
            .env("MICROFAAS_STATE_DIR", dir.path().join("state"))
            .env("TEST_SW_COMMUNITY", "public")
            .stdin(Stdio::null())
            .output()
            .expect("microfaasctl")
    };
    let out = ctl(&["apply", "-f", f.to_str().expect("utf8"), "--timeout", "60s"]);
    // This machine has no GPIO chips: the boards cannot converge and apply says why, after
    // their links were read.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("worker/bbb-a: failed: no power control") && stderr.contains("P9_12"),
        "{stderr}"
    );
    let get = |kind: &str, name: &str| -> Value {
        serde_json::from_slice(&ctl(&["get", kind, name, "-o", "json"]).stdout).expect("json")
    };

    let tor = get("switch", "tor");
    assert_eq!(condition(&tor, "Reachable")["status"], "True", "{tor}");
    assert!(
        tor["status"]["sysName"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{tor}"
    );
    let ports = tor["status"]["ports"].as_array().expect("ports");
    let row = |key: &str| {
        ports
            .iter()
            .find(|p| p["key"] == key)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(row("Gi1/0/1")["oper"], "up", "{tor}");
    assert_eq!(row("Gi1/0/1")["worker"], "bbb-a");
    assert_eq!(row("Gi1/0/1")["index"], 10101);
    assert_eq!(row("Gi1/0/5")["oper"], "down", "{tor}");
    assert_eq!(
        tor["status"]["unresolvedPorts"][0]["key"], "Gi1/0/99",
        "{tor}"
    );

    assert_eq!(
        condition(&get("worker", "bbb-a"), "LinkUp")["status"],
        "True"
    );
    assert_eq!(
        condition(&get("worker", "bbb-b"), "LinkUp")["status"],
        "False"
    );
    let c = get("worker", "bbb-c");
    assert_eq!(condition(&c, "LinkUp")["status"], "Unknown", "{c}");
    assert_eq!(condition(&c, "LinkUp")["reason"], "PortUnresolved");

    let gone = get("switch", "gone");
    assert_eq!(condition(&gone, "Reachable")["status"], "False", "{gone}");
    assert_eq!(condition(&gone, "Reachable")["reason"], "Timeout", "{gone}");
    assert_eq!(
        condition(&get("worker", "bbb-a"), "PowerControl")["status"],
        "False"
    );
    let d = get("worker", "bbb-d");
    assert_eq!(
        condition(&d, "LinkUp")["status"],
        "Unknown",
        "an unreachable switch must not say down: {d}"
    );

    let desc = String::from_utf8_lossy(&ctl(&["describe", "switch", "tor"]).stdout).into_owned();
    assert!(
        desc.contains("Ports:") && desc.contains("Gi1/0/1") && desc.contains("bbb-a"),
        "{desc}"
    );
}
