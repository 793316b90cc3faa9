//! `microfaasctl get KIND [NAME]`: list objects from the store.

use super::output::{list_document, table, to_document, yaml};
use super::{CmdResult, Failure};
use crate::manifest::Kind;
use crate::store::{Store, StoredObject};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Power meters show their latest stored sample (WATTS, LAST SAMPLE; `status.lastReading`).

Examples:
  microfaasctl get workers
  microfaasctl get wk -l rack=a -o wide
  microfaasctl get worker vm-0 -o json")]
pub struct Args {
    /// Kind: worker|workers|wk, workerset|ws, function|fn, workload|wl, switch|sw,
    /// powermeter|pm, cluster|cl.
    kind: String,
    /// One object's name; all objects of the kind when omitted.
    name: Option<String>,
    /// Label selector, `key=value[,key=value...]`.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    selector: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>, Failure> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| {
                    (
                        k.trim().trim_end_matches('=').to_string(),
                        v.trim().to_string(),
                    )
                })
                .ok_or_else(|| {
                    Failure::invalid(format!("invalid selector `{p}`: expected key=value"))
                })
        })
        .collect()
}

/// A meter's latest stored sample, shown as `status.lastReading` (`get` reads it from the
/// samples, so it is current even between status writes).
fn with_reading(store: &Store, mut o: StoredObject) -> StoredObject {
    if o.kind != Kind::PowerMeter {
        return o;
    }
    if let Ok(Some(s)) = store.latest_sample(&o.name) {
        let mut reading = serde_json::json!({
            "watts": s.watts,
            "time": crate::store::clock::format_unix_millis(s.at_ms),
        });
        for (k, v) in [
            ("volts", s.volts),
            ("amps", s.amps),
            ("wattHours", s.watt_hours),
        ] {
            if let Some(v) = v {
                reading[k] = serde_json::json!(v);
            }
        }
        if !o.status.is_object() {
            o.status = serde_json::json!({});
        }
        o.status["lastReading"] = reading;
    }
    o
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let kind: Kind = args.kind.parse().map_err(Failure::invalid)?;
    let store = Store::open(state_dir)?;
    let selector = match &args.selector {
        Some(s) => parse_selector(s)?,
        None => Vec::new(),
    };
    if let Some(name) = &args.name {
        let obj = store
            .get(kind, name)?
            .ok_or_else(|| Failure::invalid(format!("{}/{name} not found", kind.singular())))?;
        let obj = with_reading(&store, obj);
        match args.output {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&to_document(&obj)).unwrap_or_default()
            ),
            Format::Yaml => print!("{}", yaml(&to_document(&obj))),
            Format::Table | Format::Wide => {
                print!("{}", table(kind, &[obj], args.output == Format::Wide));
                println!();
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let objects: Vec<_> = store
        .list(Some(kind))?
        .into_iter()
        .filter(|o| selector.iter().all(|(k, v)| o.labels.get(k) == Some(v)))
        .map(|o| with_reading(&store, o))
        .collect();
    match args.output {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&list_document(&objects)).unwrap_or_default()
        ),
        Format::Yaml => print!("{}", yaml(&list_document(&objects))),
        Format::Table | Format::Wide => {
            if objects.is_empty() {
                eprintln!("No {} found.", kind.plural());
            } else {
                println!("{}", table(kind, &objects, args.output == Format::Wide));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
