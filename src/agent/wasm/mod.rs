//! Runs a user function compiled to WebAssembly (a WASI preview 1 command) in the wasmi
//! interpreter. The calling convention, the same as for an `exec` function:
//!
//! - `_start` is called; argv is `[function name]`, the environment is `Function.spec.env`;
//! - stdin holds the input as JSON, the function writes its output to stdout (JSON, or any text,
//!   which becomes a JSON string); stderr is kept for the error message;
//! - returning from `_start` or `proc_exit(0)` is success; another exit status or a trap is a
//!   failed invocation with the reason and the end of stderr.
//!
//! Bounds, each a failed invocation that leaves the agent serving: linear memory is capped at
//! `Function.spec.memory`; execution is metered with wasmi fuel, paid out in slices so the
//! deadline is checked between slices (an endless loop ends as a timeout, not an overrun), and
//! an optional total fuel budget (`Function.spec.fuel`) ends it as fuel exhaustion.

pub mod wasi;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use wasmi::{Config, Engine, Linker, Module, Store, TypedResumableCall};

use wasi::{MemoryCap, Wasi};

/// Fuel paid out per slice: small enough that the deadline is noticed within a fraction of a
/// second even on an emulated CPU, large enough that resuming costs nothing measurable.
const FUEL_SLICE: u64 = 2_000_000;
/// Linear memory allowed when the Function names no `memory`.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Compiled modules kept per boot, by sha256 (a Warm worker runs the same few functions).
const CACHE_ENTRIES: usize = 8;

/// Why a wasm invocation failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WasmError {
    #[error("not a valid WebAssembly module: {0}")]
    Invalid(String),
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
    #[error("needs {wanted} bytes of linear memory, more than its memory limit of {limit} bytes{}", tail(.stderr))]
    Memory {
        wanted: u64,
        limit: u64,
        stderr: String,
    },
    #[error("trapped: {reason}{}", tail(.stderr))]
    Trap { reason: String, stderr: String },
    #[error("exited with status {code}{}", tail(.stderr))]
    Exit { code: i32, stderr: String },
    #[error("ran out of fuel (budget {budget}){}", tail(.stderr))]
    OutOfFuel { budget: u64, stderr: String },
    #[error("exceeded its deadline")]
    Timeout,
}

pub(crate) fn tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

/// One call's inputs.
pub struct Call<'a> {
    /// argv: the function's name first.
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Vec<u8>,
    /// Linear memory cap in bytes.
    pub memory: u64,
    /// Total fuel budget; `None` = bounded by the deadline only.
    pub fuel: Option<u64>,
    pub deadline: Option<Instant>,
}

/// The one engine of this process: modules are tied to the engine that compiled them.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::default();
        config.consume_fuel(true);
        Engine::new(&config)
    })
}

/// Compiles `bytes`, or returns the module compiled earlier in this boot under `sha256`.
pub fn compile(sha256: &str, bytes: &[u8]) -> Result<Module, WasmError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Module>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(m) = cache.lock().ok().and_then(|c| c.get(sha256).cloned()) {
        return Ok(m);
    }
    let module = Module::new(engine(), bytes).map_err(|e| WasmError::Invalid(e.to_string()))?;
    if let Ok(mut c) = cache.lock() {
        if c.len() >= CACHE_ENTRIES {
            c.clear();
        }
        c.insert(sha256.to_string(), module.clone());
    }
    Ok(module)
}

/// Runs `module`'s `_start` with `call`; the bytes it wrote to stdout on success.
pub fn run(module: &Module, call: Call<'_>) -> Result<Vec<u8>, WasmError> {
    let cap = MemoryCap {
        max: usize::try_from(call.memory).unwrap_or(usize::MAX),
        refused: None,
    };
    let mut store = Store::new(engine(), Wasi::new(call.args, call.env, call.stdin, cap));
    store.limiter(|w: &mut Wasi| &mut w.limits);
    let mut linker = Linker::new(engine());
    wasi::link(&mut linker, module).map_err(|e| WasmError::Instantiate(e.to_string()))?;

    let budget = call.fuel;
    let mut left = budget.unwrap_or(u64::MAX);
    pay(&mut store, &mut left).map_err(|e| WasmError::Instantiate(e.to_string()))?;

    let instance = match linker.instantiate_and_start(&mut store, module) {
        Ok(i) => i,
        Err(e) => return Err(failure(&store, &e, budget)),
    };
    let start = instance
        .get_typed_func::<(), ()>(&store, "_start")
        .map_err(|_| WasmError::Instantiate("the module exports no `_start() -> ()`".into()))?;

    let mut state = start.call_resumable(&mut store, ());
    loop {
        match state {
            Ok(TypedResumableCall::Finished(())) => break,
            Ok(TypedResumableCall::OutOfFuel(pending)) => {
                if left == 0 {
                    return Err(WasmError::OutOfFuel {
                        budget: budget.unwrap_or(u64::MAX),
                        stderr: store.data().stderr_tail(),
                    });
                }
                if call.deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(WasmError::Timeout);
                }
                pay(&mut store, &mut left).map_err(|e| WasmError::Trap {
                    reason: e.to_string(),
                    stderr: String::new(),
                })?;
                state = pending.resume(&mut store);
            }
            // A host function failed (proc_exit included): not resumable, the call ends here.
            Ok(TypedResumableCall::HostTrap(pending)) => {
                let e = pending.host_error();
                match e.i32_exit_status() {
                    Some(0) => break,
                    _ => return Err(failure(&store, e, budget)),
                }
            }
            Err(e) => match e.i32_exit_status() {
                Some(0) => break,
                _ => return Err(failure(&store, &e, budget)),
            },
        }
    }
    Ok(std::mem::take(&mut store.data_mut().stdout))
}

