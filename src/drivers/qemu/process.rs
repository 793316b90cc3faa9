//! Identifying a QEMU process by PID without trusting the PID alone: PIDs are reused, and the
//! engine must never signal a process that is not the VM it launched. A process is "ours" when
//! it is alive (not a zombie) and its command line carries our `-uuid` and our `-pidfile` path.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// Parses a pidfile's content (QEMU writes the PID and a newline).
pub(crate) fn parse_pid(text: &str) -> Option<i32> {
    text.trim().parse::<i32>().ok().filter(|&p| p > 1)
}

/// `Ok(None)` when the pidfile does not exist or does not hold a PID.
pub(crate) fn read_pidfile(path: &Path) -> io::Result<Option<i32>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_pid(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The process's argv, `None` when it no longer exists (or is a zombie, whose cmdline is
/// empty).
pub(crate) fn cmdline(pid: i32) -> Option<Vec<OsString>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(
        raw.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| OsString::from_vec(s.to_vec()))
            .collect(),
    )
}

/// Alive and not a zombie. A daemonized QEMU is not our child, so it is reaped by whatever
/// adopted it; if that never reaps (some container inits), the zombie must still count as gone.
pub(crate) fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

/// Whether `pid` is the QEMU with this uuid writing this pidfile.
pub(crate) fn is_our_qemu(pid: i32, uuid: &str, pidfile: &Path) -> bool {
    if !alive(pid) {
        return false;
    }
    let Some(args) = cmdline(pid) else {
        return false;
    };
    has_pair(&args, "-uuid", uuid.as_ref()) && has_pair(&args, "-pidfile", pidfile.as_os_str())
}

/// Whether `pid` is any live QEMU using this pidfile (whatever its uuid): a run directory in
/// use, where launching a second QEMU would be wrong.
pub(crate) fn uses_pidfile(pid: i32, pidfile: &Path) -> bool {
    alive(pid) && cmdline(pid).is_some_and(|a| has_pair(&a, "-pidfile", pidfile.as_os_str()))
}

fn has_pair(args: &[OsString], flag: &str, value: &std::ffi::OsStr) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

/// Sends `signal` to `pid`. ESRCH (already gone) is success: the goal is that it is not running.
pub(crate) fn signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes no pointers; the caller verified that pid is our QEMU.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid(" 1234 "), Some(1234));
        // 0, 1 and negatives would signal groups or init: never valid here.
        assert_eq!(parse_pid("0"), None);
        assert_eq!(parse_pid("1"), None);
        assert_eq!(parse_pid("-5"), None);
        assert_eq!(parse_pid("abc"), None);
        assert_eq!(parse_pid(""), None);
    }

    #[test]
    fn own_process_is_alive_but_not_a_qemu() {
        let me = std::process::id() as i32;
        assert!(alive(me));
        assert!(!is_our_qemu(me, "some-uuid", Path::new("/x/qemu.pid")));
        assert!(!uses_pidfile(me, Path::new("/x/qemu.pid")));
    }
}
