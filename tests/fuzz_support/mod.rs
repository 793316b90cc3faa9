//! A small seeded mutation fuzzer on the stable toolchain, shared by the short run inside
//! `cargo test` (tests/fuzz_inputs.rs) and the long run (`hack/fuzz`, hack/fuzz.rs).
//!
//! Input `i` of a target is a pure function of (seed, target name, i): a failure report names
//! the three and `hack/fuzz --target NAME --seed S --only I` rebuilds exactly that input.
//! Inputs are mutations of the target's valid seeds (bit flips, interesting bytes, cuts,
//! duplications, splices with another seed, huge numbers, deep nesting), with a few pure random
//! ones; every input is capped at the target's `max_len`.

#![allow(dead_code)] // each including crate uses part of it

#[path = "../support/host.rs"]
pub mod host;
pub mod targets;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// splitmix64: tiny, seedable, good enough to pick mutations.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// One thing to fuzz: valid seeds to mutate and a check that runs one input.
pub trait Target {
    fn name(&self) -> &'static str;
    /// Valid inputs, the starting points of mutation.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Largest input generated: the bound the decoder must handle in bounded memory.
    fn max_len(&self) -> usize;
    /// Runs one input. `Err` is a broken property (a panic is caught by the runner).
    fn run(&mut self, input: &[u8]) -> Result<(), String>;
}

/// Bytes that often sit on parsing edges.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\x80",
    b"\xc3",
    b"-1",
    b"0",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1e999",
    b"NaN",
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b";",
    b"#",
    b"../",
    b"/",
    b"%00",
    b"%2e%2e%2f",
    b"&",
    b"*",
    b"!!",
    b"- ",
    b"  ",
    b"\t",
    b"\xef\xbb\xbf",
    b"\xf0\x9f\x92\xa5",
];

/// Input `index` of a target for `seed`.
pub fn input(seeds: &[Vec<u8>], max_len: usize, seed: u64, name: &str, index: u64) -> Vec<u8> {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x1000_0000_01b3);
    }
    let mut rng = Rng::new(h ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut out = if seeds.is_empty() || rng.chance(32) {
        let n = rng.below(max_len.min(512) + 1);
        (0..n).map(|_| rng.next() as u8).collect()
    } else {
        seeds[rng.below(seeds.len())].clone()
    };
    let rounds = 1 + rng.below(4) + if rng.chance(4) { rng.below(16) } else { 0 };
    for _ in 0..rounds {
        mutate(&mut out, seeds, &mut rng, max_len);
    }
    out.truncate(max_len);
    out
}

fn range(rng: &mut Rng, len: usize) -> (usize, usize) {
    if len == 0 {
        return (0, 0);
    }
    let at = rng.below(len);
    let span = if rng.chance(4) {
        len - at
    } else {
        16.min(len - at)
    };
    let n = 1 + rng.below(span);
    (at, at + n)
}

