//! One attempt of one invocation on one worker, shared by workload runs (`dispatch`) and the
//! gateway's on-demand calls: wait for a fresh agent session of a worker that is already wanted
//! on, send the invocation with the worker marked busy, classify the answer, follow up, and
//! commit the attempt durably.

use super::{AgentEvent, FollowUp, SessionError, SessionHandle, Sessions};
use crate::engine::Engine;
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::manifest::types::{FunctionSpec, WorkerSpec};
use crate::protocol::{ErrorKind, Invoke, Outcome, UserCode};
use crate::store::committer::CommitError;
use crate::store::invocations::{Attempt, AttemptStatus, output_digest};
use crate::store::{StoredObject, clock};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// What is invoked.
#[derive(Debug, Clone)]
pub struct Call {
    /// The same for every attempt of an invocation.
    pub invocation_id: String,
    pub function: String,
    pub handler: String,
    /// `builtin` or `wasm` ([`super::usercode`]).
    pub runtime: &'static str,
    /// A user function's module and limits; `None` for builtins.
    pub code: Option<UserCode>,
    pub input: Value,
    /// The function's own deadline, enforced by the agent.
    pub deadline: Duration,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: AttemptStatus,
    pub error: Option<String>,
    pub exec_us: Option<i64>,
    pub rtt_us: Option<i64>,
    pub output: Option<Value>,
    pub dispatched_ms: i64,
    /// The session answered (with an output or a function error) and can be followed up.
    pub answered: bool,
    /// The call never left: the session had been told to power off first. Not an attempt;
    /// wait for the worker's next session and send it there.
    pub unsent: bool,
}

impl Answer {
    /// An attempt lost or timed out at the session level may succeed on another worker.
    pub fn retryable(&self) -> bool {
        matches!(self.status, AttemptStatus::Lost | AttemptStatus::Timeout)
    }
}

/// Where an attempt belongs in the record.
#[derive(Debug, Clone)]
pub struct Slot<'a> {
    pub workload: &'a str,
    pub run: i64,
    pub generation: i64,
    pub seq: u64,
    pub attempt: u32,
    pub queued_ms: i64,
}

/// Whether a stored worker is healthy (not quarantined, not cordoned).
pub fn health_good(o: &StoredObject) -> bool {
    o.status
        .get("health")
        .and_then(|h| h.as_str())
        .unwrap_or("Good")
        == "Good"
}

/// Why [`fresh_session`] found no session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSession {
    /// Quarantined, cordoned or gone: why (the `Healthy` condition's reason and message).
    Unhealthy(String),
    /// Not ready within the limit.
    TimedOut,
    /// Wanted on but the engine cannot power it (the reason and message of its `Ready`
    /// condition): waiting would only hold the queue.
    Unpowerable(String),
}

impl std::fmt::Display for NoSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSession::Unhealthy(why) => write!(f, "the worker is not healthy: {why}"),
            NoSession::TimedOut => f.write_str("the worker was not ready in time"),
            NoSession::Unpowerable(why) => write!(f, "the worker cannot be powered on: {why}"),
        }
    }
}

/// What a call waiting for its worker checks of its status: its health and why it is (not)
/// ready. Only these fields are parsed (`Store::status_of`), not the whole record.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Gate {
    #[serde(default)]
    health: Option<String>,
    #[serde(default)]
    conditions: Vec<GateCondition>,
}

#[derive(Debug, serde::Deserialize)]
struct GateCondition {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
}

impl Gate {
    fn condition(&self, kind: &str) -> Option<&GateCondition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Not quarantined, not cordoned (no `health` is Good).
    pub fn healthy(&self) -> bool {
        self.health.as_deref().unwrap_or("Good") == "Good"
    }

    /// `health H (Reason: message)` of an unhealthy worker, from its `Healthy` condition.
    fn unhealthy_because(&self) -> String {
        let health = self.health.as_deref().unwrap_or("?");
        match self.condition("Healthy") {
            Some(c) => format!("health {health} ({}: {})", c.reason, c.message),
            None => format!("health {health}"),
        }
    }

    /// `reason: message` of its `Ready` condition when that is one of [`UNPOWERABLE`].
    pub fn unpowerable(&self) -> Option<String> {
        let ready = self.condition("Ready")?;
        UNPOWERABLE
            .contains(&ready.reason.as_str())
            .then(|| format!("{}: {}", ready.reason, ready.message))
    }
}

/// Reasons of a worker's `Ready` condition that mean the engine will not power it on by
/// itself: a board on Unknown power (nothing is pressed on it) or one without a usable line.
pub const UNPOWERABLE: &[&str] = &["PowerUnknown", "NoPowerControl"];

