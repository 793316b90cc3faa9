//! The agent's pure parts: the kernel command line and `ip=`, the defaults PID 1 falls back
//! on, command-line flags, power-key events, the watchdog's clock and runtime dispatch.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use microfaas::agent::args::{self, Parsed};
use microfaas::agent::cmdline::{self, IpConfig, IpSetting};
use microfaas::agent::power::{PowerAction, is_power_press};
use microfaas::agent::watchdog::Watchdog;
use microfaas::agent::{self, runtime};
use microfaas::protocol::{ErrorKind, Invoke, Lifecycle, Outcome};
use serde_json::json;

#[test]
fn kernel_command_line_settings() {
    let k = cmdline::parse(
        "BOOT_IMAGE=/vmlinuz console=ttyS0 quiet microfaas.worker=bbb-3 \
         microfaas.orchestrator=192.168.1.2:63302 microfaas.token=\"t o k\" \
         microfaas.lifecycle=warm microfaas.watchdog=30 microfaas.failsafe=reboot \
         ip=192.168.1.13::192.168.1.1:255.255.255.0:worker13:eth0:off\n",
    );
    assert_eq!(k.worker.as_deref(), Some("bbb-3"));
    assert_eq!(k.orchestrator.as_deref(), Some("192.168.1.2:63302"));
    assert_eq!(k.token.as_deref(), Some("t o k"));
    assert_eq!(k.lifecycle, Some(Lifecycle::Warm));
    assert_eq!(k.watchdog_secs, Some(30));
    assert_eq!(k.failsafe, Some(PowerAction::Reboot));
    assert_eq!(
        k.ip,
        IpSetting::Static(IpConfig {
            client: Ipv4Addr::new(192, 168, 1, 13),
            gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            hostname: Some("worker13".into()),
            device: "eth0".into(),
        })
    );
    assert!(k.warnings.is_empty(), "{:?}", k.warnings);

    let cfg = agent::config_from_kernel(k);
    assert_eq!(cfg.worker, "bbb-3");
    assert_eq!(cfg.token, b"t o k");
    assert_eq!(cfg.watchdog, Some(Duration::from_secs(30)));
}