/// One mutation of `b`, in place.
pub fn mutate(b: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng, max_len: usize) {
    let len = b.len();
    match rng.below(12) {
        0 if len > 0 => {
            let i = rng.below(len);
            b[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            b[i] = rng.next() as u8;
        }
        2 => {
            let at = rng.below(len + 1);
            let what = INTERESTING[rng.below(INTERESTING.len())];
            if rng.chance(2) && at + what.len() <= len {
                b[at..at + what.len()].copy_from_slice(what);
            } else {
                b.splice(at..at, what.iter().copied());
            }
        }
        3 if len > 0 => {
            let (s, e) = range(rng, len);
            b.drain(s..e);
        }
        4 if len > 0 => {
            let (s, e) = range(rng, len);
            let copy = b[s..e].to_vec();
            let at = rng.below(len + 1);
            b.splice(at..at, copy);
        }
        5 => b.truncate(rng.below(len + 1)),
        6 if !seeds.is_empty() => {
            // Splice: our head, another seed's tail (or a piece of it in the middle).
            let other = &seeds[rng.below(seeds.len())];
            let (s, e) = range(rng, other.len());
            let at = rng.below(len + 1);
            b.splice(at..at, other[s..e].iter().copied());
        }
        7 => {
            // A huge number where a number may be expected.
            let digits = 1 + rng.below(40);
            let mut n: Vec<u8> = (0..digits).map(|_| b'0' + rng.below(10) as u8).collect();
            if rng.chance(3) {
                n.insert(0, b'-');
            }
            let at = rng.below(len + 1);
            b.splice(at..at, n);
        }
        8 => {
            // Deep nesting: many openers (JSON arrays/objects, YAML flow, ASN.1 sequences).
            let deep = if rng.chance(8) { 100_000 } else { 300 };
            let depth = 1 + rng.below(deep);
            let opener: &[u8] = match rng.below(5) {
                0 => b"[",
                1 => b"{\"a\":",
                2 => b"- ",
                3 => b"\x30\x84\x00\x00\xff\xff",
                _ => b"{a: ",
            };
            let at = rng.below(len + 1);
            let piece: Vec<u8> = opener
                .iter()
                .copied()
                .cycle()
                .take(fits(opener.len() * depth, at, max_len))
                .collect();
            b.splice(at..at, piece);
        }
        9 if len > 0 => {
            // Repeat a range many times: long strings, long lines, many fields.
            let (s, e) = range(rng, len);
            let copy = b[s..e].to_vec();
            let many = if rng.chance(4) { 4096 } else { 32 };
            let times = 2 + rng.below(many);
            let at = rng.below(len + 1);
            let piece: Vec<u8> = copy
                .iter()
                .copied()
                .cycle()
                .take(fits(copy.len() * times, at, max_len))
                .collect();
            b.splice(at..at, piece);
        }
        10 if len > 0 => {
            // A length-like byte bumped up or down (ASN.1 lengths, counts, sizes).
            let i = rng.below(len);
            let d = 1 + rng.below(16) as u8;
            b[i] = if rng.chance(2) {
                b[i].wrapping_add(d)
            } else {
                b[i].wrapping_sub(d)
            };
        }
        _ => {
            let n = 1 + rng.below(8);
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(at..at, bytes);
        }
    }
    if b.len() > max_len {
        b.truncate(max_len);
    }
}

/// How much of an `n`-byte piece inserted at `at` can survive the cut to `max_len`: the rest
/// would be built only to be dropped. Building it whole made the repeat mutation allocate up to
/// 64 KiB × 4,097 (~270 MB) for one input, twice over while splicing: the 0.4-0.7 GB peaks
/// of the long runs. The input is the same byte for byte.
fn fits(n: usize, at: usize, max_len: usize) -> usize {
    n.min(max_len.saturating_sub(at))
}

/// What a run of one target found.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    pub elapsed: Duration,
    /// (input index, what went wrong, the input) for every failure, at most a few kept.
    pub failures: Vec<(u64, String, Vec<u8>)>,
    pub failed: u64,
    pub largest_input: usize,
}

impl Report {
    pub fn per_second(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn describe_failures(&self, seed: u64) -> String {
        let mut s = String::new();
        for (i, why, input) in &self.failures {
            let shown = String::from_utf8_lossy(&input[..input.len().min(300)]);
            s.push_str(&format!(
                "{}: seed {seed} input {i} ({} bytes): {why}\n  reproduce: hack/fuzz --target {} \
                 --seed {seed} --only {i}\n  input: {shown:?}\n",
                self.target,
                input.len(),
                self.target
            ));
        }
        s
    }
}

/// Runs inputs `first..first+count` of `target` for `seed`, catching panics.
pub fn run(target: &mut dyn Target, seed: u64, first: u64, count: u64) -> Report {
    let seeds = target.seeds();
    let max_len = target.max_len();
    let name = target.name();
    // The default hook would print every caught panic; the report says it once.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut report = Report {
        target: name,
        inputs: 0,
        elapsed: Duration::ZERO,
        failures: Vec::new(),
        failed: 0,
        largest_input: 0,
    };
    for i in first..first + count {
        let data = input(&seeds, max_len, seed, name, i);
        report.largest_input = report.largest_input.max(data.len());
        let outcome = catch_unwind(AssertUnwindSafe(|| target.run(&data)));
        let why = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(p) => Some(format!(
                "panic: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        report.inputs += 1;
        if let Some(why) = why {
            report.failed += 1;
            if report.failures.len() < 5 {
                report.failures.push((i, why, data));
            }
        }
    }
    report.elapsed = started.elapsed();
    std::panic::set_hook(hook);
    report
}
