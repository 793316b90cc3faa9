//! The protocol client: dial the orchestrator with backoff, authenticate, then serve
//! invocations until the orchestrator says what to do with the worker.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use crate::functions::rng::SplitMix64;
use crate::protocol::{
    self, Auth, Capabilities, ErrorMessage, FrameReader, Heartbeat, Hello, Lifecycle, Message,
    PROTOCOL_VERSION, RUNTIME_BUILTIN, RUNTIME_EXEC, RUNTIME_WASM, auth,
};

use super::Config;
use super::log::{log, uptime};
use super::power::PowerAction;
use super::runtime;
use super::watchdog::Watchdog;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the orchestrator may take to answer during the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the agent stops dialling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The orchestrator asked for it, or a OneShot worker finished its work.
    Power(PowerAction),
    /// Something the agent cannot recover from by itself (a function overran).
    Failsafe(String),
}

/// How one connection ended.
#[derive(Debug)]
enum Ending {
    Power(PowerAction),
    Overrun(String),
    /// The orchestrator closed the connection; `worked`: after at least one invocation.
    Closed {
        worked: bool,
    },
    Denied(String),
    Failed(String),
}

/// Exponential backoff from 100 ms to 5 s with ±25 % jitter, so a rack of workers that lost
/// their orchestrator together do not all redial in the same instant.
struct Backoff {
    next: Duration,
    rng: SplitMix64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    fn new(seed: u64) -> Self {
        Backoff {
            next: Self::FIRST,
            rng: SplitMix64::new(seed),
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    fn wait(&mut self) {
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = 0.75 + self.rng.unit_f64() / 2.0;
        thread::sleep(base.mul_f64(jitter));
    }
}

/// Dial and serve until an [`Exit`]; connection trouble is logged and retried forever (the
/// watchdog bounds how long that may go on).
pub fn run(cfg: &Config, watchdog: &Watchdog) -> Exit {
    let seed = u64::from(std::process::id()) ^ uptime().as_nanos() as u64;
    let mut backoff = Backoff::new(seed);
    loop {
        let stream = match connect(&cfg.orchestrator) {
            Ok(s) => s,
            Err(e) => {
                log!("cannot reach {}: {e}", cfg.orchestrator);
                backoff.wait();
                continue;
            }
        };
        log!("connected to {}", cfg.orchestrator);
        let ending = match Session::new(cfg, watchdog, &stream) {
            Ok(mut s) => s.serve(),
            Err(e) => Ending::Failed(e.to_string()),
        };
        let _ = stream.shutdown(std::net::Shutdown::Both);
        match ending {
            Ending::Overrun(why) => return Exit::Failsafe(why),
            Ending::Power(action) if !cfg.no_poweroff => return Exit::Power(action),
            Ending::Closed { worked: true } if cfg.lifecycle == Lifecycle::OneShot => {
                log!("connection closed after the invocation; this OneShot worker is done");
                if !cfg.no_poweroff {
                    return Exit::Power(PowerAction::PowerOff);
                }
                backoff.reset();
            }
            Ending::Power(action) => {
                log!("{action:?} requested; --no-poweroff given, dialling again");
                backoff.reset();
            }
            Ending::Closed { .. } => {
                log!("the orchestrator closed the connection");
                backoff.reset();
            }
            Ending::Denied(reason) => log!("authentication denied: {reason}"),
            Ending::Failed(why) => log!("closing connection: {why}"),
        }
        backoff.wait();
    }
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

struct Session<'a> {
    cfg: &'a Config,
    watchdog: &'a Watchdog,
    stream: &'a TcpStream,
    reader: FrameReader<TcpStream>,
    worked: bool,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a Config, watchdog: &'a Watchdog, stream: &'a TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Session {
            cfg,
            watchdog,
            stream,
            reader: FrameReader::new(stream.try_clone()?),
            worked: false,
        })
    }

    fn send(&mut self, msg: &Message) -> Result<(), Ending> {
        let mut w = self.stream;
        w.write_all(&protocol::encode(msg))
            .map_err(|e| Ending::Failed(format!("sending {}: {e}", msg.kind())))
    }

    /// Tell the orchestrator why we are hanging up (best effort), then end.
    fn violation(&mut self, why: String) -> Ending {
        let _ = self.send(&Message::Error(ErrorMessage {
            message: why.clone(),
        }));
        Ending::Failed(why)
    }

