//! One authenticated agent connection: a task that owns the socket, answers heartbeats, and
//! runs the invocations and follow-ups the scheduler sends through a `SessionHandle`.

use super::framing::{read_message, write_message};
use crate::protocol::{Heartbeat, Hello, Invoke, InvokeResult, Message};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// What the scheduler can tell an agent after a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    Next,
    Idle,
    Poweroff,
    Reboot,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    #[error("the agent connection is closed")]
    Closed,
    #[error("no result within {0:?}")]
    Timeout(Duration),
    #[error("protocol error from the agent: {0}")]
    Protocol(String),
    /// The agent was told to power off or reboot before this call reached it, so it was never
    /// sent: the caller may wait for the worker's next session without counting an attempt.
    #[error("the agent was told to power off before the call reached it")]
    Retiring,
}

/// A result together with the round trip measured here, from writing `invoke` to reading the
/// result.
#[derive(Debug, Clone)]
pub struct Completed {
    pub result: InvokeResult,
    pub rtt_us: u64,
}

pub(super) enum Command {
    Invoke {
        // Boxed: with a user function's code an Invoke dwarfs the other command.
        invoke: Box<Invoke>,
        timeout: Duration,
        reply: oneshot::Sender<Result<Completed, SessionError>>,
    },
    FollowUp(FollowUp, oneshot::Sender<Result<(), SessionError>>),
}

/// Cheap to clone; every clone talks to the same connection.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub hello: Hello,
    pub connected_at: Instant,
    tx: mpsc::Sender<Command>,
    /// Set when a power-off or reboot is sent: the session is on its way out.
    retiring: Arc<AtomicBool>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.id)
            .field("worker", &self.hello.worker)
            .finish()
    }
}

impl SessionHandle {
    pub fn worker(&self) -> &str {
        &self.hello.worker
    }

    pub fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Whether this session was told to power off or reboot: a caller looking for a worker to
    /// run something should wait for its next session instead.
    pub fn is_retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Sends one invocation and waits for its result (or the connection's end, or `timeout`).
    pub async fn invoke(
        &self,
        invoke: Invoke,
        timeout: Duration,
    ) -> Result<Completed, SessionError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Invoke {
                invoke: Box::new(invoke),
                timeout,
                reply,
            })
            .await
            .map_err(|_| SessionError::Closed)?;
        rx.await.unwrap_or(Err(SessionError::Closed))
    }

    pub async fn follow_up(&self, what: FollowUp) -> Result<(), SessionError> {
        if matches!(what, FollowUp::Poweroff | FollowUp::Reboot) {
            self.retiring.store(true, Ordering::SeqCst);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::FollowUp(what, reply))
            .await
            .map_err(|_| SessionError::Closed)?;
        rx.await.unwrap_or(Err(SessionError::Closed))
    }
}

/// Starts the task for an authenticated connection; it ends when the peer goes away, a
/// protocol error occurs or every handle is dropped, and then sends `()` on `done`.
pub fn spawn(
    id: u64,
    hello: Hello,
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    done: oneshot::Sender<String>,
) -> SessionHandle {
    // A Warm agent beats every HEARTBEAT while it waits; one silent for several periods is
    // gone (a board cut off without closing its socket), and its session must end so the
    // worker can claim its name again when it comes back.
    let silence = (hello.capabilities.lifecycle == crate::protocol::Lifecycle::Warm)
        .then_some(super::endpoint::HEARTBEAT * SILENT_BEATS);
    spawn_with(id, hello, done, move |rx, _| {
        run(reader, writer, rx, silence)
    })
}

/// Heartbeat periods a Warm agent may miss before its session is closed.
pub const SILENT_BEATS: u32 = 5;

/// Starts a session whose connection is served by `serve` (our protocol, or another wire
/// protocol speaking the same commands); `serve` gets the commands and the retiring flag.
pub(super) fn spawn_with<F, Fut>(
    id: u64,
    hello: Hello,
    done: oneshot::Sender<String>,
    serve: F,
) -> SessionHandle
where
    F: FnOnce(mpsc::Receiver<Command>, Arc<AtomicBool>) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    let retiring = Arc::new(AtomicBool::new(false));
    let handle = SessionHandle {
        id,
        hello,
        connected_at: Instant::now(),
        tx,
        retiring: retiring.clone(),
    };
    let task = serve(rx, retiring);
    tokio::spawn(async move {
        let reason = task.await;
        let _ = done.send(reason);
    });
    handle
}

/// Kept for tests that hand a raw stream over.
pub fn split(
    stream: TcpStream,
) -> (
    BufReader<tokio::net::tcp::OwnedReadHalf>,
    tokio::net::tcp::OwnedWriteHalf,
) {
    let (r, w) = stream.into_split();
    (BufReader::new(r), w)
}

