//! What an operator asks of the engine, written into the store where the engine picks it up:
//! a power request on a worker, its health (cordon / uncordon), a workload rerun. The CLI and
//! the web view both go through these, so both take the same engine paths.

use super::board::{POWER_REQUEST, POWER_RESULT};
use super::status::{CondStatus, Status};
use crate::manifest::Kind;
use crate::store::{EventType, Store, StoreError};
use serde_json::{Value, json};

/// Power actions a request may carry.
pub const POWER_ACTIONS: &[&str] = &["on", "off", "cycle"];

/// A new power request (`on`, `off`, `cycle`) with a fresh id.
pub fn power_request(action: &str, force: bool) -> Value {
    let id = crate::orchestrator::endpoint::random_token()[..12].to_string();
    json!({"id": id, "action": action, "force": force})
}

/// Stores the request on the worker; the engine holding the state dir carries it out.
pub fn store_power_request(store: &mut Store, worker: &str, req: &Value) -> Result<(), StoreError> {
    let obj = store
        .get(Kind::Worker, worker)?
        .ok_or_else(|| StoreError::NotFound(format!("worker/{worker}")))?;
    let mut st = Status::from_value(&obj.status);
    st.set(POWER_REQUEST, req.clone());
    st.save(store, Kind::Worker, worker, &[])
}

/// The result of the request `id`, once the engine has carried it out.
pub fn power_result(store: &Store, worker: &str, id: &str) -> Option<Value> {
    let obj = store.get(Kind::Worker, worker).ok()??;
    let r = obj.status.get(POWER_RESULT)?;
    (r.get("id").and_then(Value::as_str) == Some(id)).then(|| r.clone())
}

/// Whether a request is still stored on the worker (an engine's status write racing the one
/// that stored it may drop it: then it is stored again).
pub fn power_request_pending(store: &Store, worker: &str) -> Result<bool, StoreError> {
    Ok(store
        .get(Kind::Worker, worker)?
        .is_some_and(|o| o.status.get(POWER_REQUEST).is_some()))
}

/// Sets a worker's health: `Maintenance` keeps it off and unused; `Good` returns it to service
/// (clearing a quarantine). Returns the event reason recorded, `Cordoned` or `Uncordoned`.
pub fn set_health(
    store: &mut Store,
    worker: &str,
    health: &str,
) -> Result<&'static str, StoreError> {
    let obj = store
        .get(Kind::Worker, worker)?
        .ok_or_else(|| StoreError::NotFound(format!("worker/{worker}")))?;
    let mut st = Status::from_value(&obj.status);
    st.set("health", json!(health));
    let good = health == "Good";
    if good {
        st.set("failedBoots", Value::Null).condition(
            "Healthy",
            CondStatus::True,
            "Uncordoned",
            "returned to service by an operator",
        );
    } else {
        st.condition(
            "Healthy",
            CondStatus::False,
            "Cordoned",
            "set to Maintenance by an operator",
        );
    }
    st.save(store, Kind::Worker, worker, &[])?;
    let reason = if good { "Uncordoned" } else { "Cordoned" };
    store.record_event(
        Kind::Worker,
        worker,
        EventType::Normal,
        reason,
        &format!("health set to {health}"),
    )?;
    Ok(reason)
}

/// Asks for one more run of the workload's current generation.
pub fn request_rerun(store: &mut Store, workload: &str) -> Result<(), StoreError> {
    let obj = store
        .get(Kind::Workload, workload)?
        .ok_or_else(|| StoreError::NotFound(format!("workload/{workload}")))?;
    let mut st = Status::from_value(&obj.status);
    st.set(super::RERUN, json!(true));
    st.save(store, Kind::Workload, workload, &[])
}
