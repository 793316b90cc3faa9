//! The agent's tiny logger: one line per event on stderr (the console when PID 1), stamped
//! with the time since boot so console logs line up with kernel messages.

use std::fmt;
use std::io::Write;

/// Seconds since the kernel booted (CLOCK_BOOTTIME), as printed by the kernel.
pub fn uptime() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_BOOTTIME always exists on
    // the kernels we support, and on failure ts stays zero.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

pub fn write(args: fmt::Arguments) {
    let t = uptime();
    // A lost log line must never take the agent down, so write errors are ignored.
    let _ = writeln!(
        std::io::stderr().lock(),
        "[{:>5}.{:06}] microfaas-agent: {args}",
        t.as_secs(),
        t.subsec_micros()
    );
}

/// `log!("...", args)`: format and write one line.
macro_rules! log {
    ($($arg:tt)*) => { $crate::agent::log::write(format_args!($($arg)*)) };
}
pub(crate) use log;
