//! The benchmark function suite shared by the agent (which runs it) and the orchestrator (which
//! generates inputs and checks outputs): the nine self-contained MicroFaaS functions and the
//! eight service-backed ones, one file each, plus the registry, input helpers and the seeded
//! PRNG they share.
//!
//! Each pure function module has `run(&Value) -> Result<Value, FunctionError>`, each
//! service-backed one `run(&Value, &Ctx) -> Result<Value, FunctionError>` (its services and
//! deadline in [`clients::Ctx`]); both have `input(&mut SplitMix64) -> Value` (one default input
//! in the original MicroFaaS shape). Each file documents the input and output shapes. Outputs of
//! pure functions are deterministic for a given input; randomness inside a function is drawn
//! from [`rng::SplitMix64`] seeded from the input.

pub mod clients;
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
type ServiceRunner = fn(&Value, &clients::Ctx<'_>) -> Result<Value, FunctionError>;
type InputGen = fn(&mut SplitMix64) -> Value;

// One list drives the module declarations, the name lists and dispatch, so they cannot drift
// apart. Service-backed functions name the service role they need.
macro_rules! suite {
    (pure: [$($name:ident),* $(,)?], services: [$($svc:ident => $role:literal),* $(,)?]) => {
        $(pub mod $name;)*
        $(pub mod $svc;)*

        const NAMES: &[&str] = &[$(stringify!($name)),*];
        const ALL_NAMES: &[&str] = &[$(stringify!($name),)* $(stringify!($svc)),*];

        fn lookup(handler: &str) -> Option<(Runner, InputGen)> {
            match handler {
                $(stringify!($name) => Some(($name::run as Runner, $name::input as InputGen)),)*
                _ => None,
            }
        }

        fn lookup_service(handler: &str) -> Option<(ServiceRunner, InputGen, &'static str)> {
            match handler {
                $(stringify!($svc) => Some(($svc::run as ServiceRunner, $svc::input as InputGen, $role)),)*
                _ => None,
            }
        }
    };
}

suite!(
    pure: [
        float_operations,
        cascading_sha256,
        cascading_md5,
        matmul,
        html_generation,
        pyaes,
        zlib_decompress,
        regex_search,
        regex_match,
    ],
    services: [
        redis_insert => "redis",
        redis_modify => "redis",
        psql_inventory => "postgres",
        psql_purchase => "postgres",
        queue_produce => "queue",
        queue_consume => "queue",
        upload_file => "s3",
        download_file => "s3",
    ]
);

/// The self-contained builtin handlers, in a fixed order.
pub fn names() -> &'static [&'static str] {
    NAMES
}

/// Every builtin handler, the self-contained ones first, then the service-backed ones.
pub fn all_names() -> &'static [&'static str] {
    ALL_NAMES
}

/// The service role a service-backed handler needs (`redis`, `postgres`, `s3`, `queue`);
/// `None` for a self-contained or unknown one.
pub fn service_role(handler: &str) -> Option<&'static str> {
    lookup_service(handler).map(|(_, _, role)| role)
}

/// The protocol a service role is spoken in.
pub fn role_protocol(role: &str) -> &str {
    match role {
        "queue" => "mqtt",
        other => other,
    }
}

/// Run the self-contained builtin function `handler` on `input`.
pub fn run(handler: &str, input: &Value) -> Result<Value, FunctionError> {
    match lookup(handler) {
        Some((run, _)) => run(input),
        None if lookup_service(handler).is_some() => Err(FunctionError::Failed(format!(
            "{handler} needs its services; run it through run_with"
        ))),
        None => Err(FunctionError::UnknownFunction(handler.to_string())),
    }
}

/// Run any builtin function `handler` on `input`, the service-backed ones with `ctx`.
pub fn run_with(
    handler: &str,
    input: &Value,
    ctx: &clients::Ctx<'_>,
) -> Result<Value, FunctionError> {
    match lookup_service(handler) {
        Some((run, _, _)) => run(input, ctx),
        None => self::run(handler, input),
    }
}

/// `n` inputs for `handler` in the original MicroFaaS shapes, the same for the same `seed`
/// (empty for an unknown handler). The handler's name is mixed into the seed so that one
/// workload seed does not give every function the same sequence.
pub fn default_inputs(handler: &str, seed: u64, n: usize) -> Vec<Value> {
    let generate = match (lookup(handler), lookup_service(handler)) {
        (Some((_, g)), _) | (None, Some((_, g, _))) => g,
        (None, None) => return Vec::new(),
    };
    let mut rng = SplitMix64::new(seed ^ fnv1a(handler.as_bytes()));
    (0..n).map(|_| generate(&mut rng)).collect()
}

/// FNV-1a, 64 bit: a stable name hash for mixing names into seeds.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
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

/// A required key-like field given as a string or an integer (MicroFaaS sent both), as text:
/// non-empty, at most 512 bytes.
pub(crate) fn get_key(input: &Value, key: &str) -> Result<String, FunctionError> {
    let s = match field(input, key)? {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
        Some(_) => {
            return Err(FunctionError::BadInput(format!(
                "\"{key}\" must be a string or an integer"
            )));
        }
        None => return Err(FunctionError::BadInput(format!("\"{key}\" is required"))),
    };
    if s.is_empty() || s.len() > 512 {
        return Err(FunctionError::BadInput(format!(
            "\"{key}\" must be 1 to 512 bytes long"
        )));
    }
    Ok(s)
}

/// A required integer field given as a number or a decimal string (MicroFaaS sent strings).
pub(crate) fn get_int(input: &Value, key: &str) -> Result<i64, FunctionError> {
    let bad = || FunctionError::BadInput(format!("\"{key}\" must be an integer"));
    match field(input, key)? {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
        None => Err(FunctionError::BadInput(format!("\"{key}\" is required"))),
    }
}
