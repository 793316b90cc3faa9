//! zlib_decompress: inflate a hex-encoded zlib stream, as in the original MicroFaaS.
//!
//! Input `{"data": hex}`: a zlib (RFC 1950) stream, hex-encoded. The inflated text may be at
//! most 16 MiB. Output `{"length": bytes, "sha256": hex}` of the inflated bytes (a digest
//! rather than the text itself so any result fits in one protocol frame).
//! Default inputs pick one of five fixed texts (as the original did), compressed here.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{FunctionError, get_str, hex, rng::SplitMix64, unhex};

const MAX_OUTPUT: usize = 16 << 20;

/// The five texts the default inputs draw from: (sentence, repetitions).
pub const TEXTS: [(&str, usize); 5] = [
    ("The quick brown fox jumps over the lazy dog. ", 40),
    ("Serverless functions on single-board computers save energy. ", 60),
    ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. ", 80),
    ("0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n", 100),
    ("<tr><td>MicroFaaS</td><td>BeagleBone Black</td><td>QEMU</td></tr>\n", 120),
];

pub fn run(input: &Value) -> Result<Value, FunctionError> {
    let data = get_str(input, "data")?
        .ok_or_else(|| FunctionError::BadInput("\"data\" is required".into()))?;
    let bytes = unhex(data).ok_or_else(|| FunctionError::BadInput("\"data\" is not hex".into()))?;
    let out = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&bytes, MAX_OUTPUT)
        .map_err(|e| FunctionError::Failed(format!("inflate failed: {e}")))?;
    Ok(json!({ "length": out.len(), "sha256": hex(&Sha256::digest(&out)) }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    let (sentence, reps) = TEXTS[rng.below(TEXTS.len() as u64) as usize];
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(sentence.repeat(reps).as_bytes(), 6);
    json!({ "data": hex(&compressed) })
}
