//! redis_insert: store an account balance in Redis, as MicroFaaS's `redis_insert` did
//! (`SET id balance`).
//!
//! Input `{"id": string|int, "balance": string|int}` (original: a 7-digit id, balance 0..999,
//! both as strings). Needs the `redis` service. Output `{"id": id, "balance": n, "stored": true}`.

use serde_json::{Value, json};

use super::clients::{Ctx, fail, resp::Redis, resp::Reply};
use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let id = super::get_key(input, "id")?;
    let balance = super::get_int(input, "balance")?;
    let svc = ctx.service("redis")?;
    let mut r = Redis::open(ctx.connect(svc)?, svc).map_err(|e| fail(svc, e))?;
    match r
        .command(&[b"SET", id.as_bytes(), balance.to_string().as_bytes()])
        .map_err(|e| fail(svc, e))?
    {
        Reply::Simple(ok) if ok == "OK" => Ok(json!({"id": id, "balance": balance, "stored": true})),
        other => Err(fail(svc, format!("SET answered {other:?}"))),
    }
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({
        "id": rng.range(1_000_000, 9_999_999).to_string(),
        "balance": rng.range(0, 999).to_string(),
    })
}
