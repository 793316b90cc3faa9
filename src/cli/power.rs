//! `microfaasctl power`: `on|off|cycle WORKER` ask the engine to change a board's power through
//! its observed state (never a blind press), recorded as events; `status WORKER` prints the
//! observed power and its evidence; `pulse|hold` press one GPIO line directly, without
//! manifests, the store or an engine (wiring checks, tests).

use super::{CmdResult, Failure};
use crate::drivers::gpio::{
    Button, CdevLine, DEFAULT_FORCE_OFF, DEFAULT_PULSE, GpioError, LineSpec,
};
use crate::engine::operator;
use crate::manifest::Kind;
use crate::manifest::quantity::parse_duration;
use crate::manifest::types::WorkerSpec;
use crate::store::{EventType, LockError, StateLock, Store, StoredObject};
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code when the GPIO line could not be found, requested or driven.
pub const EXIT_GPIO: u8 = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PowerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PowerCommand {
    /// Power a board worker on: one pulse, only when it is observed off, then wait for its agent.
    #[command(after_help = "\
Example:
  microfaasctl power on bbb-3

The engine presses only when the board is observed off (no agent, link down, or powered off
recently by the engine). With Unknown power nothing is pressed: `power cycle --force` first.
The request is an event on the worker. The new state holds until the worker's spec changes.
When `serve` holds the state directory, it carries out the request; otherwise this command
runs the engine until the request is done. Exit codes: 0 done, 1 refused or failed.")]
    On(RequestArgs),
    /// Power a board worker off: ask its agent, force off (long hold) if it has not gone in time.
    #[command(after_help = "\
Example:
  microfaasctl power off bbb-3
  microfaasctl power off bbb-3 --force   # also when its power is Unknown

Exit codes as for `power on`.")]
    Off(RequestArgs),
    /// Power a board worker off (as `power off`), then on (as `power on`).
    #[command(after_help = "\
Examples:
  microfaasctl power cycle bbb-3
  microfaasctl power cycle bbb-3 --force   # power Unknown: force off first, then power on

Exit codes as for `power on`.")]
    Cycle(RequestArgs),
    /// Print a board's observed power, the evidence for it, the last command and recent presses.
    #[command(after_help = "\
Example:
  microfaasctl power status bbb-3

Shows what the engine last observed: agent connection, switch link, last commanded state.")]
    Status(StatusArgs),
    /// Short press (default 500 ms): switches a BeagleBone on, or asks a running one to shut down.
    #[command(after_help = "\
Examples:
  microfaasctl power pulse --pin P9_12 --active-low
  microfaasctl power pulse --chip gpiochip1 --line 28 --active-low --duration 500ms
  microfaasctl power pulse --line-name PWR_BUT_3 --active-low

The line is requested as an output at the released level with consumer `microfaas`, pressed,
released and closed. Exit codes: 0 pressed, 2 bad command line, 5 the line could not be used
(not found, held by another consumer, I/O error).")]
    Pulse(PressArgs),
    /// Long press (default 8 s): cuts a BeagleBone's power even when it is hung.
    #[command(after_help = "\
Example:
  microfaasctl power hold --pin P9_12 --active-low

Exit codes as for `power pulse`.")]
    Hold(PressArgs),
}

#[derive(Debug, clap::Args)]
struct RequestArgs {
    /// The board worker.
    worker: String,
    /// Force off with the long hold even when the board's power is Unknown (off and cycle).
    #[arg(long)]
    force: bool,
    /// Give up waiting after this long (the request stays for the engine).
    #[arg(long, default_value = "5m", value_parser = |s: &str| parse_duration(s).map_err(|e| e.to_string()))]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    worker: String,
}

#[derive(Debug, clap::Args)]
struct PressArgs {
    /// The chip: /dev/gpiochipN, gpiochipN or its label. With --line.
    #[arg(long, requires = "line", conflicts_with_all = ["pin", "line_name"])]
    chip: Option<String>,
    /// Line offset on --chip.
    #[arg(long, value_name = "OFFSET", requires = "chip")]
    line: Option<u32>,
    /// A BeagleBone header pin (P8_x, P9_x), resolved to its AM335x GPIO bank's chip.
    #[arg(long, conflicts_with = "line_name")]
    pin: Option<String>,
    /// A line name from the device tree (gpio-line-names).
    #[arg(long, value_name = "NAME")]
    line_name: Option<String>,
    /// The button is pressed by driving the line low (a BeagleBone's PWR_BUT is).
    #[arg(long)]
    active_low: bool,
    /// How long to press, e.g. 500ms, 8s (default: 500ms for pulse, 8s for hold).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
}

