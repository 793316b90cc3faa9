//! What the gateway keeps beyond objects and invocations: its queue of asynchronous calls
//! (queued → done → delivered | undeliverable, each step one committed transaction, so a
//! restarted daemon resumes where the last one stopped) and the Warm replicas it keeps powered
//! per function.

use super::{Result, SqliteStore, clock};
use rusqlite::{OptionalExtension, params};

/// The workload name gateway invocations are recorded under (reserved: manifest validation
/// refuses a Workload of that name).
pub const WORKLOAD: &str = crate::manifest::validate::GATEWAY_WORKLOAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Waiting to run (or running when the daemon stopped: it runs again).
    Queued,
    /// Ran; the result waits for its callback.
    Done,
    Delivered,
    Undeliverable,
}

impl CallState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Queued => "queued",
            CallState::Done => "done",
            CallState::Delivered => "delivered",
            CallState::Undeliverable => "undeliverable",
        }
    }

    pub(crate) fn parse(s: &str) -> CallState {
        match s {
            "done" => CallState::Done,
            "delivered" => CallState::Delivered,
            "undeliverable" => CallState::Undeliverable,
            _ => CallState::Queued,
        }
    }
}

/// One asynchronous call.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedCall {
    pub call_id: String,
    pub function: String,
    pub input: serde_json::Value,
    pub callback_url: Option<String>,
    pub state: CallState,
    /// HTTP status of the result, once done.
    pub code: Option<u16>,
    pub result: Option<Vec<u8>>,
    /// Response headers of the result (JSON object of strings).
    pub headers: Option<serde_json::Value>,
    pub queued_ms: i64,
    pub callback_tries: u32,
}

/// One attempt as the logs endpoint shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The attempt's row: a follower reads the rows after the last one it sent.
    pub id: i64,
    pub finished_ms: i64,
    pub worker: Option<String>,
    pub text: String,
}

/// Which of a function's gateway attempts to read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogQuery {
    /// The newest this many (`None`: all that match).
    pub tail: Option<u32>,
    /// Only attempts that finished at or after this instant (unix ms).
    pub since_ms: Option<i64>,
    /// Only attempts recorded after this row.
    pub after_id: Option<i64>,
}

/// One gateway attempt as the logs endpoint prints it (both backends).
pub(crate) fn log_text(
    id: &str,
    attempt: u32,
    worker: Option<&str>,
    status: &str,
    (rtt, exec, cold): (Option<i64>, Option<i64>, Option<i64>),
    error: Option<&str>,
) -> String {
    let mut text = format!(
        "call {id} attempt {attempt} on {}: {status}",
        worker.unwrap_or("no worker")
    );
    if let (Some(rtt), Some(exec)) = (rtt, exec) {
        text.push_str(&format!(
            " (round trip {:.3} ms, exec {:.3} ms)",
            rtt as f64 / 1000.0,
            exec as f64 / 1000.0
        ));
    }
    if let Some(c) = cold {
        text.push_str(&format!(", cold start {c} ms"));
    }
    if let Some(e) = error {
        text.push_str(&format!(": {e}"));
    }
    text
}

