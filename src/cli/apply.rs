//! `microfaasctl apply`: store the desired state of a set of manifests (all or nothing), then
//! run the engine in this process until everything touched has converged and every workload it
//! started has finished, and report.

use super::manifests::{FileArgs, applyset, desired, load};
use super::{CmdResult, Failure, converge};
use crate::manifest::Kind;
use crate::store::{ApplyOutcome, StateLock, Store};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints one line per object: `worker/vm-0 created|configured|unchanged|pruned`, then converges:
VMs are started or stopped, workloads run (once per generation), and a report of each run is
printed. Invalid manifests change nothing. With --prune, objects previously applied from the
same set of paths that are no longer declared are torn down and deleted.

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
    let mut store = Store::open(state_dir)?;
    let _lock = StateLock::acquire(state_dir)?;
    let objects: Vec<_> = loaded.resources.iter().map(desired).collect();
    let (id, paths) = applyset(&loaded, &args.files);
    if args.dry_run {
        let outcomes = store.apply(&objects, Some((&id, &paths)), args.prune, true)?;
        for (kind, name, outcome) in outcomes {
            println!("{}/{name} {} (dry run)", kind.singular(), outcome.as_str());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // Pruned workers are torn down (VM stopped) before their records go: see which first.
    let pruned_workers: Vec<String> = if args.prune {
        store
            .apply(&objects, Some((&id, &paths)), true, true)?
            .into_iter()
            .filter(|(k, _, o)| *k == Kind::Worker && *o == ApplyOutcome::Pruned)
            .map(|(_, n, _)| n)
            .collect()
    } else {
        Vec::new()
    };
    if !pruned_workers.is_empty() && !args.no_wait {
        super::teardown::workers(state_dir, &pruned_workers)?;
        store = Store::open(state_dir)?;
    }
    let outcomes = store.apply(&objects, Some((&id, &paths)), args.prune, false)?;
    for (kind, name, outcome) in &outcomes {
        println!("{}/{name} {}", kind.singular(), outcome.as_str());
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let touched: Vec<(Kind, String)> = outcomes
        .into_iter()
        .filter(|(_, _, o)| *o != ApplyOutcome::Pruned)
        .map(|(k, n, _)| (k, n))
        .collect();
    converge_and_report(store, state_dir, touched, args.timeout)
}

/// Converges `touched` with QEMU workers in this process, then reports (see `finish`).
pub fn converge_and_report(
    store: Store,
    state_dir: &Path,
    touched: Vec<(Kind, String)>,
    timeout: Duration,
) -> CmdResult {
    let outcome = super::teardown::block_on(converge::converge(
        store,
        std::sync::Arc::new(crate::drivers::vms::QemuVms::new()),
        state_dir,
        touched,
        timeout,
        super::image_default_initrd(),
    ))
    .map_err(Failure::invalid)?
    .map_err(Failure::invalid)?;
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
