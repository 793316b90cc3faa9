//! redis_modify: spend from an account balance in Redis, as MicroFaaS's `redis_modify` did
//! (`DECRBY id spend`, atomic on the server).
//!
//! Input `{"id": string|int, "spend": string|int}` (original: id one of Jenny, Jack, Joe;
//! spend 0..999 as a string). Needs the `redis` service. Output `{"id": id, "balance": n}`, the
//! balance after spending (a missing account starts at 0, as Redis does).

use serde_json::{Value, json};

use super::clients::{Ctx, fail, resp::Redis, resp::Reply};
use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let id = super::get_key(input, "id")?;
    let spend = super::get_int(input, "spend")?;
    let svc = ctx.service("redis")?;
    let mut r = Redis::open(ctx.connect(svc)?, svc).map_err(|e| fail(svc, e))?;
    match r
        .command(&[b"DECRBY", id.as_bytes(), spend.to_string().as_bytes()])
        .map_err(|e| fail(svc, e))?
    {
        Reply::Int(balance) => Ok(json!({"id": id, "balance": balance})),
        Reply::Error(e) => Err(fail(svc, format!("DECRBY {id}: {e}"))),
        other => Err(fail(svc, format!("DECRBY answered {other:?}"))),
    }
}

pub fn input(rng: &mut SplitMix64) -> Value {
    const IDS: [&str; 3] = ["Jenny", "Jack", "Joe"];
    json!({
        "id": IDS[rng.below(3) as usize],
        "spend": rng.range(0, 999).to_string(),
    })
}
