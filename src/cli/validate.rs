//! `microfaasctl validate`: report every problem in a set of manifests.

use super::CmdResult;
use super::manifests::{FileArgs, load};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit 0 when valid, 1 when any error is found (warnings alone do not fail)."
)]
pub struct Args {
    #[command(flatten)]
    files: FileArgs,
}

pub fn run(args: Args) -> CmdResult {
    let loaded = load(&args.files)?;
    let warnings = loaded.diagnostics.len();
    let declared = loaded
        .resources
        .iter()
        .filter(|r| r.owner.is_none())
        .count();
    let made = loaded.resources.len() - declared;
    let mut summary = format!(
        "valid: {declared} object{} in {} file{}",
        if declared == 1 { "" } else { "s" },
        loaded.sources.len(),
        if loaded.sources.len() == 1 { "" } else { "s" },
    );
    if made > 0 {
        summary.push_str(&format!(" (+{made} workers from worker sets)"));
    }
    if warnings > 0 {
        summary.push_str(&format!(
            ", {warnings} warning{}",
            if warnings == 1 { "" } else { "s" }
        ));
    }
    println!("{summary}");
    Ok(ExitCode::SUCCESS)
}
