//! cascading_md5: MD5 applied `rounds` times, as in the original MicroFaaS.
//!
//! Input `{"rounds": R, "data"?: string, "seed"?: S, "length"?: L}` (original: a 64-character
//! string, rounds in 1..=10000). Without `data` the text is `L` (default 64) characters of
//! `rng::ALNUM` drawn from `SplitMix64(S)` (default seed 0). Each round hashes the previous
//! round's lower-case hex digest (the first round hashes the text's UTF-8 bytes).
//! Output `{"rounds": R, "digest": hex}`.

use serde_json::Value;

use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    super::cascade::<md5::Md5>(input)
}

pub fn input(rng: &mut SplitMix64) -> Value {
    super::cascade_input(rng)
}
