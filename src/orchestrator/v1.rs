//! The MicroFaaS v1 worker protocol, for boards running an existing v1 worker image. A v1
//! worker connects once per boot and sends a short greeting (its id as digits, or anything:
//! it is then known by its source address). The orchestrator answers with one job line
//! `{"i_id","f_id","f_args"}`, reads one result `{"i_id","f_id","result","exec_time"}`
//! (`exec_time` in ms), and ends with a follow-up job that makes the worker write to
//! `/proc/sysrq-trigger`: `b` to reboot (more work waits) or `o` to power off.
//!
//! v1 has no authentication, so only a connection from an address declared for a v1 worker
//! (`board.network.address`) gets here. It is served as an ordinary session, so dispatch,
//! records and power treat a v1 worker like any other.

use super::endpoint::{AgentEvent, HANDSHAKE_TIMEOUT};
use super::session::{self, Command, Completed, FollowUp, SessionError, SessionHandle};
use crate::protocol::{Capabilities, Hello, Invoke, InvokeResult, Lifecycle, Outcome};
use serde_json::{Value, json};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The `agentVersion` of a v1 worker's session (v1 workers say nothing about themselves).
pub const AGENT_VERSION: &str = "microfaas-v1";
/// v1 reads the greeting with a single 4-byte receive; so do we, so that what a worker sends
/// after it is never taken for the greeting.
const GREETING_MAX: usize = 4;
/// A result larger than this is refused (v1 itself reads at most 12 KiB).
const MAX_REPLY: usize = 1 << 20;

/// Reads the greeting of a connection from `worker`'s address; the session to register, or
/// `None` (a `Rejected` event sent) when the greeting is missing or claims another id.
pub async fn accept(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    worker: String,
    events: &broadcast::Sender<AgentEvent>,
) -> Option<(SessionHandle, oneshot::Receiver<String>)> {
    let (mut r, w) = stream.into_split();
    let mut greeting = [0u8; GREETING_MAX];
    let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, r.read(&mut greeting)).await {
        Ok(Ok(n)) if n > 0 => n,
        Ok(Ok(_)) => return reject(events, peer, &worker, "closed before its greeting".into()),
        Ok(Err(e)) => return reject(events, peer, &worker, format!("greeting: {e}")),
        Err(_) => {
            let why = format!("no greeting within {HANDSHAKE_TIMEOUT:?}");
            return reject(events, peer, &worker, why);
        }
    };
    if let Some(claimed) = claimed_id(&greeting[..n])
        && Some(claimed) != last_octet(peer.ip())
    {
        let why = format!(
            "greeting claims v1 id {claimed}, but {} is declared for this worker",
            peer.ip()
        );
        return reject(events, peer, &worker, why);
    }
    let hello = Hello {
        worker,
        agent_version: AGENT_VERSION.to_string(),
        protocol_version: crate::protocol::PROTOCOL_VERSION,
        uptime_ms: 0,
        capabilities: Capabilities {
            lifecycle: Lifecycle::OneShot,
            ..Capabilities::default()
        },
        start: None,
    };
    let (done, done_rx) = oneshot::channel();
    let handle = session::spawn_with(id, hello, done, move |rx, retiring| {
        serve(r, w, rx, retiring)
    });
    Some((handle, done_rx))
}

fn reject<T>(
    events: &broadcast::Sender<AgentEvent>,
    peer: SocketAddr,
    worker: &str,
    reason: String,
) -> Option<T> {
    tracing::warn!(%peer, worker, "v1 worker rejected: {reason}");
    let _ = events.send(AgentEvent::Rejected {
        peer,
        worker: Some(worker.to_string()),
        reason,
    });
    None
}

/// The id a greeting states, as v1 reads it: the trimmed bytes as a decimal integer.
fn claimed_id(greeting: &[u8]) -> Option<u32> {
    std::str::from_utf8(greeting).ok()?.trim().parse().ok()
}

/// v1's worker id: the last octet of its IPv4 address.
pub fn last_octet(ip: IpAddr) -> Option<u32> {
    match ip {
        IpAddr::V4(a) => Some(u32::from(a.octets()[3])),
        IpAddr::V6(a) => a.to_ipv4_mapped().map(|a| u32::from(a.octets()[3])),
    }
}

