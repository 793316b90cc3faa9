//! Orchestrator ⇄ agent wire protocol: message types, the newline-delimited JSON codec, a
//! bounded synchronous frame reader and the HMAC challenge/response helpers.
//!
//! A session, as the worker sees it (the worker dials):
//!
//! ```text
//! agent  → hello {worker, agentVersion, protocolVersion, uptimeMs, capabilities}
//! server → challenge {nonce}                       (or denied / error)
//! agent  → auth {proof = hex HMAC-SHA256(token, nonce)}
//! server → authOk {heartbeatMs?}                   (or denied, then close)
//! server → invoke {id, function, runtime, handler, input, deadlineMs}
//! agent  → result {id, outcome: {output: …} | {error: {kind, message}}, execUs}
//! server → next | idle | invoke | poweroff | reboot
//! ```
//!
//! Heartbeats: a Warm agent sends `heartbeat {seq}` while it waits; the orchestrator answers
//! each one with a heartbeat carrying the same `seq`. The agent never answers a heartbeat, so the
//! two sides cannot ping-pong. Either side may send `error {message}` before closing.
//!
//! Every frame is one JSON object on one line, at most [`MAX_FRAME`] bytes without the newline.
//! Unknown fields are ignored (forward compatibility); an unknown `type` is
//! [`ProtocolError::UnknownType`]. The codec ([`encode`], [`decode`]) does no I/O so the async
//! orchestrator can reuse it with its own line reader.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped on any incompatible change; the orchestrator refuses a hello with another version.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame, in bytes, not counting the terminating newline.
pub const MAX_FRAME: usize = 1 << 20;

/// The only runtime the agent implements today: a function compiled into the agent.
pub const RUNTIME_BUILTIN: &str = "builtin";

/// A user function compiled to WebAssembly (WASI preview 1), shipped in [`Invoke::code`].
pub const RUNTIME_WASM: &str = "wasm";

/// A user function that is a static executable for the worker's architecture, shipped like a
/// wasm module.
pub const RUNTIME_EXEC: &str = "exec";

/// Largest user-function module, in bytes: base64 makes it 4/3 larger and the invoke frame
/// must stay under [`MAX_FRAME`] with room for the input.
pub const MAX_MODULE: usize = 720 * 1024;

/// Every `type` value this version understands, in declaration order of [`Message`].
pub const MESSAGE_TYPES: &[&str] = &[
    "hello",
    "challenge",
    "auth",
    "authOk",
    "denied",
    "invoke",
    "result",
    "next",
    "idle",
    "poweroff",
    "reboot",
    "heartbeat",
    "error",
];

/// Why a frame could not be read or understood. After any of these the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame exceeds the maximum of {max} bytes")]
    FrameTooLarge { max: usize },
    #[error("connection closed in the middle of a frame ({0} bytes unterminated)")]
    Truncated(usize),
    #[error("frame is not valid JSON: {0}")]
    Malformed(String),
    #[error("frame has no string field \"type\"")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} message: {reason}")]
    Invalid { kind: String, reason: String },
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl ProtocolError {
    /// True when a read timed out (socket read timeout) and may simply be retried: the
    /// [`FrameReader`] keeps its partial frame across such errors.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ProtocolError::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// One protocol message. Serialized as a JSON object whose `type` names the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    Hello(Hello),
    Challenge(Challenge),
    Auth(Auth),
    AuthOk(AuthOk),
    Denied(Denied),
    Invoke(Invoke),
    Result(InvokeResult),
    Next,
    Idle,
    Poweroff,
    Reboot,
    Heartbeat(Heartbeat),
    Error(ErrorMessage),
}

impl Message {
    /// The wire `type` of this message, for logs.
    pub fn kind(&self) -> &'static str {
        let i = match self {
            Message::Hello(_) => 0,
            Message::Challenge(_) => 1,
            Message::Auth(_) => 2,
            Message::AuthOk(_) => 3,
            Message::Denied(_) => 4,
            Message::Invoke(_) => 5,
            Message::Result(_) => 6,
            Message::Next => 7,
            Message::Idle => 8,
            Message::Poweroff => 9,
            Message::Reboot => 10,
            Message::Heartbeat(_) => 11,
            Message::Error(_) => 12,
        };
        MESSAGE_TYPES[i]
    }
}

