//! One SNMP session per switch on top of `snmp2`'s async client, adding what it lacks: a
//! timeout and retry policy around every request, a fresh socket after a timeout (so a late
//! reply to an abandoned request is never read as the answer to the next one), v3 engine
//! discovery inside the same deadline, owned replies, and error classification.
//!
//! Callers serialize access (`&mut self`); the switch-level mutex lives in `mod.rs`.

use super::config::{AuthProtocol, Credentials, PrivProtocol, SwitchConfig};
use super::error::SnmpError;
use snmp2::{AsyncSession, Oid, Value, v3};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// An OID as plain arcs: cheap to build, compare and extend with an index.
pub type Arcs = Vec<u64>;

/// A reply value, owned so it outlives the session's receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Int(i64),
    Bytes(Vec<u8>),
    /// Counter32, Gauge32/Unsigned32, Timeticks, Counter64.
    Unsigned(u64),
    Oid(Arcs),
    Null,
    /// noSuchObject / noSuchInstance: the agent does not have it.
    NoSuch,
    EndOfMibView,
    Other(String),
}

impl Val {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Val::Unsigned(v) => Some(*v),
            Val::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<String> {
        match self {
            Val::Bytes(b) => Some(
                String::from_utf8_lossy(b)
                    .trim_end_matches('\0')
                    .to_string(),
            ),
            _ => None,
        }
    }
}

pub type VarBind = (Arcs, Val);

/// A reply PDU: error status/index as the agent sent them and the varbinds.
#[derive(Debug, Clone)]
pub struct Reply {
    pub error_status: u32,
    pub error_index: u32,
    pub varbinds: Vec<VarBind>,
}

/// One request, described so it can be re-sent on retry.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Get(&'a [Arcs]),
    GetBulk {
        oids: &'a [Arcs],
        max_repetitions: u32,
    },
    /// Integer values only: all this driver ever writes is ifAdminStatus.
    Set(&'a [(Arcs, i64)]),
}

/// Counters for tests and metrics: how many PDUs went out and why attempts failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Request PDUs sent (each attempt of each request; v3 discovery not counted).
    pub requests: u64,
    /// Attempts that got no valid reply in time.
    pub timeouts: u64,
    /// Sockets opened (first use, and again after every timeout).
    pub connects: u64,
}

/// Request ids start from a per-process pseudo-random point and never repeat within the
/// process, so a reply meant for another session or an earlier socket cannot match.
fn next_req_id_base() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as i32 & 0x3fff_ffff)
        .unwrap_or(1);
    let _ = NEXT.compare_exchange(0, seed.max(1), Ordering::Relaxed, Ordering::Relaxed);
    // Each session gets its own block of 2^20 ids.
    NEXT.fetch_add(1 << 20, Ordering::Relaxed) & 0x7fff_ffff
}

/// What one attempt can end in besides a reply.
enum AttemptError {
    /// Nothing usable arrived; try again (after waiting out the attempt's timeout).
    NoReply,
    /// Got a reply for another request id: consume the attempt, retry at once.
    Stale,
    Auth(String),
    Protocol(String),
    Io(String),
}

pub struct Transport {
    address: String,
    credentials: Credentials,
    timeout: Duration,
    retries: u32,
    /// Boxed: snmp2 keeps its receive buffer inline (64 KiB).
    session: Option<Box<AsyncSession>>,
    pub stats: TransportStats,
}

