//! regex_search: the first match of a pattern anywhere in a text, as in the original
//! MicroFaaS (`re.search(r"\d\D\d", text)` over 64 random characters).
//!
//! Input `{"text"?: string, "seed"?: S, "length"?: L, "pattern"?: regex}`. Without `text` the
//! text is `L` (default 64) characters of `rng::ALNUM` from `SplitMix64(S)` (default seed 0);
//! the pattern defaults to `\d\D\d` (regex-lite syntax: `\d` is ASCII digits only).
//! Output `{"matched": bool, "match": string|null, "start": byte offset|null, "end": …}`.

use serde_json::Value;

use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    super::regex_common(input, false)
}

pub fn input(rng: &mut SplitMix64) -> Value {
    super::regex_input(rng)
}
