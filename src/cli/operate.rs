//! Operator commands on single objects: `cordon`/`uncordon` a worker (health Maintenance /
//! Good, which also clears a quarantine) and `rerun` a workload (one more run of the same
//! generation, converged like `apply`: in this process, or by the daemon holding the state dir).

use super::{CmdResult, Failure};
use crate::engine::operator;
use crate::manifest::Kind;
use crate::store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Only `worker`.
    kind: String,
    name: String,
}

#[derive(Debug, clap::Args)]
pub struct RerunArgs {
    /// Only `workload`.
    kind: String,
    name: String,
    /// Store the request and return; the next `apply` (or engine) runs it.
    #[arg(long)]
    no_wait: bool,
    #[arg(long, default_value = "30m", value_parser = |s: &str| crate::manifest::quantity::parse_duration(s).map_err(|e| e.to_string()))]
    timeout: Duration,
}

fn expect_kind(given: &str, want: Kind) -> Result<(), Failure> {
    let k: Kind = given.parse().map_err(Failure::invalid)?;
    if k != want {
        return Err(Failure::invalid(format!(
            "this command takes a {}, not a {}",
            want.singular(),
            k.singular()
        )));
    }
    Ok(())
}

/// Sets a worker's health: `Maintenance` keeps it off and unused; `Good` returns it to service.
pub fn set_health(args: WorkerArgs, state_dir: &Path, health: &str) -> CmdResult {
    expect_kind(&args.kind, Kind::Worker)?;
    let mut store = Store::open(state_dir)?;
    if store.get(Kind::Worker, &args.name)?.is_none() {
        return Err(Failure::invalid(format!("worker/{} not found", args.name)));
    }
    let reason = operator::set_health(&mut store, &args.name, health)?;
    println!("worker/{} {}", args.name, reason.to_lowercase());
    Ok(ExitCode::SUCCESS)
}

pub fn rerun(args: RerunArgs, state_dir: &Path) -> CmdResult {
    expect_kind(&args.kind, Kind::Workload)?;
    let mut store = Store::open(state_dir)?;
    let claim = super::apply::Claim::take(state_dir)?;
    store
        .get(Kind::Workload, &args.name)?
        .ok_or_else(|| Failure::invalid(format!("workload/{} not found", args.name)))?;
    operator::request_rerun(&mut store, &args.name)?;
    println!("workload/{} rerun requested", args.name);
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let mut touched = vec![(Kind::Workload, args.name.clone())];
    touched.extend(
        store
            .list(Some(Kind::Worker))?
            .into_iter()
            .map(|w| (Kind::Worker, w.name)),
    );
    super::apply::converge_and_report(store, state_dir, touched, args.timeout, claim)
}
