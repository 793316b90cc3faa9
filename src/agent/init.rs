//! PID 1 housekeeping: the console on stdio, the pseudo-filesystems, kernel modules listed in
//! the initramfs, and reaping orphaned processes so no zombies pile up.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::Duration;

use super::log::log;

/// Where the image lists the modules to load, one initramfs path per line, in order.
pub const MODULE_LIST: &str = "/etc/microfaas/modules";

/// If the kernel found no /dev/console to give us, stdio is closed and every log line would
/// vanish: open the console once devtmpfs is mounted and put it on fds 0, 1 and 2.
pub fn ensure_console() {
    // SAFETY: fcntl on a possibly-closed fd only reports EBADF.
    if unsafe { libc::fcntl(2, libc::F_GETFD) } >= 0 {
        return;
    }
    if let Ok(console) = File::options().read(true).write(true).open("/dev/console") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which are closed.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// Mount proc, sysfs and devtmpfs where they belong (already mounted is fine: the kernel's
/// CONFIG_DEVTMPFS_MOUNT may have done /dev).
pub fn mount_pseudo_filesystems() {
    for (fstype, target) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        if let Err(e) = mount(fstype, target) {
            log!("mount {fstype} on {target}: {e}");
        }
    }
}

fn mount(fstype: &str, target: &str) -> io::Result<()> {
    std::fs::create_dir_all(target)?;
    let c = |s: &str| CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let (src, tgt, ty) = (c(fstype)?, c(target)?, c(fstype)?);
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    // SAFETY: all strings are NUL-terminated and live across the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            ty.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    done_unless(rc.into(), libc::EBUSY)
}

/// Load the modules named in `list` (one path per line; blank lines and `#` comments
/// skipped) in order with finit_module. A missing list means nothing to load; a module that
/// fails is logged and the rest are still tried, since the agent may work without it.
pub fn load_modules(list: &Path) -> usize {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return 0,
        Err(e) => {
            log!("{}: {e}", list.display());
            return 0;
        }
    };
    let mut loaded = 0;
    for path in text.lines().map(str::trim) {
        if path.is_empty() || path.starts_with('#') {
            continue;
        }
        match load_module(Path::new(path)) {
            Ok(()) => loaded += 1,
            Err(e) => log!("module {path}: {e}"),
        }
    }
    loaded
}

fn load_module(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the module from our open fd and the empty parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    done_unless(rc, libc::EEXIST)
}

/// A syscall's outcome, where failing with `already` means the work was done before.
fn done_unless(rc: libc::c_long, already: libc::c_int) -> io::Result<()> {
    let e = io::Error::last_os_error();
    match rc {
        0 => Ok(()),
        _ if e.raw_os_error() == Some(already) => Ok(()),
        _ => Err(e),
    }
}

/// A thread that waits for any child and discards its status: as PID 1 every orphan in the
/// system becomes our child. The agent's own children (`exec` functions, listed in
/// [`super::exec::OWNED`]) are left to their runner, which needs their exit status.
pub fn spawn_reaper() {
    let spawned = thread::Builder::new().name("reaper".into()).spawn(|| {
        loop {
            // Look without reaping, then reap only what no runner owns.
            // SAFETY: waitid writes into our zeroed siginfo_t.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc < 0 {
                // ECHILD: no children right now; look again later.
                thread::sleep(Duration::from_millis(500));
                continue;
            }
            // SAFETY: waitid filled in a child's siginfo_t.
            let pid = unsafe { info.si_pid() };
            let owned = super::exec::OWNED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&pid);
            if owned {
                thread::sleep(Duration::from_millis(20));
                continue;
            }
            let mut status = 0;
            // SAFETY: waitpid writes the status into our local.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        }
    });
    if let Err(e) = spawned {
        log!("cannot start the reaper: {e}");
    }
}
