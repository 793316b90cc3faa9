//! `accel: auto`: decide between KVM and TCG by running guest code, not by looking at
//! /dev/kvm, cached per QEMU binary.
//!
//! Why not the cheaper "start with `-accel kvm -cpu host -S`, then QMP quit": measured on this
//! project's build machines (a paravirtual VM whose /dev/kvm opens but cannot run guests well),
//! that start-and-quit succeeds, and so does running a few real-mode instructions; what fails
//! is speed: a 10-million-iteration `loop` takes 6.8 s under this KVM (it emulates real mode
//! instruction by instruction), 0.14 s under TCG, and milliseconds on a working KVM; a kernel
//! prints nothing within 8 s. So the probe boots a 64 KiB firmware image that runs that loop
//! and then writes to an `isa-debug-exit` port, which makes QEMU exit with status
//! `(0x2a << 1) | 1 = 85`. KVM is usable when that happens within [`PROBE_TIMEOUT`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::manifest::types::Accel;

/// Healthy KVM finishes the probe in well under 0.2 s (mostly QEMU start-up); broken KVM
/// needs seconds to minutes or never finishes.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The exit status QEMU reports after the guest writes 0x2a to isa-debug-exit.
const PROBE_EXIT: i32 = (0x2a << 1) | 1;

/// A 64 KiB firmware image: `hlt` everywhere except at the reset vector (0xFFFF0, the last 16
/// bytes), where it runs `mov ecx, 10_000_000; a32 loop $; mov al, 0x2a; out 0xf4, al; hlt`.
fn probe_rom() -> Vec<u8> {
    let mut rom = vec![0xF4u8; 64 * 1024];
    let code: [u8; 14] = [
        0x66, 0xB9, 0x80, 0x96, 0x98, 0x00, // mov ecx, 10_000_000
        0x67, 0xE2, 0xFD, // a32 loop (to itself, decrementing ecx)
        0xB0, 0x2A, // mov al, 0x2a
        0xE6, 0xF4, // out 0xf4, al  (isa-debug-exit)
        0xF4, // hlt (not reached: QEMU has exited)
    ];
    rom[0xFFF0..0xFFF0 + code.len()].copy_from_slice(&code);
    rom
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Accel>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Accel>>> = OnceLock::new();
    CACHE.get_or_init(Mutex::default)
}

/// `Kvm` when this QEMU binary runs guest code under KVM at hardware speed, `Tcg` otherwise.
/// The result is cached per binary for the life of the process; concurrent callers wait for
/// one probe instead of starting several.
pub async fn probe_accel(binary: &Path) -> Accel {
    let mut cache = cache().lock().await;
    if let Some(&accel) = cache.get(binary) {
        return accel;
    }
    let started = Instant::now();
    let accel = match run_probe(binary).await {
        Ok(()) => Accel::Kvm,
        Err(why) => {
            tracing::info!("KVM not usable with {}: {why}; using TCG", binary.display());
            Accel::Tcg
        }
    };
    tracing::debug!("accelerator probe: {accel:?} in {:?}", started.elapsed());
    cache.insert(binary.to_owned(), accel);
    accel
}

async fn run_probe(binary: &Path) -> Result<(), String> {
    // Without an openable /dev/kvm there is nothing to probe.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let dir = tempfile_dir()?;
    let rom = dir.join("probe.rom");
    std::fs::write(&rom, probe_rom()).map_err(|e| format!("{}: {e}", rom.display()))?;
    let result = async {
        let mut child = tokio::process::Command::new(binary)
            .args([
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-machine",
                "microvm",
                "-accel",
                "kvm",
                "-cpu",
                "host",
                "-m",
                "16",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-bios",
            ])
            .arg(&rom)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A probe that outlives its timeout must not linger.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        match tokio::time::timeout(PROBE_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.code() == Some(PROBE_EXIT) => Ok(()),
            Ok(Ok(status)) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = stderr.read_to_string(&mut err).await;
                }
                Err(format!("probe guest ended with {status}: {}", err.trim()))
            }
            Ok(Err(e)) => Err(format!("waiting for the probe: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "probe guest did not finish within {PROBE_TIMEOUT:?} (KVM too slow to use)"
                ))
            }
        }
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A private directory for the probe image (tempfile is only a dev-dependency).
fn tempfile_dir() -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "microfaas-kvm-probe-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_has_the_reset_vector_code() {
        let rom = probe_rom();
        assert_eq!(rom.len(), 65536);
        assert_eq!(&rom[0xFFF0..0xFFF2], &[0x66, 0xB9]);
        assert_eq!(PROBE_EXIT, 85);
    }
}