/// How long a wanted worker's status may say it cannot be powered before the wait ends: the
/// status read first may predate the reconcile the `want` triggered.
const UNPOWERABLE_GRACE: Duration = Duration::from_secs(2);

/// Waits until `worker` has a session other than `stale` (one that failed) and not told to
/// power off (by anyone: the engine releasing it, or a OneShot follow-up), the worker turns
/// unhealthy or unpowerable, or `limit` passes. Returns the session and
/// whether it had to wait for one (a cold start). The caller holds `engine.want(worker)`.
pub async fn fresh_session<D: VmDriver>(
    engine: &Engine<D, Sessions>,
    worker: &str,
    stale: Option<u64>,
    events: &mut broadcast::Receiver<AgentEvent>,
    limit: Duration,
) -> Result<(SessionHandle, bool), NoSession> {
    let started = Instant::now();
    let mut cold = false;
    // Since when the stored worker has said it cannot be powered, and why.
    let mut unpowerable_since: Option<(Instant, String)> = None;
    // When the stored worker was last read. Every agent event wakes every waiter; reading and
    // parsing the worker's record on each other worker's event made a fleet of N OneShot
    // boards cost N record reads per job. Its record is read when the wait starts (so a
    // live session is never reused past a stored quarantine), at least every `RECHECK`, as
    // when the wait was a plain 200 ms poll, and on a rejection. Not on its own connects and
    // disconnects: the reconcile they trigger has not written anything yet when the waiter
    // hears them, and a quarantine decided here is seen at once (`quarantine_pending`).
    // Reading on them made a rebooting v1 worker cost three record reads per job.
    let mut checked: Option<Instant> = None;
    loop {
        // A quarantine decided a moment ago may not be stored yet, and its session still live.
        if let Some(why) = engine.quarantine_pending(worker) {
            return Err(NoSession::Unhealthy(format!(
                "quarantined ({}: {why})",
                crate::engine::quarantine::AGENT_FAULTS
            )));
        }
        if checked.is_none_or(|at| at.elapsed() >= RECHECK) {
            checked = Some(Instant::now());
            let gate = engine
                .with_reader(|s| s.status_of::<Gate>(Kind::Worker, worker))
                .ok()
                .flatten();
            let Some(gate) = gate else {
                return Err(NoSession::Unhealthy("gone".into()));
            };
            if !gate.healthy() {
                return Err(NoSession::Unhealthy(gate.unhealthy_because()));
            }
            let since = unpowerable_since.map(|(t, _)| t);
            unpowerable_since = gate
                .unpowerable()
                .map(|why| (since.unwrap_or_else(Instant::now), why));
        }
        if let Some(s) = engine.presence.get(worker)
            && Some(s.id) != stale
            && !s.is_retiring()
        {
            return Ok((s, cold));
        }
        cold = true;
        if let Some((since, why)) = &unpowerable_since
            && since.elapsed() >= UNPOWERABLE_GRACE
        {
            return Err(NoSession::Unpowerable(why.clone()));
        }
        if started.elapsed() > limit {
            return Err(NoSession::TimedOut);
        }
        let wait = RECHECK.min(limit.saturating_sub(started.elapsed()));
        match tokio::time::timeout(wait, events.recv()).await {
            Ok(Ok(ev)) if rejects(&ev, worker) => checked = None,
            Ok(Ok(_)) => {}
            // A lagged or closed feed, or the tick: look at its record again.
            _ => checked = None,
        }
    }
}

/// How often a waiter re-reads its worker's record when nothing about it was heard.
const RECHECK: Duration = Duration::from_millis(200);

/// Whether an agent event is a rejection of a connection that may be `worker`'s.
fn rejects(ev: &AgentEvent, worker: &str) -> bool {
    match ev {
        AgentEvent::Rejected { worker: w, .. } => w.as_deref().is_none_or(|w| w == worker),
        AgentEvent::Connected { .. } | AgentEvent::Disconnected { .. } => false,
    }
}

/// Sends `call` on `session` with the worker marked busy and classifies the answer.
pub async fn send<D: VmDriver>(
    engine: &Engine<D, Sessions>,
    worker: &str,
    session: &SessionHandle,
    call: &Call,
) -> Answer {
    let dispatched_ms = clock::now_millis();
    let services = match bind_services(engine, worker, &call.function) {
        Ok(s) => s,
        Err(e) => return refused(e, dispatched_ms),
    };
    engine.set_busy(worker, Some(&call.function));
    let invoke = Invoke {
        id: call.invocation_id.clone(),
        function: call.function.clone(),
        runtime: call.runtime.to_string(),
        handler: call.handler.clone(),
        input: call.input.clone(),
        deadline_ms: call.deadline.as_millis() as u64,
        services,
        code: call.code.clone(),
    };
    // The agent enforces the deadline; this is the backstop for an agent that stops answering.
    let result = session
        .invoke(invoke, call.deadline + Duration::from_secs(10))
        .await;
    engine.set_busy(worker, None);
    match &result {
        Ok(_) => engine.agent_answered(worker),
        Err(e) => {
            if let Some(reason) = fault_reason(e) {
                agent_failed(engine, worker, reason, call, e);
            }
        }
    }
    classify(result, dispatched_ms)
}

