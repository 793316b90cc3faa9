//! upload_file: store an object in an S3-compatible store, as MicroFaaS's `upload_file` did
//! (it uploaded a small file from the worker's `/etc`; here the content is the input's `data`
//! or generated).
//!
//! Input `{"file": key, "data"?: string, "length"?: L (1024), "seed"?: S}`: without `data`
//! the object is `L` characters of `rng::ALNUM` from `SplitMix64(S)`. Needs the `s3` service.
//! Output `{"key", "bytes", "sha256", "etag"}`.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::clients::{Ctx, fail, s3};
use super::{FunctionError, hex, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let key = super::get_key(input, "file")?;
    let data = super::text_or_generated(input, "data", 1024, 16 << 20)?;
    let svc = ctx.service("s3")?;
    let r = s3::object(ctx.connect(svc)?, svc, "PUT", &key, data.as_bytes())
        .map_err(|e| fail(svc, e))?;
    if r.status != 200 {
        return Err(fail(
            svc,
            format!("PUT {key}: HTTP {} {}", r.status, s3::error_code(&r.body)),
        ));
    }
    Ok(json!({
        "key": key,
        "bytes": data.len(),
        "sha256": hex(&Sha256::digest(data.as_bytes())),
        "etag": r.header("etag").map(|e| e.trim_matches('"')),
    }))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    // The original's files from a worker's /etc, as keys.
    const FILES: [&str; 8] = [
        "group", "hostname", "hosts", "inittab", "passwd", "profile", "resolv.conf", "shadow",
    ];
    json!({
        "file": FILES[rng.below(8) as usize],
        "length": rng.range(64, 4096),
        "seed": super::input_seed(rng),
    })
}
