//! The slice of WASI preview 1 a user function gets: args, environment, stdin (its input),
//! stdout (its output), stderr, clocks, random bytes and `proc_exit`. No files, sockets or
//! preopened directories: every other `wasi_snapshot_preview1` import links to a stub that
//! answers ENOSYS, so a module built by a stock toolchain still instantiates.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmi::{Caller, Error, Extern, ExternType, Linker, Module, ResourceLimiter, Val};
use wasmi_core::LimiterError;

use crate::functions::rng::SplitMix64;

const MODULE: &str = "wasi_snapshot_preview1";

// errno values of WASI preview 1.
const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;

/// stdout is the function's result and must fit an answer frame with room to spare.
pub const MAX_STDOUT: usize = 512 * 1024;
/// Only the end of stderr is kept: it explains a failure.
const STDERR_TAIL: usize = 4 * 1024;

/// A store's host state: one invocation's streams and the memory cap.
pub struct Wasi {
    args: Vec<Vec<u8>>,
    env: Vec<Vec<u8>>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    pub stdout: Vec<u8>,
    /// Set when the module wrote more than [`MAX_STDOUT`].
    pub stdout_overflow: bool,
    pub stderr: Vec<u8>,
    pub limits: MemoryCap,
    started: Instant,
    rng: SplitMix64,
}

impl Wasi {
    pub fn new(args: &[String], env: &[(String, String)], stdin: Vec<u8>, cap: MemoryCap) -> Self {
        let nul = |s: String| {
            let mut v = s.into_bytes();
            v.push(0);
            v
        };
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Wasi {
            args: args.iter().cloned().map(nul).collect(),
            env: env.iter().map(|(k, v)| nul(format!("{k}={v}"))).collect(),
            stdin,
            stdin_pos: 0,
            stdout: Vec::new(),
            stdout_overflow: false,
            stderr: Vec::new(),
            limits: cap,
            started: Instant::now(),
            rng: SplitMix64::new(seed),
        }
    }

    /// The last lines the module wrote to stderr, for an error message.
    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Caps every linear memory at `max` bytes and remembers the largest growth it refused, so a
/// trap that follows can be reported as what it is: the function wanted more memory.
pub struct MemoryCap {
    pub max: usize,
    pub refused: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        if desired > self.max {
            self.refused = Some(self.refused.map_or(desired, |r| r.max(desired)));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        8
    }

    fn memories(&self) -> usize {
        1
    }
}

/// The module's exported memory and the host state, borrowed together.
fn split<'a>(caller: &'a mut Caller<'_, Wasi>) -> Result<(&'a mut [u8], &'a mut Wasi), Error> {
    let memory = caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| Error::new("the module exports no `memory`"))?;
    Ok(memory.data_and_store_mut(caller))
}

fn slice(mem: &[u8], ptr: i32, len: usize) -> Option<&[u8]> {
    let start = usize::try_from(ptr as u32).ok()?;
    mem.get(start..start.checked_add(len)?)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: usize) -> Option<&mut [u8]> {
    let start = usize::try_from(ptr as u32).ok()?;
    mem.get_mut(start..start.checked_add(len)?)
}

fn put_u32(mem: &mut [u8], ptr: i32, v: u32) -> bool {
    slice_mut(mem, ptr, 4)
        .map(|s| s.copy_from_slice(&v.to_le_bytes()))
        .is_some()
}

fn put_u64(mem: &mut [u8], ptr: i32, v: u64) -> bool {
    slice_mut(mem, ptr, 8)
        .map(|s| s.copy_from_slice(&v.to_le_bytes()))
        .is_some()
}