/// The agent failed a call it had been sent: named on the worker, and counted towards its
/// quarantine (`crate::engine::quarantine`).
fn agent_failed<D: VmDriver>(
    engine: &Engine<D, Sessions>,
    worker: &str,
    reason: &str,
    call: &Call,
    e: &SessionError,
) {
    // Counted first: the worker's next reconcile (its VM's exit may already have queued one)
    // is to see a quarantine this fault completes.
    engine.agent_fault(worker, reason);
    // The session is gone with the call: the worker's own record says why, so `describe`
    // tells a hung agent from a dead or a babbling one.
    engine.event(
        Kind::Worker,
        worker,
        crate::store::EventType::Warning,
        reason,
        &format!("invocation {}: {e}", call.invocation_id),
    );
}

/// The worker event naming how an agent failed a call it had been sent; `None` for a call
/// that was never sent.
pub fn fault_reason(e: &SessionError) -> Option<&'static str> {
    match e {
        SessionError::Timeout(_) => Some("AgentUnresponsive"),
        SessionError::Closed => Some("AgentLost"),
        SessionError::Protocol(_) => Some("AgentProtocolError"),
        SessionError::Retiring => None,
    }
}

/// The function's services as `worker` reaches them, with their credentials.
fn bind_services<D: VmDriver>(
    engine: &Engine<D, Sessions>,
    worker: &str,
    function: &str,
) -> Result<std::collections::BTreeMap<String, crate::protocol::ServiceBinding>, String> {
    let Some(spec) = engine
        .with_reader(|s| s.spec_of::<FunctionSpec>(Kind::Function, function))
        .ok()
        .flatten()
    else {
        return Ok(Default::default());
    };
    if spec.services.is_empty() {
        return Ok(Default::default());
    }
    let worker_spec = engine
        .with_reader(|s| s.spec_of::<WorkerSpec>(Kind::Worker, worker))
        .ok()
        .flatten();
    super::services::bind(
        engine.cluster().as_ref(),
        function,
        &spec,
        worker_spec.as_deref(),
    )
}

/// A call that could not be sent because its services could not be bound: it fails without
/// reaching the worker (another worker would fail the same way).
fn refused(why: String, dispatched_ms: i64) -> Answer {
    Answer {
        status: AttemptStatus::Failed,
        error: Some(why),
        ..unanswered(dispatched_ms)
    }
}

/// An attempt nothing came back for (yet): lost unless told otherwise.
fn unanswered(dispatched_ms: i64) -> Answer {
    Answer {
        status: AttemptStatus::Lost,
        error: None,
        exec_us: None,
        rtt_us: None,
        output: None,
        dispatched_ms,
        answered: false,
        unsent: false,
    }
}

fn classify(result: Result<super::Completed, SessionError>, dispatched_ms: i64) -> Answer {
    let mut a = unanswered(dispatched_ms);
    match result {
        Ok(done) => {
            a.answered = true;
            a.exec_us = Some(done.result.exec_us as i64);
            a.rtt_us = Some(done.rtt_us as i64);
            match done.result.outcome {
                Outcome::Output(v) => {
                    a.status = AttemptStatus::Succeeded;
                    a.output = Some(v);
                }
                Outcome::Error(e) => {
                    a.status = if e.kind == ErrorKind::Timeout {
                        AttemptStatus::Timeout
                    } else {
                        AttemptStatus::Failed
                    };
                    a.error = Some(format!("{:?}: {}", e.kind, e.message));
                }
            }
        }
        Err(SessionError::Timeout(d)) => {
            a.status = AttemptStatus::Timeout;
            a.error = Some(format!("no result within {d:?}"));
        }
        Err(SessionError::Retiring) => {
            a.unsent = true;
            a.error = Some(SessionError::Retiring.to_string());
        }
        Err(e) => a.error = Some(e.to_string()),
    }
    a
}

/// Tells an agent that answered what comes next; a no-op on a session that did not answer.
pub async fn follow_up(session: &SessionHandle, answer: &Answer, what: FollowUp) {
    if answer.answered {
        let _ = session.follow_up(what).await;
    }
}