async fn run(
    mut reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    mut writer: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Command>,
    silence: Option<Duration>,
) -> String {
    let mut last_heard = Instant::now();
    // Commands run in the order they were queued, so an invoke queued after a power-off can be
    // refused here before the agent sees it: whoever queued it learns the call was never sent.
    let mut retiring = false;
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return "orchestrator closed the session".to_string() };
                match cmd {
                    Command::FollowUp(what, reply) => {
                        let msg = match what {
                            FollowUp::Next => Message::Next,
                            FollowUp::Idle => Message::Idle,
                            FollowUp::Poweroff => Message::Poweroff,
                            FollowUp::Reboot => Message::Reboot,
                        };
                        retiring |= matches!(what, FollowUp::Poweroff | FollowUp::Reboot);
                        let r = write_message(&mut writer, &msg).await.map_err(|_| SessionError::Closed);
                        let failed = r.is_err();
                        let _ = reply.send(r);
                        if failed {
                            return "write failed".to_string();
                        }
                    }
                    Command::Invoke { reply, .. } if retiring => {
                        let _ = reply.send(Err(SessionError::Retiring));
                    }
                    Command::Invoke { invoke, timeout, reply } => {
                        let id = invoke.id.clone();
                        let started = Instant::now();
                        if write_message(&mut writer, &Message::Invoke(*invoke)).await.is_err() {
                            let _ = reply.send(Err(SessionError::Closed));
                            return "write failed".to_string();
                        }
                        let outcome = tokio::time::timeout(timeout, await_result(&mut reader, &mut writer, &id)).await;
                        last_heard = Instant::now();
                        match outcome {
                            Ok(Ok(result)) => {
                                let rtt_us = started.elapsed().as_micros() as u64;
                                let _ = reply.send(Ok(Completed { result, rtt_us }));
                            }
                            Ok(Err(e)) => {
                                let why = e.to_string();
                                let _ = reply.send(Err(e));
                                return why;
                            }
                            Err(_) => {
                                let _ = reply.send(Err(SessionError::Timeout(timeout)));
                                return format!("no result within {timeout:?}");
                            }
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until((last_heard + silence.unwrap_or_default()).into()), if silence.is_some() => {
                return format!("no heartbeat for {:?}", silence.unwrap_or_default());
            }
            msg = read_message(&mut reader) => {
                last_heard = Instant::now();
                match msg {
                    Ok(None) => return "agent closed the connection".to_string(),
                    Ok(Some(Message::Heartbeat(Heartbeat { seq }))) => {
                        if write_message(&mut writer, &Message::Heartbeat(Heartbeat { seq })).await.is_err() {
                            return "write failed".to_string();
                        }
                    }
                    Ok(Some(other)) => return format!("unexpected `{}` while idle", other.kind()),
                    Err(e) => return format!("protocol error: {e}"),
                }
            }
        }
    }
}

async fn await_result(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    id: &str,
) -> Result<InvokeResult, SessionError> {
    loop {
        match read_message(reader).await {
            Ok(Some(Message::Result(r))) if r.id == id => return Ok(r),
            Ok(Some(Message::Result(r))) => {
                return Err(SessionError::Protocol(format!(
                    "result for unknown invocation {}",
                    r.id
                )));
            }
            Ok(Some(Message::Heartbeat(h))) => {
                write_message(writer, &Message::Heartbeat(h))
                    .await
                    .map_err(|_| SessionError::Closed)?;
            }
            Ok(Some(Message::Error(e))) => return Err(SessionError::Protocol(e.message)),
            Ok(Some(other)) => {
                return Err(SessionError::Protocol(format!(
                    "unexpected `{}` while waiting for a result",
                    other.kind()
                )));
            }
            Ok(None) => return Err(SessionError::Closed),
            Err(e) => return Err(SessionError::Protocol(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Capabilities, decode};
    use tokio::io::{AsyncBufReadExt, BufReader as TokioBufReader};
    use tokio::net::TcpListener;

    /// A session on a loopback connection and the agent's end of it.
    async fn pair() -> (SessionHandle, TokioBufReader<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let agent = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let (reader, writer) = split(server);
        let hello = Hello {
            worker: "w".into(),
            agent_version: "test".into(),
            protocol_version: crate::protocol::PROTOCOL_VERSION,
            uptime_ms: 0,
            capabilities: Capabilities::default(),
            start: None,
        };
        let (done, _) = oneshot::channel();
        (
            spawn(1, hello, reader, writer, done),
            TokioBufReader::new(agent),
        )
    }

    fn invoke(id: &str) -> Invoke {
        Invoke {
            id: id.into(),
            function: "float_operations".into(),
            runtime: crate::protocol::RUNTIME_BUILTIN.into(),
            handler: String::new(),
            input: serde_json::json!({"n": 1}),
            deadline_ms: 1000,
            services: Default::default(),
            code: None,
        }
    }

    #[tokio::test]
    async fn an_invoke_queued_after_a_poweroff_is_refused_unsent() {
        let (session, mut agent) = pair().await;
        assert!(!session.is_retiring());
        // Queued in this order, as a release racing a call would queue them.
        let off = session.follow_up(FollowUp::Poweroff);
        let call = session.invoke(invoke("late"), Duration::from_secs(5));
        let (off, call) = tokio::join!(off, call);
        assert_eq!(off, Ok(()));
        assert!(matches!(call, Err(SessionError::Retiring)), "{call:?}");
        assert!(session.is_retiring());

        // The agent saw the power-off and nothing after it.
        let mut line = String::new();
        agent.read_line(&mut line).await.expect("read");
        assert!(
            matches!(decode(line.as_bytes()), Ok(Message::Poweroff)),
            "{line}"
        );
        drop(session);
        line.clear();
        let more = agent.read_line(&mut line).await.expect("read");
        assert_eq!(more, 0, "nothing after poweroff, got {line:?}");
    }
}
