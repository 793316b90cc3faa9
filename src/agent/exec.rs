//! Static executables as user functions (runtime `exec`, for workers of the executable's own
//! architecture): the shipped program is written once per boot under its digest and run with
//! the wasm calling convention (input JSON on stdin, output on stdout, argv `[function,
//! args…]`, environment = the Function's `env` only). Bounds: address space capped at the
//! Function's memory (RLIMIT_AS), killed at the deadline; either is a failed invocation and the
//! agent goes on serving.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Children whose exit status belongs to their runner: the PID 1 reaper leaves them alone.
/// Held while spawning, so a child cannot exit before it is listed.
pub static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The ELF `e_machine` of this agent's architecture.
const MACHINE: u16 = if cfg!(target_arch = "x86_64") {
    62
} else if cfg!(target_arch = "aarch64") {
    183
} else if cfg!(target_arch = "arm") {
    40
} else {
    0
};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("not an ELF executable")]
    NotElf,
    #[error("the executable is for ELF machine {got}, this worker runs machine {MACHINE}")]
    WrongMachine { got: u16 },
    #[error("cannot store the executable: {0}")]
    Store(io::Error),
    #[error("cannot start the executable: {0}")]
    Spawn(io::Error),
    #[error("exited with status {code}{}", super::wasm::tail(.stderr))]
    Exit { code: i32, stderr: String },
    #[error("killed by signal {signal} (memory limit {limit} bytes){}", super::wasm::tail(.stderr))]
    Signal {
        signal: i32,
        limit: u64,
        stderr: String,
    },
    #[error("wrote more than {0} bytes to stdout")]
    OutputTooLarge(usize),
    #[error("exceeded its deadline")]
    Timeout,
}

/// One call's inputs.
pub struct Call<'a> {
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    /// Address-space limit in bytes.
    pub memory: u64,
    pub deadline: Option<Instant>,
}

/// Checks the header: a little-endian ELF for this machine.
pub fn check_elf(bytes: &[u8]) -> Result<(), ExecError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(ExecError::NotElf);
    }
    let got = u16::from_le_bytes([bytes[18], bytes[19]]);
    if got != MACHINE {
        return Err(ExecError::WrongMachine { got });
    }
    Ok(())
}

/// Writes the executable under its digest (once per boot) and returns its path.
fn store(sha256: &str, bytes: &[u8]) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("microfaas-exec");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(sha256);
    if !path.is_file() {
        let tmp = dir.join(format!("{sha256}.tmp"));
        std::fs::write(&tmp, bytes)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// Reads `r` to its end in a thread, keeping at most `cap` bytes (and whether more came).
fn drain(mut r: impl Read + Send + 'static, cap: usize) -> thread::JoinHandle<(Vec<u8>, bool)> {
    thread::spawn(move || {
        let (mut kept, mut over, mut buf) = (Vec::new(), false, [0u8; 8192]);
        while let Ok(n @ 1..) = r.read(&mut buf) {
            let room = cap.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
            over |= n > room;
        }
        (kept, over)
    })
}

/// Runs the executable `bytes` (digest `sha256`); what it wrote to stdout on success.
pub fn run(sha256: &str, bytes: &[u8], call: Call<'_>) -> Result<Vec<u8>, ExecError> {
    check_elf(bytes)?;
    let path = store(sha256, bytes).map_err(ExecError::Store)?;
    let mut cmd = Command::new(&path);
    cmd.arg0(call.args.first().map_or("fn", String::as_str))
        .args(call.args.iter().skip(1))
        .env_clear()
        .envs(call.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let limit = call.memory;
    // SAFETY: only setrlimit between fork and exec, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = {
        let mut owned = OWNED.lock().unwrap_or_else(|p| p.into_inner());
        // ETXTBSY: another thread forked while the file was open for writing; it passes.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(10));
                }
                other => break other.map_err(ExecError::Spawn)?,
            }
        };
        owned.insert(child.id() as i32);
        child
    };
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take();
    let input = call.stdin;
    let feeder = thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let out = child
        .stdout
        .take()
        .map(|s| drain(s, super::wasm::wasi::MAX_STDOUT));
    let err = child.stderr.take().map(|s| drain(s, 4096));

    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if call.deadline.is_some_and(|d| Instant::now() >= d) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(ExecError::Timeout);
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(ExecError::Spawn(e)),
        }
    };
    OWNED.lock().unwrap_or_else(|p| p.into_inner()).remove(&pid);
    let _ = feeder.join();
    let (stdout, over) = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stderr, _) = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    let status = status?;
    if over {
        return Err(ExecError::OutputTooLarge(super::wasm::wasi::MAX_STDOUT));
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(stdout),
        (Some(code), _) => Err(ExecError::Exit { code, stderr }),
        (None, signal) => Err(ExecError::Signal {
            signal: signal.unwrap_or(0),
            limit,
            stderr,
        }),
    }
}