/// Pays out the next slice of fuel from what is `left`.
fn pay(store: &mut Store<Wasi>, left: &mut u64) -> Result<(), wasmi::Error> {
    let slice = FUEL_SLICE.min(*left);
    *left -= slice;
    store.set_fuel(slice)
}

/// Names what ended a call, preferring the memory cap when a growth was refused: the module
/// then usually traps in its allocator's abort, which on its own says nothing useful.
fn failure(store: &Store<Wasi>, e: &wasmi::Error, budget: Option<u64>) -> WasmError {
    let w = store.data();
    let stderr = w.stderr_tail();
    if let Some(code) = e.i32_exit_status() {
        return WasmError::Exit { code, stderr };
    }
    if let Some(wanted) = w.limits.refused {
        return WasmError::Memory {
            wanted: wanted as u64,
            limit: w.limits.max as u64,
            stderr,
        };
    }
    if matches!(e.as_trap_code(), Some(wasmi::TrapCode::OutOfFuel)) {
        return WasmError::OutOfFuel {
            budget: budget.unwrap_or(u64::MAX),
            stderr,
        };
    }
    WasmError::Trap {
        reason: e.to_string(),
        stderr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: u64 = 1 << 20;

    fn module(wat: &str) -> Module {
        let bytes = wat::parse_str(wat).expect("valid wat");
        Module::new(engine(), bytes).expect("compiles")
    }

    fn call<'a>(args: &'a [String], env: &'a [(String, String)], stdin: &[u8]) -> Call<'a> {
        Call {
            args,
            env,
            stdin: stdin.to_vec(),
            memory: 16 * MIB,
            fuel: None,
            deadline: Some(Instant::now() + Duration::from_secs(30)),
        }
    }

    fn run_plain(m: &Module) -> Result<Vec<u8>, WasmError> {
        run(m, call(&[], &[], b""))
    }

    /// Writes `len` bytes at `ptr` to fd 1 (iovec at 0, nwritten at 8).
    const WRITE: &str = r#"
      (func $write (param $ptr i32) (param $len i32)
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"#;
    const IMPORT_WRITE: &str = r#"(import "wasi_snapshot_preview1" "fd_write"
        (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;

    #[test]
    fn stdin_is_the_input_and_stdout_the_output() {
        let m = module(&format!(
            r#"(module
              {IMPORT_WRITE}
              (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              {WRITE}
              (func (export "_start")
                ;; read up to 1000 bytes at 100, then echo what was read
                (i32.store (i32.const 16) (i32.const 100))
                (i32.store (i32.const 20) (i32.const 1000))
                (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 24)))
                (call $write (i32.const 100) (i32.load (i32.const 24)))))"#
        ));
        let out = run(&m, call(&[], &[], br#"{"n": 42}"#)).expect("runs");
        assert_eq!(out, br#"{"n": 42}"#);
    }

    #[test]
    fn args_and_environment_are_passed() {
        let m = module(&format!(
            r#"(module
              {IMPORT_WRITE}
              (import "wasi_snapshot_preview1" "args_sizes_get" (func $asz (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "args_get" (func $aget (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "environ_sizes_get" (func $esz (param i32 i32) (result i32)))
              (import "wasi_snapshot_preview1" "environ_get" (func $eget (param i32 i32) (result i32)))
              (memory (export "memory") 1)
              {WRITE}
              (func (export "_start")
                (drop (call $asz (i32.const 32) (i32.const 36)))
                (drop (call $aget (i32.const 200) (i32.const 1000)))
                (call $write (i32.const 1000) (i32.load (i32.const 36)))
                (drop (call $esz (i32.const 32) (i32.const 36)))
                (drop (call $eget (i32.const 200) (i32.const 2000)))
                (call $write (i32.const 2000) (i32.load (i32.const 36)))))"#
        ));
        let args = ["hello".to_string(), "x".to_string()];
        let env = [("MODE".to_string(), "fast".to_string())];
        let out = run(&m, call(&args, &env, b"")).expect("runs");
        assert_eq!(out, b"hello\0x\0MODE=fast\0");
    }

    #[test]
    fn a_trap_is_a_failure_with_its_reason_and_stderr() {
        let m = module(&format!(
            r#"(module
              {IMPORT_WRITE}
              (memory (export "memory") 1)
              (data (i32.const 100) "boom")
              (func (export "_start")
                (i32.store (i32.const 0) (i32.const 100))
                (i32.store (i32.const 4) (i32.const 4))
                (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
                unreachable))"#
        ));
        match run_plain(&m) {
            Err(WasmError::Trap { reason, stderr }) => {
                assert!(reason.contains("unreachable"), "{reason}");
                assert_eq!(stderr, "boom");
            }
            other => panic!("expected a trap, got {other:?}"),
        }
    }

    #[test]
    fn exit_status_decides_success() {
        let exit = |code: i32| {
            module(&format!(
                r#"(module
                  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                  (memory (export "memory") 1)
                  (func (export "_start") (call $exit (i32.const {code})) unreachable))"#
            ))
        };
        assert_eq!(run_plain(&exit(0)), Ok(Vec::new()));
        assert_eq!(
            run_plain(&exit(3)),
            Err(WasmError::Exit {
                code: 3,
                stderr: String::new()
            })
        );
    }

    const SPIN: &str = r#"(module (memory (export "memory") 1)
        (func (export "_start") (loop (br 0))))"#;

    #[test]
    fn an_endless_loop_ends_at_the_deadline() {
        let m = module(SPIN);
        let mut c = call(&[], &[], b"");
        c.deadline = Some(Instant::now() + Duration::from_millis(200));
        assert_eq!(run(&m, c), Err(WasmError::Timeout));
    }

    #[test]
    fn an_endless_loop_exhausts_a_fuel_budget() {
        let m = module(SPIN);
        let mut c = call(&[], &[], b"");
        c.fuel = Some(5 * FUEL_SLICE / 2);
        c.deadline = None;
        assert_eq!(
            run(&m, c),
            Err(WasmError::OutOfFuel {
                budget: 5 * FUEL_SLICE / 2,
                stderr: String::new()
            })
        );
    }

    #[test]
    fn growing_past_the_memory_cap_fails_naming_the_cap() {
        // Grows by 64 pages (4 MiB) and traps when refused, like an allocator's abort.
        let m = module(
            r#"(module (memory (export "memory") 1)
              (func (export "_start")
                (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable))))"#,
        );
        let mut c = call(&[], &[], b"");
        c.memory = 2 * MIB;
        match run(&m, c) {
            Err(WasmError::Memory { wanted, limit, .. }) => {
                assert_eq!((wanted, limit), (65 * 65536, 2 * MIB));
            }
            other => panic!("expected a memory failure, got {other:?}"),
        }
        // Under a larger cap the same module runs.
        let mut c = call(&[], &[], b"");
        c.memory = 8 * MIB;
        assert_eq!(run(&m, c), Ok(Vec::new()));
    }

    #[test]
    fn an_initial_memory_above_the_cap_is_refused_at_instantiation() {
        let m = module(r#"(module (memory (export "memory") 64) (func (export "_start")))"#);
        let mut c = call(&[], &[], b"");
        c.memory = MIB;
        assert!(
            matches!(run(&m, c), Err(WasmError::Memory { wanted, .. }) if wanted == 64 * 65536)
        );
    }

    #[test]
    fn other_wasi_calls_answer_enosys() {
        let m = module(&format!(
            r#"(module
              {IMPORT_WRITE}
              (import "wasi_snapshot_preview1" "fd_sync" (func $sync (param i32) (result i32)))
              (memory (export "memory") 1)
              {WRITE}
              (func (export "_start")
                (i32.store8 (i32.const 100) (call $sync (i32.const 1)))
                (call $write (i32.const 100) (i32.const 1))))"#
        ));
        assert_eq!(run_plain(&m), Ok(vec![52]));
    }

    #[test]
    fn a_module_that_is_not_wasm_is_invalid() {
        assert!(matches!(
            compile("x", b"\x7fELF"),
            Err(WasmError::Invalid(_))
        ));
    }
}