impl PressArgs {
    fn spec(&self) -> Result<LineSpec, Failure> {
        match (&self.chip, self.line, &self.pin, &self.line_name) {
            (Some(chip), Some(line), None, None) => Ok(LineSpec::Chip {
                chip: chip.clone(),
                line,
            }),
            (None, None, Some(pin), None) => Ok(LineSpec::HeaderPin(pin.clone())),
            (None, None, None, Some(name)) => Ok(LineSpec::Name(name.clone())),
            _ => Err(usage(
                "name the line with --chip and --line, --pin or --line-name",
            )),
        }
    }
}

fn usage(msg: &str) -> Failure {
    Failure {
        code: 2,
        report: Some(miette::miette!("{msg}")),
    }
}

fn gpio_failure(e: GpioError) -> Failure {
    Failure {
        code: EXIT_GPIO,
        report: Some(miette::Report::msg(e.to_string())),
    }
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    let (press, default) = match args.command {
        PowerCommand::Pulse(ref p) => (p, DEFAULT_PULSE),
        PowerCommand::Hold(ref p) => (p, DEFAULT_FORCE_OFF),
        PowerCommand::On(r) => return request(r, "on", state_dir),
        PowerCommand::Off(r) => return request(r, "off", state_dir),
        PowerCommand::Cycle(r) => return request(r, "cycle", state_dir),
        PowerCommand::Status(s) => return status(&s.worker, state_dir),
    };
    let spec = press.spec()?;
    let length: Duration = match &press.duration {
        Some(d) => parse_duration(d).map_err(|e| usage(&e.to_string()))?,
        None => default,
    };
    let line = CdevLine::request(&spec, press.active_low).map_err(gpio_failure)?;
    let what = line_description(&line, press.active_low);
    let button = Button::new(line, length, length);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| Failure {
            code: EXIT_GPIO,
            report: Some(miette::miette!("cannot start the async runtime: {e}")),
        })?;
    rt.block_on(button.press(length)).map_err(gpio_failure)?;
    println!("pressed {what} for {length:?}");
    Ok(ExitCode::SUCCESS)
}

fn line_description(line: &CdevLine, active_low: bool) -> String {
    use crate::drivers::gpio::ButtonLine;
    let polarity = if active_low {
        "active-low"
    } else {
        "active-high"
    };
    format!("{} ({polarity})", line.describe())
}

fn board(store: &Store, worker: &str) -> Result<(StoredObject, WorkerSpec), Failure> {
    let obj = store
        .get(Kind::Worker, worker)?
        .ok_or_else(|| Failure::invalid(format!("worker/{worker} not found")))?;
    let spec: WorkerSpec = serde_json::from_value(obj.spec.clone())
        .map_err(|e| Failure::invalid(format!("worker/{worker}: stored spec: {e}")))?;
    if spec.board.is_none() {
        return Err(Failure::invalid(format!(
            "worker/{worker} is a VM: its power follows spec.power (apply, cordon, delete)"
        )));
    }
    Ok((obj, spec))
}

fn store_request(store: &mut Store, worker: &str, req: &Value) -> Result<(), Failure> {
    match operator::store_power_request(store, worker, req) {
        Err(crate::store::StoreError::NotFound(_)) => {
            Err(Failure::invalid(format!("worker/{worker} is gone")))
        }
        r => Ok(r?),
    }
}

fn result_of(store: &Store, worker: &str, id: &str) -> Option<Value> {
    operator::power_result(store, worker, id)
}

