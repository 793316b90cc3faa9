//! psql_purchase: buy one unit of an item in PostgreSQL, as MicroFaaS's `psql_purchase` did
//! (decrement the item's stock; one atomic `UPDATE ... RETURNING`, never below zero).
//!
//! Input `{"id": n}` (original: 1..=60). Needs the `postgres` service (table as for
//! psql_inventory). Output `{"id", "purchased": true, "name", "quantity"}` (the stock left),
//! or `{"id", "purchased": false}` when the item is unknown or sold out.

use serde_json::{Value, json};

use super::clients::{Ctx, fail, postgres::Postgres};
use super::{FunctionError, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    // An integer, so it can go into the statement text safely.
    let id = super::get_int(input, "id")?;
    let svc = ctx.service("postgres")?;
    let mut pg = Postgres::open(ctx.connect(svc)?, svc).map_err(|e| fail(svc, e))?;
    let rows = pg
        .query(&format!(
            "UPDATE inventory SET quantity = quantity - 1 WHERE id = {id} AND quantity > 0 \
             RETURNING id, name, quantity"
        ))
        .map_err(|e| fail(svc, e))?;
    pg.close();
    Ok(match rows.first() {
        Some(row) => json!({
            "id": id, "purchased": true, "name": row.get("name"), "quantity": row.get("quantity")
        }),
        None => json!({"id": id, "purchased": false}),
    })
}

pub fn input(rng: &mut SplitMix64) -> Value {
    json!({"id": rng.range(1, 60)})
}
