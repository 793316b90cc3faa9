//! On-demand invocations: pick a worker (an idle connected one first, then one already
//! booting, then any healthy one, which is powered on), hold it wanted while the call runs,
//! run one attempt through the shared attempt path, record it under the `gateway` workload, and
//! retry a lost attempt on another worker while attempts and the function's deadline allow.

use super::{Gateway, lock};
use crate::engine::vm::VmDriver;
use crate::manifest::Kind;
use crate::manifest::types::{FunctionSpec, LifecycleMode, WorkerSpec};
use crate::orchestrator::FollowUp;
use crate::orchestrator::attempt::{self, Call, Slot};
use crate::orchestrator::usercode::{self, Code};
use crate::store::clock;
use crate::store::gateway::WORKLOAD;
use crate::store::specs::SpecEntry;
use crate::store::{Attempt, AttemptStatus, StoredObject};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The HTTP answer to one call, sync or async.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub body: Vec<u8>,
    pub content_type: &'static str,
    pub worker: Option<String>,
    pub cold_start: bool,
    pub seconds: f64,
    pub call_id: String,
}

impl Reply {
    fn error(code: u16, call_id: &str, msg: impl Into<String>) -> Reply {
        let mut body = msg.into().into_bytes();
        body.push(b'\n');
        Reply {
            code,
            body,
            content_type: "text/plain; charset=utf-8",
            worker: None,
            cold_start: false,
            seconds: 0.0,
            call_id: call_id.to_string(),
        }
    }

    /// The headers that go with the result (sync response and async callback alike).
    pub fn headers(&self, function: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Content-Type", self.content_type.to_string()),
            ("X-Call-Id", self.call_id.clone()),
            ("X-Function-Name", function.to_string()),
            ("X-Function-Status", self.code.to_string()),
            ("X-Duration-Seconds", format!("{:.6}", self.seconds)),
            ("X-Microfaas-Cold-Start", self.cold_start.to_string()),
        ];
        if let Some(w) = &self.worker {
            h.push(("X-Microfaas-Worker", w.clone()));
        }
        h
    }
}

/// A healthy worker (board or VM) that could run a call, with what is known about it now.
struct Candidate {
    name: String,
    oneshot: bool,
    idle: Duration,
}

/// A fresh call id: 128 random bits, hex.
pub fn new_call_id() -> String {
    crate::orchestrator::endpoint::random_token()[..32].to_string()
}

