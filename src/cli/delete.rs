//! `microfaasctl delete`: remove objects named in manifests, or one by kind and name.

use super::manifests::FileArgs;
use super::{CmdResult, Failure};
use crate::manifest::Kind;
use crate::store::{StateLock, Store, StoreError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
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
    let _lock = StateLock::acquire(state_dir)?;
    // Finalizer: the VMs of the workers going away are stopped before their records go.
    let mut doomed: Vec<String> = Vec::new();
    for (kind, name) in &targets {
        match kind {
            Kind::Worker => doomed.push(name.clone()),
            Kind::WorkerSet => doomed.extend(
                store
                    .list(Some(Kind::Worker))?
                    .into_iter()
                    .filter(|w| w.owner.as_deref() == Some(name.as_str()))
                    .map(|w| w.name),
            ),
            _ => {}
        }
    }
    doomed.retain(|n| store.get(Kind::Worker, n).ok().flatten().is_some());
    if !doomed.is_empty() {
        super::teardown::workers(state_dir, &doomed)?;
    }
    let mut missing = 0;
    for (kind, name) in targets {
        match store.delete(kind, &name) {
            Ok(removed) => {
                for (k, n) in removed {
                    println!("{}/{n} deleted", k.singular());
                }
            }
            Err(StoreError::NotFound(what)) => {
                if !args.ignore_not_found {
                    eprintln!("Error: {what} not found");
                    missing += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    if missing > 0 {
        return Err(Failure::silent(1));
    }
    Ok(ExitCode::SUCCESS)
}
