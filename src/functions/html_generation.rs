//! html_generation: an HTML table of random cells, as in the original MicroFaaS.
//!
//! Input `{"n": N, "seed"?: S}` (original range 1..=128; at most 10000 here so the result fits
//! in one protocol frame). Row `i` (0-based) is `<tr><td>i</td><td>v</td></tr>` where `v` is
//! `SplitMix64(S).below(1000000)` drawn in row order (default seed 0); the rows sit inside
//! `<html><body><table>` … `</table></body></html>`. Output `{"n": N, "html": string}`.

use std::fmt::Write;

use serde_json::{Value, json};

use super::{FunctionError, get_seed, get_u64, input_seed, rng::SplitMix64};

const MAX_ROWS: u64 = 10_000;

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    let n = get_u64(input, "n", None, MAX_ROWS)?;
    let mut rng = SplitMix64::new(get_seed(input)?);
    let mut html = String::from("<html><body><table>");
    for i in 0..n {
        // Writing into a String cannot fail.
        let _ = write!(
            html,
            "<tr><td>{i}</td><td>{}</td></tr>",
            rng.below(1_000_000)
        );
    }
    html.push_str("</table></body></html>");
    Ok(json!({ "n": n, "html": html }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({ "n": rng.range(1, 128), "seed": input_seed(rng) })
}
