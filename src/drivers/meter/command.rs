//! A meter that is a command: PDUs, smart plugs, RAPL scripts, `ipmitool dcmi power reading`.
//! Each reading runs the command once; the first number it prints on stdout is the watts. A
//! command that outlives its timeout is killed with its whole process group, so a hung plug
//! query cannot pile up processes.

use super::{MeterError, Reading};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

/// The first decimal number in `text` (`123.4`, `Instantaneous power reading: 98 Watts`).
pub fn first_number(text: &str) -> Option<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .filter(|t| t.bytes().any(|b| b.is_ascii_digit()))
        .find_map(|t| t.parse::<f64>().ok().filter(|v| v.is_finite()))
}

/// Runs `argv` once and reads its watts, within `timeout`.
pub async fn read(argv: &[String], timeout: Duration) -> Result<Reading, MeterError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(argv.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| MeterError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(r) => r.map_err(|source| MeterError::Spawn {
            program: program.clone(),
            source,
        })?,
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: signals the process group this call created (process_group(0) made
                // the child its leader); the group cannot have been reused while the child,
                // not yet reaped, still holds its PID.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            return Err(MeterError::Timeout(timeout));
        }
    };
    if !out.status.success() {
        let status = match (out.status.code(), out.status.signal()) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("signal {s}"),
            _ => "unknown status".into(),
        };
        return Err(MeterError::Failed {
            program,
            status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match first_number(&text) {
        Some(w) if w >= 0.0 => Ok(Reading {
            watts: w,
            ..Reading::default()
        }),
        _ => Err(MeterError::NoWatts {
            program,
            output: text.chars().take(200).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_common_outputs() {
        assert_eq!(first_number("12.5\n"), Some(12.5));
        assert_eq!(
            first_number("    Instantaneous power reading:                   98 Watts\n"),
            Some(98.0)
        );
        assert_eq!(first_number("power=7.25W"), Some(7.25));
        assert_eq!(first_number("n/a"), None);
        assert_eq!(first_number(""), None);
    }
}