fn request(args: RequestArgs, action: &str, state_dir: &Path) -> CmdResult {
    let mut store = Store::open(state_dir)?;
    let (_, spec) = board(&store, &args.worker)?;
    let req = operator::power_request(action, args.force);
    let id = req["id"].as_str().unwrap_or_default().to_string();
    let by = if args.force { " (--force)" } else { "" };
    store.record_event(
        Kind::Worker,
        &args.worker,
        EventType::Normal,
        "PowerRequested",
        &format!("microfaasctl power {action}{by}"),
    )?;
    match StateLock::acquire(state_dir) {
        Ok(_lock) => {
            store_request(&mut store, &args.worker, &req)?;
            let mut touched = vec![(Kind::Worker, args.worker.clone())];
            if let Some(sw) = spec.board.and_then(|b| b.network).and_then(|n| n.switch) {
                touched.push((Kind::Switch, sw));
            }
            // Converges until the request is done (its standing waits on it), then stops.
            super::blocking::block_on(super::converge::converge(
                store,
                std::sync::Arc::new(crate::drivers::vms::QemuVms::new()),
                state_dir,
                touched,
                args.timeout,
                None,
            ))
            .map_err(Failure::invalid)?
            .map_err(Failure::invalid)?;
        }
        Err(LockError::Held { pid, .. }) => {
            eprintln!(
                "an engine (PID {pid}) holds the state directory; it carries out the request"
            );
            store_request(&mut store, &args.worker, &req)?;
            let deadline = Instant::now() + args.timeout;
            while result_of(&store, &args.worker, &id).is_none() && Instant::now() < deadline {
                // A status write of the engine racing ours may drop the request: put it back.
                let pending = operator::power_request_pending(&store, &args.worker)?;
                if !pending && result_of(&store, &args.worker, &id).is_none() {
                    store_request(&mut store, &args.worker, &req)?;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Err(e) => return Err(e.into()),
    }
    let store = Store::open(state_dir)?;
    match result_of(&store, &args.worker, &id) {
        Some(r) if r["ok"] == true => {
            println!(
                "worker/{} power {action}: {}",
                args.worker,
                r["message"].as_str().unwrap_or("done")
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(r) => Err(Failure::invalid(format!(
            "worker/{} power {action}: {}",
            args.worker,
            r["message"].as_str().unwrap_or("failed")
        ))),
        None => Err(Failure::invalid(format!(
            "worker/{} power {action}: not done within {:?} (see `microfaasctl describe worker {}`)",
            args.worker, args.timeout, args.worker
        ))),
    }
}

/// Presses, bounces and power requests among a worker's events.
const POWER_EVENTS: &[&str] = &[
    "PowerPulse",
    "PowerHold",
    "PowerOff",
    "PortBounce",
    "PressFailed",
    "PowerRequested",
    "PowerRequestDone",
    "PowerRequestFailed",
];

fn status(worker: &str, state_dir: &Path) -> CmdResult {
    let store = Store::open(state_dir)?;
    let (obj, _) = board(&store, worker)?;
    let st = &obj.status;
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let cond = |kind: &str| {
        st["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == kind))
            .map(|c| {
                let msg = c["message"].as_str().unwrap_or("");
                let sep = if msg.is_empty() { "" } else { ": " };
                format!("{} ({}{sep}{msg})", text(&c["status"]), text(&c["reason"]))
            })
            .unwrap_or_else(|| "-".into())
    };
    println!("Worker:        {worker}");
    println!("Observed:      {}", text(&st["observedPower"]["state"]));
    println!("Evidence:      {}", text(&st["observedPower"]["evidence"]));
    println!("Phase:         {}", text(&st["phase"]));
    println!("Wanted:        {}", text(&st["power"]));
    println!("Agent:         {}", cond("AgentConnected"));
    println!("Link:          {}", cond("LinkUp"));
    println!("Power control: {}", cond("PowerControl"));
    let c = &st["commanded"];
    if c.is_object() {
        println!(
            "Commanded:     {} at {} ({})",
            text(&c["state"]),
            text(&c["at"]),
            text(&c["reason"])
        );
    } else {
        println!("Commanded:     -");
    }
    if let Some(holder) = StateLock::holder(state_dir) {
        println!("Engine:        running (PID {holder})");
    } else {
        println!("Engine:        none running; as last observed");
    }
    let events = store.events(Kind::Worker, worker, 200)?;
    let presses: Vec<_> = events
        .iter()
        .filter(|e| POWER_EVENTS.contains(&e.reason.as_str()))
        .collect();
    if !presses.is_empty() {
        println!("Power events:");
        for e in presses.iter().rev().take(10).rev() {
            println!("  {}  {:<18} {}", e.last_time, e.reason, e.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}
