//! The benchmark function suite shared by the agent (which runs it) and the orchestrator (which
//! generates inputs and checks outputs): the nine self-contained MicroFaaS functions, one file
//! each, plus the registry, input helpers and the seeded PRNG they share.
//!
//! Each function module has `run(&Value) -> Result<Value, FunctionError>` and
//! `input(&mut SplitMix64) -> Value` (one default input in the original MicroFaaS shape); its
//! file documents the input and output shapes. Outputs are deterministic for a given input;
//! randomness inside a function is drawn from [`rng::SplitMix64`] seeded from the input.

pub mod rng;

use serde_json::Value;

use rng::SplitMix64;

/// Why a function produced no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("unknown function {0:?}")]
    UnknownFunction(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("{0}")]
    Failed(String),
}

type Runner = fn(&Value) -> Result<Value, FunctionError>;
type InputGen = fn(&mut SplitMix64) -> Value;

// One list drives the module declarations, `names()` and dispatch, so they cannot drift apart.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name;)*

        const NAMES: &[&str] = &[$(stringify!($name)),*];

        fn lookup(handler: &str) -> Option<(Runner, InputGen)> {
            match handler {
                $(stringify!($name) => Some(($name::run as Runner, $name::input as InputGen)),)*
                _ => None,
            }
        }
    };
}

suite!(
    float_operations,
    cascading_sha256,
    cascading_md5,
    matmul,
    html_generation,
    pyaes,
    zlib_decompress,
    regex_search,
    regex_match,
);

/// The builtin handlers, in a fixed order.
pub fn names() -> &'static [&'static str] {
    NAMES
}

/// Run the builtin function `handler` on `input`.
pub fn run(handler: &str, input: &Value) -> Result<Value, FunctionError> {
    match lookup(handler) {
        Some((run, _)) => run(input),
        None => Err(FunctionError::UnknownFunction(handler.to_string())),
    }
}

/// `n` inputs for `handler` in the original MicroFaaS shapes, the same for the same `seed`
/// (empty for an unknown handler). The handler's name is mixed into the seed so that one
/// workload seed does not give every function the same sequence.
pub fn default_inputs(handler: &str, seed: u64, n: usize) -> Vec<Value> {
    let Some((_, generate)) = lookup(handler) else {
        return Vec::new();
    };
    let mut rng = SplitMix64::new(seed ^ fnv1a(handler.as_bytes()));
    (0..n).map(|_| generate(&mut rng)).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Compare two outputs, allowing floating-point numbers an error of 1e-9, relative to their
/// size or absolute below 1: libm's sin/cos differ in the last bit between C libraries (glibc
/// on a host, musl in the agent), and a sum of many of them may land near zero.
pub fn outputs_match(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => {
                    x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
                }
                _ => false,
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| outputs_match(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| outputs_match(x, y)))
        }
        _ => expected == actual,
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Hex (either case) to bytes; `None` on odd length or a non-hex digit.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

fn field<'a>(input: &'a Value, key: &str) -> Result<Option<&'a Value>, FunctionError> {
    match input {
        Value::Object(map) => Ok(map.get(key).filter(|v| !v.is_null())),
        Value::Null => Ok(None),
        _ => Err(FunctionError::BadInput(
            "input must be a JSON object".into(),
        )),
    }
}

/// A non-negative integer field, `default` when absent (required when `default` is `None`),
/// at most `max`.
pub(crate) fn get_u64(
    input: &Value,
    key: &str,
    default: Option<u64>,
    max: u64,
) -> Result<u64, FunctionError> {
    let v = match (field(input, key)?, default) {
        (Some(v), _) => v.as_u64().ok_or_else(|| {
            FunctionError::BadInput(format!("\"{key}\" must be a non-negative integer"))
        })?,
        (None, Some(d)) => d,
        (None, None) => return Err(FunctionError::BadInput(format!("\"{key}\" is required"))),
    };
    if v > max {
        return Err(FunctionError::BadInput(format!(
            "\"{key}\" is {v}, more than the limit of {max}"
        )));
    }
    Ok(v)
}

