//! `microfaasctl switch ...`: talk to a `Switch` declared in manifests, directly over SNMP,
//! without the store or a running engine. For operators checking wiring and credentials, and
//! for tests.

use super::manifests::{FileArgs, load};
use super::{CmdResult, Failure};
use crate::drivers::snmp::{
    IfStatus, PortState, ProcessEnv, SnmpError, SnmpSwitch, SwitchConfig, SwitchObservation,
};
use crate::manifest::quantity::parse_duration;
use crate::manifest::resource::Spec;
use comfy_table::{Table, presets::NOTHING};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::ExitCode;

/// Exit code when the switch could not be read (timeout, auth failure, protocol error).
const EXIT_SWITCH: u8 = 4;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SwitchCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SwitchCommand {
    /// Read the switch's ports (ifName, ifDescr, admin/oper status, speed) over SNMP.
    ///
    /// Without --port or --workers every interface is listed (a GETBULK walk of the tables); the WORKER
    /// column shows which worker in the manifests uses each port. With --port/--workers only
    /// those ports are read, the way the engine polls (GETs in batches).
    #[command(after_help = "\
Examples:
  microfaasctl switch ports tor-1 -f manifests/
  microfaasctl switch ports tor-1 -f cluster.yaml --port Gi1/0/3 --port ifIndex:10105
  microfaasctl switch ports tor-1 -f cluster.yaml --workers -o json

A port key is an ifName, an ifDescr or an ifIndex, matched exactly first, then ignoring case;
prefix it with ifName:, ifDescr: or ifIndex: to force one column.

Exit codes: 0 ok, 1 bad manifests or a port key that does not resolve, 2 bad command line,
4 the switch could not be read (timeout, authentication failure, protocol error).")]
    Ports(PortsArgs),
    /// Bounce one port: set ifAdminStatus down, wait, set it up again.
    #[command(after_help = "\
Example:
  microfaasctl switch bounce tor-1 Gi1/0/3 -f cluster.yaml --hold 3s

Only the named port is touched. Needs write access (rwcommunity, or a v3 user with a write view).")]
    Bounce(BounceArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
struct PortsArgs {
    /// Name of the Switch object in the manifests.
    switch: String,
    #[command(flatten)]
    files: FileArgs,
    /// Only this port (ifName, ifDescr or ifIndex). Repeatable.
    #[arg(long = "port", value_name = "KEY")]
    ports: Vec<String>,
    /// Only the ports that workers in the manifests use.
    #[arg(long, conflicts_with = "ports")]
    workers: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

#[derive(Debug, clap::Args)]
struct BounceArgs {
    /// Name of the Switch object in the manifests.
    switch: String,
    /// The port: ifName, ifDescr or ifIndex.
    port: String,
    #[command(flatten)]
    files: FileArgs,
    /// How long the port stays down.
    #[arg(long, default_value = "2s", value_name = "DURATION")]
    hold: String,
}

pub fn run(args: Args) -> CmdResult {
    match args.command {
        SwitchCommand::Ports(a) => ports(a),
        SwitchCommand::Bounce(a) => bounce(a),
    }
}

/// The switch's config and, per port key, the workers on it.
fn from_manifests(
    files: &FileArgs,
    switch: &str,
) -> Result<(SwitchConfig, BTreeMap<String, String>), Failure> {
    let loaded = load(files)?;
    let mut config = None;
    let mut workers = BTreeMap::new();
    for r in &loaded.resources {
        match &r.spec {
            Spec::Switch(s) if r.name() == switch => {
                config = Some(
                    SwitchConfig::from_spec(switch, s, &ProcessEnv)
                        .map_err(|e| Failure::invalid(e.to_string()))?,
                );
            }
            Spec::Worker(w) => {
                if let Some(net) = w.board.as_ref().and_then(|b| b.network.as_ref())
                    && net.switch.as_deref() == Some(switch)
                    && let Some(port) = &net.port
                {
                    workers.insert(port.clone(), r.name().to_string());
                }
            }
            _ => {}
        }
    }
    let config = config.ok_or_else(|| {
        Failure::invalid(format!("switch/{switch} is not declared in the manifests"))
    })?;
    Ok((config, workers))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure {
            code: EXIT_SWITCH,
            report: Some(miette::miette!("cannot start the async runtime: {e}")),
        })
}

fn switch_failure(e: SnmpError) -> Failure {
    let code = if e.is_switch_level() { EXIT_SWITCH } else { 1 };
    Failure {
        code,
        report: Some(miette::miette!("{} ({})", e, e.reason())),
    }
}

fn ports(args: PortsArgs) -> CmdResult {
    let (config, workers) = from_manifests(&args.files, &args.switch)?;
    let sw = SnmpSwitch::new(config);
    let keys: Vec<String> = if args.workers {
        workers.keys().cloned().collect()
    } else {
        args.ports.clone()
    };
    let rt = runtime()?;
    let (obs, owner) = rt
        .block_on(async {
            let obs = if keys.is_empty() && !args.workers {
                sw.poll_all().await?
            } else {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                sw.poll(&refs).await?
            };
            // Which worker sits on each index; resolved against the map the poll just read.
            let mut owner: BTreeMap<u32, String> = BTreeMap::new();
            for (key, worker) in &workers {
                if let Ok(i) = sw.resolve(key).await {
                    owner.insert(i.index, worker.clone());
                }
            }
            Ok::<_, SnmpError>((obs, owner))
        })
        .map_err(switch_failure)?;

    match args.output {
        Format::Json => println!("{}", render_json(&obs, &owner)),
        Format::Table => print!("{}", render_table(&obs, &owner)),
    }
    for u in &obs.unresolved {
        eprintln!("Error: {} ({})", u.error, u.error.reason());
    }
    Ok(if obs.unresolved.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render_json(obs: &SwitchObservation, owner: &BTreeMap<u32, String>) -> String {
    let ports: Vec<_> = obs
        .ports
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            if let (Some(w), Some(m)) = (owner.get(&p.index), v.as_object_mut()) {
                m.insert("worker".into(), json!(w));
            }
            v
        })
        .collect();
    let doc = json!({
        "sysName": obs.sys_name,
        "uptimeSeconds": obs.uptime.as_secs_f64(),
        "ports": ports,
        "unresolved": obs.unresolved.iter().map(|u| json!({
            "key": u.key, "reason": u.error.reason(), "message": u.error.to_string(),
        })).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

fn render_table(obs: &SwitchObservation, owner: &BTreeMap<u32, String>) -> String {
    let up = obs.uptime.as_secs();
    let mut out = format!(
        "Switch: {}   uptime {}d {:02}h{:02}m{:02}s\n",
        obs.sys_name,
        up / 86400,
        up % 86400 / 3600,
        up % 3600 / 60,
        up % 60
    );
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["INDEX", "NAME", "DESCR", "ADMIN", "OPER", "SPEED", "WORKER"]);
    for p in &obs.ports {
        t.add_row(row(p, owner.get(&p.index).map(String::as_str)));
    }
    out.push_str(&t.to_string());
    out.push('\n');
    out
}

fn row(p: &PortState, worker: Option<&str>) -> [String; 7] {
    let dash = || "-".to_string();
    [
        p.index.to_string(),
        p.name.clone().unwrap_or_else(dash),
        p.descr.clone().unwrap_or_else(dash),
        p.admin.as_str().to_string(),
        status_cell(p.oper),
        p.speed_mbps.map(|s| format!("{s}M")).unwrap_or_else(dash),
        worker.map(str::to_string).unwrap_or_else(dash),
    ]
}

fn status_cell(s: IfStatus) -> String {
    s.as_str().to_string()
}

fn bounce(args: BounceArgs) -> CmdResult {
    let hold = parse_duration(&args.hold).map_err(|e| Failure {
        code: 2,
        report: Some(miette::miette!("--hold: {e}")),
    })?;
    let (config, _) = from_manifests(&args.files, &args.switch)?;
    let sw = SnmpSwitch::new(config);
    let rt = runtime()?;
    rt.block_on(sw.bounce(&args.port, hold))
        .map_err(switch_failure)?;
    println!(
        "bounced {} on switch/{} (down for {})",
        args.port, args.switch, args.hold
    );
    Ok(ExitCode::SUCCESS)
}
