//! The worker agent (`microfaas-agent`): as PID 1 of a worker's initramfs it sets the machine
//! up, then dials the orchestrator and runs invocations; as a normal process it does only the
//! latter. Submodules each do one job: `cmdline` (kernel command line), `args` (command-line
//! flags), `init` (mounts, modules, reaping), `net`, `power` (reboot, Ctrl-Alt-Del, power
//! button), `resume` (parking for a snapshot), `watchdog`, `client` (the protocol session), `runtime` (running a function), `user`, `wasm` and `exec`
//! (user functions: WebAssembly modules and static executables).

pub mod args;
pub mod client;
pub mod cmdline;
pub mod exec;
pub mod init;
pub mod log;
pub mod net;
pub mod power;
pub mod resume;
pub mod runtime;
pub mod user;
pub mod wasm;
pub mod watchdog;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::Lifecycle;

use client::Exit;
use log::log;
use power::{FAILSAFE_EXIT, Power, PowerAction};
use watchdog::Watchdog;

/// The token file baked into a worker image, used when the command line carries no token.
pub const TOKEN_FILE: &str = "/etc/microfaas/token";
/// The original MicroFaaS orchestrator port, used when PID 1 is told no address.
pub const DEFAULT_PORT: u16 = 63302;
/// Heartbeat period of a Warm worker unless the orchestrator asks for another.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Failsafe silence limit for PID 1 when the command line names none.
pub const DEFAULT_PID1_WATCHDOG: Duration = Duration::from_secs(120);

/// Everything the agent needs to know to do its work.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub worker: String,
    /// `host:port`.
    pub orchestrator: String,
    pub token: Vec<u8>,
    pub lifecycle: Lifecycle,
    /// Failsafe after this long without a frame from the orchestrator; `None` = never.
    pub watchdog: Option<Duration>,
    /// What the failsafe does when PID 1.
    pub failsafe: PowerAction,
    pub heartbeat: Duration,
    /// Treat `poweroff`/`reboot` (and the end of a OneShot job) as "dial again" instead of
    /// ending the agent.
    pub no_poweroff: bool,
}

/// Read a token file: its content without surrounding whitespace.
pub fn read_token_file(path: &Path) -> std::io::Result<Vec<u8>> {
    Ok(std::fs::read_to_string(path)?.trim().as_bytes().to_vec())
}

/// The whole agent. Returns the process exit status when not PID 1; as PID 1 it never
/// returns (the machine powers off or reboots instead).
pub fn main() -> i32 {
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() } == 1;
    let power = Power { pid1 };
    let cfg = if pid1 {
        boot()
    } else {
        match args::parse(std::env::args().skip(1)) {
            Ok(args::Parsed::Run(cfg)) => cfg,
            Ok(args::Parsed::Help(text)) => {
                println!("{text}");
                return 0;
            }
            Err(e) => {
                eprintln!("microfaas-agent: {e}\n\n{}", args::USAGE);
                return 64;
            }
        }
    };
    if cfg.token.is_empty() {
        log!("warning: no token configured; the orchestrator will deny this worker");
    }
    log!(
        "worker {} ({:?}) dialling {}",
        cfg.worker,
        cfg.lifecycle,
        cfg.orchestrator
    );

    let watchdog = Watchdog::new();
    if let Some(limit) = cfg.watchdog {
        let failsafe = cfg.failsafe;
        watchdog.spawn(limit, move |why| {
            log!("failsafe: {why}");
            power.execute(failsafe, FAILSAFE_EXIT)
        });
    }
    match client::run(&cfg, &watchdog) {
        Exit::Power(action) => power.execute(action, 0),
        Exit::Failsafe(why) => {
            log!("failsafe: {why}");
            power.execute(cfg.failsafe, FAILSAFE_EXIT)
        }
    }
}

/// PID 1 set-up: signals first (before any thread exists), then filesystems, console,
/// modules, network, shutdown handlers, and the configuration from the kernel command line.
fn boot() -> Config {
    power::take_over_shutdown_signals();
    init::mount_pseudo_filesystems();
    init::ensure_console();
    log!("starting as PID 1");
    init::spawn_reaper();
    let loaded = init::load_modules(Path::new(init::MODULE_LIST));
    if loaded > 0 {
        log!("loaded {loaded} kernel modules");
    }

    let pid1 = Power { pid1: true };
    let shutdown: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |what: &str| {
        log!("{what}: clean shutdown");
        pid1.execute(PowerAction::PowerOff, 0)
    });
    power::spawn_signal_watcher(shutdown.clone());
    power::spawn_power_button_watchers(shutdown);

    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let k = cmdline::parse(&text);
    for w in &k.warnings {
        log!("kernel command line: {w}");
    }
    if let Err(e) = net::configure(&k.ip) {
        log!("network set-up failed: {e}");
    }
    // After the network (a restored guest must not redo it) and before the watchdog starts
    // (a parked guest is silent on purpose).
    if k.park {
        resume::park();
    }
    config_from_kernel(k)
}

/// Fill the gaps the kernel command line leaves with the defaults: the gateway on the
/// original port as orchestrator, the `ip=` hostname (or `worker<last octet>`, the
/// original's identity) as name, and the image's token file.
pub fn config_from_kernel(k: cmdline::KernelArgs) -> Config {
    let ip = match &k.ip {
        cmdline::IpSetting::Static(ip) => Some(ip.clone()),
        cmdline::IpSetting::Default => Some(cmdline::IpConfig::qemu_user()),
        _ => None,
    };
    let worker = k
        .worker
        .or_else(|| ip.as_ref().and_then(|ip| ip.hostname.clone()))
        .or_else(|| {
            ip.as_ref()
                .map(|ip| format!("worker{}", ip.client.octets()[3]))
        })
        .unwrap_or_else(|| "worker".into());
    let orchestrator = k.orchestrator.unwrap_or_else(|| {
        let gw = ip.and_then(|ip| ip.gateway);
        format!(
            "{}:{DEFAULT_PORT}",
            gw.map_or("10.0.2.2".into(), |g| g.to_string())
        )
    });
    let token = match k.token {
        Some(t) => t.into_bytes(),
        None => read_token_file(Path::new(TOKEN_FILE)).unwrap_or_default(),
    };
    Config {
        worker,
        orchestrator,
        token,
        lifecycle: k.lifecycle.unwrap_or_default(),
        watchdog: match k.watchdog_secs {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => Some(DEFAULT_PID1_WATCHDOG),
        },
        failsafe: k.failsafe.unwrap_or_default(),
        heartbeat: DEFAULT_HEARTBEAT,
        no_poweroff: false,
    }
}
