//! The agent endpoint: a TCP listener where workers dial in. Each connection must say `hello`,
//! answer a fresh challenge with an HMAC of the cluster token, and only then becomes a session
//! registered under its worker name. A worker that does not authenticate gets nothing.

use super::framing::{read_message, write_message};
use super::session::{self, SessionHandle};
use crate::protocol::{
    AuthOk, Challenge, Denied, Hello, Lifecycle, Message, PROTOCOL_VERSION, auth,
};
use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};

/// How long a new connection has to complete hello + auth.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat period asked of Warm agents.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Agent comings and goings, for the engine to react to.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    Connected {
        worker: String,
        /// Kernel uptime when the agent said hello: the boot time.
        boot_ms: u64,
        lifecycle: Lifecycle,
        /// Set when the agent parked for a snapshot before dialling.
        start: Option<crate::protocol::ParkedStart>,
    },
    Disconnected {
        worker: String,
        reason: String,
    },
    /// A connection that failed the handshake; `worker` when it got as far as saying who it is.
    Rejected {
        peer: SocketAddr,
        worker: Option<String>,
        reason: String,
    },
}

/// Live sessions by worker name, and the source addresses MicroFaaS v1 workers dial from.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, SessionHandle>>,
    v1: Mutex<HashMap<IpAddr, String>>,
}

impl Sessions {
    /// Declares (or with `None` forgets) the address worker `worker` speaks v1 from.
    pub fn set_v1_address(&self, worker: &str, address: Option<IpAddr>) {
        let mut v1 = self.v1.lock().unwrap_or_else(|p| p.into_inner());
        v1.retain(|a, w| w != worker || Some(*a) == address);
        if let Some(a) = address {
            v1.insert(a, worker.to_string());
        }
    }

    /// The v1 worker that dials from `ip`, if any.
    pub fn v1_worker(&self, ip: IpAddr) -> Option<String> {
        let v1 = self.v1.lock().unwrap_or_else(|p| p.into_inner());
        v1.get(&ip).cloned()
    }

    pub fn get(&self, worker: &str) -> Option<SessionHandle> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(worker).filter(|s| s.is_open()).cloned()
    }

    pub fn connected(&self) -> Vec<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(_, s)| s.is_open())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Registers `s` unless another live session holds its worker name: a second agent
    /// claiming a connected worker is refused, so it cannot take over that worker's calls.
    /// A session told to power off or reboot may be replaced (its successor is the worker
    /// coming back). A refused handle is dropped, which ends its session and connection.
    fn insert(&self, s: SessionHandle) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(s.worker())
            .is_some_and(|old| old.is_open() && !old.is_retiring())
        {
            return false;
        }
        map.insert(s.worker().to_string(), s);
        true
    }

    /// Whether `worker` has a live session that is not on its way out.
    fn claimed(&self, worker: &str) -> bool {
        self.get(worker).is_some_and(|s| !s.is_retiring())
    }

    /// Removes the session only if it is still the one with `id` (a newer connection of the
    /// same worker may have replaced it).
    fn remove(&self, worker: &str, id: u64) -> bool {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(worker).is_some_and(|s| s.id == id) {
            map.remove(worker);
            true
        } else {
            false
        }
    }
}

pub struct Endpoint {
    pub addr: SocketAddr,
    pub sessions: Arc<Sessions>,
    events: broadcast::Sender<AgentEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Endpoint {
    pub async fn bind(listen: &str, token: Vec<u8>) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let sessions = Arc::new(Sessions::default());
        let (events, _) = broadcast::channel(1024);
        let task = tokio::spawn(accept_loop(
            listener,
            Arc::new(token),
            sessions.clone(),
            events.clone(),
        ));
        Ok(Endpoint {
            addr,
            sessions,
            events,
            task,
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    pub fn events_sender(&self) -> broadcast::Sender<AgentEvent> {
        self.events.clone()
    }
}

async fn accept_loop(
    listener: TcpListener,
    token: Arc<Vec<u8>>,
    sessions: Arc<Sessions>,
    events: broadcast::Sender<AgentEvent>,
) {
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("agent endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (token, sessions, events, next_id) = (
            token.clone(),
            sessions.clone(),
            events.clone(),
            next_id.clone(),
        );
        tokio::spawn(async move {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            handle_connection(id, stream, peer, &token, &sessions, &events).await;
        });
    }
}

async fn handle_connection(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    token: &[u8],
    sessions: &Arc<Sessions>,
    events: &broadcast::Sender<AgentEvent>,
) {
    if let Some(worker) = sessions.v1_worker(peer.ip()) {
        let Some(handle) = super::v1::accept(id, stream, peer, worker, events).await else {
            return;
        };
        serve_session(handle, peer, sessions, events).await;
        return;
    }
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let hs = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&mut r, &mut w, token, sessions),
    )
    .await;
    let hello = match hs {
        Ok(Ok(hello)) => hello,
        Ok(Err((worker, reason))) => {
            tracing::warn!(%peer, ?worker, "agent rejected: {reason}");
            let _ = events.send(AgentEvent::Rejected {
                peer,
                worker,
                reason,
            });
            return;
        }
        Err(_) => {
            let reason = format!("no hello and auth within {HANDSHAKE_TIMEOUT:?}");
            tracing::warn!(%peer, "agent rejected: {reason}");
            let _ = events.send(AgentEvent::Rejected {
                peer,
                worker: None,
                reason,
            });
            return;
        }
    };
    let (done_tx, done_rx) = oneshot::channel();
    let handle = session::spawn(id, hello, r, w, done_tx);
    serve_session((handle, done_rx), peer, sessions, events).await;
}

