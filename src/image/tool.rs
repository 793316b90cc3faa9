//! Runs an external tool (apt-get, dpkg, depmod, xz, zstd) and turns a failure into an
//! [`ImageError::Tool`] that carries the tool's own stderr.

use std::process::Command;

use super::ImageError;

/// Runs `cmd` to completion and returns its stdout.
pub(super) fn run(tool: &'static str, cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    let out = cmd.output().map_err(|source| ImageError::Tool {
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
