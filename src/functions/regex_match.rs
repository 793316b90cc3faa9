//! regex_match: a pattern matched at the start of a text, as in the original MicroFaaS
//! (`re.match(r"\d\D\d", text)` over 64 random characters; anchored at the start only, not
//! at the end).
//!
//! Input and output as in `regex_search`: `{"text"?, "seed"?, "length"?, "pattern"?}` →
//! `{"matched", "match", "start", "end"}`.

use serde_json::Value;

use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    super::regex_common(input, true)
}

pub fn input(rng: &mut SplitMix64) -> Value {
    super::regex_input(rng)
}
