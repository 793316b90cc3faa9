//! `microfaasctl apply`: store the desired state of a set of manifests (all or nothing), then
//! run the engine in this process — or, when `serve` holds the state dir, wait on the daemon's
//! engine — until everything touched has converged and every workload it started has
//! finished, and report.

use super::manifests::{FileArgs, load};
use super::{CmdResult, Failure, converge};
use crate::daemon::declare::declare;
use crate::manifest::Kind;
use crate::store::{LockError, StateLock, Store};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints one line per object: `worker/vm-0 created|configured|unchanged|pruned`, then converges:
VMs are started or stopped, workloads run (once per generation), and a report of each run is
printed. Invalid manifests change nothing. With --prune, objects previously applied from the
same set of paths that are no longer declared are torn down and deleted.

While `microfaasctl serve` runs on the same state dir, apply only stores the desired state and
waits until the daemon has converged it (no second engine is started).

Examples:
  microfaasctl apply -f examples/quickstart.yaml
  microfaasctl apply -f manifests/ --prune --timeout 10m
  microfaasctl apply -f cluster.yaml --no-wait      # store only")]
pub struct Args {
    #[command(flatten)]
    files: FileArgs,
    /// Report what would change without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Delete objects applied earlier from the same paths that are no longer declared.
    #[arg(long)]
    prune: bool,
    /// Store the desired state and return without converging.
    #[arg(long)]
    no_wait: bool,
    /// Give up converging after this long (exit 1 naming what did not converge).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::manifest::quantity::parse_duration(s).map_err(|e| e.to_string())
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let loaded = load(&args.files)?;
    crate::daemon::declare::select_declared_store(&loaded);
    let mut store = Store::open(state_dir)?;
    let engine = Claim::take(state_dir)?;
    let declared = declare(
        &mut store,
        &loaded,
        &args.files.files,
        args.prune,
        args.dry_run,
    )?;
    let note = if args.dry_run { " (dry run)" } else { "" };
    for (kind, name, outcome) in &declared.outcomes {
        println!("{}/{name} {}{note}", kind.singular(), outcome.as_str());
    }
    if args.dry_run || args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    converge_and_report(store, state_dir, declared.keys(), args.timeout, engine)
}

/// Who converges: this process (it holds the state-dir lock) or the daemon that holds it.
pub enum Claim {
    /// Held until the command ends.
    Here { _lock: StateLock },
    /// The daemon of PID `pid` on this state dir, or (`None`) the orchestrators serving a
    /// shared store.
    Daemon { pid: Option<String> },
}

impl Claim {
    pub fn take(state_dir: &Path) -> Result<Claim, Failure> {
        // A shared store is converged by the `serve` processes on it, wherever they run: this
        // command never starts a second engine over their workers.
        if let Some(loc) = crate::store::selected_etcd() {
            eprintln!(
                "the store {} is shared: waiting on the orchestrators serving it to converge",
                loc.url()
            );
            return Ok(Claim::Daemon { pid: None });
        }
        match StateLock::acquire(state_dir) {
            Ok(l) => Ok(Claim::Here { _lock: l }),
            Err(LockError::Held { pid, .. }) => {
                eprintln!("the engine of PID {pid} holds the state dir: waiting on it to converge");
                Ok(Claim::Daemon { pid: Some(pid) })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Converges `touched` — with QEMU workers in this process, or by waiting on the daemon that
/// holds the state dir — then reports (see `finish`).
pub fn converge_and_report(
    store: Store,
    state_dir: &Path,
    touched: Vec<(Kind, String)>,
    timeout: Duration,
    claim: Claim,
) -> CmdResult {
    let outcome = match &claim {
        Claim::Here { .. } => super::blocking::block_on(converge::converge(
            store,
            std::sync::Arc::new(crate::drivers::vms::QemuVms::new().with_standby()),
            state_dir,
            touched,
            timeout,
            super::image_default_initrd(),
        )),
        Claim::Daemon { pid } => {
            drop(store);
            super::blocking::block_on(converge::wait_on_daemon(
                state_dir,
                &touched,
                timeout,
                pid.as_deref(),
            ))
        }
    }
    .map_err(Failure::invalid)?
    .map_err(Failure::invalid)?;
    drop(claim);
    finish(outcome, timeout, state_dir)
}

/// Prints the report of every run that took place and names what did not converge.
pub fn finish(outcome: converge::Outcome, timeout: Duration, state_dir: &Path) -> CmdResult {
    let store = Store::open(state_dir)?;
    for (workload, run) in &outcome.runs {
        if let Ok(attempts) = store.attempts(workload, *run)
            && let Ok(Some(r)) = store.run(workload, *run)
        {
            let energy = crate::energy::report::compute(
                &store,
                &r,
                &attempts,
                crate::store::clock::now_millis(),
            )
            .ok()
            .flatten();
            let report = crate::workload::Report::from_attempts(workload, *run, &attempts)
                .with_energy(energy);
            println!("\n{}", report.to_table());
        }
    }
    if outcome.failed.is_empty() && outcome.waiting.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (r, why) in &outcome.failed {
        eprintln!("{r}: failed: {why}");
    }
    for (r, why) in &outcome.waiting {
        eprintln!("{r}: not converged within {timeout:?} (still {why})");
    }
    Err(Failure::silent(1))
}
