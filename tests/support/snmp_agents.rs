//! Real SNMP agents for tests: net-snmp `snmpd` and the `snmpsim` simulated 24-port switch, on
//! loopback with ephemeral ports and private temp dirs, stopped by their PIDs.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SNMPSIM_DEFAULT: &str = "/opt/microfaas/snmpsim-venv/bin/snmpsim-command-responder";
pub const V3_AUTH: &str = "authpass123";
pub const V3_PRIV: &str = "privpass123";

/// A child process killed (SIGTERM, then SIGKILL) by its PID when dropped.
pub struct Agent {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    pub log: PathBuf,
}

impl Agent {
    /// Asks the agent to stop (SIGTERM to its own PID) where it cannot be dropped: shared by
    /// something that lives until the test process ends.
    pub fn terminate(&self) {
        // SAFETY: signalling a child we spawned; only `drop` reaps it, so its PID is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling a child we spawned and have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Wraps any just-spawned server process (its readiness is the caller's to check), so it
    /// is stopped by its PID on drop.
    pub fn spawned(child: Child, port: u16, dir: tempfile::TempDir, log: PathBuf) -> Self {
        Agent {
            child,
            port,
            _dir: dir,
            log,
        }
    }

    /// Wraps a just-spawned agent and waits until it answers community `public`.
    pub fn started(child: Child, port: u16, dir: tempfile::TempDir, log: PathBuf) -> Self {
        let mut agent = Agent {
            child,
            port,
            _dir: dir,
            log,
        };
        wait_ready(&mut agent, "public");
        agent
    }
}

/// A free UDP port on loopback. The agent binds it right after; should another process take it
/// in between, the agent fails to start and `wait_ready` says so.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    s.local_addr().expect("local addr").port()
}

pub fn snmp_tool(tool: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool)
        .args(args)
        // No MIBs are installed (IF-MIB is not in Debian main): numeric OIDs, no noise.
        .env("MIBS", "")
        .env("MIBDIRS", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("{tool} (run hack/install-deps.sh): {e}"))
}

pub fn wait_ready(agent: &mut Agent, community: &str) {
    let target = format!("127.0.0.1:{}", agent.port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!(
                "agent exited with {status} before answering: {}",
                std::fs::read_to_string(&agent.log).unwrap_or_default()
            );
        }
        let out = snmp_tool(
            "snmpget",
            &[
                "-v2c",
                "-c",
                community,
                "-t",
                "0.3",
                "-r",
                "0",
                "-On",
                &target,
                ".1.3.6.1.2.1.1.5.0",
            ],
        );
        if out.status.success() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "agent on {target} never answered: {}",
        std::fs::read_to_string(&agent.log).unwrap_or_default()
    );
}

pub fn start_snmpd() -> Agent {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let conf = dir.path().join("snmpd.conf");
    std::fs::write(
        &conf,
        format!(
            "agentAddress udp:127.0.0.1:{port}\n\
             rocommunity public 127.0.0.1\n\
             createUser mfsha SHA \"{V3_AUTH}\" AES \"{V3_PRIV}\"\n\
             createUser mfsha256 SHA-256 \"{V3_AUTH}\" AES \"{V3_PRIV}\"\n\
             createUser mfmd5 MD5 \"{V3_AUTH}\" DES \"{V3_PRIV}\"\n\
             rouser mfsha authpriv\n\
             rouser mfsha256 authpriv\n\
             rouser mfmd5 authpriv\n"
        ),
    )
    .expect("write snmpd.conf");
    let log = dir.path().join("snmpd.log");
    let persist = dir.path().join("persist");
    std::fs::create_dir(&persist).expect("persist dir");
    let child = Command::new("snmpd")
        // -f foreground (so the PID is ours), -C only our config; the address is in the config
        // only (repeating it on the command line makes snmpd bind twice and exit).
        .args(["-f", "-C", "-c"])
        .arg(&conf)
        .arg("-Lf")
        .arg(&log)
        .env("MIBS", "")
        .env("MIBDIRS", "/nonexistent")
        .env("SNMP_PERSISTENT_DIR", &persist)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start snmpd (run hack/install-deps.sh)");
    Agent::started(child, port, dir, log)
}

/// snmpsim serving the 24-port recording under community `public`.
pub fn start_snmpsim() -> Agent {
    let exe = std::env::var("MICROFAAS_SNMPSIM").unwrap_or_else(|_| SNMPSIM_DEFAULT.to_string());
    assert!(
        Path::new(&exe).exists(),
        "{exe} is missing: run hack/install-deps.sh (or set MICROFAAS_SNMPSIM)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::create_dir(&cache).expect("cache dir");
    let rec = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snmp/switch24.snmprec");
    std::fs::copy(&rec, data.join("public.snmprec")).expect("copy the recording");
    // As root snmpsim drops to nobody, who must read the data and write the cache.
    use std::os::unix::fs::PermissionsExt;
    for (p, mode) in [
        (dir.path(), 0o755),
        (data.as_path(), 0o755),
        (cache.as_path(), 0o777),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
    std::fs::set_permissions(
        data.join("public.snmprec"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let port = free_udp_port();
    let log = dir.path().join("snmpsim.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = Command::new(&exe);
    cmd.arg(format!("--data-dir={}", data.display()))
        .arg(format!("--cache-dir={}", cache.display()))
        .arg(format!("--agent-udpv4-endpoint=127.0.0.1:{port}"))
        .arg("--logging-method=stdout");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["--process-user", "nobody", "--process-group", "nogroup"]);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("start snmpsim");
    Agent::started(child, port, dir, log)
}

/// `snmpset` on the simulator: the test's control channel (a real switch would refuse).
pub fn sim_set(agent: &Agent, oid: &str, typ: &str, value: &str) {
    let target = format!("127.0.0.1:{}", agent.port);
    let out = snmp_tool(
        "snmpset",
        &["-v2c", "-c", "public", "-On", &target, oid, typ, value],
    );
    assert!(
        out.status.success(),
        "snmpset {oid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `snmpbulkwalk -On -Oq` of one column: index → value as printed.
pub fn walk(agent: &Agent, column: &str) -> BTreeMap<u32, String> {
    let target = format!("127.0.0.1:{}", agent.port);
    let out = snmp_tool(
        "snmpbulkwalk",
        &["-v2c", "-c", "public", "-On", "-Oq", "-Oe", &target, column],
    );
    assert!(out.status.success(), "snmpbulkwalk {column}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (oid, val) = l.split_once(' ')?;
            let idx = oid.rsplit('.').next()?.parse().ok()?;
            Some((idx, val.trim().trim_matches('"').to_string()))
        })
        .collect()
}
