//! The host's TSC frequency, which a `microvm` guest under TCG must be told.
//!
//! A `microvm` guest has no clock to calibrate its TSC against (no kvmclock without KVM, no
//! HPET, no ACPI PM timer) and the kernel stalls after "tsc: Unable to calibrate against PIT".
//! Under TCG the guest's TSC is the host's (QEMU reads the host counter), so the host's
//! frequency, measured here once, is the right `tsc_early_khz=` for the guest.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Long enough that sleep jitter is well under 0.1% of the interval.
const SAMPLE: Duration = Duration::from_millis(50);

/// kHz, or `None` on hosts without a TSC (not x86_64).
pub fn host_tsc_khz() -> Option<u32> {
    static KHZ: OnceLock<Option<u32>> = OnceLock::new();
    *KHZ.get_or_init(measure)
}

#[cfg(target_arch = "x86_64")]
fn measure() -> Option<u32> {
    // Read the clock and the counter back to back at both ends: what lies between the two
    // pairs (the sleep) does not need to be precise.
    let (t0, c0) = (Instant::now(), rdtsc());
    std::thread::sleep(SAMPLE);
    let (t1, c1) = (Instant::now(), rdtsc());
    let nanos = t1.duration_since(t0).as_nanos();
    let cycles = u128::from(c1.checked_sub(c0)?);
    u32::try_from(cycles.checked_mul(1_000_000)?.checked_div(nanos)?).ok()
}

#[cfg(target_arch = "x86_64")]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no preconditions on x86_64; it reads a counter.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn measure() -> Option<u32> {
    None
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    #[test]
    fn measures_a_plausible_frequency() {
        let khz = super::host_tsc_khz().expect("x86_64 has a TSC");
        // Anything from a 500 MHz to a 10 GHz counter; a unit slip would be off by 1000x.
        assert!((500_000..10_000_000).contains(&khz), "{khz} kHz");
    }
}
