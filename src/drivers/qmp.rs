//! A tolerant QMP client over a unix socket.
//!
//! The `qapi` crate's own transport fails the whole stream on an event its schema does not know
//! and fails a command on an enum value newer than its schema (measured against QEMU 10.0.2
//! with qapi 0.15, schema 9.1; see notes/environment.md). A QEMU newer than the schema is the
//! normal case for us, so this transport reads every line as plain JSON first and only then
//! tries the typed form from `qapi`:
//!
//! - replies are matched to their command by the `id` we attach (any number of commands may be
//!   in flight; a reply with an unknown or missing id is logged and dropped);
//! - a reply whose payload does not fit the typed form is still returned, raw
//!   ([`Decoded::Raw`]), never an error of the connection;
//! - events become [`QmpEvent`]s: the ones the engine acts on are typed, everything else is
//!   kept as raw JSON ([`QmpEvent::Other`]); when the socket closes (QEMU died or quit) every
//!   subscriber gets [`QmpEvent::Closed`] once.
//!
//! ```text
//! Qmp::connect(path, timeout) -> greeting + qmp_capabilities done
//! qmp.execute(&qapi::qmp::query_status {}) -> Decoded<StatusInfo>
//! qmp.execute_raw("query-name", json!({})) -> serde_json::Value
//! qmp.events() -> broadcast::Receiver<QmpEvent>
//! ```

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// Longest QMP message we accept. `query-qmp-schema` is the largest reply QEMU sends (~200 KB);
/// anything far beyond it is a broken peer, and reading it unbounded would eat memory.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024;

/// How long a command waits for its reply unless told otherwise.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Events kept for a slow subscriber before it starts missing the oldest.
const EVENT_BACKLOG: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error("QMP I/O: {0}")]
    Io(#[from] io::Error),
    #[error("QMP greeting: {0}")]
    Greeting(String),
    #[error("QMP: no greeting within {0:?} (is another client connected to this QEMU?)")]
    GreetingTimeout(Duration),
    /// QEMU answered the command with an error reply. The class is kept as a string: QEMU may
    /// add classes that `qapi`'s `ErrorClass` does not have.
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP {command}: no reply within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("QMP connection closed")]
    Closed,
    #[error("QMP {command}: reply does not match the schema ({error}): {raw}")]
    Decode {
        command: String,
        error: String,
        raw: String,
    },
}

/// A command's successful reply: typed when it fits the `qapi` schema, raw JSON otherwise
/// (typically an enum value newer than the schema).
#[derive(Debug, Clone)]
pub enum Decoded<T> {
    Typed(T),
    Raw { value: Value, error: String },
}

/// What QMP tells us asynchronously. The engine acts on the typed ones; the rest are kept raw.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpEvent {
    /// The VM stopped for good (with `-no-reboot` also on a guest reboot). `reason` is QEMU's
    /// `ShutdownCause` as a string, so a cause newer than the schema is still reported.
    Shutdown {
        guest: bool,
        reason: String,
    },
    /// `system_powerdown` was requested (the ACPI button was pressed); the guest may ignore it.
    Powerdown,
    Reset {
        guest: bool,
        reason: String,
    },
    Stop,
    Resume,
    /// Any other event, known to the schema or not: name and `data` as QEMU sent them.
    Other {
        event: String,
        data: Value,
    },
    /// The QMP socket closed: QEMU exited (or closed the monitor). Sent once.
    Closed,
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>;

/// One QMP connection. Dropping it closes the socket (QEMU then accepts the next client).
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    events: broadcast::Sender<QmpEvent>,
    closed: Arc<AtomicBool>,
    reader: JoinHandle<()>,
    greeting: Value,
    peer_pid: Option<i32>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // The reader task owns the read half; without this the socket would stay half-open and
        // QEMU would not accept the next client (e.g. our own adopt after a restart).
        self.reader.abort();
    }
}