/// How long a worker stays up: one invocation per boot, or connected and heartbeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    #[default]
    OneShot,
    Warm,
}

impl std::str::FromStr for Lifecycle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "oneshot" => Ok(Lifecycle::OneShot),
            "warm" => Ok(Lifecycle::Warm),
            _ => Err(format!(
                "unknown lifecycle {s:?} (expected oneshot or warm)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub worker: String,
    pub agent_version: String,
    pub protocol_version: u32,
    /// Time since the worker's kernel booted, when hello was sent: the boot-to-ready time.
    pub uptime_ms: u64,
    pub capabilities: Capabilities,
    /// Set when the agent parked for a snapshot before dialling (`microfaas.snapshot=park`):
    /// how this start left the park and its random id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<ParkedStart>,
}

/// What the console says when an agent parks for a snapshot (see `agent::resume`); the host
/// waits for this text before it snapshots the guest or lets it go.
pub const PARKED_MARKER: &str = "parked for a snapshot";
/// What the console says once the parked agent took the host's go line; the host holds the
/// console socket open until then.
pub const RELEASED_MARKER: &str = "left the park";

/// A start out of the snapshot park.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedStart {
    /// 8 random bytes in hex, drawn after the host's entropy was mixed in: differs per start.
    pub id: String,
    /// Restored from a snapshot (else the boot that took it, or one without a snapshot).
    pub restored: bool,
    /// The host's entropy reached the kernel and its RNG was reseeded from it.
    #[serde(default)]
    pub reseeded: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub runtimes: Vec<String>,
    pub functions: Vec<String>,
    #[serde(default)]
    pub lifecycle: Lifecycle,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Challenge {
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Lower-case hex HMAC-SHA256 of the nonce keyed with the cluster token ([`auth::prove`]).
    pub proof: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct AuthOk {
    /// Heartbeat period the orchestrator wants from a Warm worker; the agent's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Denied {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invoke {
    pub id: String,
    /// The Function resource's name (for logs and records).
    pub function: String,
    /// `builtin`, `wasm` or `exec`; a string rather than an enum so a newer runtime name reaches the agent
    /// and is answered with an `unsupportedRuntime` result instead of a protocol error.
    pub runtime: String,
    /// For `builtin`: the name in [`crate::functions::names`]; unused by `wasm`.
    pub handler: String,
    #[serde(default)]
    pub input: Value,
    /// Wall-clock budget for the function; 0 means none.
    pub deadline_ms: u64,
    /// The services this call may use, by the role the function asks for (`redis`,
    /// `postgres`, `s3`, `queue`), resolved by the orchestrator for this worker and carrying
    /// the credentials for this call only. Absent for functions that use none.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub services: std::collections::BTreeMap<String, ServiceBinding>,
    /// A user function's code and limits (runtimes `wasm`, `exec`); absent for builtins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<UserCode>,
}

/// One service as a worker reaches it: where, and with which credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBinding {
    /// The service's name in the Cluster, for error messages.
    pub name: String,
    /// `redis`, `postgres`, `s3` or `mqtt`.
    pub protocol: String,
    /// `HOST:PORT` as this worker reaches it (a guestfwd address on a VM).
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// postgres: the database; s3: the bucket; mqtt: the default topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// s3: the SigV4 region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

// Hand-written so a logged invocation never shows a credential.
impl std::fmt::Debug for ServiceBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBinding")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("address", &self.address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("target", &self.target)
            .field("region", &self.region)
            .finish()
    }
}

/// A user function as it travels to the worker: with every invocation, so a OneShot worker
/// (one call per boot) needs no second round trip; a Warm agent keeps the compiled module
/// per boot, keyed by its digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserCode {
    /// The module, standard base64.
    pub module: String,
    /// Lower-case hex sha256 of the decoded module; the agent refuses a module that differs.
    pub sha256: String,
    /// Linear memory cap in bytes (`Function.spec.memory`); the agent's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Total wasmi fuel for the call (`Function.spec.fuel`); bounded by the deadline only
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The function's environment (`Function.spec.env`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
    /// exec: arguments after argv[0] (`Function.spec.command`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeResult {
    pub id: String,
    pub outcome: Outcome,
    /// Time spent inside the function call only, in microseconds (0 when it never ran).
    pub exec_us: u64,
}