#[test]
fn ip_argument_forms() {
    assert_eq!(cmdline::parse_ip("off"), Ok(IpSetting::Off));
    assert_eq!(cmdline::parse_ip("dhcp"), Ok(IpSetting::Dhcp));
    assert_eq!(cmdline::parse_ip(":::::eth0:dhcp"), Ok(IpSetting::Dhcp));
    let IpSetting::Static(ip) = cmdline::parse_ip("10.1.2.3").unwrap() else {
        panic!("static")
    };
    assert_eq!(ip.client, Ipv4Addr::new(10, 1, 2, 3));
    assert_eq!(ip.gateway, None);
    assert_eq!(ip.netmask, Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(ip.device, "eth0");
    assert_eq!(ip.hostname, None);
    assert!(cmdline::parse_ip("10.1.2").is_err());
    assert!(cmdline::parse_ip("10.0.0.1::gateway").is_err());
    assert!(cmdline::parse_ip("::::::off").is_err());
}

#[test]
fn bad_kernel_values_become_warnings_not_failures() {
    let k = cmdline::parse(
        "microfaas.lifecycle=tepid microfaas.watchdog=soon ip=1.2.3 microfaas.worker=w",
    );
    assert_eq!(k.warnings.len(), 3, "{:?}", k.warnings);
    assert_eq!(k.lifecycle, None);
    assert_eq!(k.ip, IpSetting::Default);
    assert_eq!(k.worker.as_deref(), Some("w"));
}

#[test]
fn pid1_defaults_follow_the_original_and_qemu_user_networking() {
    // Nothing on the command line: QEMU user networking, gateway on the original port.
    let cfg = agent::config_from_kernel(cmdline::parse("console=ttyS0"));
    assert_eq!(cfg.orchestrator, "10.0.2.2:63302");
    assert_eq!(cfg.worker, "worker15");
    assert_eq!(cfg.lifecycle, Lifecycle::OneShot);
    assert_eq!(cfg.watchdog, Some(agent::DEFAULT_PID1_WATCHDOG));
    assert_eq!(cfg.failsafe, PowerAction::PowerOff);
    assert!(!cfg.no_poweroff);
    assert_eq!(IpConfig::qemu_user().client, Ipv4Addr::new(10, 0, 2, 15));

    // The original's ip= without a hostname: identity from the last octet.
    let cfg = agent::config_from_kernel(cmdline::parse(
        "ip=192.168.1.7::192.168.1.1:255.255.255.0::eth0:off microfaas.watchdog=0",
    ));
    assert_eq!(cfg.worker, "worker7");
    assert_eq!(cfg.orchestrator, "192.168.1.1:63302");
    assert_eq!(cfg.watchdog, None);
}

fn run_args(v: &[&str]) -> Result<agent::Config, String> {
    match args::parse(v.iter().map(|s| s.to_string()))? {
        Parsed::Run(cfg) => Ok(cfg),
        Parsed::Help(_) => Err("help".into()),
    }
}

#[test]
fn flags() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "  from-file\n").unwrap();
    let cfg = run_args(&[
        "--orchestrator=h:1",
        "--name",
        "n",
        "--token-file",
        token_file.to_str().unwrap(),
        "--lifecycle",
        "warm",
        "--watchdog",
        "2.5",
        "--failsafe=reboot",
        "--heartbeat-ms",
        "250",
        "--no-poweroff",
    ])
    .unwrap();
    assert_eq!(cfg.orchestrator, "h:1");
    assert_eq!(cfg.worker, "n");
    assert_eq!(cfg.token, b"from-file");
    assert_eq!(cfg.lifecycle, Lifecycle::Warm);
    assert_eq!(cfg.watchdog, Some(Duration::from_millis(2500)));
    assert_eq!(cfg.failsafe, PowerAction::Reboot);
    assert_eq!(cfg.heartbeat, Duration::from_millis(250));
    assert!(cfg.no_poweroff);

    let cfg = run_args(&["--orchestrator", "h:1", "--name", "n", "--token", "t"]).unwrap();
    assert_eq!(cfg.watchdog, None, "no silence failsafe unless asked for");
    assert_eq!(cfg.lifecycle, Lifecycle::OneShot);
    assert!(!cfg.no_poweroff);

    assert_eq!(run_args(&["--help"]), Err("help".into()));
    for bad in [
        &["--orchestrator", "h:1", "--name"][..],
        &[
            "--orchestrator",
            "h:1",
            "--name",
            "n",
            "--token-file",
            "/nonexistent/t",
        ],
        &["--orchestrator", "h:1", "--name", "n", "--watchdog", "-1"],
        &[
            "--orchestrator",
            "h:1",
            "--name",
            "n",
            "--failsafe",
            "explode",
        ],
        &["--orchestrator", "h:1", "--name", "n", "extra"],
    ] {
        assert!(run_args(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn power_key_events() {
    let size = 2 * std::mem::size_of::<libc::c_ulong>() + 8;
    let event = |kind: u16, code: u16, value: i32| {
        let mut e = vec![0u8; size];
        e[size - 8..size - 6].copy_from_slice(&kind.to_ne_bytes());
        e[size - 6..size - 4].copy_from_slice(&code.to_ne_bytes());
        e[size - 4..].copy_from_slice(&value.to_ne_bytes());
        e
    };
    assert!(is_power_press(&event(1, 116, 1)));
    assert!(!is_power_press(&event(1, 116, 0)), "release");
    assert!(!is_power_press(&event(1, 28, 1)), "enter key");
    assert!(!is_power_press(&event(0, 116, 1)), "EV_SYN");
    assert!(!is_power_press(&event(1, 116, 1)[1..]), "short read");
}

#[test]
fn watchdog_counts_silence_only_while_idle() {
    let dog = Watchdog::new();
    let limit = Duration::from_secs(10);
    let now = Instant::now();
    assert!(!dog.expired(now, limit));
    assert!(dog.expired(now + Duration::from_secs(11), limit));
    dog.set_busy(true);
    assert!(
        !dog.expired(now + Duration::from_secs(11), limit),
        "busy is not silence"
    );
    dog.set_busy(false);
    assert!(!dog.expired(now + Duration::from_secs(9), limit));
    dog.contact();
    assert!(!dog.expired(Instant::now() + Duration::from_secs(9), limit));
}

fn invoke(runtime: &str, handler: &str, input: serde_json::Value, deadline_ms: u64) -> Invoke {
    Invoke {
        id: "i".into(),
        function: "f".into(),
        runtime: runtime.into(),
        handler: handler.into(),
        input,
        deadline_ms,
        services: Default::default(),
        code: None,
    }
}

#[test]
fn dispatch_outcomes() {
    let kind = |inv: Invoke| {
        let d = runtime::dispatch(&inv);
        match d.result.outcome {
            Outcome::Output(_) => (None, d.overran),
            Outcome::Error(e) => (Some(e.kind), d.overran),
        }
    };
    assert_eq!(
        kind(invoke("builtin", "matmul", json!({"size": 3}), 1000)),
        (None, false)
    );
    assert_eq!(
        kind(invoke("builtin", "matmul", json!({"size": 3}), 0)),
        (None, false)
    );
    assert_eq!(
        kind(invoke("cobol", "matmul", json!({}), 1000)),
        (Some(ErrorKind::UnsupportedRuntime), false)
    );
    // A wasm or exec invocation must carry its module.
    for runtime in ["wasm", "exec"] {
        assert_eq!(
            kind(invoke(runtime, "", json!({}), 1000)),
            (Some(ErrorKind::BadInput), false)
        );
    }
    assert_eq!(
        kind(invoke("builtin", "rm_rf", json!({}), 1000)),
        (Some(ErrorKind::UnknownFunction), false)
    );
    assert_eq!(
        kind(invoke(
            "builtin",
            "pyaes",
            json!({"rounds": 1, "key": "00"}),
            1000
        )),
        (Some(ErrorKind::BadInput), false)
    );
    assert_eq!(
        kind(invoke(
            "builtin",
            "zlib_decompress",
            json!({"data": "0000"}),
            1000
        )),
        (Some(ErrorKind::Error), false)
    );
    let start = Instant::now();
    let slow = invoke("builtin", "cascading_md5", json!({"rounds": u64::MAX}), 50);
    assert_eq!(kind(slow), (Some(ErrorKind::Timeout), true));
    assert!(start.elapsed() < Duration::from_secs(2));
    // The overrunning job still holds the function thread it ran on: the next call must get
    // a fresh one, not queue behind it.
    assert_eq!(
        kind(invoke("builtin", "matmul", json!({"size": 3}), 1000)),
        (None, false)
    );
}
