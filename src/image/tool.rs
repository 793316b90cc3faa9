//! Runs an external tool (apt-get, dpkg, depmod, xz, zstd) and turns a failure into an
//! [`ImageError::Tool`] that carries the tool's own stderr.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::ImageError;

/// Runs `cmd` to completion and returns its stdout.
pub(super) fn run(tool: &'static str, cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    checked(tool, cmd.output())
}

/// Like [`run`], feeding `input` to the tool's stdin (from a second thread, so a tool that
/// writes before it has read everything cannot deadlock against us).
pub(super) fn run_with_input(
    tool: &'static str,
    cmd: &mut Command,
    input: &[u8],
) -> Result<Vec<u8>, ImageError> {
    let spawned = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let output = spawned.and_then(|mut child| {
        let stdin = child.stdin.take();
        std::thread::scope(|s| {
            s.spawn(move || {
                if let Some(mut stdin) = stdin {
                    // A write error shows up as the tool's own failure below.
                    let _ = stdin.write_all(input);
                }
            });
            child.wait_with_output()
        })
    });
    checked(tool, output)
}

fn checked(tool: &'static str, out: std::io::Result<Output>) -> Result<Vec<u8>, ImageError> {
    let out = out.map_err(|source| ImageError::Tool {
        tool,
        detail: format!("could not run it: {source}"),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            tool,
            detail: format!(
                "failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// Appends a hint on how to fix a tool failure.
pub(super) fn hint(e: ImageError, extra: &str) -> ImageError {
    match e {
        ImageError::Tool { tool, detail } => ImageError::Tool {
            tool,
            detail: format!("{detail} ({extra})"),
        },
        other => other,
    }
}