/// What an invocation produced: `{"output": …}` or `{"error": {"kind": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Output(Value),
    Error(InvokeError),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvokeError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// The function ran and failed.
    Error,
    /// The function did not finish within its deadline.
    Timeout,
    /// The handler is not known to this agent.
    UnknownFunction,
    /// The runtime is not implemented by this agent.
    UnsupportedRuntime,
    /// The input does not have the shape the function needs.
    BadInput,
    /// A kind from a newer peer; kept so such a result still decodes.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorMessage {
    pub message: String,
}

/// One frame: the JSON object followed by `\n`.
pub fn encode(msg: &Message) -> Vec<u8> {
    // Serializing these plain data types into a Vec cannot fail: no maps with non-string keys
    // and serde_json::Value never holds NaN. Fall back to an error frame rather than panic.
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|e| {
        format!(
            r#"{{"type":"error","message":{}}}"#,
            Value::String(format!("encode failed: {e}"))
        )
        .into_bytes()
    });
    out.push(b'\n');
    out
}

/// Parse one frame. A trailing `\n` or `\r\n` is accepted; so is a bare object.
pub fn decode(line: &[u8]) -> Result<Message, ProtocolError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_FRAME {
        return Err(ProtocolError::FrameTooLarge { max: MAX_FRAME });
    }
    // Two steps so that an unknown `type` is told apart from a malformed known one.
    let value: Value =
        serde_json::from_slice(line).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let kind = match value.get("type") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ProtocolError::MissingType),
    };
    if !MESSAGE_TYPES.contains(&kind.as_str()) {
        return Err(ProtocolError::UnknownType(kind));
    }
    serde_json::from_value(value).map_err(|e| ProtocolError::Invalid {
        kind,
        reason: e.to_string(),
    })
}

/// Reads newline-delimited frames from a blocking reader, holding at most `max + 1` bytes of
/// an incomplete frame so a peer cannot make it allocate without bound.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// How much of `buf` is known to contain no newline.
    scanned: usize,
    max: usize,
}

const READ_CHUNK: usize = 16 * 1024;

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_max(inner, MAX_FRAME)
    }

    pub fn with_max(inner: R, max: usize) -> Self {
        FrameReader {
            inner,
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The next frame without its newline; `Ok(None)` on a clean end of stream between frames.
    /// Timeouts of the underlying reader surface as [`ProtocolError::Io`] and can be retried;
    /// any other error leaves the stream unusable.
    pub fn read_frame(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + pos;
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                line.pop();
                if line.len() > self.max {
                    return Err(ProtocolError::FrameTooLarge { max: self.max });
                }
                return Ok(Some(line));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return Err(ProtocolError::FrameTooLarge { max: self.max });
            }
            let want = (self.max + 1 - self.buf.len()).min(READ_CHUNK);
            let n = match self.inner.read(&mut chunk[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ProtocolError::Truncated(self.buf.len()))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// [`Self::read_frame`] followed by [`decode`].
    pub fn read_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        match self.read_frame()? {
            Some(line) => decode(&line).map(Some),
            None => Ok(None),
        }
    }
}

/// Challenge/response authentication with the shared cluster token.
pub mod auth {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    type HmacSha256 = Hmac<Sha256>;

    fn mac(token: &[u8], nonce: &str) -> HmacSha256 {
        // HMAC accepts keys of any length, so new_from_slice cannot fail here.
        let mut m = match HmacSha256::new_from_slice(token) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        m.update(nonce.as_bytes());
        m
    }

    /// Lower-case hex HMAC-SHA256 of `nonce` keyed with `token`.
    pub fn prove(token: &[u8], nonce: &str) -> String {
        crate::functions::hex(&mac(token, nonce).finalize().into_bytes())
    }

    /// Whether `proof` is [`prove`]`(token, nonce)`, compared in constant time.
    pub fn verify(token: &[u8], nonce: &str, proof: &str) -> bool {
        match crate::functions::unhex(proof) {
            Some(bytes) => mac(token, nonce).verify_slice(&bytes).is_ok(),
            None => false,
        }
    }
}
