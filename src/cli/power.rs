//! `microfaasctl power pulse|hold`: press a power button on one GPIO line directly, without
//! manifests, the store or a running engine. For operators checking a board's wiring, and for
//! tests. (`power on|off|cycle|status WORKER`, which go through the observed power state, are
//! not here yet.)

use super::{CmdResult, Failure};
use crate::drivers::gpio::{
    Button, CdevLine, DEFAULT_FORCE_OFF, DEFAULT_PULSE, GpioError, LineSpec,
};
use crate::manifest::quantity::parse_duration;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when the GPIO line could not be found, requested or driven.
pub const EXIT_GPIO: u8 = 5;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PowerCommand,
}

#[derive(Debug, clap::Subcommand)]
enum PowerCommand {
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

pub fn run(args: Args) -> CmdResult {
    let (press, default) = match &args.command {
        PowerCommand::Pulse(p) => (p, DEFAULT_PULSE),
        PowerCommand::Hold(p) => (p, DEFAULT_FORCE_OFF),
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