impl Qmp {
    /// Connects, reads the greeting and leaves negotiation mode (`qmp_capabilities`).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        Qmp::handshake(stream, timeout).await
    }

    /// Like [`Qmp::connect`] on an already connected stream (tests serve fake peers this way).
    pub async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp, QmpError> {
        // The PID of the process that owns the socket, from the kernel: the strongest evidence
        // of which QEMU we are talking to, whatever a pidfile says.
        let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
        let (read, write) = stream.into_split();
        let mut read = BufReader::new(read);
        let greeting = tokio::time::timeout(timeout, read_message(&mut read))
            .await
            .map_err(|_| QmpError::GreetingTimeout(timeout))??
            .ok_or_else(|| QmpError::Greeting("connection closed before the greeting".into()))?;
        // Checked as JSON, not as qapi's `QapiCapabilities`: a new capability or version field
        // must not stop us from talking to a newer QEMU.
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Greeting(format!(
                "expected {{\"QMP\": ...}}, got {}",
                truncate(&greeting.to_string())
            )));
        }
        let pending: Pending = Arc::default();
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        let closed = Arc::new(AtomicBool::new(false));
        let reader = tokio::spawn(read_loop(
            read,
            Arc::clone(&pending),
            events.clone(),
            Arc::clone(&closed),
        ));
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
            events,
            closed,
            reader,
            greeting,
            peer_pid,
        };
        qmp.execute_typed_within(&qapi::qmp::qmp_capabilities { enable: None }, timeout)
            .await?;
        Ok(qmp)
    }

    /// The greeting QEMU sent (`{"QMP": {"version": ..., "capabilities": [...]}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// The peer's PID from SO_PEERCRED, when the kernel reports one.
    pub fn peer_pid(&self) -> Option<i32> {
        self.peer_pid
    }

    /// Whether the socket has closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Events from now on. If the connection is already closed, the receiver gets a single
    /// [`QmpEvent::Closed`], so a late subscriber still learns that QEMU is gone.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        if self.is_closed() {
            let (tx, rx) = broadcast::channel(1);
            let _ = tx.send(QmpEvent::Closed);
            return rx;
        }
        self.events.subscribe()
    }

    /// Runs a typed command; the reply is typed when it fits the schema, raw otherwise.
    pub async fn execute<C: qapi::Command>(&self, command: &C) -> Result<Decoded<C::Ok>, QmpError> {
        self.execute_within(command, DEFAULT_COMMAND_TIMEOUT).await
    }

    pub async fn execute_within<C: qapi::Command>(
        &self,
        command: &C,
        timeout: Duration,
    ) -> Result<Decoded<C::Ok>, QmpError> {
        let args = serde_json::to_value(command).map_err(|e| QmpError::Decode {
            command: C::NAME.into(),
            error: format!("cannot serialize the arguments: {e}"),
            raw: String::new(),
        })?;
        let value = self.execute_raw_within(C::NAME, args, timeout).await?;
        Ok(match serde_json::from_value::<C::Ok>(value.clone()) {
            Ok(typed) => Decoded::Typed(typed),
            Err(e) => Decoded::Raw {
                value,
                error: e.to_string(),
            },
        })
    }

    /// Runs a command whose reply must fit the schema (ones with no enums in the reply, such
    /// as `qmp_capabilities`, `quit`, `system_powerdown`).
    pub async fn execute_typed_within<C: qapi::Command>(
        &self,
        command: &C,
        timeout: Duration,
    ) -> Result<C::Ok, QmpError> {
        match self.execute_within(command, timeout).await? {
            Decoded::Typed(ok) => Ok(ok),
            Decoded::Raw { value, error } => Err(QmpError::Decode {
                command: C::NAME.into(),
                error,
                raw: truncate(&value.to_string()),
            }),
        }
    }

    /// Runs any command by name; `arguments` is omitted when it is an empty object or null.
    pub async fn execute_raw(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_raw_within(command, arguments, DEFAULT_COMMAND_TIMEOUT)
            .await
    }

    pub async fn execute_raw_within(
        &self,
        command: &str,
        arguments: Value,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        if self.is_closed() {
            return Err(QmpError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut message = json!({ "execute": command, "id": id });
        let has_args = match &arguments {
            Value::Null => false,
            Value::Object(map) => !map.is_empty(),
            _ => true,
        };
        if has_args {
            message["arguments"] = arguments;
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        // The reader may have closed between the check above and the insert; it drains the
        // map when it closes, so re-check to never wait for a reply that cannot come.
        if self.is_closed() {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Closed);
        }
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        let sent = {
            let mut writer = self.writer.lock().await;
            writer.write_all(&line).await
        };
        if let Err(e) = sent {
            lock(&self.pending).remove(&id);
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => QmpError::Closed,
                _ => QmpError::Io(e),
            });
        }
        let reply = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(QmpError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(QmpError::Timeout {
                    command: command.into(),
                    timeout,
                });
            }
        };
        reply.map_err(|e| match e {
            // The reader does not know command names; fill it in here.
            QmpError::Command { class, desc, .. } => QmpError::Command {
                command: command.into(),
                class,
                desc,
            },
            other => other,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts and
    // removes), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn truncate(s: &str) -> String {
    const KEEP: usize = 300;
    if s.len() <= KEEP {
        return s.to_owned();
    }
    let mut end = KEEP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Reads one newline-terminated JSON message. `Ok(None)` at end of stream. Lines that are not
/// JSON are logged and skipped: QEMU never sends them, and a confused peer should not take the
/// connection down.
pub async fn read_message<R: AsyncBufRead + Unpin>(
    read: &mut R,
) -> Result<Option<Value>, QmpError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        loop {
            let buf = read.fill_buf().await?;
            if buf.is_empty() {
                return Ok(None);
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let n = chunk.len();
            if line.len() + n > MAX_MESSAGE {
                return Err(QmpError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("QMP message longer than {MAX_MESSAGE} bytes"),
                )));
            }
            line.extend_from_slice(chunk);
            read.consume(n);
            if done {
                break;
            }
        }
        let text = line.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Value>(text) {
            Ok(v) => return Ok(Some(v)),
            Err(e) => tracing::warn!(
                "QMP: skipping a line that is not JSON ({e}): {}",
                truncate(&String::from_utf8_lossy(text))
            ),
        }
    }
}

