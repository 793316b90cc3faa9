//! `microfaasctl delete`: remove objects named in manifests, or one by kind and name.

use super::manifests::FileArgs;
use super::{CmdResult, Failure};
use crate::daemon::declare::request_deletion;
use crate::engine::{Config, Engine};
use crate::manifest::Kind;
use crate::orchestrator::Sessions;
use crate::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each object is torn down first (a worker's VM stopped), then forgotten. While `microfaasctl
serve` runs on the state dir, its engine does the teardown and this command waits for it.

Examples:
  microfaasctl delete -f cluster.yaml
  microfaasctl delete worker vm-0")]
pub struct Args {
    /// Manifests whose objects to delete (file, folder or `-`).
    #[arg(short = 'f', long = "filename", value_name = "PATH", conflicts_with_all = ["kind", "name"])]
    files: Vec<PathBuf>,
    /// Kind of the object to delete.
    #[arg(required_unless_present = "files", requires = "name")]
    kind: Option<String>,
    name: Option<String>,
    /// Do not fail on objects that are not in the store.
    #[arg(long)]
    ignore_not_found: bool,
    /// Give up waiting for teardowns after this long (exit 1 naming what is left).
    #[arg(long, default_value = "5m", value_parser = |s: &str| crate::manifest::quantity::parse_duration(s).map_err(|e| e.to_string()))]
    timeout: Duration,
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let targets: Vec<(Kind, String)> = if args.files.is_empty() {
        let kind: Kind = args
            .kind
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(Failure::invalid)?;
        vec![(kind, args.name.clone().unwrap_or_default())]
    } else {
        let loaded = super::manifests::load(&FileArgs {
            files: args.files.clone(),
            no_fs_checks: true,
        })?;
        loaded
            .resources
            .iter()
            .filter(|r| r.owner.is_none())
            .map(|r| (r.kind(), r.name().to_string()))
            .collect()
    };
    let mut store = Store::open(state_dir)?;
    let claim = super::apply::Claim::take(state_dir)?;
    let mut missing = 0;
    let mut present = Vec::new();
    for (kind, name) in targets {
        if store.get(kind, &name)?.is_some() {
            present.push((kind, name));
        } else if !args.ignore_not_found {
            eprintln!("Error: {}/{name} not found", kind.singular());
            missing += 1;
        }
    }
    // Finalizers: the engine (this process's or the daemon's) tears each object down, then
    // removes its record.
    let marked = request_deletion(&mut store, &present)?;
    match &claim {
        super::apply::Claim::Here { .. } => {
            drop(store);
            for ((kind, name), why) in super::blocking::block_on(finalize_here(state_dir, &marked))
                .map_err(Failure::invalid)??
            {
                eprintln!("{}/{name}: not deleted: {why}", kind.singular());
                missing += 1;
            }
        }
        super::apply::Claim::Daemon { pid } => {
            drop(store);
            let outcome = super::blocking::block_on(super::converge::wait_on_daemon(
                state_dir,
                &marked,
                args.timeout,
                pid.as_deref(),
            ))
            .map_err(Failure::invalid)?
            .map_err(Failure::invalid)?;
            for (r, why) in outcome.failed.iter().chain(&outcome.waiting) {
                eprintln!("{r}: not deleted within {:?} (still {why})", args.timeout);
                missing += 1;
            }
        }
    }
    let store = Store::open(state_dir)?;
    for (kind, name) in &marked {
        if store.get(*kind, name)?.is_none() {
            println!("{}/{name} deleted", kind.singular());
        }
    }
    if missing > 0 {
        return Err(Failure::silent(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// No engine runs: run the engine's finalizers here, without its reconcile loop (which would
/// also start every other declared worker) and without an agent endpoint (agents that cannot
/// be asked are powered off by ACPI, then QMP quit).
async fn finalize_here(
    state_dir: &Path,
    keys: &[(Kind, String)],
) -> Result<Vec<((Kind, String), String)>, Failure> {
    let engine = Engine::new(
        Store::open(state_dir)?,
        Arc::new(crate::drivers::vms::QemuVms::new()),
        Arc::new(Sessions::default()),
        Config {
            state_dir: state_dir.to_path_buf(),
            orchestrator_port: 0,
            token: String::new(),
            default_initrd: None,
            concurrency: 1,
            resync: Duration::from_secs(3600),
        },
    );
    Ok(engine.finalize_now(keys).await)
}
