//! A minimal synchronous orchestrator for tests and the boot benchmark: listens on an
//! ephemeral loopback port, authenticates the agent with the challenge/HMAC handshake, sends
//! invocations and a final `poweroff`.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use microfaas::protocol::{
    AuthOk, Challenge, FrameReader, Hello, Invoke, InvokeResult, Message, RUNTIME_BUILTIN, auth,
    encode,
};
use serde_json::Value;

use super::qemu::Vm;

pub struct TestOrchestrator {
    listener: TcpListener,
    pub port: u16,
}

impl TestOrchestrator {
    pub fn bind() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("local_addr: {e}"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        Ok(Self { listener, port })
    }

    /// Waits for the agent in `vm` to dial in; fails early if QEMU exits first.
    pub fn accept(&self, vm: &mut Vm, timeout: Duration) -> Result<Session, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Session::new(stream),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("accept: {e}")),
            }
            if let Some(status) = vm.try_exit() {
                return Err(format!("QEMU exited ({status}) before the agent connected"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no agent connection within {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

pub struct Session {
    stream: TcpStream,
    reader: FrameReader<TcpStream>,
}

/// How long one message may take to arrive (an invocation runs under TCG, slowly).
const RECV_TIMEOUT: Duration = Duration::from_secs(120);

impl Session {
    fn new(stream: TcpStream) -> Result<Self, String> {
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(RECV_TIMEOUT)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(|e| format!("socket setup: {e}"))?;
        let reader = FrameReader::new(stream.try_clone().map_err(|e| format!("clone: {e}"))?);
        Ok(Self { stream, reader })
    }

    pub fn send(&mut self, msg: &Message) -> Result<(), String> {
        self.stream
            .write_all(&encode(msg))
            .map_err(|e| format!("sending {}: {e}", msg.kind()))
    }

    pub fn recv(&mut self) -> Result<Message, String> {
        match self.reader.read_message() {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err("agent closed the connection".into()),
            Err(e) => Err(format!("reading from the agent: {e}")),
        }
    }

    /// Reads `hello` (returned with the instant it arrived), challenges the agent and checks
    /// its proof against `token`.
    pub fn handshake(&mut self, token: &[u8]) -> Result<(Hello, Instant), String> {
        let hello = match self.recv()? {
            Message::Hello(h) => h,
            other => return Err(format!("expected hello, got {other:?}")),
        };
        let at = Instant::now();
        let nonce = nonce();
        self.send(&Message::Challenge(Challenge {
            nonce: nonce.clone(),
        }))?;
        match self.recv()? {
            Message::Auth(a) if auth::verify(token, &nonce, &a.proof) => {}
            Message::Auth(_) => return Err("agent's auth proof does not match the token".into()),
            other => return Err(format!("expected auth, got {other:?}")),
        }
        self.send(&Message::AuthOk(AuthOk::default()))?;
        Ok((hello, at))
    }

    pub fn invoke(
        &mut self,
        id: &str,
        handler: &str,
        input: &Value,
    ) -> Result<InvokeResult, String> {
        self.send(&Message::Invoke(Invoke {
            id: id.to_owned(),
            function: handler.to_owned(),
            runtime: RUNTIME_BUILTIN.to_owned(),
            handler: handler.to_owned(),
            input: input.clone(),
            deadline_ms: 60_000,
            services: Default::default(),
            code: None,
        }))?;
        loop {
            match self.recv()? {
                Message::Result(r) if r.id == id => return Ok(r),
                // A Warm agent may heartbeat while a function runs elsewhere; answer in kind.
                Message::Heartbeat(h) => self.send(&Message::Heartbeat(h))?,
                other => return Err(format!("expected result for {id}, got {other:?}")),
            }
        }
    }

    pub fn poweroff(&mut self) -> Result<(), String> {
        self.send(&Message::Poweroff)
    }
}

/// A fresh nonce per handshake; uniqueness matters here, not unpredictability.
fn nonce() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{t:032x}{:08x}", std::process::id())
}
