//! The long fuzz run behind hack/fuzz: N mutated inputs (default 1,000,000) per target from
//! tests/fuzz_support, a seed (default from the clock, printed), inputs/s per target.
//!
//!   hack/fuzz [INPUTS] [SEED] [--target NAME] [--only INDEX] [--trace]
//!
//! `--only I` runs input I alone and prints it; `--trace` prints each input's index before
//! running it (to find the input behind a crash that cannot be caught, e.g. a stack overflow).

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator, counting: bytes live now, their peak, and the largest single
/// allocation, so each target's line says what its memory went to (a peak that is one huge
/// allocation is a plateau; live bytes that keep climbing are a leak).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
    LARGEST.fetch_max(size, Relaxed);
}

// SAFETY: every call is passed to System unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout contract, forwarded.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System with this layout (every alloc goes through us).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for dealloc and alloc.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MB: f64 = 1024.0 * 1024.0;

/// Stack of the thread the targets run on: 2 MiB, what tokio's workers (where `serve` loads
/// manifests and reads peers) and test threads get, so a recursion that would overflow there
/// overflows here too.
const STACK: usize = 2 * 1024 * 1024;

fn main() -> ExitCode {
    match std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(fuzz)
        .map(|t| t.join())
    {
        Ok(Ok(code)) => code,
        _ => ExitCode::FAILURE,
    }
}

fn fuzz() -> ExitCode {
    let mut numbers = Vec::new();
    let mut only_target: Option<String> = None;
    let mut only_input: Option<u64> = None;
    let mut trace = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => only_target = args.next(),
            "--only" => only_input = args.next().and_then(|v| v.parse().ok()),
            "--trace" => trace = true,
            "-h" | "--help" => {
                eprintln!("hack/fuzz [INPUTS] [SEED] [--target NAME] [--only INDEX] [--trace]");
                return ExitCode::SUCCESS;
            }
            n => match n.parse::<u64>() {
                Ok(v) => numbers.push(v),
                Err(_) => {
                    eprintln!("hack/fuzz: unexpected argument `{n}`");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let inputs = numbers.first().copied().unwrap_or(1_000_000);
    let seed = numbers.get(1).copied().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    println!("hack/fuzz: seed {seed}, {inputs} inputs per target (profile fuzz)");
    let mut failed = false;
    for mut target in fuzz_support::targets::all() {
        if only_target.as_deref().is_some_and(|t| t != target.name()) {
            continue;
        }
        if let Some(i) = only_input {
            let data =
                fuzz_support::input(&target.seeds(), target.max_len(), seed, target.name(), i);
            println!(
                "{} input {i} ({} bytes): {:?}",
                target.name(),
                data.len(),
                String::from_utf8_lossy(&data)
            );
            let r = fuzz_support::run(target.as_mut(), seed, i, 1);
            failed |= r.failed > 0;
            print!("{}", r.describe_failures(seed));
            continue;
        }
        let live_before = LIVE.load(Relaxed);
        PEAK.store(live_before, Relaxed);
        LARGEST.store(0, Relaxed);
        let report = if trace {
            let mut total = None::<fuzz_support::Report>;
            for i in 0..inputs {
                eprint!("\r{} {i}   ", target.name());
                let _ = std::io::stderr().flush();
                let r = fuzz_support::run(target.as_mut(), seed, i, 1);
                total = Some(match total {
                    None => r,
                    Some(mut t) => {
                        t.inputs += r.inputs;
                        t.elapsed += r.elapsed;
                        t.failed += r.failed;
                        t.largest_input = t.largest_input.max(r.largest_input);
                        if t.failures.len() < 5 {
                            t.failures.extend(r.failures);
                        }
                        t
                    }
                });
            }
            eprintln!();
            match total {
                Some(t) => t,
                None => continue,
            }
        } else {
            fuzz_support::run(target.as_mut(), seed, 0, inputs)
        };
        println!(
            "{:<13} {:>9} inputs  {:>8.1} s  {:>9.0} inputs/s  largest {:>6} B  failures {}  \
             heap: peak {:.1} MiB, largest allocation {:.1} MiB, live after {:+.1} MiB",
            report.target,
            report.inputs,
            report.elapsed.as_secs_f64(),
            report.per_second(),
            report.largest_input,
            report.failed,
            PEAK.load(Relaxed).saturating_sub(live_before) as f64 / MB,
            LARGEST.load(Relaxed) as f64 / MB,
            (LIVE.load(Relaxed) as f64 - live_before as f64) / MB,
        );
        if report.failed > 0 {
            failed = true;
            print!("{}", report.describe_failures(seed));
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
