//! download_file: fetch an object from an S3-compatible store, as MicroFaaS's
//! `download_file` did.
//!
//! Input `{"file": key}` (original: three sample documents assumed in the store). Needs the
//! `s3` service. Output `{"key", "bytes", "sha256"}`; a missing object fails the call.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::clients::{Ctx, fail, s3};
use super::{FunctionError, hex, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let key = super::get_key(input, "file")?;
    let svc = ctx.service("s3")?;
    let r = s3::object(ctx.connect(svc)?, svc, "GET", &key, b"").map_err(|e| fail(svc, e))?;
    if r.status != 200 {
        return Err(fail(
            svc,
            format!("GET {key}: HTTP {} {}", r.status, s3::error_code(&r.body)),
        ));
    }
    Ok(json!({"key": key, "bytes": r.body.len(), "sha256": hex(&Sha256::digest(&r.body))}))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    const FILES: [&str; 3] = [
        "file-sample_1MB.doc",
        "file_example_ODS_5000.ods",
        "file_example_PPT_1MB.ppt",
    ];
    json!({"file": FILES[rng.below(3) as usize]})
}
