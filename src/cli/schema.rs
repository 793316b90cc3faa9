//! `microfaasctl schema [KIND]`: the JSON Schemas generated from the resource types.

use super::{CmdResult, Failure};
use crate::manifest::{Kind, schema};
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A kind (any spelling: Worker, worker, workers, wk); all kinds bundled when omitted.
    kind: Option<String>,
}

pub fn run(args: Args) -> CmdResult {
    let value = match args.kind {
        Some(k) => schema::for_kind(k.parse::<Kind>().map_err(Failure::invalid)?),
        None => schema::bundle(),
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