impl SqliteStore {
    pub fn enqueue_call(
        &mut self,
        call_id: &str,
        function: &str,
        input: &serde_json::Value,
        callback_url: Option<&str>,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO gateway_calls (call_id, function, input, callback_url, state, queued_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5)",
                params![
                    call_id,
                    function,
                    input.to_string(),
                    callback_url,
                    clock::now_millis()
                ],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// Calls still to run or to deliver, oldest first.
    pub fn pending_calls(&self) -> Result<Vec<QueuedCall>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT call_id, function, input, callback_url, state, code, result, headers,
                        queued_at, callback_tries
                 FROM gateway_calls WHERE state IN ('queued', 'done') ORDER BY queued_at, call_id",
            )
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| {
                let input: String = r.get(2)?;
                let state: String = r.get(4)?;
                let headers: Option<String> = r.get(7)?;
                Ok(QueuedCall {
                    call_id: r.get(0)?,
                    function: r.get(1)?,
                    input: serde_json::from_str(&input).unwrap_or(serde_json::Value::Null),
                    callback_url: r.get(3)?,
                    state: CallState::parse(&state),
                    code: r.get(5)?,
                    result: r.get(6)?,
                    headers: headers.and_then(|h| serde_json::from_str(&h).ok()),
                    queued_ms: r.get(8)?,
                    callback_tries: r.get(9)?,
                })
            })
            .map_err(self.sq())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sq())
    }

    pub fn call_state(&self, call_id: &str) -> Result<Option<CallState>> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM gateway_calls WHERE call_id = ?1",
                params![call_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sq())?;
        Ok(s.as_deref().map(CallState::parse))
    }

    /// Stores the result of a queued call; a no-op for a call that is no longer queued.
    pub fn finish_call(
        &mut self,
        call_id: &str,
        code: u16,
        result: &[u8],
        headers: &serde_json::Value,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE gateway_calls SET state = 'done', code = ?2, result = ?3, headers = ?4,
                        finished_at = ?5
                 WHERE call_id = ?1 AND state = 'queued'",
                params![
                    call_id,
                    code,
                    result,
                    headers.to_string(),
                    clock::now_millis()
                ],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// Counts one callback try and, when `final_state` is given, ends the call in it.
    pub fn callback_tried(&mut self, call_id: &str, final_state: Option<CallState>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE gateway_calls SET callback_tries = callback_tries + 1,
                        state = COALESCE(?2, state),
                        delivered_at = CASE WHEN ?2 = 'delivered' THEN ?3 ELSE delivered_at END
                 WHERE call_id = ?1",
                params![
                    call_id,
                    final_state.map(CallState::as_str),
                    clock::now_millis()
                ],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    pub fn set_scale(&mut self, function: &str, replicas: u32) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO gateway_scale (function, replicas) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET replicas = excluded.replicas",
                params![function, replicas],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    pub fn delete_scale(&mut self, function: &str) -> Result<()> {
        self.conn
            .execute(
                "DELETE FROM gateway_scale WHERE function = ?1",
                params![function],
            )
            .map_err(self.sq())?;
        Ok(())
    }

    /// Warm replicas asked for per function.
    pub fn scales(&self) -> Result<Vec<(String, u32)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT function, replicas FROM gateway_scale ORDER BY function")
            .map_err(self.sq())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(self.sq())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.sq())
    }

    /// Invocations of `function` through the gateway, over all its runs.
    pub fn gateway_invocations(&self, function: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT COUNT(DISTINCT invocation_id) FROM invocations
                 WHERE workload = ?1 AND function = ?2",
                params![WORKLOAD, function],
                |r| r.get(0),
            )
            .map_err(self.sq())
    }

    /// The attempts of `function` through the gateway that `q` selects, oldest first.
    pub fn gateway_log(&self, function: &str, q: LogQuery) -> Result<Vec<LogLine>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT finished_at, worker, invocation_id, attempt, status, rtt_us, exec_us,
                        cold_start_ms, error, id
                 FROM invocations
                 WHERE workload = ?1 AND function = ?2 AND finished_at >= ?3 AND id > ?4
                 ORDER BY id DESC LIMIT ?5",
            )
            .map_err(self.sq())?;
        // SQLite: a negative LIMIT is no limit.
        let limit = q.tail.map_or(-1, i64::from);
        let since = q.since_ms.unwrap_or(i64::MIN);
        let after = q.after_id.unwrap_or(i64::MIN);
        let rows = stmt
            .query_map(params![WORKLOAD, function, since, after, limit], |r| {
                let worker: Option<String> = r.get(1)?;
                let id: String = r.get(2)?;
                let attempt: u32 = r.get(3)?;
                let status: String = r.get(4)?;
                let rtt: Option<i64> = r.get(5)?;
                let exec: Option<i64> = r.get(6)?;
                let cold: Option<i64> = r.get(7)?;
                let error: Option<String> = r.get(8)?;
                let text = log_text(
                    &id,
                    attempt,
                    worker.as_deref(),
                    &status,
                    (rtt, exec, cold),
                    error.as_deref(),
                );
                Ok(LogLine {
                    id: r.get(9)?,
                    finished_ms: r.get(0)?,
                    worker,
                    text,
                })
            })
            .map_err(self.sq())?;
        let mut out: Vec<LogLine> = rows.collect::<rusqlite::Result<_>>().map_err(self.sq())?;
        out.reverse();
        Ok(out)
    }

    /// Ends the `Running` runs of `workload` with counts taken from their attempts:
    /// `Succeeded`/`Failed` when its recorder stopped cleanly, `Cancelled` when it is found left
    /// over by a process that died.
    pub fn close_runs(&mut self, workload: &str, clean: bool, message: &str) -> Result<()> {
        const PER_RUN: &str =
            "FROM invocations i WHERE i.workload = runs.workload AND i.run = runs.run";
        let ok =
            format!("(SELECT COUNT(DISTINCT invocation_id) {PER_RUN} AND i.status = 'succeeded')");
        let total = format!("(SELECT COUNT(DISTINCT invocation_id) {PER_RUN})");
        let phase = if clean {
            format!("CASE WHEN {total} > {ok} THEN 'Failed' ELSE 'Succeeded' END")
        } else {
            "'Cancelled'".to_string()
        };
        let sql = format!(
            "UPDATE runs SET phase = {phase}, finished_at = ?2, message = ?3, total = {total},
               succeeded = {ok}, failed = {total} - {ok},
               retried = (SELECT COUNT(DISTINCT invocation_id) {PER_RUN} AND i.attempt > 1)
             WHERE workload = ?1 AND phase = 'Running'"
        );
        self.conn
            .execute(&sql, params![workload, clock::now_millis(), message])
            .map_err(self.sq())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_move_through_their_states_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let mut s = SqliteStore::open(dir.path()).expect("open");
            s.enqueue_call("c1", "f", &json!({"n": 1}), Some("http://127.0.0.1:9/cb"))
                .expect("enqueue");
            s.enqueue_call("c2", "f", &json!(null), None)
                .expect("enqueue");
            assert!(s.enqueue_call("c1", "f", &json!(1), None).is_err());
            s.finish_call("c1", 200, b"out", &json!({"X-A": "1"}))
                .expect("finish");
        }
        let mut s = SqliteStore::open(dir.path()).expect("reopen");
        let p = s.pending_calls().expect("pending");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].state, CallState::Done);
        assert_eq!(p[0].result.as_deref(), Some(&b"out"[..]));
        assert_eq!(p[0].input, json!({"n": 1}));
        assert_eq!(p[1].state, CallState::Queued);
        // finishing twice keeps the first result
        s.finish_call("c1", 500, b"other", &json!({}))
            .expect("finish");
        s.callback_tried("c1", None).expect("try");
        s.callback_tried("c1", Some(CallState::Delivered))
            .expect("delivered");
        let p = s.pending_calls().expect("pending");
        assert_eq!(p.len(), 1);
        assert_eq!(
            s.call_state("c1").expect("state"),
            Some(CallState::Delivered)
        );
        s.set_scale("f", 2).expect("scale");
        s.set_scale("f", 0).expect("scale");
        assert_eq!(s.scales().expect("scales"), vec![("f".to_string(), 0)]);
    }
}
