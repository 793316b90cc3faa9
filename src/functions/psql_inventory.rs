//! psql_inventory: list a shop's inventory from PostgreSQL, as MicroFaaS's `psql_inventory`
//! did (`SELECT` of the whole `inventory` table).
//!
//! Input: anything (original: `{"a": n}`, unused). Needs the `postgres` service, whose
//! database has `inventory(id integer primary key, name text, quantity integer)`.
//! Output `{"items": [{"id", "name", "quantity"}, ...] (by id), "count": n}`.

use serde_json::{Value, json};

use super::clients::{Ctx, fail, postgres::Postgres};
use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    if !(input.is_object() || input.is_null()) {
        return Err(FunctionError::BadInput("input must be a JSON object".into()));
    }
    let svc = ctx.service("postgres")?;
    let mut pg = Postgres::open(ctx.connect(svc)?, svc).map_err(|e| fail(svc, e))?;
    let rows = pg
        .query("SELECT id, name, quantity FROM inventory ORDER BY id")
        .map_err(|e| fail(svc, e))?;
    pg.close();
    Ok(json!({"count": rows.len(), "items": rows}))
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({"a": rng.below(5)})
}
