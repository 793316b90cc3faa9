//! `microfaasctl describe KIND NAME`: one object in detail, for a person to read.

use super::output::yaml;
use super::{CmdResult, Failure};
use crate::manifest::Kind;
use crate::store::{Store, clock};
use comfy_table::{Table, presets::NOTHING};
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    kind: String,
    name: String,
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let kind: Kind = args.kind.parse().map_err(Failure::invalid)?;
    let store = Store::open(state_dir)?;
    let o = store
        .get(kind, &args.name)?
        .ok_or_else(|| Failure::invalid(format!("{}/{} not found", kind.singular(), args.name)))?;
    let mut out = String::new();
    let labels = if o.labels.is_empty() {
        "<none>".to_string()
    } else {
        o.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n              ")
    };
    out.push_str(&format!("Name:         {}\n", o.name));
    out.push_str(&format!("Kind:         {}\n", o.kind));
    out.push_str(&format!("Labels:       {labels}\n"));
    if let Some(owner) = &o.owner {
        out.push_str(&format!("Controlled By: WorkerSet/{owner}\n"));
    }
    out.push_str(&format!("Generation:   {}\n", o.generation));
    out.push_str(&format!(
        "Created:      {} ({} ago)\n",
        o.created_at,
        clock::age(&o.created_at)
    ));
    if let Some(src) = &o.source {
        out.push_str(&format!("Declared at:  {src}\n"));
    }
    out.push_str("Spec:\n");
    for line in yaml(&o.spec).lines() {
        out.push_str(&format!("  {line}\n"));
    }
    let status = crate::engine::status::Status::from_value(&o.status);
    let phase = status.phase().unwrap_or("Pending");
    let observed = status.observed_generation();
    out.push_str(&format!(
        "Status:\n  Phase:               {phase}\n  Observed Generation: {observed}\n"
    ));
    if let Some(obj) = o.status.as_object() {
        for (k, v) in obj {
            if !matches!(
                k.as_str(),
                "phase" | "observedGeneration" | "conditions" | "ports"
            ) {
                out.push_str(&format!("  {k}: {}\n", compact(v)));
            }
        }
    }
    if let Some(ports) = o
        .status
        .get("ports")
        .and_then(|p| p.as_array())
        .filter(|p| !p.is_empty())
    {
        let mut t = Table::new();
        t.load_preset(NOTHING);
        t.set_header([
            "  PORT",
            "IFINDEX",
            "IFNAME",
            "IFDESCR",
            "OPER",
            "ADMIN",
            "SPEED (Mb/s)",
            "WORKER",
        ]);
        for p in ports {
            let f = |k: &str| {
                p.get(k)
                    .filter(|v| !v.is_null())
                    .map(compact)
                    .unwrap_or_else(|| "-".into())
            };
            t.add_row([
                format!("  {}", f("key")),
                f("index"),
                f("name"),
                f("descr"),
                f("oper"),
                f("admin"),
                f("speedMbps"),
                f("worker"),
            ]);
        }
        out.push_str(&format!("Ports:\n{t}\n"));
    }
    out.push_str("Conditions:\n");
    match o.status.get("conditions").and_then(|c| c.as_array()) {
        Some(conds) if !conds.is_empty() => {
            let mut t = Table::new();
            t.load_preset(NOTHING);
            t.set_header(["  TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"]);
            for c in conds {
                let f = |k: &str| c.get(k).map(compact).unwrap_or_default();
                t.add_row([
                    format!("  {}", f("type")),
                    f("status"),
                    f("reason"),
                    f("message"),
                    f("lastTransitionTime"),
                ]);
            }
            out.push_str(&format!("{t}\n"));
        }
        _ => out.push_str("  <none>\n"),
    }
    out.push_str("Events:\n");
    let events = store.events(kind, &o.name, 20)?;
    if events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new();
        t.load_preset(NOTHING);
        t.set_header(["  TYPE", "REASON", "AGE", "COUNT", "MESSAGE"]);
        for e in events {
            t.add_row([
                format!("  {}", e.event_type),
                e.reason,
                clock::age(&e.last_time),
                e.count.to_string(),
                e.message,
            ]);
        }
        out.push_str(&format!("{t}\n"));
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

fn compact(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
