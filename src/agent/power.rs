//! Powering the worker off or rebooting it (the reboot syscall when PID 1, a plain exit
//! otherwise), and the two ways a user or hypervisor asks for a clean shutdown: Ctrl-Alt-Del
//! (delivered to PID 1 as SIGINT once CAD is turned off) and the ACPI power button (an evdev
//! KEY_POWER press).

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::log::log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PowerAction {
    #[default]
    PowerOff,
    Reboot,
}

impl std::str::FromStr for PowerAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "poweroff" => Ok(PowerAction::PowerOff),
            "reboot" => Ok(PowerAction::Reboot),
            _ => Err(format!(
                "unknown power action {s:?} (expected poweroff or reboot)"
            )),
        }
    }
}

/// Exit status of a non-PID-1 agent stopped by its failsafe.
pub const FAILSAFE_EXIT: i32 = 2;

/// Carries out power actions. As PID 1 the machine really goes down; as a normal process the
/// agent only exits, so tests and full-OS boards are never powered off by it.
#[derive(Debug, Clone, Copy)]
pub struct Power {
    pub pid1: bool,
}

impl Power {
    /// Power off or reboot; never returns. `exit_code` is used when not PID 1.
    pub fn execute(&self, action: PowerAction, exit_code: i32) -> ! {
        if !self.pid1 {
            log!("{action:?}: exiting with status {exit_code} (not PID 1)");
            std::process::exit(exit_code);
        }
        log!("{action:?}: syncing and calling reboot(2)");
        let cmd = match action {
            PowerAction::PowerOff => libc::LINUX_REBOOT_CMD_POWER_OFF,
            PowerAction::Reboot => libc::LINUX_REBOOT_CMD_RESTART,
        };
        super::net::take_down_all();
        // SAFETY: sync and reboot take no pointers; reboot only returns on failure.
        unsafe {
            libc::sync();
            libc::reboot(cmd);
        }
        log!(
            "reboot(2) failed: {}; halting here",
            std::io::Error::last_os_error()
        );
        // PID 1 must never exit (the kernel would panic), so park forever.
        loop {
            thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Make Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once, and block the
/// shutdown signals in this thread so that every thread spawned afterwards inherits the mask
/// and only [`spawn_signal_watcher`] receives them. Call first thing, before any thread.
pub fn take_over_shutdown_signals() {
    // SAFETY: plain syscalls on a sigset we own.
    unsafe {
        if libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) != 0 {
            log!(
                "reboot(CAD_OFF) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        let set = shutdown_signals();
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGPWR] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// A thread that waits for SIGINT (Ctrl-Alt-Del), SIGTERM or SIGPWR and calls `on_signal`.
pub fn spawn_signal_watcher(on_signal: Arc<dyn Fn(&str) + Send + Sync>) {
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let set = shutdown_signals();
            loop {
                let mut sig = 0;
                // SAFETY: sigwait reads our set and writes the signal number.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    let name = match sig {
                        libc::SIGINT => "SIGINT (Ctrl-Alt-Del)",
                        libc::SIGTERM => "SIGTERM",
                        _ => "SIGPWR",
                    };
                    on_signal(name);
                }
            }
        });
    if let Err(e) = spawned {
        log!("cannot start the signal watcher: {e}");
    }
}

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;

/// Size of the kernel's `struct input_event`: a timeval of two `long`s (also on 32-bit
/// musl, whose 64-bit time_t the kernel's evdev ABI does not use), then type, code, value.
const EVENT_SIZE: usize = 2 * std::mem::size_of::<libc::c_ulong>() + 8;

/// Whether one raw `input_event` is a press of the power key.
pub fn is_power_press(event: &[u8]) -> bool {
    if event.len() != EVENT_SIZE {
        return false;
    }
    let at = EVENT_SIZE - 8;
    let kind = u16::from_ne_bytes([event[at], event[at + 1]]);
    let code = u16::from_ne_bytes([event[at + 2], event[at + 3]]);
    let value = i32::from_ne_bytes([event[at + 4], event[at + 5], event[at + 6], event[at + 7]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Watch every `/dev/input/event*` for a power-key press (the ACPI power button, once the
/// `button` and `evdev` drivers are present) and call `on_press`. Devices may appear a moment
/// after their modules load, so the scan is retried for a few seconds.
pub fn spawn_power_button_watchers(on_press: Arc<dyn Fn(&str) + Send + Sync>) {
    let spawned = thread::Builder::new()
        .name("power-button".into())
        .spawn(move || {
            for _ in 0..10 {
                let devices = input_devices();
                if !devices.is_empty() {
                    for path in devices {
                        watch_device(path, on_press.clone());
                    }
                    return;
                }
                thread::sleep(Duration::from_millis(500));
            }
            log!("no input devices: the ACPI power button will not be handled");
        });
    if let Err(e) = spawned {
        log!("cannot start the power button watcher: {e}");
    }
}

fn input_devices() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/dev/input") else {
        return Vec::new();
    };
    let mut v: Vec<String> = dir
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("event"))
        .map(|n| format!("/dev/input/{n}"))
        .collect();
    v.sort();
    v
}

fn watch_device(path: String, on_press: Arc<dyn Fn(&str) + Send + Sync>) {
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            log!("{path}: {e}");
            return;
        }
    };
    let spawned = thread::Builder::new().name("evdev".into()).spawn(move || {
        let mut event = [0u8; EVENT_SIZE];
        // evdev hands out whole events per read, so exact reads stay aligned.
        while file.read_exact(&mut event).is_ok() {
            if is_power_press(&event) {
                on_press("ACPI power button");
            }
        }
    });
    if let Err(e) = spawned {
        log!("cannot watch {path}: {e}");
    }
}
