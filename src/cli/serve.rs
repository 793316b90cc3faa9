//! `microfaasctl serve`: run the engine as a daemon over a set of manifests (see `daemon`).

use super::manifests::FileArgs;
use super::{CmdResult, Failure};
use crate::daemon::{Daemon, DaemonError, ServeOptions};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Holds the state dir (a second engine is refused, naming this one's PID), hosts the agent
endpoint, and reconciles continuously. With --watch every saved change to the files or
folders (create, modify, delete, rename; editors that save through a temp file) re-reads the
whole set and stores it as `apply` would. An invalid edit changes nothing: the last good state
stays, and a Warning event and a log line name FILE:LINE:COL. A document removed from the
files is torn down and deleted only with --prune.

While serve runs, `apply`, `delete` and `rerun` store desired state and wait for this daemon to
converge it; `get`, `describe`, `logs` and `report` read its live status.

On a shared etcd store several serves run side by side: each, named by --name, holds the
workers whose `orchestrators` name it (or name none) under an etcd lease (--lease-ttl) and
acts only on those; another takes them over when it stops renewing the lease.

Signals: SIGHUP re-reads the files now. SIGTERM/SIGINT start no new workload runs, give runs in
flight --grace to finish, then leave workers as Cluster.spec.shutdownPolicy says
(LeaveRunning: the next engine adopts them; PowerOff) and exit 0.

Examples:
  microfaasctl serve -f manifests/ --watch
  microfaasctl serve -f cluster.yaml --watch --prune --resync 1m --log-format json
  microfaasctl serve -f lab/ --name rack-a --listen 10.0.0.21:63302 --lease-ttl 10s")]
pub struct Args {
    #[command(flatten)]
    files: FileArgs,
    /// Follow the files and folders, applying every saved change.
    #[arg(long)]
    watch: bool,
    /// Tear down and delete objects no longer declared in the files.
    #[arg(long)]
    prune: bool,
    /// Re-reconcile everything this often, even without events.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    resync: Duration,
    /// Quiet time that ends a burst of file events.
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    debounce: Duration,
    /// On SIGTERM/SIGINT, how long workload runs in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// This orchestrator's name on a shared etcd store: workers whose `orchestrators` list it
    /// (or have none) may be held by it. Default: the host name.
    #[arg(long, env = "MICROFAAS_ORCHESTRATOR")]
    name: Option<String>,
    /// TTL of the etcd lease under which it holds workers: another orchestrator takes them
    /// over this long after this one stops renewing it (killed, cut off from etcd).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lease_ttl: Duration,
    /// Where agents dial in, instead of the Cluster's `orchestrator.listen` (each
    /// orchestrator sharing a store listens on its own host).
    #[arg(long)]
    listen: Option<String>,
    /// Log line format on stderr (info level unless -v or RUST_LOG say otherwise).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::manifest::quantity::parse_duration(s).map_err(|e| e.to_string())
}

/// The host name, as the default orchestrator name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .unwrap_or_else(|_| "localhost".to_string())
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let name = args.name.clone().unwrap_or_else(host_name);
    if args.lease_ttl < Duration::from_secs(1) {
        return Err(Failure::invalid(
            "--lease-ttl must be at least 1s (etcd leases count whole seconds)",
        ));
    }
    let opts = ServeOptions {
        name,
        lease_ttl: args.lease_ttl,
        listen: args.listen.clone(),
        files: args.files.files.clone(),
        fs_checks: !args.files.no_fs_checks,
        watch: args.watch,
        prune: args.prune,
        resync: args.resync,
        debounce: args.debounce,
        grace: args.grace,
        default_initrd: super::image_default_initrd(),
    };
    let dir = state_dir.to_path_buf();
    super::blocking::block_on(async move {
        let driver = std::sync::Arc::new(crate::drivers::vms::QemuVms::new().with_standby());
        let mut daemon = match Daemon::start(&dir, driver, opts).await {
            Ok(d) => d,
            Err(DaemonError::Invalid(rendered)) => {
                for r in &rendered {
                    eprintln!("{r}\n");
                }
                eprintln!(
                    "{} error{} found; nothing was changed",
                    rendered.len(),
                    if rendered.len() == 1 { "" } else { "s" }
                );
                return Err(Failure::silent(1));
            }
            Err(DaemonError::Lock(e)) => return Err(e.into()),
            Err(DaemonError::Store(e)) => return Err(e.into()),
            Err(DaemonError::Start(e)) => return Err(Failure::invalid(e)),
        };
        // The HTTP gateway on Cluster.spec.gateway.listen and the web view share the engine.
        // They are started here so a bad address or password stops `serve` at once instead of
        // only being logged.
        let ctx = daemon.host().context();
        let cluster = ctx.cluster.clone().unwrap_or_default();
        let ui = if cluster.gateway.is_some() || cluster.ui.is_some() {
            Some(
                crate::ui::Ui::start(ctx.engine.clone(), &ctx.state_dir, ctx.stop.clone())
                    .map_err(|e| Failure::invalid(e.to_string()))?,
            )
        } else {
            None
        };
        if let Some(spec) = &cluster.gateway {
            let mut opts = crate::gateway::Options::from_spec(spec, &ctx.state_dir)
                .map_err(|e| Failure::invalid(e.to_string()))?;
            opts.extra = ui.clone().map(|u| crate::ui::router(u, "/ui"));
            let running = crate::gateway::start(ctx.engine.clone(), ctx.agent_events.clone(), opts)
                .await
                .map_err(|e| Failure::invalid(e.to_string()))?;
            eprintln!("gateway listening on http://{}", running.addr);
            eprintln!("web view on http://{}/ui/", running.addr);
            daemon
                .host_mut()
                .spawn_service("gateway", move |mut ctx| async move {
                    while !*ctx.stop.borrow() {
                        if ctx.stop.changed().await.is_err() {
                            break;
                        }
                    }
                    running.stop().await;
                    Ok(())
                });
        }
        if let (Some(spec), Some(ui)) = (&cluster.ui, ui) {
            let running =
                crate::ui::listen(&spec.listen, crate::ui::router(ui, ""), ctx.stop.clone())
                    .await
                    .map_err(|e| Failure::invalid(e.to_string()))?;
            eprintln!("web view on http://{}/", running.addr);
            daemon.host_mut().spawn_service("ui", move |_| async move {
                running.stopped().await;
                Ok(())
            });
        }
        daemon.run().await.map_err(Failure::invalid)?;
        Ok(ExitCode::SUCCESS)
    })
    .map_err(Failure::invalid)?
}
