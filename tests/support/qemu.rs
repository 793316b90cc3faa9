//! Boots a worker image in QEMU under TCG with isolated user networking, records when QEMU
//! started and when the first serial byte arrived, and kills QEMU by PID when dropped.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The loopback port the guest reaches as 10.0.2.100:port.
    pub orchestrator_port: u16,
    /// The image's recommended kernel arguments (`BuildOutput::cmdline`).
    pub base_cmdline: String,
    /// Appended after the microfaas.orchestrator= argument.
    pub extra_cmdline: String,
    /// `-bios` (e.g. /usr/share/qemu/qboot.rom); SeaBIOS when `None`.
    pub bios: Option<PathBuf>,
    /// `-machine` (e.g. `microvm,pcie=on,acpi=on,pic=off`); QEMU's default (`pc`) when `None`.
    pub machine: Option<String>,
    pub memory_mib: u32,
    /// Scheduling niceness for QEMU; the benchmark lowers it to keep concurrent builds on a
    /// shared machine from inflating the figures.
    pub nice: i32,
}

/// The address the guest dials; guestfwd maps it to the host's loopback listener.
pub const GUEST_ORCHESTRATOR_IP: &str = "10.0.2.100";

impl BootSpec {
    pub fn new(kernel: &Path, initrd: &Path, base_cmdline: &str, orchestrator_port: u16) -> Self {
        BootSpec {
            kernel: kernel.to_owned(),
            initrd: initrd.to_owned(),
            orchestrator_port,
            base_cmdline: base_cmdline.to_owned(),
            extra_cmdline: String::new(),
            bios: None,
            machine: None,
            memory_mib: 256,
            nice: 0,
        }
    }

