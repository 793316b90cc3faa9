//! `microfaasctl`: argument parsing, dispatch to one module per subcommand, exit codes.

mod apply;
mod blocking;
mod converge;
mod delete;
mod describe;
mod diff;
mod get;
pub mod image;
mod logs;
mod manifests;
mod operate;
mod output;
mod power;
mod relay;
mod report;
mod schema;
mod serve;
mod store_arg;
mod switch;
mod validate;

use clap::{CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (diff: no differences)
  1  invalid manifests, object not found (diff: differences found)
  2  bad command line (diff: any error)
  3  the state store could not be used (unreadable, locked by another engine, I/O error)
  4  a switch could not be read over SNMP (timeout, authentication failure, protocol error)
  5  a GPIO line could not be used (not found, held by another consumer, I/O error)";

const ABOUT: &str = "\
Declarative testbed-as-code for energy-efficient FaaS clusters.

Describe BeagleBone workers, QEMU VMs, switches, power meters, functions and workloads in YAML
(apiVersion microfaas.dev/v1alpha1); microfaasctl validates them, stores the desired state and
converges the testbed to it.

Quick start:
  microfaasctl validate -f examples/reference.yaml --no-fs-checks
  microfaasctl apply -f cluster.yaml
  microfaasctl serve -f manifests/ --watch
  microfaasctl get workers -o wide
  microfaasctl describe worker vm-0";

#[derive(Debug, Parser)]
#[command(name = "microfaasctl", version, about = ABOUT, after_help = EXIT_CODES)]
pub struct Cli {
    /// Where state lives (SQLite store, VM sockets and logs).
    /// Default: $XDG_STATE_HOME/microfaas or ~/.local/state/microfaas.
    #[arg(long, global = true, env = "MICROFAAS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// Keep the desired state and every record in a shared etcd cluster instead of the state
    /// dir's SQLite file: etcd://HOST:PORT[,HOST:PORT...][/PREFIX] (prefix: microfaas), or
    /// etcds://... for TLS (with --etcd-ca, and --etcd-cert/--etcd-key for client-certificate
    /// auth). Commands then work from any machine that reaches the cluster. `sqlite`: the
    /// state dir's file, whatever the manifests' Cluster.spec.store says.
    #[arg(long, global = true, env = "MICROFAAS_STORE", value_name = "URL",
          value_parser = store_arg::parse_store)]
    store: Option<store_arg::StoreArg>,

    #[command(flatten)]
    etcd_tls: store_arg::EtcdTlsArgs,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests: syntax, schema, references, collisions. Every error names FILE:LINE:COL.
    Validate(validate::Args),
    /// Store the desired state in the manifests (all or nothing) and report each object.
    Apply(apply::Args),
    /// Show how the manifests differ from the stored desired state (exit 1 when they do).
    Diff(diff::Args),
    /// List objects of a kind: workers (wk), workersets (ws), functions (fn), workloads (wl),
    /// switches (sw), powermeters (pm), clusters (cl).
    Get(get::Args),
    /// Show one object in detail: spec, status, conditions and recent events.
    Describe(describe::Args),
    /// Delete objects named in manifests, or one object by kind and name.
    Delete(delete::Args),
    /// Run the engine as a daemon: follow manifest files (--watch), reconcile continuously.
    Serve(serve::Args),
    /// Print a VM worker's serial console (-f to follow).
    Logs(logs::Args),
    /// Take a worker out of service (health Maintenance): powered off, never scheduled.
    Cordon(operate::WorkerArgs),
    /// Return a worker to service (health Good), also clearing a quarantine (Bad).
    Uncordon(operate::WorkerArgs),
    /// Run a workload again (same generation, a new run number) and report it.
    Rerun(operate::RerunArgs),
    /// Summarise a workload run: counts, throughput, latency percentiles, per function and
    /// per worker, as a table, JSON, CSV (one row per attempt) or an HTML page with plots.
    Report(report::Args),
    /// Build worker images: a kernel plus an initramfs whose /init is the static agent.
    Image(image::ImageArgs),
    /// Talk to a Switch from the manifests over SNMP: list its ports, bounce one.
    Switch(switch::Args),
    /// Board power: on, off, cycle and status of a worker through its observed power, or a
    /// direct pulse or force-off hold on a GPIO line.
    Power(power::Args),
    /// Print the JSON Schema of a kind (all kinds when none is given), for editors.
    Schema(schema::Args),
    /// Relay a guest connection to the orchestrator (run by QEMU, not by people).
    #[command(hide = true)]
    Relay(relay::Args),
    /// Print a shell completion script, e.g. `microfaasctl completions bash > /etc/bash_completion.d/microfaasctl`.
    Completions { shell: clap_complete::Shell },
}

