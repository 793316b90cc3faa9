//! matmul: the product of two random square matrices, as in the original MicroFaaS.
//!
//! Input `{"size": N, "seed"?: S}` (original range 2..=10; at most 512 here to bound memory).
//! `SplitMix64(S)` (default seed 0) fills A then B row by row with `unit_f64()` values in
//! [0, 1). `C[i][j] = Σ_k A[i][k]·B[k][j]`, accumulated from 0.0 in increasing `k` without
//! fused multiply-add, so any IEEE-754 re-computation gets the same bits.
//! Output `{"size": N, "c": [[…], …]}`.

use serde_json::{Value, json};

use super::{FunctionError, get_seed, get_u64, input_seed, rng::SplitMix64};

const MAX_SIZE: u64 = 512;

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    let n = get_u64(input, "size", None, MAX_SIZE)? as usize;
    let mut rng = SplitMix64::new(get_seed(input)?);
    let a: Vec<f64> = (0..n * n).map(|_| rng.unit_f64()).collect();
    let b: Vec<f64> = (0..n * n).map(|_| rng.unit_f64()).collect();
    let c: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| (0..n).fold(0.0, |acc, k| acc + a[i * n + k] * b[k * n + j]))
                .collect()
        })
        .collect();
    Ok(json!({ "size": n, "c": c }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({ "size": rng.range(2, 10), "seed": input_seed(rng) })
}
