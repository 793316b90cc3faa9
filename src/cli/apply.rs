//! `microfaasctl apply`: store the desired state of a set of manifests, all or nothing.

use super::CmdResult;
use super::manifests::{FileArgs, applyset, desired, load};
use crate::store::{StateLock, Store};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints one line per object: `worker/vm-0 created|configured|unchanged|pruned`.
Invalid manifests change nothing. With --prune, objects previously applied from the same set of
paths that are no longer declared are deleted.")]
pub struct Args {
    #[command(flatten)]
    files: FileArgs,
    /// Report what would change without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Delete objects applied earlier from the same paths that are no longer declared.
    #[arg(long)]
    prune: bool,
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let loaded = load(&args.files)?;
    let mut store = Store::open(state_dir)?;
    let _lock = StateLock::acquire(state_dir)?;
    let objects: Vec<_> = loaded.resources.iter().map(desired).collect();
    let (id, paths) = applyset(&loaded, &args.files);
    let outcomes = store.apply(&objects, Some((&id, &paths)), args.prune, args.dry_run)?;
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    for (kind, name, outcome) in outcomes {
        println!("{}/{name} {}{suffix}", kind.singular(), outcome.as_str());
    }
    Ok(ExitCode::SUCCESS)
}
