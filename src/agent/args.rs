//! Command-line flags for the agent run as a normal process (tests, boards with a full OS).

use std::path::Path;
use std::time::Duration;

use super::{Config, DEFAULT_HEARTBEAT};

pub const USAGE: &str = "\
usage: microfaas-agent --orchestrator HOST:PORT --name NAME [--token T | --token-file F]
                       [--lifecycle oneshot|warm] [--watchdog SECONDS] [--failsafe poweroff|reboot]
                       [--heartbeat-ms MS] [--no-poweroff]

As PID 1 the agent ignores flags and reads microfaas.* settings from /proc/cmdline.
As a normal process, poweroff and reboot requests end the agent with status 0 (the failsafe
with status 2); --no-poweroff makes it dial again instead. --watchdog 0 (the default here)
disables the silence failsafe.";

#[derive(Debug)]
pub enum Parsed {
    Run(Config),
    Help(&'static str),
}

pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut it = args.into_iter();
    let (mut orchestrator, mut name, mut token) = (None, None, None);
    let mut cfg = Config {
        worker: String::new(),
        orchestrator: String::new(),
        token: Vec::new(),
        lifecycle: Default::default(),
        watchdog: None,
        failsafe: Default::default(),
        heartbeat: DEFAULT_HEARTBEAT,
        no_poweroff: false,
    };
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help(USAGE)),
            "--orchestrator" => orchestrator = Some(value()?),
            "--name" => name = Some(value()?),
            "--token" => token = Some(value()?.into_bytes()),
            "--token-file" => {
                let path = value()?;
                token = Some(
                    super::read_token_file(Path::new(&path))
                        .map_err(|e| format!("--token-file {path}: {e}"))?,
                );
            }
            "--lifecycle" => cfg.lifecycle = value()?.parse()?,
            "--failsafe" => cfg.failsafe = value()?.parse()?,
            "--watchdog" => {
                let v = value()?;
                let secs: f64 = number(&flag, &v)?;
                cfg.watchdog = match Duration::try_from_secs_f64(secs) {
                    Ok(d) if d.is_zero() => None,
                    Ok(d) => Some(d),
                    Err(_) => return Err(format!("{flag}: {v:?} is not a duration")),
                };
            }
            "--heartbeat-ms" => {
                let ms: u64 = number(&flag, &value()?)?;
                cfg.heartbeat = Duration::from_millis(ms.max(1));
            }
            "--no-poweroff" => cfg.no_poweroff = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    cfg.orchestrator = orchestrator.ok_or("--orchestrator is required")?;
    cfg.worker = name.ok_or("--name is required")?;
    cfg.token = token.unwrap_or_default();
    Ok(Parsed::Run(cfg))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: {v:?} is not a valid number"))
}