/// An optional string field.
pub(crate) fn get_str<'a>(input: &'a Value, key: &str) -> Result<Option<&'a str>, FunctionError> {
    match field(input, key)? {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(FunctionError::BadInput(format!(
            "\"{key}\" must be a string"
        ))),
    }
}

/// The seed for generated data: `"seed"`, default 0.
pub(crate) fn get_seed(input: &Value) -> Result<u64, FunctionError> {
    get_u64(input, "seed", Some(0), u64::MAX)
}

/// The text a function works on: the string field `key` if given, otherwise `"length"`
/// (default `default_len`, at most `max_len`) characters of [`rng::ALNUM`] drawn from
/// `SplitMix64(seed)`.
pub(crate) fn text_or_generated(
    input: &Value,
    key: &str,
    default_len: u64,
    max_len: u64,
) -> Result<String, FunctionError> {
    if let Some(s) = get_str(input, key)? {
        return Ok(s.to_string());
    }
    let len = get_u64(input, "length", Some(default_len), max_len)?;
    let seed = get_seed(input)?;
    Ok(SplitMix64::new(seed).string(rng::ALNUM, len as usize))
}

/// A seed for a generated input: kept below 2^32 so it survives any JSON reader.
pub(crate) fn input_seed(rng: &mut SplitMix64) -> u64 {
    rng.below(1 << 32)
}

/// Shared body of the cascading hash functions: hash the text `rounds` times, each round
/// hashing the previous round's lower-case hex digest.
pub(crate) fn cascade<D: sha2::Digest>(input: &Value) -> Result<Value, FunctionError> {
    let rounds = get_u64(input, "rounds", None, u64::MAX)?;
    let mut data = text_or_generated(input, "data", 64, MAX_TEXT)?.into_bytes();
    for _ in 0..rounds {
        data = hex(&D::digest(&data)).into_bytes();
    }
    let digest = String::from_utf8_lossy(&data).into_owned();
    Ok(serde_json::json!({ "rounds": rounds, "digest": digest }))
}

/// The default input of the cascading hash functions.
pub(crate) fn cascade_input(rng: &mut SplitMix64) -> Value {
    serde_json::json!({ "rounds": rng.range(1, 10_000), "seed": input_seed(rng) })
}

/// Longest generated text any function accepts (bounds memory, not time: time is bounded by
/// the invocation deadline).
pub(crate) const MAX_TEXT: u64 = 1 << 20;

/// Shared body of the regex functions. `anchored`: the match must start at the beginning of
/// the text, like Python's `re.match` (not `re.fullmatch`).
pub(crate) fn regex_common(input: &Value, anchored: bool) -> Result<Value, FunctionError> {
    const DEFAULT_PATTERN: &str = r"\d\D\d";
    const MAX_PATTERN: usize = 4096;
    let pattern = get_str(input, "pattern")?.unwrap_or(DEFAULT_PATTERN);
    if pattern.len() > MAX_PATTERN {
        return Err(FunctionError::BadInput(format!(
            "pattern longer than {MAX_PATTERN} bytes"
        )));
    }
    let text = text_or_generated(input, "text", 64, MAX_TEXT)?;
    let full = if anchored {
        format!(r"\A(?:{pattern})")
    } else {
        pattern.to_string()
    };
    let re = regex_lite::Regex::new(&full)
        .map_err(|e| FunctionError::BadInput(format!("invalid pattern: {e}")))?;
    Ok(match re.find(&text) {
        Some(m) => serde_json::json!({
            "matched": true, "match": m.as_str(), "start": m.start(), "end": m.end()
        }),
        None => serde_json::json!({ "matched": false, "match": null, "start": null, "end": null }),
    })
}

/// The default input of the regex functions: 64 generated characters.
pub(crate) fn regex_input(rng: &mut SplitMix64) -> Value {
    serde_json::json!({ "seed": input_seed(rng), "length": 64 })
}
