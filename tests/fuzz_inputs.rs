//! The short fuzz run: a few thousand mutated inputs per target (tests/fuzz_support), seeded
//! and printed so a failure is reproducible with `hack/fuzz --target T --seed S --only I`.
//! `MICROFAAS_FUZZ_INPUTS` and `MICROFAAS_FUZZ_SEED` change the count and the seed.

mod fuzz_support;

use fuzz_support::{Target, run, targets};

const DEFAULT_SEED: u64 = 20_261_207;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(mut target: Box<dyn Target>, default_inputs: u64) {
    let seed = env_u64("MICROFAAS_FUZZ_SEED", DEFAULT_SEED);
    let inputs = env_u64("MICROFAAS_FUZZ_INPUTS", default_inputs);
    let report = run(target.as_mut(), seed, 0, inputs);
    println!(
        "{}: {} inputs, seed {seed}, largest {} bytes, {:.0} inputs/s (test profile)",
        report.target,
        report.inputs,
        report.largest_input,
        report.per_second()
    );
    assert_eq!(report.inputs, inputs);
    assert!(
        report.failed == 0,
        "{} of {} inputs failed:\n{}",
        report.failed,
        report.inputs,
        report.describe_failures(seed)
    );
}

#[test]
fn manifest_loader() {
    fuzz(Box::new(targets::Manifest), 2_000);
}

#[test]
fn agent_protocol_frames() {
    fuzz(Box::new(targets::AgentFrames::new()), 5_000);
}

#[test]
fn qmp_messages() {
    fuzz(Box::new(targets::QmpMessages::new()), 5_000);
}

#[test]
fn snmp_replies() {
    fuzz(Box::new(targets::SnmpReplies::new()), 5_000);
}

#[test]
fn wattsup_frames() {
    fuzz(Box::new(targets::WattsUpFrames), 5_000);
}

#[test]
fn gateway_requests() {
    fuzz(Box::new(targets::Gateway::new()), 2_000);
}

/// The harness itself: the same (seed, target, index) always gives the same input, and the
/// mutations reach the target's size cap without passing it.
#[test]
fn inputs_are_reproducible_and_capped() {
    let seeds = vec![b"{\"type\":\"next\"}".to_vec()];
    let a: Vec<Vec<u8>> = (0..200)
        .map(|i| fuzz_support::input(&seeds, 4096, 7, "t", i))
        .collect();
    let b: Vec<Vec<u8>> = (0..200)
        .map(|i| fuzz_support::input(&seeds, 4096, 7, "t", i))
        .collect();
    assert_eq!(a, b);
    assert!(a.iter().all(|x| x.len() <= 4096));
    assert!(a.iter().any(|x| x.len() > 1000), "no long inputs generated");
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert!(
        distinct.len() > 150,
        "only {} distinct inputs",
        distinct.len()
    );
}