fn get_u32(mem: &[u8], ptr: i32) -> Option<u32> {
    let b = slice(mem, ptr, 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, n: i32) -> Option<Vec<(i32, usize)>> {
    (0..n)
        .map(|i| {
            let at = iovs.checked_add(i.checked_mul(8)?)?;
            Some((get_u32(mem, at)? as i32, get_u32(mem, at + 4)? as usize))
        })
        .collect()
}

/// `*_sizes_get`: the count and the total size of nul-terminated strings.
fn sizes(mem: &mut [u8], list: &[Vec<u8>], count: i32, size: i32) -> i32 {
    let total: usize = list.iter().map(Vec::len).sum();
    if put_u32(mem, count, list.len() as u32) && put_u32(mem, size, total as u32) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// `args_get` / `environ_get`: the strings packed at `buf`, their pointers at `ptrs`.
fn strings(mem: &mut [u8], list: &[Vec<u8>], ptrs: i32, buf: i32) -> i32 {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        let Some(dst) = slice_mut(mem, at, s.len()) else {
            return EFAULT;
        };
        dst.copy_from_slice(s);
        if !put_u32(mem, ptrs.wrapping_add(4 * i as i32), at as u32) {
            return EFAULT;
        }
        at = at.wrapping_add(s.len() as i32);
    }
    ESUCCESS
}

fn fd_write(
    caller: &mut Caller<'_, Wasi>,
    fd: i32,
    iovs: i32,
    n: i32,
    written: i32,
) -> Result<i32, Error> {
    let (mem, wasi) = split(caller)?;
    let Some(vecs) = iovecs(mem, iovs, n) else {
        return Ok(EFAULT);
    };
    let mut total = 0usize;
    for (ptr, len) in vecs {
        let Some(data) = slice(mem, ptr, len) else {
            return Ok(EFAULT);
        };
        match fd {
            1 => {
                if wasi.stdout.len() + data.len() > MAX_STDOUT {
                    wasi.stdout_overflow = true;
                    return Err(Error::new(format!(
                        "the function wrote more than {MAX_STDOUT} bytes to stdout"
                    )));
                }
                wasi.stdout.extend_from_slice(data);
            }
            2 => {
                wasi.stderr.extend_from_slice(data);
                if wasi.stderr.len() > STDERR_TAIL {
                    let cut = wasi.stderr.len() - STDERR_TAIL;
                    wasi.stderr.drain(..cut);
                }
            }
            _ => return Ok(EBADF),
        }
        total += len;
    }
    Ok(if put_u32(mem, written, total as u32) {
        ESUCCESS
    } else {
        EFAULT
    })
}

fn fd_read(
    caller: &mut Caller<'_, Wasi>,
    fd: i32,
    iovs: i32,
    n: i32,
    read: i32,
) -> Result<i32, Error> {
    if fd != 0 {
        return Ok(EBADF);
    }
    let (mem, wasi) = split(caller)?;
    let Some(vecs) = iovecs(mem, iovs, n) else {
        return Ok(EFAULT);
    };
    let mut total = 0usize;
    for (ptr, len) in vecs {
        let rest = &wasi.stdin[wasi.stdin_pos..];
        let take = rest.len().min(len);
        let Some(dst) = slice_mut(mem, ptr, take) else {
            return Ok(EFAULT);
        };
        dst.copy_from_slice(&rest[..take]);
        wasi.stdin_pos += take;
        total += take;
    }
    Ok(if put_u32(mem, read, total as u32) {
        ESUCCESS
    } else {
        EFAULT
    })
}

/// The calls [`link`] implements; every other one is a stub.
pub const IMPLEMENTED: &[&str] = &[
    "args_sizes_get",
    "args_get",
    "environ_sizes_get",
    "environ_get",
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_seek",
    "proc_exit",
    "sched_yield",
    "random_get",
    "clock_res_get",
    "clock_time_get",
];

/// Adds the implemented calls to `linker`, then an ENOSYS stub for every other WASI function
/// `module` imports.
pub fn link(linker: &mut Linker<Wasi>, module: &Module) -> Result<(), Error> {
    linker.func_wrap(
        MODULE,
        "args_sizes_get",
        |mut c: Caller<'_, Wasi>, n: i32, size: i32| {
            let (mem, w) = split(&mut c)?;
            Ok::<i32, Error>(sizes(mem, &w.args, n, size))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "args_get",
        |mut c: Caller<'_, Wasi>, ptrs: i32, buf: i32| {
            let (mem, w) = split(&mut c)?;
            Ok::<i32, Error>(strings(mem, &w.args, ptrs, buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: Caller<'_, Wasi>, n: i32, size: i32| {
            let (mem, w) = split(&mut c)?;
            Ok::<i32, Error>(sizes(mem, &w.env, n, size))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "environ_get",
        |mut c: Caller<'_, Wasi>, ptrs: i32, buf: i32| {
            let (mem, w) = split(&mut c)?;
            Ok::<i32, Error>(strings(mem, &w.env, ptrs, buf))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: Caller<'_, Wasi>, fd: i32, iovs: i32, n: i32, out: i32| {
            fd_write(&mut c, fd, iovs, n, out)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: Caller<'_, Wasi>, fd: i32, iovs: i32, n: i32, out: i32| {
            fd_read(&mut c, fd, iovs, n, out)
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |fd: i32| -> i32 {
        if (0..=2).contains(&fd) {
            ESUCCESS
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: Caller<'_, Wasi>, fd: i32, out: i32| {
            if !(0..=2).contains(&fd) {
                return Ok::<i32, Error>(EBADF);
            }
            let (mem, _) = split(&mut c)?;
            // fdstat: filetype u8 (2 = character device), flags u16, rights_base and
            // rights_inheriting u64: every right, the module only ever sees these three streams.
            let Some(s) = slice_mut(mem, out, 24) else {
                return Ok(EFAULT);
            };
            s.fill(0);
            s[0] = 2;
            s[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(MODULE, "fd_prestat_get", |_fd: i32, _out: i32| -> i32 {
        EBADF
    })?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_fd: i32, _off: i64, _whence: i32, _out: i32| -> i32 { ESPIPE },
    )?;
    linker.func_wrap(MODULE, "proc_exit", |code: i32| -> Result<(), Error> {
        Err(Error::i32_exit(code))
    })?;
    linker.func_wrap(MODULE, "sched_yield", || -> i32 { ESUCCESS })?;
    linker.func_wrap(
        MODULE,
        "random_get",
        |mut c: Caller<'_, Wasi>, buf: i32, len: i32| {
            let (mem, w) = split(&mut c)?;
            let Some(dst) = slice_mut(mem, buf, len as u32 as usize) else {
                return Ok::<i32, Error>(EFAULT);
            };
            for chunk in dst.chunks_mut(8) {
                let r = w.rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            Ok(ESUCCESS)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: Caller<'_, Wasi>, id: i32, out: i32| {
            if !(0..=3).contains(&id) {
                return Ok::<i32, Error>(EINVAL);
            }
            let (mem, _) = split(&mut c)?;
            Ok(if put_u64(mem, out, 1_000) {
                ESUCCESS
            } else {
                EFAULT
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: Caller<'_, Wasi>, id: i32, _precision: i64, out: i32| {
            let (mem, w) = split(&mut c)?;
            let ns = match id {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                // Monotonic and both CPU-time clocks: time since the call began.
                1..=3 => w.started.elapsed().as_nanos() as u64,
                _ => return Ok::<i32, Error>(EINVAL),
            };
            Ok(if put_u64(mem, out, ns) {
                ESUCCESS
            } else {
                EFAULT
            })
        },
    )?;

    for import in module.imports() {
        if import.module() != MODULE || IMPLEMENTED.contains(&import.name()) {
            continue;
        }
        if let ExternType::Func(ty) = import.ty() {
            let returns_errno = ty.results().len() == 1;
            linker.func_new(
                MODULE,
                import.name(),
                ty.clone(),
                move |_, _, out: &mut [Val]| {
                    if returns_errno {
                        out[0] = Val::I32(ENOSYS);
                    }
                    Ok(())
                },
            )?;
        }
    }
    Ok(())
}
