//! Events, workload runs and invocation attempts in etcd. Events are ordered by the revision
//! that last touched them; attempts are written create-only (a transaction comparing the
//! key's absence and the run's presence), a batch as one transaction of nested ones so each
//! record keeps its own outcome, as the SQLite group commit does.

use super::client::{self, RangeOpts};
use super::{EtcdStore, decode, encode, segment};
use crate::manifest::Kind;
use crate::store::{
    Attempt, AttemptStatus, Event, EventNote, EventType, Result, Run, RunCounts, RunPhase,
    StoreError, clock,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EventRecord {
    #[serde(rename = "type")]
    event_type: String,
    reason: String,
    message: String,
    count: i64,
    first_time: String,
    last_time: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    generation: i64,
    phase: String,
    total: u64,
    succeeded: u64,
    failed: u64,
    retried: u64,
    started_ms: i64,
    finished_ms: Option<i64>,
    message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AttemptRecord {
    invocation_id: String,
    workload: String,
    run: i64,
    generation: i64,
    seq: u64,
    function: String,
    worker: Option<String>,
    attempt: u32,
    queued_ms: i64,
    dispatched_ms: Option<i64>,
    finished_ms: i64,
    exec_us: Option<i64>,
    rtt_us: Option<i64>,
    cold_start_ms: Option<i64>,
    status: String,
    error: Option<String>,
    output_size: Option<u64>,
    output_sha256: Option<String>,
}

impl From<&Attempt> for AttemptRecord {
    fn from(a: &Attempt) -> Self {
        AttemptRecord {
            invocation_id: a.invocation_id.clone(),
            workload: a.workload.clone(),
            run: a.run,
            generation: a.generation,
            seq: a.seq,
            function: a.function.clone(),
            worker: a.worker.clone(),
            attempt: a.attempt,
            queued_ms: a.queued_ms,
            dispatched_ms: a.dispatched_ms,
            finished_ms: a.finished_ms,
            exec_us: a.exec_us,
            rtt_us: a.rtt_us,
            cold_start_ms: a.cold_start_ms,
            status: a.status.as_str().to_string(),
            error: a.error.clone(),
            output_size: a.output_size,
            output_sha256: a.output_sha256.clone(),
        }
    }
}

impl AttemptRecord {
    fn into_attempt(self) -> Result<Attempt> {
        Ok(Attempt {
            status: self.status.parse::<AttemptStatus>()?,
            invocation_id: self.invocation_id,
            workload: self.workload,
            run: self.run,
            generation: self.generation,
            seq: self.seq,
            function: self.function,
            worker: self.worker,
            attempt: self.attempt,
            queued_ms: self.queued_ms,
            dispatched_ms: self.dispatched_ms,
            finished_ms: self.finished_ms,
            exec_us: self.exec_us,
            rtt_us: self.rtt_us,
            cold_start_ms: self.cold_start_ms,
            error: self.error,
            output_size: self.output_size,
            output_sha256: self.output_sha256,
        })
    }
}

fn run_from(workload: &str, run: i64, r: RunRecord) -> Result<Run> {
    Ok(Run {
        workload: workload.to_string(),
        run,
        generation: r.generation,
        phase: r.phase.parse::<RunPhase>()?,
        counts: RunCounts {
            total: r.total,
            succeeded: r.succeeded,
            failed: r.failed,
            retried: r.retried,
        },
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        message: r.message,
    })
}

/// Attempts in a transaction at most (each is one nested transaction; etcd's default limit
/// is 128 operations).
const ATTEMPTS_PER_TXN: usize = 100;

impl EtcdStore {
    fn event_key(&self, kind: Kind, name: &str, t: &str, reason: &str, message: &str) -> String {
        let h = Sha256::digest(format!("{t}\0{reason}\0{message}").as_bytes());
        let h = crate::functions::hex(&h[..12]);
        self.key(&format!("events/{}/{name}/{h}", kind.as_str()))
    }

    pub fn record_event(
        &mut self,
        kind: Kind,
        name: &str,
        event_type: EventType,
        reason: &str,
        message: &str,
    ) -> Result<()> {
        self.write_event(kind, name, &EventNote::now(event_type, reason, message))
    }

    /// Events noted earlier, each with the time it was noted.
    pub fn record_events(&mut self, kind: Kind, name: &str, events: &[EventNote]) -> Result<()> {
        events
            .iter()
            .try_for_each(|e| self.write_event(kind, name, e))
    }

    /// The status (see `put_status`), then each event of the same transition (etcd has no
    /// transaction spanning the status key and the events' read-modify-writes).
    pub fn update_status(
        &mut self,
        kind: Kind,
        name: &str,
        base: Option<&Value>,
        status: &Value,
        events: &[EventNote],
    ) -> Result<Value> {
        let stored = self.put_status(kind, name, base, status)?;
        events
            .iter()
            .try_for_each(|e| self.write_event(kind, name, e))?;
        Ok(stored)
    }

    fn write_event(&mut self, kind: Kind, name: &str, e: &EventNote) -> Result<()> {
        segment("name", name)?;
        let key = self.event_key(kind, name, e.event_type.as_str(), &e.reason, &e.message);
        self.update(&key, |old: Option<EventRecord>| {
            let next = match old {
                Some(mut old) => {
                    old.count += 1;
                    old.last_time = e.at.clone();
                    old
                }
                None => EventRecord {
                    event_type: e.event_type.as_str().to_string(),
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                    count: 1,
                    first_time: e.at.clone(),
                    last_time: e.at.clone(),
                },
            };
            Ok((Some(next), ()))
        })
    }

    /// `(kind, name, event)` of every event under `prefix`, newest first.
    fn read_events(&self, prefix: &str, limit: usize) -> Result<Vec<Event>> {
        let kvs = self.range(
            prefix,
            true,
            RangeOpts {
                limit: i64::try_from(limit).unwrap_or(i64::MAX),
                descend: true,
                target: Some("MOD"),
                ..Default::default()
            },
        )?;
        let base = self.key("events/");
        let mut out = Vec::new();
        for kv in kvs {
            let mut parts = kv.key.strip_prefix(&base).unwrap_or("").split('/');
            let (Some(kind), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(kind) = kind.parse::<Kind>() else {
                continue;
            };
            let e: EventRecord = decode(&kv)?;
            out.push(Event {
                kind,
                name: name.to_string(),
                event_type: e.event_type,
                reason: e.reason,
                message: e.message,
                count: e.count,
                first_time: e.first_time,
                last_time: e.last_time,
            });
        }
        Ok(out)
    }

    pub fn event_counts(&self, kind: Kind, reason: &str) -> Result<Vec<(String, u64)>> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for e in self.read_events(&self.key(&format!("events/{}/", kind.as_str())), 0)? {
            if e.reason == reason {
                *counts.entry(e.name).or_default() += u64::try_from(e.count).unwrap_or(0);
            }
        }
        Ok(counts.into_iter().collect())
    }

    /// The most recent `limit` events of an object, oldest first.
    pub fn events(&self, kind: Kind, name: &str, limit: usize) -> Result<Vec<Event>> {
        segment("name", name)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut out = self.read_events(
            &self.key(&format!("events/{}/{name}/", kind.as_str())),
            limit,
        )?;
        out.reverse();
        Ok(out)
    }

    /// The most recent `limit` events of every object, newest first.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.read_events(&self.key("events/"), limit)
    }

    fn run_key(&self, workload: &str, run: i64) -> String {
        self.key(&format!("runs/{workload}/{run:012}"))
    }

    pub fn start_run(&mut self, workload: &str, generation: i64) -> Result<i64> {
        segment("workload", workload)?;
        for _ in 0..super::CAS_TRIES {
            let run = self.latest_run(workload)?.map_or(1, |r| r.run + 1);
            let key = self.run_key(workload, run);
            let rec = RunRecord {
                generation,
                phase: RunPhase::Running.as_str().to_string(),
                total: 0,
                succeeded: 0,
                failed: 0,
                retried: 0,
                started_ms: clock::now_millis(),
                finished_ms: None,
                message: String::new(),
            };
            let answer = self.txn(
                vec![client::absent(&key)],
                vec![client::put_op(&key, &encode(&rec))],
                vec![],
            )?;
            if client::succeeded(&answer) {
                return Ok(run);
            }
        }
        Err(StoreError::Etcd(format!(
            "cannot number a new run of {workload}: other writers keep taking the next number"
        )))
    }

    fn update_run(&self, workload: &str, run: i64, f: impl Fn(&mut RunRecord)) -> Result<()> {
        segment("workload", workload)?;
        self.update(&self.run_key(workload, run), |r: Option<RunRecord>| {
            let Some(mut r) = r else {
                return Err(StoreError::NotFound(format!(
                    "run {run} of workload {workload}"
                )));
            };
            f(&mut r);
            Ok((Some(r), ()))
        })
    }

    /// A finished run keeps its final counts (see the SQLite store's).
    pub fn set_run_counts(&mut self, workload: &str, run: i64, counts: &RunCounts) -> Result<()> {
        self.update_run(workload, run, |r| {
            if r.phase != RunPhase::Running.as_str() {
                return;
            }
            r.total = counts.total;
            r.succeeded = counts.succeeded;
            r.failed = counts.failed;
            r.retried = counts.retried;
        })
    }

    pub fn finish_run(
        &mut self,
        workload: &str,
        run: i64,
        phase: RunPhase,
        counts: &RunCounts,
        message: &str,
    ) -> Result<()> {
        crate::store::invocations::final_phase(workload, run, phase)?;
        let now = clock::now_millis();
        self.update_run(workload, run, |r| {
            r.phase = phase.as_str().to_string();
            r.total = counts.total;
            r.succeeded = counts.succeeded;
            r.failed = counts.failed;
            r.retried = counts.retried;
            r.finished_ms = Some(now);
            r.message = message.to_string();
        })
    }

    pub fn run(&self, workload: &str, run: i64) -> Result<Option<Run>> {
        segment("workload", workload)?;
        self.get_kv(&self.run_key(workload, run))?
            .map(|kv| run_from(workload, run, decode(&kv)?))
            .transpose()
    }

    pub fn latest_run(&self, workload: &str) -> Result<Option<Run>> {
        segment("workload", workload)?;
        let Some(kv) = self.last_under(&format!("runs/{workload}/"))? else {
            return Ok(None);
        };
        let run = kv
            .key
            .rsplit('/')
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| super::corrupt(&kv.key, "not a run number"))?;
        run_from(workload, run, decode(&kv)?).map(Some)
    }

    fn attempt_key(&self, a: &Attempt) -> Result<String> {
        segment("workload", &a.workload)?;
        segment("invocation id", &a.invocation_id)?;
        Ok(self.key(&format!(
            "attempts/{}/{:012}/{}/{:06}",
            a.workload, a.run, a.invocation_id, a.attempt
        )))
    }

    /// The nested transaction that writes `a` if its run exists and it is not recorded yet.
    fn attempt_txn(&self, a: &Attempt) -> Result<serde_json::Value> {
        let key = self.attempt_key(a)?;
        let run_key = self.run_key(&a.workload, a.run);
        Ok(json!({
            "compare": [client::present(&run_key), client::absent(&key)],
            "success": [client::put_op(&key, &encode(&AttemptRecord::from(a)))],
            "failure": [client::range_op(&run_key, false)],
        }))
    }

    fn attempt_refused(a: &Attempt, failure: &serde_json::Value) -> StoreError {
        let run_exists = failure
            .pointer("/responses/0/response_range/kvs")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|k| !k.is_empty());
        StoreError::EtcdRefused(if run_exists {
            format!(
                "attempt {} of invocation {} is already recorded",
                a.attempt, a.invocation_id
            )
        } else {
            format!("run {} of workload {} does not exist", a.run, a.workload)
        })
    }

    pub fn record_attempt(&mut self, a: &Attempt) -> Result<()> {
        self.record_attempts(&[a])?.pop().unwrap_or(Ok(()))
    }

    /// One transaction per `ATTEMPTS_PER_TXN` records, each record a nested transaction with
    /// its own outcome.
    pub fn record_attempts(&mut self, attempts: &[&Attempt]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(attempts.len());
        for chunk in attempts.chunks(ATTEMPTS_PER_TXN) {
            let mut ops = Vec::new();
            let mut bad = Vec::new();
            for a in chunk {
                match self.attempt_txn(a) {
                    Ok(t) => ops.push(json!({ "request_txn": t })),
                    Err(e) => bad.push((a.invocation_id.clone(), e)),
                }
            }
            let answer = self.txn(vec![], ops, vec![])?;
            let mut answers = client::responses(&answer).iter();
            for a in chunk {
                if let Some(pos) = bad.iter().position(|(id, _)| *id == a.invocation_id) {
                    out.push(Err(bad.remove(pos).1));
                    continue;
                }
                let r = answers
                    .next()
                    .and_then(|r| r.get("response_txn"))
                    .cloned()
                    .unwrap_or_default();
                out.push(if client::succeeded(&r) {
                    Ok(())
                } else {
                    Err(Self::attempt_refused(a, &r))
                });
            }
        }
        Ok(out)
    }

    fn read_attempts(
        &self,
        workload: &str,
        run: i64,
        after_row: i64,
    ) -> Result<Vec<(i64, Attempt)>> {
        segment("workload", workload)?;
        self.read_attempts_under(&format!("attempts/{workload}/{run:012}/"), after_row)
    }

    /// The attempts under `PREFIX/rest` created after revision `after_row`, in recording
    /// order, each with its row (create revision).
    pub(super) fn read_attempts_under(
        &self,
        rest: &str,
        after_row: i64,
    ) -> Result<Vec<(i64, Attempt)>> {
        let kvs = self.range(
            &self.key(rest),
            true,
            RangeOpts {
                target: Some("CREATE"),
                min_create_revision: after_row + 1,
                ..Default::default()
            },
        )?;
        kvs.iter()
            .map(|kv| {
                Ok((
                    kv.create_revision,
                    decode::<AttemptRecord>(kv)?.into_attempt()?,
                ))
            })
            .collect()
    }

    /// Every attempt of a run, by plan position then attempt number.
    pub fn attempts(&self, workload: &str, run: i64) -> Result<Vec<Attempt>> {
        let mut rows = self.read_attempts(workload, run, 0)?;
        rows.sort_by(|(ra, a), (rb, b)| {
            (a.seq, &a.invocation_id, a.attempt, ra).cmp(&(b.seq, &b.invocation_id, b.attempt, rb))
        });
        Ok(rows.into_iter().map(|(_, a)| a).collect())
    }

    /// The attempts recorded after row `after_row`, in recording order; a row is the key's
    /// create revision.
    pub fn attempts_since(
        &self,
        workload: &str,
        run: i64,
        after_row: i64,
    ) -> Result<Vec<(i64, Attempt)>> {
        self.read_attempts(workload, run, after_row)
    }

    /// Ends the `Running` runs of `workload` with counts from their attempts, as the SQLite
    /// store does.
    pub fn close_runs(&mut self, workload: &str, clean: bool, message: &str) -> Result<()> {
        segment("workload", workload)?;
        let kvs = self.range(
            &self.key(&format!("runs/{workload}/")),
            true,
            RangeOpts::default(),
        )?;
        for kv in kvs {
            let r: RunRecord = decode(&kv)?;
            if r.phase != RunPhase::Running.as_str() {
                continue;
            }
            let Some(run) = kv
                .key
                .rsplit('/')
                .next()
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let attempts = self.attempts(workload, run)?;
            let mut per: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
            for a in &attempts {
                let e = per.entry(a.invocation_id.as_str()).or_default();
                e.0 |= a.status == AttemptStatus::Succeeded;
                e.1 |= a.attempt > 1;
            }
            let total = per.len() as u64;
            let ok = per.values().filter(|(s, _)| *s).count() as u64;
            let retried = per.values().filter(|(_, r)| *r).count() as u64;
            let phase = match (clean, total > ok) {
                (false, _) => RunPhase::Cancelled,
                (true, true) => RunPhase::Failed,
                (true, false) => RunPhase::Succeeded,
            };
            let now = clock::now_millis();
            self.update_run(workload, run, |r| {
                if r.phase == RunPhase::Running.as_str() {
                    r.phase = phase.as_str().to_string();
                    r.finished_ms = Some(now);
                    r.message = message.to_string();
                    r.total = total;
                    r.succeeded = ok;
                    r.failed = total - ok;
                    r.retried = retried;
                }
            })?;
        }
        Ok(())
    }
}