/// Serves the session's commands over the v1 lines until the follow-up, the worker's end, or
/// an error; returns why it ended.
async fn serve<R, W>(
    mut r: R,
    mut w: W,
    mut rx: mpsc::Receiver<Command>,
    retiring: Arc<AtomicBool>,
) -> String
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    // One job per connection: the worker reboots or powers off after it.
    let mut used = false;
    let mut stray = [0u8; 256];
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return "orchestrator closed the session".to_string() };
                match cmd {
                    Command::FollowUp(what, reply) => {
                        let (line, why) = match what {
                            FollowUp::Reboot => (sysrq("REBOOT", "b"), "told to reboot"),
                            FollowUp::Poweroff => (sysrq("PWROFF", "o"), "told to power off"),
                            // v1 has no idle or next: the connection only ever carries one job.
                            FollowUp::Next | FollowUp::Idle => {
                                let _ = reply.send(Ok(()));
                                continue;
                            }
                        };
                        retiring.store(true, Ordering::SeqCst);
                        let sent = write_line(&mut w, &line).await;
                        let failed = sent.is_err();
                        let _ = reply.send(sent);
                        return if failed { "write failed".to_string() } else { why.to_string() };
                    }
                    Command::Invoke { reply, .. } if used || retiring.load(Ordering::SeqCst) => {
                        let _ = reply.send(Err(SessionError::Retiring));
                    }
                    Command::Invoke { invoke, timeout, reply } => {
                        used = true;
                        let started = Instant::now();
                        if write_line(&mut w, &job_line(&invoke)).await.is_err() {
                            let _ = reply.send(Err(SessionError::Closed));
                            return "write failed".to_string();
                        }
                        let got = tokio::time::timeout(timeout, read_reply(&mut r)).await;
                        let got = match got {
                            Ok(Ok(v)) => to_result(&invoke.id, &v).map_err(SessionError::Protocol),
                            Ok(Err(e)) => Err(e),
                            Err(_) => Err(SessionError::Timeout(timeout)),
                        };
                        match got {
                            Ok(result) => {
                                let rtt_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                                let _ = reply.send(Ok(Completed { result, rtt_us }));
                            }
                            Err(e) => {
                                let why = e.to_string();
                                let _ = reply.send(Err(e));
                                return why;
                            }
                        }
                    }
                }
            }
            // Nothing is expected from the worker between its greeting and the job (the rest
            // of a longer greeting is dropped); its end is the session's end.
            n = r.read(&mut stray), if !used => match n {
                Ok(0) => return "worker closed the connection".to_string(),
                Ok(_) => {}
                Err(e) => return format!("read failed: {e}"),
            },
        }
    }
}

async fn write_line<W: AsyncWrite + Unpin>(w: &mut W, line: &[u8]) -> Result<(), SessionError> {
    w.write_all(line).await.map_err(|_| SessionError::Closed)?;
    w.flush().await.map_err(|_| SessionError::Closed)
}

/// The job as v1 sends it: the builtin handler's name is v1's function id.
fn job_line(invoke: &Invoke) -> Vec<u8> {
    let f_id = if invoke.handler.is_empty() {
        &invoke.function
    } else {
        &invoke.handler
    };
    line(&json!({"i_id": invoke.id, "f_id": f_id, "f_args": invoke.input}))
}

/// The follow-up job that writes `data` to the worker's `/proc/sysrq-trigger`.
fn sysrq(i_id: &str, data: &str) -> Vec<u8> {
    line(&json!({"i_id": i_id, "f_id": "fwrite",
                 "f_args": {"path": "/proc/sysrq-trigger", "data": data}}))
}

/// One ASCII JSON line, as v1 encodes its jobs (MicroPython workers read them as ASCII).
fn line(v: &Value) -> Vec<u8> {
    let text = v.to_string();
    let mut out = Vec::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            // Only string contents can be non-ASCII in JSON text, so escapes are valid there.
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
            }
        }
    }
    out.push(b'\n');
    out
}

/// Reads the worker's result: one JSON value, ended by a newline or simply complete.
async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<Value, SessionError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = r.read(&mut chunk).await.map_err(|_| SessionError::Closed)?;
        if n == 0 {
            return Err(SessionError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(v) = serde_json::from_slice::<Value>(buf.trim_ascii()) {
            return Ok(v);
        }
        if buf.contains(&b'\n') {
            let shown = String::from_utf8_lossy(&buf[..buf.len().min(80)]).into_owned();
            return Err(SessionError::Protocol(format!(
                "the v1 result is not JSON: {shown:?}"
            )));
        }
        if buf.len() > MAX_REPLY {
            return Err(SessionError::Protocol(format!(
                "the v1 result exceeds {MAX_REPLY} bytes"
            )));
        }
    }
}