impl Transport {
    pub fn new(cfg: &SwitchConfig) -> Self {
        Self {
            address: cfg.address.clone(),
            credentials: cfg.credentials.clone(),
            timeout: cfg.timeout,
            retries: cfg.retries,
            session: None,
            stats: TransportStats::default(),
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `req` under the timeout/retry policy: at most `retries + 1` attempts of `timeout`
    /// each. Credentials failures are not retried: they will not get better by asking again.
    pub async fn request(&mut self, req: Request<'_>) -> Result<Reply, SnmpError> {
        let attempts = self.retries + 1;
        for attempt in 1..=attempts {
            let last = attempt == attempts;
            // On the last try of a v2c request, probe SNMPv3 engine discovery alongside it: if
            // the agent answers that but never our community, it is alive and rejects us.
            let probe_v2c = last && matches!(self.credentials, Credentials::V2c { .. });
            let timeout = self.timeout;
            let probe = probe_v2c.then(|| {
                let address = self.address.clone();
                tokio::spawn(async move {
                    matches!(
                        tokio::time::timeout(timeout, engine_discovery_answers(&address)).await,
                        Ok(true)
                    )
                })
            });
            let outcome = tokio::time::timeout(timeout, self.attempt(req)).await;
            let alive = match probe {
                // Started together with the attempt and bounded by the same timeout, so this
                // wait is short; on success the probe is not needed.
                Some(task) if !matches!(outcome, Ok(Ok(_))) => task.await.unwrap_or(false),
                Some(task) => {
                    task.abort();
                    false
                }
                None => false,
            };
            match outcome {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(AttemptError::Stale)) => {
                    tracing::debug!(address = %self.address, "stale SNMP reply dropped");
                }
                Ok(Err(AttemptError::NoReply)) | Err(_) => {
                    // The socket may still receive the reply to this abandoned request: drop it.
                    self.session = None;
                    self.stats.timeouts += 1;
                    tracing::debug!(address = %self.address, attempt, "SNMP request timed out");
                    if last && alive {
                        return Err(SnmpError::AuthFailure {
                            address: self.address.clone(),
                            reason: "the agent answers SNMPv3 engine discovery but ignores our \
                                     v2c requests: wrong community, or this host is not allowed"
                                .into(),
                        });
                    }
                }
                Ok(Err(AttemptError::Auth(reason))) => {
                    self.session = None;
                    return Err(SnmpError::AuthFailure {
                        address: self.address.clone(),
                        reason,
                    });
                }
                Ok(Err(AttemptError::Protocol(detail))) => {
                    self.session = None;
                    return Err(SnmpError::Protocol {
                        address: self.address.clone(),
                        detail,
                    });
                }
                Ok(Err(AttemptError::Io(detail))) => {
                    self.session = None;
                    return Err(SnmpError::Io {
                        address: self.address.clone(),
                        detail,
                    });
                }
            }
        }
        Err(SnmpError::Timeout {
            address: self.address.clone(),
            attempts,
            timeout: self.timeout,
        })
    }

    /// One attempt; runs under the caller's timeout. A socket error (e.g. ICMP port unreachable
    /// surfacing as ECONNREFUSED on loopback) waits for the timeout like a lost packet would,
    /// as net-snmp does, so "no agent" always ends as `Timeout`.
    async fn attempt(&mut self, req: Request<'_>) -> Result<Reply, AttemptError> {
        let r = self.attempt_inner(req).await;
        if matches!(r, Err(AttemptError::NoReply)) {
            std::future::pending::<()>().await;
        }
        r
    }

    async fn attempt_inner(&mut self, req: Request<'_>) -> Result<Reply, AttemptError> {
        if self.session.is_none() {
            self.session = Some(self.connect().await?);
        }
        let Some(session) = self.session.as_mut() else {
            return Err(AttemptError::NoReply);
        };
        // v3: a changed engine time/boots makes snmp2 ask for a resend; a few are plenty.
        for _ in 0..3 {
            self.stats.requests += 1;
            match send(session, req).await {
                Err(snmp2::Error::AuthUpdated) => continue,
                other => return other.map_err(classify),
            }
        }
        Err(AttemptError::Protocol(
            "the agent keeps changing its SNMPv3 engine time".into(),
        ))
    }

    async fn connect(&mut self) -> Result<Box<AsyncSession>, AttemptError> {
        self.stats.connects += 1;
        let req_id = next_req_id_base();
        let io = |e: std::io::Error| AttemptError::Io(e.to_string());
        match &self.credentials {
            Credentials::V2c { community } => Ok(Box::new(
                AsyncSession::new_v2c(self.address.as_str(), community.expose(), req_id)
                    .await
                    .map_err(io)?,
            )),
            Credentials::V3 {
                user,
                auth,
                privacy,
            } => {
                let security = security(user, auth.as_ref(), privacy.as_ref());
                let mut s = Box::new(
                    AsyncSession::new_v3(self.address.as_str(), req_id, security)
                        .await
                        .map_err(io)?,
                );
                // Engine discovery (RFC 3414 §4): unauthenticated, so it succeeds even with a
                // wrong password; the first real request is where a bad key shows.
                s.init().await.map_err(classify)?;
                Ok(s)
            }
        }
    }
}

fn security(
    user: &str,
    auth: Option<&(AuthProtocol, super::config::Secret)>,
    privacy: Option<&(PrivProtocol, super::config::Secret)>,
) -> v3::Security {
    let Some((proto, pw)) = auth else {
        return v3::Security::new(user.as_bytes(), b"").with_auth(v3::Auth::NoAuthNoPriv);
    };
    let proto = match proto {
        AuthProtocol::Md5 => v3::AuthProtocol::Md5,
        AuthProtocol::Sha1 => v3::AuthProtocol::Sha1,
        AuthProtocol::Sha256 => v3::AuthProtocol::Sha256,
    };
    let level = match privacy {
        None => v3::Auth::AuthNoPriv,
        Some((p, ppw)) => v3::Auth::AuthPriv {
            cipher: match p {
                PrivProtocol::Des => v3::Cipher::Des,
                PrivProtocol::Aes128 => v3::Cipher::Aes128,
            },
            privacy_password: ppw.expose().to_vec(),
        },
    };
    v3::Security::new(user.as_bytes(), pw.expose())
        .with_auth_protocol(proto)
        .with_auth(level)
}

/// True when something at `address` answers an SNMPv3 engine-discovery request. Used only to
/// tell "wrong v2c community" from "nobody there"; sends nothing but the standard,
/// credential-free discovery PDU.
async fn engine_discovery_answers(address: &str) -> bool {
    let security = v3::Security::new(b"", b"").with_auth(v3::Auth::NoAuthNoPriv);
    let Ok(session) = AsyncSession::new_v3(address, next_req_id_base(), security).await else {
        return false;
    };
    let mut session = Box::new(session);
    match session.init().await {
        Ok(()) => true,
        // An error other than silence or a socket failure still means someone replied.
        Err(snmp2::Error::Receive | snmp2::Error::Send) => {
            std::future::pending::<()>().await;
            false
        }
        Err(_) => true,
    }
}

async fn send(session: &mut AsyncSession, req: Request<'_>) -> Result<Reply, snmp2::Error> {
    let to_oid = |a: &Arcs| Oid::from(a).map_err(|_| snmp2::Error::ValueOutOfRange);
    let pdu = match req {
        Request::Get(oids) => {
            let oids = oids.iter().map(to_oid).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&Oid<'_>> = oids.iter().collect();
            session.get_many(&refs).await?
        }
        Request::GetBulk {
            oids,
            max_repetitions,
        } => {
            let oids = oids.iter().map(to_oid).collect::<Result<Vec<_>, _>>()?;
            let refs: Vec<&Oid<'_>> = oids.iter().collect();
            session.getbulk(&refs, 0, max_repetitions).await?
        }
        Request::Set(values) => {
            let oids = values
                .iter()
                .map(|(a, _)| to_oid(a))
                .collect::<Result<Vec<_>, _>>()?;
            let pairs: Vec<(&Oid<'_>, Value<'_>)> = oids
                .iter()
                .zip(values)
                .map(|(o, (_, v))| (o, Value::Integer(*v)))
                .collect();
            session.set(&pairs).await?
        }
    };
    Ok(reply_of(pdu))
}

fn reply_of(pdu: snmp2::Pdu<'_>) -> Reply {
    Reply {
        error_status: pdu.error_status,
        error_index: pdu.error_index,
        varbinds: pdu
            .varbinds
            .map(|(oid, v)| (oid.iter().map(|i| i.collect()).unwrap_or_default(), own(v)))
            .collect(),
    }
}

/// Decodes a v1/v2c response datagram the way a session does after receiving it (snmp2's
/// parser, then owned values). The session itself never calls this: it exists so hostile
/// replies can be fuzzed without a socket.
pub fn decode_reply(datagram: &[u8]) -> Result<Reply, snmp2::Error> {
    snmp2::Pdu::from_bytes(datagram).map(reply_of)
}

/// [`decode_reply`] for SNMPv3, with `security` checking the reply's HMAC and decrypting it.
pub fn decode_reply_v3(
    datagram: &[u8],
    security: &mut v3::Security,
) -> Result<Reply, snmp2::Error> {
    snmp2::Pdu::from_bytes_with_security(datagram, Some(security)).map(reply_of)
}

fn own(v: Value<'_>) -> Val {
    match v {
        Value::Integer(i) => Val::Int(i),
        Value::OctetString(b) => Val::Bytes(b.to_vec()),
        Value::Counter32(n) | Value::Unsigned32(n) | Value::Timeticks(n) => Val::Unsigned(n.into()),
        Value::Counter64(n) => Val::Unsigned(n),
        Value::ObjectIdentifier(o) => Val::Oid(o.iter().map(|i| i.collect()).unwrap_or_default()),
        Value::Null => Val::Null,
        Value::NoSuchObject | Value::NoSuchInstance => Val::NoSuch,
        Value::EndOfMibView => Val::EndOfMibView,
        other => Val::Other(format!("{other:?}")),
    }
}

fn classify(e: snmp2::Error) -> AttemptError {
    use snmp2::Error as E;
    match e {
        E::Send | E::Receive => AttemptError::NoReply,
        E::RequestIdMismatch | E::CommunityMismatch => AttemptError::Stale,
        E::AuthFailure(kind) => AttemptError::Auth(auth_reason(&kind)),
        E::AuthUpdated => AttemptError::Protocol("SNMPv3 engine discovery did not settle".into()),
        E::Crypto(m) => AttemptError::Protocol(format!("crypto: {m}")),
        other => AttemptError::Protocol(other.to_string()),
    }
}

/// Human reasons for snmp2's v3 failures. The agent's report PDU (usmStatsUnknownUserNames,
/// usmStatsWrongDigests, usmStatsDecryptionErrors) arrives unauthenticated, and snmp2 turns it
/// into `NotAuthenticated` without saying which counter it carried, so those share one reason.
fn auth_reason(kind: &v3::AuthErrorKind) -> String {
    use v3::AuthErrorKind as K;
    match kind {
        K::NotAuthenticated => "the agent answered with an SNMPv3 report instead of a response: \
                                unknown user, wrong auth password or wrong privacy password"
            .into(),
        K::SignatureMismatch => {
            "the reply's HMAC does not match: wrong auth password or protocol".into()
        }
        K::ReplyNotEncrypted => {
            "the agent did not encrypt its reply: the user has no privacy configured".into()
        }
        K::UsernameMismatch => "the reply is for another SNMPv3 user".into(),
        other => format!("SNMPv3: {other}"),
    }
}

/// RFC 3416 error-status names, for messages.
pub fn error_status_name(status: u32) -> &'static str {
    match status {
        0 => "noError",
        1 => "tooBig",
        2 => "noSuchName",
        3 => "badValue",
        4 => "readOnly",
        5 => "genErr",
        6 => "noAccess",
        7 => "wrongType",
        8 => "wrongLength",
        9 => "wrongEncoding",
        10 => "wrongValue",
        11 => "noCreation",
        12 => "inconsistentValue",
        13 => "resourceUnavailable",
        14 => "commitFailed",
        15 => "undoFailed",
        16 => "authorizationError",
        17 => "notWritable",
        18 => "inconsistentName",
        _ => "unknown error status",
    }
}

/// `1.3.6.1...` for messages.
pub fn dotted(arcs: &[u64]) -> String {
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}
