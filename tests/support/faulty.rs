//! Agents that misbehave on purpose, for the fault-injection tests: a "VM" whose agent speaks the
//! real protocol (hello, HMAC proof) and then fails the first call it gets — hangs, drops the
//! connection, or answers garbage. Every later boot of the same worker is a real
//! `microfaas-agent` process ([`super::host::AgentProcs`]), so recovery runs real code.

use super::host::AgentProcs;
use microfaas::engine::vm::{Launched, StopHow, VmConfig, VmDriver};
use microfaas::protocol::{
    Auth, Capabilities, FrameReader, Hello, Lifecycle, Message, PROTOCOL_VERSION, auth, encode,
};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// What the faulty agent does with the first invocation it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads it and never answers (nor heartbeats).
    Hang,
    /// Reads it and closes the connection.
    Drop,
    /// Reads it and answers a line that is not a protocol frame.
    Garbage,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A faulty agent's "VM": the thread serving it and its socket (shut down to stop it).
struct Faulty {
    thread: std::thread::JoinHandle<()>,
    socket: Arc<Mutex<Option<TcpStream>>>,
}

/// Real agent processes, except that a worker's next boot after [`FaultyDriver::arm`] is a
/// faulty agent.
pub struct FaultyDriver {
    pub real: Arc<AgentProcs>,
    armed: Mutex<HashMap<String, Fault>>,
    /// Workers every boot of which is faulty, until [`FaultyDriver::disarm`].
    always: Mutex<HashMap<String, Fault>>,
    faulty: Mutex<HashMap<String, Faulty>>,
    exits: broadcast::Sender<String>,
    /// Every launch, in order, with the fault it had (`None`: a real agent).
    pub launches: Mutex<Vec<(String, Option<Fault>)>>,
}

impl FaultyDriver {
    pub fn new(real: Arc<AgentProcs>) -> Arc<Self> {
        let d = Arc::new(FaultyDriver {
            real,
            armed: Mutex::new(HashMap::new()),
            always: Mutex::new(HashMap::new()),
            faulty: Mutex::new(HashMap::new()),
            exits: broadcast::channel(1024).0,
            launches: Mutex::new(Vec::new()),
        });
        // Report the real agents' exits and the faulty ones' ends alike, as QEMU exits are.
        let weak = Arc::downgrade(&d);
        let mut real_exits = d.real.exits();
        std::thread::spawn(move || {
            while let Some(d) = weak.upgrade() {
                while let Ok(name) = real_exits.try_recv() {
                    let _ = d.exits.send(name);
                }
                let ended: Vec<String> = lock(&d.faulty)
                    .iter()
                    .filter(|(_, f)| f.thread.is_finished())
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in ended {
                    lock(&d.faulty).remove(&n);
                    let _ = d.exits.send(n);
                }
                drop(d);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        d
    }

    /// The next boot of `worker` is a faulty agent doing `fault`.
    pub fn arm(&self, worker: &str, fault: Fault) {
        lock(&self.armed).insert(worker.to_string(), fault);
    }

    /// Every boot of `worker` from now on is a faulty agent doing `fault`.
    pub fn arm_always(&self, worker: &str, fault: Fault) {
        lock(&self.always).insert(worker.to_string(), fault);
    }

    /// `worker` boots real agents again.
    pub fn disarm(&self, worker: &str) {
        lock(&self.always).remove(worker);
        lock(&self.armed).remove(worker);
    }

    fn arg<'a>(cmdline: &'a str, key: &str) -> &'a str {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or("")
    }
}

impl VmDriver for FaultyDriver {
    async fn launch(&self, spec: &VmConfig) -> Result<Launched, String> {
        let fault = lock(&self.armed)
            .remove(&spec.name)
            .or_else(|| lock(&self.always).get(&spec.name).copied());
        lock(&self.launches).push((spec.name.clone(), fault));
        let Some(fault) = fault else {
            return self.real.launch(spec).await;
        };
        let port = Self::arg(&spec.cmdline, "microfaas.orchestrator=")
            .rsplit(':')
            .next()
            .unwrap_or("")
            .to_string();
        let token = Self::arg(&spec.cmdline, "microfaas.token=").to_string();
        let name = spec.name.clone();
        let socket = Arc::new(Mutex::new(None));
        let s2 = socket.clone();
        let thread = std::thread::spawn(move || {
            let _ = serve(&format!("127.0.0.1:{port}"), &name, &token, fault, &s2);
        });
        lock(&self.faulty).insert(spec.name.clone(), Faulty { thread, socket });
        Ok(Launched::Cold)
    }

    async fn adopt(&self, spec: &VmConfig) -> Result<bool, String> {
        Ok(self.is_running(&spec.name))
    }

    fn is_running(&self, name: &str) -> bool {
        lock(&self.faulty)
            .get(name)
            .is_some_and(|f| !f.thread.is_finished())
            || self.real.is_running(name)
    }

    async fn stop(&self, name: &str, how: StopHow, wait: Duration) -> Result<bool, String> {
        let faulty = lock(&self.faulty).get(name).map(|f| f.socket.clone());
        if let Some(socket) = faulty {
            // Pulling the plug: the faulty agent's socket goes, and with it its thread.
            if let Some(s) = lock(&socket).as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
            let deadline = std::time::Instant::now() + wait;
            while self.is_running(name) && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            return Ok(!self.is_running(name));
        }
        self.real.stop(name, how, wait).await
    }

    fn exits(&self) -> broadcast::Receiver<String> {
        self.exits.subscribe()
    }
}

/// Dials the endpoint, authenticates as `worker` (Warm), then fails the first invocation the
/// way `fault` says. Returns when the connection ends.
fn serve(
    addr: &str,
    worker: &str,
    token: &str,
    fault: Fault,
    socket: &Mutex<Option<TcpStream>>,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    *lock(socket) = Some(stream.try_clone()?);
    let mut reader = FrameReader::new(stream.try_clone()?);
    let send = |s: &mut TcpStream, m: &Message| s.write_all(&encode(m));
    send(
        &mut stream,
        &Message::Hello(Hello {
            worker: worker.to_string(),
            agent_version: "faulty".into(),
            protocol_version: PROTOCOL_VERSION,
            uptime_ms: 1,
            capabilities: Capabilities {
                runtimes: vec!["builtin".into()],
                functions: Vec::new(),
                lifecycle: Lifecycle::Warm,
            },
            start: None,
        }),
    )?;
    let other = |m: Option<Message>| std::io::Error::other(format!("unexpected {m:?}"));
    let nonce = match reader.read_message().map_err(std::io::Error::other)? {
        Some(Message::Challenge(c)) => c.nonce,
        m => return Err(other(m)),
    };
    send(
        &mut stream,
        &Message::Auth(Auth {
            proof: auth::prove(token.as_bytes(), &nonce),
        }),
    )?;
    match reader.read_message().map_err(std::io::Error::other)? {
        Some(Message::AuthOk(_)) => {}
        m => return Err(other(m)),
    }
    loop {
        match reader.read_message() {
            Ok(Some(Message::Invoke(_))) => break,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Ok(()),
        }
    }
    match fault {
        Fault::Hang => {}
        Fault::Drop => {
            stream.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        Fault::Garbage => stream.write_all(b"\x07this is not a frame}{\n")?,
    }
    // Whatever comes next (nothing, or the orchestrator closing), wait for the end.
    while let Ok(Some(_)) = reader.read_message() {}
    Ok(())
}