/// Where `image build` writes by default and where VMs without an `initrd` find the agent
/// image: `$MICROFAAS_IMAGE_DIR`, else `$XDG_DATA_HOME/microfaas/image`, else
/// `~/.local/share/microfaas/image`.
pub fn default_image_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MICROFAAS_IMAGE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("microfaas/image");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/microfaas/image")
}

/// The default agent initramfs, when one has been built.
pub fn image_default_initrd() -> Option<PathBuf> {
    let p = default_image_dir().join("initramfs.cpio.gz");
    p.is_file().then_some(p)
}

/// A failed command: what to print and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub report: Option<miette::Report>,
}

impl Failure {
    /// Input was wrong (manifests, names): exit 1.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self {
            code: 1,
            report: Some(miette::miette!("{}", msg.into())),
        }
    }

    /// Already reported on stderr; just exit with `code`.
    pub fn silent(code: u8) -> Self {
        Self { code, report: None }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Self {
        let code = if matches!(e, crate::store::StoreError::NotFound(_)) {
            1
        } else {
            3
        };
        Self {
            code,
            report: Some(miette::Report::msg(e.to_string())),
        }
    }
}

impl From<crate::store::LockError> for Failure {
    fn from(e: crate::store::LockError) -> Self {
        Self {
            code: 3,
            report: Some(miette::Report::msg(e.to_string())),
        }
    }
}

pub type CmdResult = Result<ExitCode, Failure>;

/// Logs on stderr. Commands log warnings by default; the daemon logs its decisions (info).
fn init_logging(verbose: u8, daemon: bool, format: serve::LogFormat) {
    let default = match verbose + u8::from(daemon) {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        serve::LogFormat::Json => builder.json().try_init(),
        serve::LogFormat::Text => builder.try_init(),
    };
}

/// Entry point of the `microfaasctl` binary.
pub fn main() -> ExitCode {
    // Die quietly on a closed pipe (`microfaasctl get workers | head`), like other CLI tools,
    // instead of panicking inside println!.
    // SAFETY: restoring the default disposition of a signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Serve(a) => init_logging(cli.verbose, true, a.log_format),
        _ => init_logging(cli.verbose, false, serve::LogFormat::Text),
    }
    // Before any command opens the store.
    match store_arg::resolve(cli.store.clone(), &cli.etcd_tls) {
        Ok(Some(choice)) => crate::store::select(choice),
        Ok(None) => {}
        Err(e) => Cli::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit(),
    }
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(crate::store::default_state_dir);
    let result = match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Apply(a) => apply::run(a, &state_dir),
        Command::Diff(a) => diff::run(a, &state_dir),
        Command::Get(a) => get::run(a, &state_dir),
        Command::Describe(a) => describe::run(a, &state_dir),
        Command::Delete(a) => delete::run(a, &state_dir),
        Command::Serve(a) => serve::run(a, &state_dir),
        Command::Logs(a) => logs::run(a, &state_dir),
        Command::Cordon(a) => operate::set_health(a, &state_dir, "Maintenance"),
        Command::Uncordon(a) => operate::set_health(a, &state_dir, "Good"),
        Command::Rerun(a) => operate::rerun(a, &state_dir),
        Command::Relay(a) => relay::run(a),
        Command::Report(a) => report::run(a, &state_dir),
        Command::Image(a) => image::run(a)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|report| Failure {
                code: 1,
                report: Some(report),
            }),
        Command::Switch(a) => switch::run(a),
        Command::Power(a) => power::run(a, &state_dir),
        Command::Schema(a) => schema::run(a),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "microfaasctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            if let Some(report) = f.report {
                eprintln!("Error: {report}");
            }
            ExitCode::from(f.code)
        }
    }
}