async fn read_loop(
    mut read: BufReader<OwnedReadHalf>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    closed: Arc<AtomicBool>,
) {
    loop {
        match read_message(&mut read).await {
            Ok(Some(message)) => dispatch(message, &pending, &events),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("QMP: closing the connection: {e}");
                break;
            }
        }
    }
    closed.store(true, Ordering::SeqCst);
    // Fail every command still waiting: their replies cannot come any more.
    for (_, tx) in lock(&pending).drain() {
        let _ = tx.send(Err(QmpError::Closed));
    }
    let _ = events.send(QmpEvent::Closed);
}

/// What one QMP message is, as far as this client cares.
#[derive(Debug)]
pub enum Incoming {
    Event(QmpEvent),
    /// A reply to the command we sent with `id`.
    Reply {
        id: u64,
        result: Result<Value, QmpError>,
    },
    /// Neither event nor reply we can match: logged and dropped.
    Ignored(&'static str),
}

/// Sorts a message from QEMU into event, reply or noise. Pure, so it can be fuzzed apart from
/// the socket.
pub fn classify(message: &Value) -> Incoming {
    if let Some(name) = message.get("event").and_then(Value::as_str) {
        return Incoming::Event(parse_event(name, message));
    }
    let result = if let Some(ret) = message.get("return") {
        Ok(ret.clone())
    } else if let Some(err) = message.get("error") {
        let field = |k: &str| {
            err.get(k)
                .and_then(Value::as_str)
                .unwrap_or("(missing)")
                .to_owned()
        };
        Err(QmpError::Command {
            command: String::new(),
            class: field("class"),
            desc: field("desc"),
        })
    } else {
        return Incoming::Ignored("neither event nor reply");
    };
    match message.get("id").and_then(Value::as_u64) {
        Some(id) => Incoming::Reply { id, result },
        None => Incoming::Ignored("reply without our id"),
    }
}

fn dispatch(message: Value, pending: &Pending, events: &broadcast::Sender<QmpEvent>) {
    match classify(&message) {
        Incoming::Event(event) => {
            tracing::debug!("QMP event {event:?}");
            // No subscribers is fine: events are advisory, state is re-read by query-status.
            let _ = events.send(event);
        }
        Incoming::Reply { id, result } => match lock(pending).remove(&id) {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => tracing::debug!("QMP: reply to id {id} that nobody waits for (timed out?)"),
        },
        Incoming::Ignored(why) => tracing::warn!(
            "QMP: ignoring a message ({why}): {}",
            truncate(&message.to_string())
        ),
    }
}

/// Typed through `qapi::qmp::Event` when the event fits the schema; the few events the engine
/// acts on are also recognised from raw JSON when they do not (e.g. a `SHUTDOWN` with a
/// `reason` newer than the schema), and anything else is kept raw.
fn parse_event(name: &str, message: &Value) -> QmpEvent {
    use qapi::qmp::Event;
    let data = message.get("data").cloned().unwrap_or(Value::Null);
    if let Ok(typed) = serde_json::from_value::<Event>(message.clone()) {
        match typed {
            Event::SHUTDOWN { data, .. } => {
                return QmpEvent::Shutdown {
                    guest: data.guest,
                    reason: enum_name(&data.reason),
                };
            }
            Event::RESET { data, .. } => {
                return QmpEvent::Reset {
                    guest: data.guest,
                    reason: enum_name(&data.reason),
                };
            }
            Event::POWERDOWN { .. } => return QmpEvent::Powerdown,
            Event::STOP { .. } => return QmpEvent::Stop,
            Event::RESUME { .. } => return QmpEvent::Resume,
            _ => {}
        }
    }
    let guest = data.get("guest").and_then(Value::as_bool).unwrap_or(false);
    let reason = data
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    match name {
        "SHUTDOWN" => QmpEvent::Shutdown { guest, reason },
        "RESET" => QmpEvent::Reset { guest, reason },
        "POWERDOWN" => QmpEvent::Powerdown,
        "STOP" => QmpEvent::Stop,
        "RESUME" => QmpEvent::Resume,
        _ => QmpEvent::Other {
            event: name.to_owned(),
            data,
        },
    }
}

/// The wire name of a `qapi` enum value (its serde form).
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_typed_or_raw() {
        let shutdown = json!({"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"},
                              "timestamp": {"seconds": 1, "microseconds": 2}});
        assert_eq!(
            parse_event("SHUTDOWN", &shutdown),
            QmpEvent::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            }
        );
        // A cause the schema does not know still yields a Shutdown.
        let newer = json!({"event": "SHUTDOWN", "data": {"guest": false, "reason": "warp-core-breach"},
                           "timestamp": {"seconds": 1, "microseconds": 2}});
        assert_eq!(
            parse_event("SHUTDOWN", &newer),
            QmpEvent::Shutdown {
                guest: false,
                reason: "warp-core-breach".into()
            }
        );
        let unknown = json!({"event": "FROBNICATED", "data": {"x": 1},
                             "timestamp": {"seconds": 1, "microseconds": 2}});
        assert_eq!(
            parse_event("FROBNICATED", &unknown),
            QmpEvent::Other {
                event: "FROBNICATED".into(),
                data: json!({"x": 1})
            }
        );
    }

    #[tokio::test]
    async fn read_message_skips_garbage_and_bounds_length() {
        let input: &[u8] = b"not json\n\n{\"a\":1}\n{\"b\":";
        let mut r = BufReader::new(input);
        assert_eq!(
            read_message(&mut r).await.ok().flatten(),
            Some(json!({"a":1}))
        );
        // A truncated final message is end of stream, not a panic.
        assert!(read_message(&mut r).await.ok().flatten().is_none());

        let mut huge = vec![b' '; MAX_MESSAGE + 10];
        huge.push(b'\n');
        let mut r = BufReader::new(huge.as_slice());
        assert!(read_message(&mut r).await.is_err());
    }
}