/// The body of a call as the function's input: empty = the function's default input, JSON =
/// that value, anything else = the bytes as a string.
pub fn input_of(body: &[u8], handler: &str, seed: u64) -> Value {
    if body.iter().all(u8::is_ascii_whitespace) {
        return crate::functions::default_inputs(handler, seed, 1)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

impl<D: VmDriver> Gateway<D> {
    /// The stored function `name` with the code to send, or the reply that says why it cannot
    /// run.
    pub(super) fn runnable(
        &self,
        name: &str,
        call_id: &str,
    ) -> Result<(Arc<FunctionSpec>, Code), Reply> {
        let spec = match self
            .engine
            .with_store(|s| s.spec_of::<FunctionSpec>(Kind::Function, name))
        {
            Ok(Some(spec)) => spec,
            Ok(None) => {
                return Err(Reply::error(
                    404,
                    call_id,
                    format!("function `{name}` not found"),
                ));
            }
            Err(e) => return Err(Reply::error(500, call_id, format!("stored function: {e}"))),
        };
        let code = usercode::code_of(&spec)
            .map_err(|e| Reply::error(500, call_id, format!("function `{name}`: {e}")))?;
        Ok((spec, code))
    }

    /// Healthy workers with their specs, boards and VMs alike: every one runs functions through
    /// its agent, and the engine powers either kind on `want` (a board with its button).
    pub(super) fn workers(&self) -> Vec<(StoredObject, WorkerSpec)> {
        self.engine
            .with_store(|s| s.list(Some(Kind::Worker)))
            .unwrap_or_default()
            .into_iter()
            .filter(attempt::health_good)
            .filter_map(|w| {
                let spec: WorkerSpec = serde_json::from_value(w.spec.clone()).ok()?;
                Some((w, spec))
            })
            .collect()
    }

    /// Healthy workers as a call sees them, from cached specs: listing and parsing every
    /// worker's record on every call was the gateway's largest cost.
    fn candidates(&self) -> Vec<Candidate> {
        self.engine
            .with_store(|s| s.specs_of_kind::<WorkerSpec>(Kind::Worker))
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w.health.as_deref().is_none_or(|h| h == "Good"))
            .map(|SpecEntry { name, spec, .. }| Candidate {
                name,
                oneshot: spec.lifecycle.mode == LifecycleMode::OneShot,
                idle: spec
                    .lifecycle
                    .idle_timeout
                    .as_ref()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(Duration::ZERO),
            })
            .collect()
    }

    /// The best worker not in `tried` (any when all were tried): idle with a session, then
    /// booting, then busy, then off; fewer calls in flight first.
    fn pick(&self, tried: &[String]) -> Option<Candidate> {
        let all = self.candidates();
        let fresh: Vec<&Candidate> = all.iter().filter(|c| !tried.contains(&c.name)).collect();
        let pool = if fresh.is_empty() {
            all.iter().collect()
        } else {
            fresh
        };
        let inflight = lock(&self.inflight);
        let stale = lock(&self.stale);
        let best = pool
            .into_iter()
            .min_by_key(|c| {
                let n = inflight.get(&c.name).copied().unwrap_or(0);
                let live = self
                    .engine
                    .presence
                    .get(&c.name)
                    .is_some_and(|s| stale.get(&c.name) != Some(&s.id));
                let rank = match (live, n) {
                    (true, 0) => 0,
                    (false, _) if self.engine.wanted(&c.name) => 1,
                    (true, _) => 2,
                    (false, _) => 3,
                };
                (rank, n, c.name.clone())
            })
            .map(|c| c.name.clone());
        drop((inflight, stale));
        let name = best?;
        all.into_iter().find(|c| c.name == name)
    }

    /// Records one attempt under the `gateway` workload, durably, and wakes the log followers.
    /// False when it could not be recorded.
    async fn record(&self, rec: &Attempt) -> bool {
        let recorded = attempt::record(&self.engine, rec).await;
        if recorded {
            self.logged.send_modify(|n| *n += 1);
        }
        recorded
    }

    /// Runs one call of `function` to its end: the reply to send (the result, or why not).
    pub(super) async fn call(&self, function: &str, body: &[u8], call_id: &str) -> Reply {
        let _in_progress = self.call_started();
        let started = Instant::now();
        let reply = self.call_inner(function, body, call_id, started).await;
        let reply = Reply {
            seconds: if reply.seconds > 0.0 {
                reply.seconds
            } else {
                started.elapsed().as_secs_f64()
            },
            ..reply
        };
        // No series for a name that is not a function (the only 404 here): names callers make
        // up would each add series for good, growing the registry and every scrape without
        // bound (the fuzzer's gateway runs grew a 18 MiB exposition by 1,000,000 requests).
        if reply.code != 404 {
            self.metrics
                .observe(function, reply.code, started.elapsed().as_secs_f64());
        }
        reply
    }

    async fn call_inner(
        &self,
        function: &str,
        body: &[u8],
        call_id: &str,
        started: Instant,
    ) -> Reply {
        if let Some(why) = self.engine.storage_fault() {
            return Reply::error(
                503,
                call_id,
                format!("cannot record invocations ({why}); taking no work"),
            );
        }
        let (spec, code) = match self.runnable(function, call_id) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let defaults = self.engine.defaults();
        let deadline = spec
            .timeout
            .as_ref()
            .and_then(|t| t.parse().ok())
            .or_else(|| defaults.job_timeout.parse().ok())
            .unwrap_or(Duration::from_secs(120));
        let handler = spec.handler.clone().unwrap_or_default();
        let Some((run, seq)) = self.next_slot() else {
            return Reply::error(500, call_id, "cannot record the invocation");
        };
        let call = Call {
            invocation_id: call_id.to_string(),
            function: function.to_string(),
            input: input_of(body, &handler, seq),
            handler,
            runtime: code.runtime,
            code: code.user,
            deadline,
        };
        let max_attempts = u32::try_from(defaults.max_attempts).unwrap_or(3).max(1);
        let queued_ms = clock::now_millis();
        let mut tried: Vec<String> = Vec::new();
        let mut last_error = String::from("no attempt was made");
        for n in 1..=max_attempts {
            let slot = Slot {
                workload: WORKLOAD,
                run,
                generation: 0,
                seq,
                attempt: n,
                queued_ms,
            };
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            let Some(worker) = self.pick(&tried) else {
                let msg = "no healthy worker can run it".to_string();
                let rec =
                    attempt::attempt_record(&slot, &call, None, None, Some(msg.clone()), None);
                self.record(&rec).await;
                return Reply::error(502, call_id, msg);
            };
            tried.push(worker.name.clone());
            match self.attempt_on(&worker, &call, &slot, left).await {
                Ok(reply) => return reply,
                Err(e) => last_error = e,
            }
        }
        if started.elapsed() >= deadline {
            Reply::error(
                504,
                call_id,
                format!("deadline of {deadline:?} passed: {last_error}"),
            )
        } else {
            Reply::error(
                502,
                call_id,
                format!("no worker completed it: {last_error}"),
            )
        }
    }

    /// One attempt on `worker`: a final reply, or why it may be retried elsewhere.
    async fn attempt_on(
        &self,
        worker: &Candidate,
        call: &Call,
        slot: &Slot<'_>,
        left: Duration,
    ) -> Result<Reply, String> {
        let name = worker.name.as_str();
        *lock(&self.inflight).entry(name.to_string()).or_insert(0) += 1;
        self.engine.want(name);
        let mut events = self.events.subscribe();
        let waited_from = Instant::now();
        let mut stale = lock(&self.stale).get(name).copied();
        // A session told to power off after it was picked refuses the call unsent: wait for the
        // worker's next one (a cold start) rather than spend an attempt.
        let mut passed_over = false;
        let result = loop {
            let limit = left.saturating_sub(waited_from.elapsed());
            let session =
                attempt::fresh_session(&self.engine, name, stale, &mut events, limit).await;
            break match session {
                Err(why) => {
                    let msg = match why {
                        attempt::NoSession::Unpowerable(_) => format!("worker `{name}`: {why}"),
                        _ => format!("worker `{name}` was not ready within {left:?}"),
                    };
                    let rec = attempt::attempt_record(
                        slot,
                        call,
                        Some(name),
                        None,
                        Some(msg.clone()),
                        None,
                    );
                    self.record(&rec).await;
                    Err(msg)
                }
                Ok((session, cold)) => {
                    let cold = cold || passed_over;
                    let cold_ms =
                        attempt::cold_start_ms(cold, waited_from.elapsed(), slot.queued_ms);
                    let answer = attempt::send(&self.engine, name, &session, call).await;
                    if answer.unsent {
                        stale = Some(session.id);
                        passed_over = true;
                        continue;
                    }
                    let rec = attempt::attempt_record(
                        slot,
                        call,
                        Some(name),
                        Some(&answer),
                        None,
                        cold_ms,
                    );
                    let recorded = self.record(&rec).await;
                    let follow = if worker.oneshot {
                        FollowUp::Poweroff
                    } else {
                        FollowUp::Idle
                    };
                    attempt::follow_up(&session, &answer, follow).await;
                    if worker.oneshot || !answer.answered {
                        lock(&self.stale).insert(name.to_string(), session.id);
                    }
                    // A 200 promises the call's record survives a crash: without the record,
                    // the caller hears that instead of the result.
                    if !recorded && answer.answered {
                        break Ok(Reply::error(
                            500,
                            &call.invocation_id,
                            "the call ran but its record could not be committed",
                        ));
                    }
                    let mut reply = Reply {
                        code: 200,
                        body: Vec::new(),
                        content_type: "application/json",
                        worker: Some(name.to_string()),
                        cold_start: cold,
                        seconds: answer.exec_us.map_or(0.0, |us| us as f64 / 1e6),
                        call_id: call.invocation_id.clone(),
                    };
                    match answer.status {
                        AttemptStatus::Succeeded => {
                            match answer.output.unwrap_or(Value::Null) {
                                Value::String(s) => {
                                    reply.body = s.into_bytes();
                                    reply.content_type = "text/plain; charset=utf-8";
                                }
                                v => reply.body = serde_json::to_vec(&v).unwrap_or_default(),
                            }
                            Ok(reply)
                        }
                        AttemptStatus::Failed => {
                            reply.code = 500;
                            reply.content_type = "text/plain; charset=utf-8";
                            reply.body =
                                format!("{}\n", answer.error.unwrap_or_default()).into_bytes();
                            Ok(reply)
                        }
                        AttemptStatus::Timeout if answer.answered => {
                            reply.code = 504;
                            reply.content_type = "text/plain; charset=utf-8";
                            reply.body =
                                format!("{}\n", answer.error.unwrap_or_default()).into_bytes();
                            Ok(reply)
                        }
                        _ => Err(format!(
                            "worker `{name}`: {}",
                            answer.error.unwrap_or_default()
                        )),
                    }
                }
            };
        };
        if let Some(n) = lock(&self.inflight).get_mut(name) {
            *n = n.saturating_sub(1);
        }
        // Warm workers stay on for their idle timeout after a call; OneShot ones go at once.
        let idle = if worker.oneshot {
            Duration::ZERO
        } else {
            worker.idle
        };
        let (engine, w) = (self.engine.clone(), name.to_string());
        if idle.is_zero() {
            engine.release(&w);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(idle).await;
                engine.release(&w);
            });
        }
        result
    }
}
