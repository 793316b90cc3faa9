//! Stopping a worker's QEMU that another engine on this host launched: the orchestrator that
//! held the worker died (or lost its lease) and left its VM running in its own state dir,
//! where this engine's adoption never looks. The VM is found through that run directory and
//! must prove who it is before anything is sent to it: /proc shows it alive with the worker's
//! `-uuid` and that directory's `-pidfile`, and its QMP monitor answers with the worker's name
//! and uuid. It is then quit over QMP; SIGKILL goes only to that verified PID, and only if
//! QMP cannot be used or the quit is not obeyed.

use super::{QemuError, RunFiles, Vm, process};
use std::path::Path;
use std::time::Duration;

/// How long a quit or a SIGKILL may take to end the process.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// How long its monitor may take to greet. Short: a free monitor greets at once, and one
/// that does not is held by the orchestrator that launched the VM (alive, but no longer
/// holding the worker), so waiting longer would only delay the kill of a VM already proven
/// to be this worker's by /proc.
const QMP_WAIT: Duration = Duration::from_secs(2);

/// Stops the QEMU of worker `name` (`uuid`) running from `run_dir`, if there is one; its PID
/// when one was stopped. A live QEMU there that is not this worker's is left alone (`None`).
pub async fn stop_foreign(
    run_dir: &Path,
    name: &str,
    uuid: &str,
) -> Result<Option<i32>, QemuError> {
    let mut vm = match Vm::adopt_within(run_dir, name, uuid, QMP_WAIT).await {
        Ok(Some(vm)) => vm,
        Ok(None) => return Ok(None),
        // Ours by /proc (uuid and pidfile), but its monitor does not answer: an orchestrator
        // that is alive but cut off from etcd still holds the one QMP connection.
        Err(QemuError::Unresponsive { pid, .. }) => return kill_verified(run_dir, uuid, pid).await,
        Err(e) => return Err(e),
    };
    let pid = vm.pid();
    if let Err(e) = vm.quit().await {
        tracing::debug!("{name}: QMP quit of pid {pid}: {e}");
    }
    if vm.wait_exit(EXIT_WAIT).await? {
        return Ok(Some(pid));
    }
    vm.kill()?;
    if vm.wait_exit(EXIT_WAIT).await? {
        Ok(Some(pid))
    } else {
        Err(QemuError::Signal {
            pid,
            source: std::io::Error::other("still running 5 s after SIGKILL"),
        })
    }
}

/// SIGKILL for `pid` only while /proc shows it as the QEMU with `uuid` and `run_dir`'s
/// pidfile (checked right before the signal: a PID may have been reused meanwhile).
async fn kill_verified(run_dir: &Path, uuid: &str, pid: i32) -> Result<Option<i32>, QemuError> {
    let files = RunFiles::new(run_dir);
    if !process::is_our_qemu(pid, uuid, &files.pidfile) {
        return Ok(None);
    }
    process::signal(pid, libc::SIGKILL).map_err(|source| QemuError::Signal { pid, source })?;
    let deadline = std::time::Instant::now() + EXIT_WAIT;
    while process::is_our_qemu(pid, uuid, &files.pidfile) {
        if std::time::Instant::now() >= deadline {
            return Err(QemuError::Signal {
                pid,
                source: std::io::Error::other("still running 5 s after SIGKILL"),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(pid))
}