    /// The next message, or `Ok(None)` when `wait` passed without one. The watchdog hears
    /// of every frame that arrives.
    fn receive(&mut self, wait: Option<Duration>) -> Result<Option<Message>, Ending> {
        // A zero timeout is an error for set_read_timeout; 1 ms is as good as none.
        let wait = wait.map(|w| w.max(Duration::from_millis(1)));
        if let Err(e) = self.stream.set_read_timeout(wait) {
            return Err(Ending::Failed(format!("setting read timeout: {e}")));
        }
        match self.reader.read_message() {
            Ok(Some(msg)) => {
                self.watchdog.contact();
                Ok(Some(msg))
            }
            Ok(None) => Err(Ending::Closed {
                worked: self.worked,
            }),
            Err(e) if e.is_timeout() => Ok(None),
            Err(e @ protocol::ProtocolError::Io(_)) => Err(Ending::Failed(e.to_string())),
            Err(e) => Err(self.violation(format!("bad frame from the orchestrator: {e}"))),
        }
    }

    /// A message that must arrive within the handshake timeout.
    fn expect(&mut self, what: &str) -> Result<Message, Ending> {
        match self.receive(Some(HANDSHAKE_TIMEOUT))? {
            Some(Message::Denied(d)) => Err(Ending::Denied(d.reason)),
            Some(msg) => Ok(msg),
            None => Err(self.violation(format!("no {what} within {HANDSHAKE_TIMEOUT:?}"))),
        }
    }

    fn serve(&mut self) -> Ending {
        match self.serve_inner() {
            Ok(never) => match never {},
            Err(ending) => ending,
        }
    }

    fn serve_inner(&mut self) -> Result<std::convert::Infallible, Ending> {
        let cfg = self.cfg;
        self.send(&Message::Hello(Hello {
            worker: cfg.worker.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            uptime_ms: uptime().as_millis() as u64,
            capabilities: Capabilities {
                runtimes: vec![
                    RUNTIME_BUILTIN.into(),
                    RUNTIME_WASM.into(),
                    RUNTIME_EXEC.into(),
                ],
                functions: crate::functions::all_names()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                lifecycle: cfg.lifecycle,
            },
            start: super::resume::start().cloned(),
        }))?;
        let nonce = match self.expect("challenge")? {
            Message::Challenge(c) => c.nonce,
            other => return Err(self.unexpected(&other, "challenge")),
        };
        self.send(&Message::Auth(Auth {
            proof: auth::prove(&cfg.token, &nonce),
        }))?;
        let heartbeat = match self.expect("authOk")? {
            Message::AuthOk(ok) => ok.heartbeat_ms.map_or(cfg.heartbeat, Duration::from_millis),
            other => return Err(self.unexpected(&other, "authOk")),
        };
        log!("authenticated as {}", cfg.worker);

        let heartbeat = (cfg.lifecycle == Lifecycle::Warm).then_some(heartbeat);
        let mut next_beat = heartbeat.map(|h| Instant::now() + h);
        let mut seq = 0u64;
        loop {
            let wait = next_beat.map(|t| t.saturating_duration_since(Instant::now()));
            let Some(msg) = self.receive(wait)? else {
                // Only a Warm session waits with a timeout: time to beat.
                seq += 1;
                self.send(&Message::Heartbeat(Heartbeat { seq }))?;
                next_beat = heartbeat.map(|h| Instant::now() + h);
                continue;
            };
            match msg {
                Message::Invoke(inv) => {
                    log!("invoke {} ({} / {})", inv.id, inv.function, inv.handler);
                    self.watchdog.set_busy(true);
                    let done = runtime::dispatch(&inv);
                    if !done.overran {
                        self.watchdog.set_busy(false);
                    }
                    self.worked = true;
                    self.send(&Message::Result(done.result))?;
                    if done.overran {
                        return Err(Ending::Overrun(format!(
                            "invocation {} overran its deadline of {} ms",
                            inv.id, inv.deadline_ms
                        )));
                    }
                }
                Message::Next | Message::Idle | Message::Heartbeat(_) => {}
                Message::Poweroff => return Err(Ending::Power(PowerAction::PowerOff)),
                Message::Reboot => return Err(Ending::Power(PowerAction::Reboot)),
                Message::Error(e) => log!("orchestrator reports an error: {}", e.message),
                Message::Denied(d) => return Err(Ending::Denied(d.reason)),
                other => return Err(self.unexpected(&other, "invoke or a follow-up")),
            }
        }
    }

    fn unexpected(&mut self, got: &Message, wanted: &str) -> Ending {
        self.violation(format!("unexpected {} (expected {wanted})", got.kind()))
    }
}
