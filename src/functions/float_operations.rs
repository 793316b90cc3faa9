//! float_operations: the sin/cos/sqrt loop of the original MicroFaaS.
//!
//! Input `{"n": N}` (original range 1..=10000). Output `{"n": N, "sin": Σ, "cos": Σ,
//! "sqrt": Σ}`: the sums of `sin(i)`, `cos(i)` and `sqrt(i)` for `i` in `0..N`, each
//! accumulated from 0.0 in increasing `i`. The original only timed the loop; the sums make
//! the result checkable and keep the optimiser from deleting the work. Different C
//! libraries' sin/cos may differ in the last bit: compare with [`super::outputs_match`].

use serde_json::{Value, json};

use super::{FunctionError, get_u64, rng::SplitMix64};

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    let n = get_u64(input, "n", None, u64::MAX)?;
    let (mut s, mut c, mut q) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let x = i as f64;
        s += x.sin();
        c += x.cos();
        q += x.sqrt();
    }
    Ok(json!({ "n": n, "sin": s, "cos": c, "sqrt": q }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({ "n": rng.range(1, 10_000) })
}
