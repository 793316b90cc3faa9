//! The rack as the web view shows it: one JSON document built from the store (workers,
//! switches, power meters with recent samples, workload runs with per-invocation latency,
//! recent events). The page draws everything from it; the feed sends a new one on change.

use crate::manifest::Kind;
use crate::store::{Store, StoreError, StoredObject, clock};
use serde_json::{Value, json};

/// How far back the watts sparkline and the events list reach.
const SAMPLE_WINDOW_MS: i64 = 5 * 60 * 1000;
const EVENTS: usize = 40;
/// Per run, the latest invocations plotted (older ones are summarised in the counts).
const POINTS: usize = 2000;

fn condition<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn worker(o: &StoredObject) -> Value {
    let st = &o.status;
    let spec = &o.spec;
    let kind = if spec.get("board").is_some() {
        "board"
    } else {
        "vm"
    };
    let phase = st["phase"].as_str().unwrap_or("Pending");
    // VMs have no meter of their own power: their QEMU process is the evidence.
    let evidence = match st.get("observedPower") {
        Some(p) => json!({"state": p["state"], "evidence": p["evidence"]}),
        None => {
            let on = condition(st, "PoweredOn").map(|c| c["status"] == "True");
            json!({
                "state": match on { Some(true) => "On", Some(false) => "Off", None => "Unknown" },
                "evidence": condition(st, "PoweredOn").and_then(|c| c["reason"].as_str()).unwrap_or("not observed yet"),
            })
        }
    };
    let link =
        condition(st, "LinkUp").map(|c| json!({"status": c["status"], "reason": c["reason"]}));
    let last_boot = condition(st, "PoweredOn")
        .filter(|c| c["status"] == "True")
        .map(|c| c["lastTransitionTime"].clone());
    json!({
        "name": o.name,
        "kind": kind,
        "labels": o.labels,
        "phase": phase,
        "wanted": st["power"],
        "power": evidence,
        "link": link,
        "health": st["health"].as_str().unwrap_or("Good"),
        "function": if phase == "Busy" { st["function"].clone() } else { Value::Null },
        "bootSeconds": st["bootSeconds"],
        "lastBoot": last_boot,
        "failedBoots": st["failedBoots"],
        "powerRequest": st[crate::engine::board::POWER_REQUEST],
        "powerResult": st[crate::engine::board::POWER_RESULT],
    })
}

fn switch(o: &StoredObject) -> Value {
    let st = &o.status;
    json!({
        "name": o.name,
        "phase": st["phase"].as_str().unwrap_or("Pending"),
        "sysName": st["sysName"],
        "ports": st["ports"].as_array().cloned().unwrap_or_default(),
    })
}

fn meter(store: &Store, o: &StoredObject, now: i64) -> Result<Value, StoreError> {
    let samples = store.samples(&o.name, now - SAMPLE_WINDOW_MS, now)?;
    let points: Vec<Value> = samples.iter().map(|s| json!([s.at_ms, s.watts])).collect();
    Ok(json!({
        "name": o.name,
        "watts": samples.last().map(|s| s.watts),
        "at": samples.last().map(|s| s.at_ms),
        "samples": points,
    }))
}

fn workload(store: &Store, o: &StoredObject) -> Result<Value, StoreError> {
    let st = &o.status;
    let Some(run) = store.latest_run(&o.name)? else {
        return Ok(
            json!({"name": o.name, "phase": st["phase"].as_str().unwrap_or("Pending"), "run": null}),
        );
    };
    let attempts = store.attempts(&o.name, run.run)?;
    let skip = attempts.len().saturating_sub(POINTS);
    // [finished ms, round trip ms, exec ms, ok] per attempt; the page bins throughput itself.
    let points: Vec<Value> = attempts[skip..]
        .iter()
        .map(|a| {
            json!([
                a.finished_ms,
                a.rtt_us.map(|u| u as f64 / 1000.0),
                a.exec_us.map(|u| u as f64 / 1000.0),
                a.status == crate::store::AttemptStatus::Succeeded,
            ])
        })
        .collect();
    let done = run.counts.succeeded + run.counts.failed;
    Ok(json!({
        "name": o.name,
        "phase": run.phase.as_str(),
        "run": run.run,
        "generation": run.generation,
        "total": run.counts.total,
        "succeeded": run.counts.succeeded,
        "failed": run.counts.failed,
        "retried": run.counts.retried,
        "progress": if run.counts.total > 0 { done as f64 / run.counts.total as f64 } else { 0.0 },
        "startedMs": run.started_ms,
        "finishedMs": run.finished_ms,
        "attempts": points,
    }))
}

/// The whole view. Rows that cannot be read are left out (the page keeps working).
pub fn build(store: &Store) -> Result<Value, StoreError> {
    let now = clock::now_millis();
    let all = store.list(None)?;
    let of = |k: Kind| all.iter().filter(move |o| o.kind == k);
    let cluster = of(Kind::Cluster).next().map(|c| c.name.clone());
    let workers: Vec<Value> = of(Kind::Worker).map(worker).collect();
    let switches: Vec<Value> = of(Kind::Switch).map(switch).collect();
    let mut meters = Vec::new();
    for m in of(Kind::PowerMeter) {
        meters.push(meter(store, m, now)?);
    }
    let mut workloads = Vec::new();
    for w in of(Kind::Workload) {
        workloads.push(workload(store, w)?);
    }
    let events: Vec<Value> = store
        .recent_events(EVENTS)?
        .into_iter()
        .map(|e| {
            json!({
                "time": e.last_time, "type": e.event_type, "object": format!("{}/{}", e.kind.singular(), e.name),
                "reason": e.reason, "message": e.message, "count": e.count,
            })
        })
        .collect();
    Ok(json!({
        "cluster": cluster,
        "at": now,
        "workers": workers,
        "switches": switches,
        "meters": meters,
        "workloads": workloads,
        "events": events,
    }))
}