/// Our result from a v1 result object for invocation `id`.
fn to_result(id: &str, v: &Value) -> Result<InvokeResult, String> {
    let got = v.get("i_id").and_then(Value::as_str);
    if got != Some(id) {
        return Err(format!("v1 result for invocation {got:?}, expected {id:?}"));
    }
    let result = v
        .get("result")
        .cloned()
        .ok_or("the v1 result has no `result`")?;
    let exec_ms = v
        .get("exec_time")
        .and_then(Value::as_f64)
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .ok_or("the v1 result has no non-negative `exec_time`")?;
    Ok(InvokeResult {
        id: id.to_string(),
        outcome: Outcome::Output(result),
        // `as` saturates: an absurd figure from the worker cannot overflow.
        exec_us: (exec_ms * 1000.0).round() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn greetings_and_addresses_give_v1_ids() {
        assert_eq!(claimed_id(b"7\n"), Some(7));
        assert_eq!(claimed_id(b"w\n"), None);
        assert_eq!(last_octet("192.168.1.12".parse().expect("ip")), Some(12));
        assert_eq!(last_octet("::ffff:127.0.0.3".parse().expect("ip")), Some(3));
        assert_eq!(last_octet("::1".parse().expect("ip")), None);
    }

    #[test]
    fn jobs_and_follow_ups_are_ascii_json_lines() {
        let invoke = Invoke {
            id: "wl-1-0".into(),
            function: "sha".into(),
            runtime: "builtin".into(),
            handler: "cascading_sha256".into(),
            input: json!({"data": "é𝄞", "rounds": 2}),
            deadline_ms: 0,
            services: Default::default(),
            code: None,
        };
        let l = job_line(&invoke);
        assert!(l.is_ascii() && l.ends_with(b"\n"));
        let v: Value = serde_json::from_slice(&l).expect("json");
        assert_eq!(v["f_id"], "cascading_sha256");
        assert_eq!(v["i_id"], "wl-1-0");
        assert_eq!(v["f_args"]["data"], "é𝄞");
        let off: Value = serde_json::from_slice(&sysrq("PWROFF", "o")).expect("json");
        assert_eq!(off["f_args"]["path"], "/proc/sysrq-trigger");
        assert_eq!(off["f_args"]["data"], "o");
    }

    #[test]
    fn results_map_to_ours_and_bad_ones_are_refused() {
        let ok = json!({"i_id": "a", "f_id": "x", "result": "r", "exec_time": 1.5});
        let r = to_result("a", &ok).expect("result");
        assert_eq!(r.exec_us, 1500);
        assert_eq!(r.outcome, Outcome::Output(json!("r")));
        assert!(to_result("b", &ok).is_err());
        assert!(to_result("a", &json!({"i_id": "a", "exec_time": 1})).is_err());
        assert!(to_result("a", &json!({"i_id": "a", "result": 1})).is_err());
    }

    #[tokio::test]
    async fn one_job_then_the_follow_up_ends_the_session() {
        let (ours, theirs) = tokio::io::duplex(4096);
        let (r, w) = tokio::io::split(ours);
        let (tx, rx) = mpsc::channel(8);
        let retiring = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve(r, w, rx, retiring.clone()));
        let (mut wr, mut ww) = tokio::io::split(theirs);
        let invoke = Invoke {
            id: "j1".into(),
            function: "f".into(),
            runtime: "builtin".into(),
            handler: String::new(),
            input: json!({"n": 1}),
            deadline_ms: 0,
            services: Default::default(),
            code: None,
        };
        let (reply, got) = oneshot::channel();
        tx.send(Command::Invoke {
            invoke: Box::new(invoke.clone()),
            timeout: Duration::from_secs(5),
            reply,
        })
        .await
        .expect("send");
        let mut buf = vec![0u8; 256];
        let n = wr.read(&mut buf).await.expect("job");
        let job: Value = serde_json::from_slice(&buf[..n]).expect("job json");
        assert_eq!(job["f_id"], "f");
        ww.write_all(b"{\"i_id\": \"j1\", \"f_id\": \"f\", \"result\": 42, \"exec_time\": 3}\n")
            .await
            .expect("reply");
        let done = got.await.expect("answer").expect("completed");
        assert_eq!(done.result.outcome, Outcome::Output(json!(42)));
        assert_eq!(done.result.exec_us, 3000);

        // A second job on the same connection is refused unsent.
        let (reply, got) = oneshot::channel();
        tx.send(Command::Invoke {
            invoke: Box::new(invoke),
            timeout: Duration::from_secs(5),
            reply,
        })
        .await
        .expect("send");
        assert_eq!(
            got.await.expect("answer").err(),
            Some(SessionError::Retiring)
        );

        let (reply, got) = oneshot::channel();
        tx.send(Command::FollowUp(FollowUp::Reboot, reply))
            .await
            .expect("send");
        assert_eq!(got.await.expect("answer"), Ok(()));
        let n = wr.read(&mut buf).await.expect("follow-up");
        let follow: Value = serde_json::from_slice(&buf[..n]).expect("follow-up json");
        assert_eq!(follow["f_args"]["data"], "b");
        assert_eq!(task.await.expect("task"), "told to reboot");
        assert!(retiring.load(Ordering::SeqCst));
    }
}
