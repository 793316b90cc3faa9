//! The gateway's records in etcd: its queue of asynchronous calls (`gwcalls/ID`, each step a
//! compare-and-swap), the Warm replicas per function (`gwscale/FUNCTION`), and the reads of
//! its invocations (attempts of the reserved gateway workload, row = create revision).

use super::client::{self, RangeOpts};
use super::{EtcdStore, decode, encode, segment};
use crate::store::gateway::{CallState, LogLine, LogQuery, QueuedCall, WORKLOAD, log_text};
use crate::store::{Result, StoreError, clock};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CallRecord {
    function: String,
    input: serde_json::Value,
    callback_url: Option<String>,
    state: String,
    code: Option<u16>,
    /// Base64 of the result bytes.
    result: Option<String>,
    headers: Option<serde_json::Value>,
    queued_ms: i64,
    finished_ms: Option<i64>,
    delivered_ms: Option<i64>,
    callback_tries: u32,
}

impl EtcdStore {
    fn call_key(&self, call_id: &str) -> Result<String> {
        segment("call id", call_id)?;
        Ok(self.key(&format!("gwcalls/{call_id}")))
    }

    pub fn enqueue_call(
        &mut self,
        call_id: &str,
        function: &str,
        input: &serde_json::Value,
        callback_url: Option<&str>,
    ) -> Result<()> {
        let key = self.call_key(call_id)?;
        let rec = CallRecord {
            function: function.to_string(),
            input: input.clone(),
            callback_url: callback_url.map(str::to_string),
            state: CallState::Queued.as_str().to_string(),
            code: None,
            result: None,
            headers: None,
            queued_ms: clock::now_millis(),
            finished_ms: None,
            delivered_ms: None,
            callback_tries: 0,
        };
        let answer = self.txn(
            vec![client::absent(&key)],
            vec![client::put_op(&key, &encode(&rec))],
            vec![],
        )?;
        if !client::succeeded(&answer) {
            return Err(StoreError::Etcd(format!(
                "call {call_id} is already queued"
            )));
        }
        Ok(())
    }

    /// Calls still to run or to deliver, oldest first.
    pub fn pending_calls(&self) -> Result<Vec<QueuedCall>> {
        let base = self.key("gwcalls/");
        let mut out = Vec::new();
        for kv in self.range(&base, true, RangeOpts::default())? {
            let r: CallRecord = decode(&kv)?;
            let state = CallState::parse(&r.state);
            if !matches!(state, CallState::Queued | CallState::Done) {
                continue;
            }
            out.push(QueuedCall {
                call_id: kv.key.strip_prefix(&base).unwrap_or_default().to_string(),
                function: r.function,
                input: r.input,
                callback_url: r.callback_url,
                state,
                code: r.code,
                result: r.result.and_then(|b| B64.decode(b).ok()),
                headers: r.headers,
                queued_ms: r.queued_ms,
                callback_tries: r.callback_tries,
            });
        }
        out.sort_by(|a, b| (a.queued_ms, &a.call_id).cmp(&(b.queued_ms, &b.call_id)));
        Ok(out)
    }

    pub fn call_state(&self, call_id: &str) -> Result<Option<CallState>> {
        self.get_kv(&self.call_key(call_id)?)?
            .map(|kv| Ok(CallState::parse(&decode::<CallRecord>(&kv)?.state)))
            .transpose()
    }

    /// Stores the result of a queued call; a no-op for a call that is no longer queued.
    pub fn finish_call(
        &mut self,
        call_id: &str,
        code: u16,
        result: &[u8],
        headers: &serde_json::Value,
    ) -> Result<()> {
        let now = clock::now_millis();
        self.update(&self.call_key(call_id)?, |r: Option<CallRecord>| {
            Ok((
                r.filter(|r| r.state == CallState::Queued.as_str())
                    .map(|mut r| {
                        r.state = CallState::Done.as_str().to_string();
                        r.code = Some(code);
                        r.result = Some(B64.encode(result));
                        r.headers = Some(headers.clone());
                        r.finished_ms = Some(now);
                        r
                    }),
                (),
            ))
        })
    }

    /// Counts one callback try and, when `final_state` is given, ends the call in it.
    pub fn callback_tried(&mut self, call_id: &str, final_state: Option<CallState>) -> Result<()> {
        let now = clock::now_millis();
        self.update(&self.call_key(call_id)?, |r: Option<CallRecord>| {
            Ok((
                r.map(|mut r| {
                    r.callback_tries += 1;
                    if let Some(s) = final_state {
                        r.state = s.as_str().to_string();
                        if s == CallState::Delivered {
                            r.delivered_ms = Some(now);
                        }
                    }
                    r
                }),
                (),
            ))
        })
    }

    fn scale_key(&self, function: &str) -> Result<String> {
        segment("function", function)?;
        Ok(self.key(&format!("gwscale/{function}")))
    }

    pub fn set_scale(&mut self, function: &str, replicas: u32) -> Result<()> {
        let key = self.scale_key(function)?;
        self.txn(
            vec![],
            vec![client::put_op(&key, &encode(&replicas))],
            vec![],
        )?;
        Ok(())
    }

    pub fn delete_scale(&mut self, function: &str) -> Result<()> {
        let key = self.scale_key(function)?;
        self.txn(vec![], vec![client::delete_op(&key)], vec![])?;
        Ok(())
    }

    /// Warm replicas asked for per function, by function name (key order).
    pub fn scales(&self) -> Result<Vec<(String, u32)>> {
        let base = self.key("gwscale/");
        self.range(&base, true, RangeOpts::default())?
            .iter()
            .map(|kv| {
                Ok((
                    kv.key.strip_prefix(&base).unwrap_or_default().to_string(),
                    decode(kv)?,
                ))
            })
            .collect()
    }

    /// Every gateway attempt of `function` over all runs, each with its row (create revision),
    /// in recording order.
    fn gateway_attempts(&self, function: &str) -> Result<Vec<(i64, crate::store::Attempt)>> {
        Ok(self
            .read_attempts_under(&format!("attempts/{WORKLOAD}/"), 0)?
            .into_iter()
            .filter(|(_, a)| a.function == function)
            .collect())
    }

    /// Invocations of `function` through the gateway, over all its runs.
    pub fn gateway_invocations(&self, function: &str) -> Result<u64> {
        let ids: HashSet<String> = self
            .gateway_attempts(function)?
            .into_iter()
            .map(|(_, a)| a.invocation_id)
            .collect();
        Ok(ids.len() as u64)
    }

    /// The attempts of `function` through the gateway that `q` selects, oldest first.
    pub fn gateway_log(&self, function: &str, q: LogQuery) -> Result<Vec<LogLine>> {
        let since = q.since_ms.unwrap_or(i64::MIN);
        let after = q.after_id.unwrap_or(i64::MIN);
        let mut rows: Vec<_> = self
            .gateway_attempts(function)?
            .into_iter()
            .filter(|(id, a)| a.finished_ms >= since && *id > after)
            .collect();
        if let Some(tail) = q.tail {
            let keep = usize::try_from(tail).unwrap_or(usize::MAX);
            rows.drain(..rows.len().saturating_sub(keep));
        }
        Ok(rows
            .into_iter()
            .map(|(id, a)| LogLine {
                id,
                finished_ms: a.finished_ms,
                text: log_text(
                    &a.invocation_id,
                    a.attempt,
                    a.worker.as_deref(),
                    a.status.as_str(),
                    (a.rtt_us, a.exec_us, a.cold_start_ms),
                    a.error.as_deref(),
                ),
                worker: a.worker,
            })
            .collect())
    }
}
