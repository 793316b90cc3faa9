//! The kernel arguments an image should boot with, before the per-worker `microfaas.*` ones.
//!
//! Each extra argument for Debian's cloud kernel skips boot work a worker has no use for.
//! Measured with `initcall_debug` under TCG here: the crypto self-tests (crypto_algapi_init)
//! went from 324 ms to 3 ms and the 8250 probe from 29 ms to 7 ms, ~0.25-0.35 s of initcall
//! time per boot; wall-clock A/B runs on the loaded 2-core host were too noisy to resolve it.

/// For any kernel: the serial console QEMU captures, and no boot chatter on it (printing
/// is slow under TCG).
const BASE: &str = "console=ttyS0 quiet";

/// For Debian's distribution kernel:
/// - `cryptomgr.notests=1`: no crypto self-tests at boot (the agent uses no kernel crypto);
/// - `tsc=reliable`: no clocksource watchdog re-checking the TSC of a VM;
/// - `8250.nr_uarts=1`: probe the one UART QEMU has, not four;
/// - `audit=0 apparmor=0`: no audit or AppArmor set-up for a single static process.
const DEBIAN_EXTRA: &str = "cryptomgr.notests=1 tsc=reliable 8250.nr_uarts=1 audit=0 apparmor=0";

/// Arguments for the Debian cloud kernel (`debian`) or an own all-built-in kernel.
pub fn recommended(debian: bool) -> String {
    if debian {
        format!("{BASE} {DEBIAN_EXTRA}")
    } else {
        BASE.to_owned()
    }
}