/// Registers an authenticated session, announces it, and waits for its end.
async fn serve_session(
    (handle, done_rx): (SessionHandle, oneshot::Receiver<String>),
    peer: SocketAddr,
    sessions: &Arc<Sessions>,
    events: &broadcast::Sender<AgentEvent>,
) {
    let id = handle.id;
    let worker = handle.hello.worker.clone();
    let boot_ms = handle.hello.uptime_ms;
    let lifecycle = handle.hello.capabilities.lifecycle;
    let start = handle.hello.start.clone();
    // A v1 worker connects once per job: its comings and goings are debug noise.
    let v1 = handle.hello.agent_version == super::v1::AGENT_VERSION;
    if !sessions.insert(handle) {
        let reason = format!("worker `{worker}` is already connected");
        tracing::warn!(%peer, worker = %worker, "agent rejected: {reason}");
        let _ = events.send(AgentEvent::Rejected {
            peer,
            worker: Some(worker),
            reason,
        });
        return;
    }
    if v1 {
        tracing::debug!(%peer, worker = %worker, "v1 worker connected");
    } else if let Some(s) = &start {
        let how = if s.restored {
            "resumed from a snapshot"
        } else {
            "booted"
        };
        let rng = if s.reseeded {
            ", RNG reseeded"
        } else {
            ", RNG NOT reseeded"
        };
        tracing::info!(%peer, worker = %worker, boot_ms, "agent connected ({how}, start {}{rng})", s.id);
    } else {
        tracing::info!(%peer, worker = %worker, boot_ms, "agent connected");
    }
    let _ = events.send(AgentEvent::Connected {
        worker: worker.clone(),
        boot_ms,
        lifecycle,
        start,
    });
    let reason = done_rx
        .await
        .unwrap_or_else(|_| "session ended".to_string());
    if sessions.remove(&worker, id) {
        if v1 {
            tracing::debug!(worker = %worker, "v1 worker disconnected: {reason}");
        } else {
            tracing::info!(worker = %worker, "agent disconnected: {reason}");
        }
        let _ = events.send(AgentEvent::Disconnected { worker, reason });
    }
}

type HandshakeError = (Option<String>, String);

async fn handshake(
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    token: &[u8],
    sessions: &Sessions,
) -> Result<Hello, HandshakeError> {
    let hello = match read_message(r).await {
        Ok(Some(Message::Hello(h))) => h,
        Ok(Some(other)) => return Err((None, format!("expected hello, got `{}`", other.kind()))),
        Ok(None) => return Err((None, "closed before hello".to_string())),
        Err(e) => return Err((None, format!("bad first frame: {e}"))),
    };
    let who = Some(hello.worker.clone());
    if hello.protocol_version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} not supported (this orchestrator speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        );
        let _ = write_message(
            w,
            &Message::Denied(Denied {
                reason: reason.clone(),
            }),
        )
        .await;
        return Err((who, reason));
    }
    let nonce = fresh_nonce();
    write_message(
        w,
        &Message::Challenge(Challenge {
            nonce: nonce.clone(),
        }),
    )
    .await
    .map_err(|e| (who.clone(), format!("write failed: {e}")))?;
    let proof = match read_message(r).await {
        Ok(Some(Message::Auth(a))) => a.proof,
        Ok(Some(other)) => return Err((who, format!("expected auth, got `{}`", other.kind()))),
        Ok(None) => return Err((who, "closed before auth".to_string())),
        Err(e) => return Err((who, format!("bad auth frame: {e}"))),
    };
    if token.is_empty() || !auth::verify(token, &nonce, &proof) {
        let reason = "authentication failed: wrong token".to_string();
        let _ = write_message(
            w,
            &Message::Denied(Denied {
                reason: reason.clone(),
            }),
        )
        .await;
        return Err((who, reason));
    }
    if sessions.claimed(&hello.worker) {
        let reason = format!("worker `{}` is already connected", hello.worker);
        let _ = write_message(
            w,
            &Message::Denied(Denied {
                reason: reason.clone(),
            }),
        )
        .await;
        return Err((who, reason));
    }
    let heartbeat_ms =
        (hello.capabilities.lifecycle == Lifecycle::Warm).then(|| HEARTBEAT.as_millis() as u64);
    write_message(w, &Message::AuthOk(AuthOk { heartbeat_ms }))
        .await
        .map_err(|e| (who.clone(), format!("write failed: {e}")))?;
    Ok(hello)
}

/// 128 random bits, hex. /dev/urandom never blocks once the kernel is seeded; it is opened
/// once (every gateway call takes a fresh id, and opening it per id was 3% of a call's CPU).
fn fresh_nonce() -> String {
    static URANDOM: std::sync::LazyLock<Option<std::fs::File>> =
        std::sync::LazyLock::new(|| std::fs::File::open("/dev/urandom").ok());
    let mut buf = [0u8; 16];
    if URANDOM
        .as_ref()
        .is_none_or(|mut f| f.read_exact(&mut buf).is_err())
    {
        // No urandom (odd chroot): time + address entropy still never repeats within a process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        buf = (t ^ (&buf as *const _ as u128)).to_le_bytes();
    }
    crate::functions::hex(&buf)
}

/// A fresh random token, hex, for clusters that name no token source.
pub fn random_token() -> String {
    format!("{}{}", fresh_nonce(), fresh_nonce())
}
