//! `microfaasctl report WORKLOAD [--run N] [--format table|json|csv|html] [-o FILE]`: the
//! report of a recorded run (the latest by default), printed or written to a file.

use super::{CmdResult, Failure};
use crate::store::Store;
use crate::workload::{Report, to_csv_with_energy, to_html};
use miette::miette;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Html,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Percentiles are nearest-rank over succeeded invocations; counts are of invocations (retries
counted once), except per worker, where they are of attempts.

Energy (when a PowerMeter has samples in the run's window): the meters' trapezoidal integral
over the run, shared among covered workers in proportion to their modeled power per phase.
An invocation gets its exec energy plus, on OneShot workers, the energy of the boot it used;
idle, off and unattributed energy are reported separately. `joules = execJoules + bootJoules +
idleJoules`; `microfaasJoulesPerFunction` = Wh*3600/jobs as in the MicroFaaS paper.

Examples:
  microfaasctl report ci-balanced
  microfaasctl report ci-balanced --run 2 --format json
  microfaasctl report ci-balanced --format html -o report.html")]
pub struct Args {
    /// The Workload's name.
    workload: String,
    /// Run number; the latest run when omitted.
    #[arg(long, value_name = "N")]
    run: Option<i64>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let store = Store::open(state_dir)?;
    let run = match args.run {
        Some(n) => store.run(&args.workload, n)?.ok_or_else(|| {
            Failure::invalid(format!(
                "workload {} has no run {n}{}",
                args.workload,
                latest_hint(&store, &args.workload)
            ))
        })?,
        None => store.latest_run(&args.workload)?.ok_or_else(|| {
            Failure::invalid(format!(
                "workload {} has no recorded runs (apply it first)",
                args.workload
            ))
        })?,
    };
    let attempts = store.attempts(&args.workload, run.run)?;
    let energy =
        crate::energy::report::compute(&store, &run, &attempts, crate::store::clock::now_millis())?;
    let report = Report::from_attempts(&args.workload, run.run, &attempts).with_energy(energy);
    let text = match args.format {
        Format::Table => {
            let mut t = report.to_table();
            t.insert_str(0, &format!("Phase:          {}\n", run.phase));
            t
        }
        Format::Json => report.to_json(),
        Format::Csv => to_csv_with_energy(&attempts, report.energy.as_ref()),
        Format::Html => to_html(&report, &attempts),
    };
    match &args.output {
        None => print!("{text}"),
        Some(path) => std::fs::write(path, text).map_err(|e| Failure {
            code: 1,
            report: Some(miette!("cannot write {}: {e}", path.display())),
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

fn latest_hint(store: &Store, workload: &str) -> String {
    match store.latest_run(workload) {
        Ok(Some(r)) => format!(" (runs are 1 to {})", r.run),
        _ => String::new(),
    }
}