/// The durable record of one attempt (`worker` `None`: it never reached one).
pub fn attempt_record(
    slot: &Slot<'_>,
    call: &Call,
    worker: Option<&str>,
    answer: Option<&Answer>,
    lost_reason: Option<String>,
    cold_start_ms: Option<i64>,
) -> Attempt {
    let bytes = answer
        .and_then(|a| a.output.as_ref())
        .and_then(|v| serde_json::to_vec(v).ok());
    let digest = bytes.as_deref().map(output_digest);
    Attempt {
        invocation_id: call.invocation_id.clone(),
        workload: slot.workload.to_string(),
        run: slot.run,
        generation: slot.generation,
        seq: slot.seq,
        function: call.function.clone(),
        worker: worker.map(str::to_string),
        attempt: slot.attempt,
        queued_ms: slot.queued_ms,
        dispatched_ms: answer.map(|a| a.dispatched_ms),
        finished_ms: clock::now_millis(),
        exec_us: answer.and_then(|a| a.exec_us),
        rtt_us: answer.and_then(|a| a.rtt_us),
        cold_start_ms,
        status: answer.map_or(AttemptStatus::Lost, |a| a.status),
        error: answer.and_then(|a| a.error.clone()).or(lost_reason),
        output_size: digest.as_ref().map(|d| d.0),
        output_sha256: digest.map(|d| d.1),
    }
}

/// First and longest wait between tries to record an attempt the store could not write.
const RECORD_RETRY_FIRST: Duration = Duration::from_millis(100);
const RECORD_RETRY_MAX: Duration = Duration::from_secs(5);

/// Commits an attempt durably, sharing the fsync with whatever else is being recorded at the
/// same time (the engine's group committer). When the store cannot write (disk full, I/O) the
/// engine takes no new work ([`Engine::storage_failed`]) and this keeps trying the same record,
/// with backoff, until it commits; then work resumes ([`Engine::storage_recovered`]). Nothing
/// was acknowledged meanwhile, and a failed commit wrote nothing, so the record lands once.
/// False when the record was refused (or the recorder is gone).
pub async fn record<D: VmDriver>(engine: &Engine<D, Sessions>, attempt: &Attempt) -> bool {
    let mut wait = RECORD_RETRY_FIRST;
    let mut tries = 0u32;
    loop {
        // Another orchestrator took the workload over (this one's lease expired): it redoes
        // what this one had not recorded, so recording it here too could count it twice.
        if engine.ownership().is_some_and(|o| {
            o.acting() && !o.holds(crate::manifest::Kind::Workload, &attempt.workload)
        }) {
            tracing::warn!(
                "attempt {}#{} not recorded: the workload is held by another orchestrator now",
                attempt.invocation_id,
                attempt.attempt
            );
            return false;
        }
        match engine.recorder.record(attempt.clone()).await {
            Ok(()) => {
                if tries > 0 {
                    engine.storage_recovered(&attempt.workload, tries);
                }
                return true;
            }
            Err(e @ CommitError::Store(_)) => {
                if tries == 0 {
                    tracing::error!(
                        "cannot record attempt {}#{}, retrying until the store can: {e}",
                        attempt.invocation_id,
                        attempt.attempt
                    );
                }
                engine.storage_failed(&e.to_string());
                tries += 1;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RECORD_RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(
                    "cannot record attempt {}#{}: {e}",
                    attempt.invocation_id,
                    attempt.attempt
                );
                return false;
            }
        }
    }
}

/// Cold-start time of an attempt that waited `waited` for its worker, capped by how long
/// the invocation had been queued.
pub fn cold_start_ms(cold: bool, waited: Duration, queued_ms: i64) -> Option<i64> {
    cold.then(|| {
        let since = clock::now_millis() - queued_ms;
        (waited.as_millis() as i64).min(since.max(0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate(status: Value) -> Gate {
        serde_json::from_value(status).expect("gate")
    }

    #[test]
    fn a_gate_reads_health_and_readiness_from_a_status() {
        let ready = gate(json!({"phase": "Ready", "observedPower": {"state": "On"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentConnected",
                            "lastTransitionTime": "t"}]}));
        assert!(ready.healthy());
        assert_eq!(ready.unpowerable(), None);

        let bad = gate(json!({"health": "Bad", "conditions": [
            {"type": "Healthy", "status": "False", "reason": "AgentFaults", "message": "3 in a row"},
            {"type": "Ready", "status": "False", "reason": "PowerUnknown", "message": "no link"}]}));
        assert!(!bad.healthy());
        assert_eq!(
            bad.unhealthy_because(),
            "health Bad (AgentFaults: 3 in a row)"
        );
        assert_eq!(bad.unpowerable().as_deref(), Some("PowerUnknown: no link"));

        let cordoned = gate(json!({"health": "Cordoned"}));
        assert_eq!(cordoned.unhealthy_because(), "health Cordoned");
        assert!(gate(json!({})).healthy());
    }
}