    fn args(&self) -> Vec<String> {
        let port = self.orchestrator_port;
        let cmdline = format!(
            "{} microfaas.orchestrator={GUEST_ORCHESTRATOR_IP}:{port} {}",
            self.base_cmdline, self.extra_cmdline
        );
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ]
        .map(String::from)
        .into();
        args.extend(["-m".into(), format!("{}M", self.memory_mib)]);
        args.extend(["-kernel".into(), path_arg(&self.kernel)]);
        args.extend(["-initrd".into(), path_arg(&self.initrd)]);
        args.extend(["-append".into(), cmdline.trim().to_owned()]);
        // restrict=on: the guest reaches nothing but the forwarded orchestrator port.
        args.extend([
            "-netdev".into(),
            format!(
                "user,id=n0,restrict=on,guestfwd=tcp:{GUEST_ORCHESTRATOR_IP}:{port}-tcp:127.0.0.1:{port}"
            ),
            "-device".into(),
            "virtio-net-pci,netdev=n0".into(),
        ]);
        if let Some(bios) = &self.bios {
            args.extend(["-bios".into(), path_arg(bios)]);
        }
        if let Some(machine) = &self.machine {
            args.extend(["-machine".into(), machine.clone()]);
        }
        args
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// A running QEMU. Dropping it kills the process (by its PID) if it is still running.
pub struct Vm {
    child: Child,
    pub started: Instant,
    serial: Arc<Mutex<Serial>>,
    reader: Option<JoinHandle<()>>,
    exit: Option<ExitStatus>,
    killed_by_us: bool,
}

#[derive(Default)]
struct Serial {
    first_byte: Option<Instant>,
    bytes: Vec<u8>,
    /// When each read ended, and the length of `bytes` after it: lets a marker in the
    /// output be dated to the read that delivered it.
    reads: Vec<(Instant, usize)>,
}

/// Keep at most this much console output for failure messages.
const SERIAL_KEEP: usize = 256 * 1024;

impl Vm {
    pub fn launch(spec: &BootSpec) -> Result<Vm, String> {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(spec.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let nice = spec.nice;
        // SAFETY: prctl and setpriority are async-signal-safe. If this process dies without
        // dropping the Vm (killed test run), the kernel kills QEMU instead of leaving it running.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            format!("cannot start qemu-system-x86_64 ({e}): run hack/install-deps.sh")
        })?;
        let serial = Arc::new(Mutex::new(Serial::default()));
        let mut stdout = child.stdout.take().ok_or("qemu stdout not captured")?;
        let sink = Arc::clone(&serial);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let Ok(mut s) = sink.lock() else { break };
                s.first_byte.get_or_insert(now);
                if s.bytes.len() < SERIAL_KEEP {
                    s.bytes.extend_from_slice(&buf[..n]);
                    let len = s.bytes.len();
                    s.reads.push((now, len));
                }
            }
        });
        Ok(Vm {
            child,
            started,
            serial,
            reader: Some(reader),
            exit: None,
            killed_by_us: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When the guest first wrote to its serial console.
    pub fn first_serial_byte(&self) -> Option<Instant> {
        self.serial.lock().ok().and_then(|s| s.first_byte)
    }

    /// When `marker` first appeared on the console (to the granularity of QEMU's writes).
    pub fn console_marker(&self, marker: &str) -> Option<Instant> {
        let s = self.serial.lock().ok()?;
        let at = s
            .bytes
            .windows(marker.len())
            .position(|w| w == marker.as_bytes())?;
        let end = at + marker.len();
        s.reads.iter().find(|(_, len)| *len >= end).map(|(t, _)| *t)
    }

    /// The console output so far (lossy UTF-8), for failure messages.
    pub fn console(&self) -> String {
        self.serial
            .lock()
            .map(|s| String::from_utf8_lossy(&s.bytes).into_owned())
            .unwrap_or_default()
    }

    /// The exit status if QEMU has already exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits up to `timeout` for QEMU to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After a failure: how QEMU ended (waiting a moment for it to exit by itself, killing it
    /// otherwise) and the guest console, for the error message.
    pub fn post_mortem(&mut self) -> String {
        let pid = self.pid();
        let fate = match self.wait_exit(Duration::from_secs(1)) {
            Some(status) => format!("QEMU (pid {pid}) had exited: {status}"),
            None => {
                self.kill();
                format!("QEMU (pid {pid}) was still running; killed")
            }
        };
        format!("{fate}\n--- guest console ---\n{}", self.console())
    }

    /// Whether QEMU died of a signal this harness did not send (another process on the
    /// machine killed it): the boot says nothing about boot time then.
    pub fn killed_from_outside(&mut self) -> bool {
        use std::os::unix::process::ExitStatusExt;
        !self.killed_by_us && self.try_exit().is_some_and(|s| s.signal().is_some())
    }

    /// Kills QEMU (SIGKILL to its PID) and reaps it.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            self.killed_by_us = true;
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// PIDs of live QEMU processes started for this state dir, found by scanning /proc (not
/// trusting our own pidfiles), by worker name.
pub fn running_for(state: &std::path::Path) -> Vec<(String, i32)> {
    let mut found: Vec<(String, i32)> = qemu_processes(state)
        .into_iter()
        .map(|(pid, args)| (worker_of(&args), pid))
        .collect();
    found.sort();
    found
}

/// Live `qemu-system-*` processes whose command line names `state`'s `vms/` directory: PID
/// and arguments (from /proc).
pub fn qemu_processes(state: &std::path::Path) -> Vec<(i32, Vec<String>)> {
    let mut found = Vec::new();
    let needle = state.join("vms").display().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.contains("qemu-system"))
            && args.iter().any(|a| a.contains(&needle))
        {
            found.push((pid, args));
        }
    }
    found
}

/// The argument after `flag` (empty when absent).
pub fn arg_after(args: &[String], flag: &str) -> String {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default()
}

/// The worker a QEMU runs, from its `-name guest=NAME,...`.
pub fn worker_of(args: &[String]) -> String {
    arg_after(args, "-name")
        .trim_start_matches("guest=")
        .split(',')
        .next()
        .unwrap_or("")
        .to_string()
}
