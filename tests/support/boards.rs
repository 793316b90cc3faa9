//! Simulated BeagleBone boards made of real parts, for the engine's board paths: the power
//! button is a fake GPIO line, but a board it switches on runs a real `microfaas-agent` process
//! (its non-PID-1 mode) that dials the engine's agent endpoint on loopback, and the board's
//! switch port is a port of a real `snmpsim` switch whose ifOperStatus follows the board (set
//! with `snmpset`), polled by the engine over SNMP like a real one.

use super::host::{Host, HostOptions};
use super::snmp_agents::{Agent, sim_set, start_snmpsim};
use microfaas::drivers::gpio::{ButtonLine, GpioError, LineSpec, Located};
use microfaas::engine::Engine;
use microfaas::engine::board::{BoardTiming, GpioButtons, LineOpener};
use microfaas::engine::vm::{FakeDriver, Presence, VmDriver};
use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The hold `board_spec` configures; a press at least this long cuts power.
pub const FORCE_OFF: Duration = Duration::from_millis(1500);

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a simulated board behaves once switched on.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Link up, agent dials in and obeys `poweroff`.
    Healthy,
    /// Hangs before its PHY comes up: no link, no agent.
    NoLink,
    /// Its PHY comes up (link up) but its agent never starts.
    NoAgent,
}

/// One simulated board: its switch port (ifIndex), its agent process and what it felt.
pub struct Board {
    pub if_index: u32,
    pub behaviour: Behaviour,
    pub on: bool,
    pub agent: Option<Child>,
    /// Every press: how long it was held.
    pub presses: Vec<Duration>,
    /// Short presses felt while on (the engine must never pulse an on board it knows is on).
    pub pulses_while_on: usize,
    pressed_at: Option<Instant>,
}

/// The boards, the switch they are on, and where (and with which token) their agents dial.
pub struct Rack {
    pub boards: Mutex<HashMap<String, Board>>,
    pub sim: Agent,
    endpoint: String,
    token: String,
}

impl Rack {
    /// An empty rack on the `snmpsim` switch `sim`, whose agents dial `endpoint` with `token`.
    pub fn new(sim: Agent, endpoint: String, token: &str) -> Arc<Rack> {
        Arc::new(Rack {
            boards: Mutex::new(HashMap::new()),
            sim,
            endpoint,
            token: token.to_string(),
        })
    }

    /// Puts a board on port `if_index`, on (its agent running, link up) or off (link down).
    pub fn add(&self, name: &str, if_index: u32, behaviour: Behaviour, on: bool) {
        let agent = on.then(|| self.spawn_agent(name));
        self.set_oper(if_index, on);
        lock(&self.boards).insert(
            name.to_string(),
            Board {
                if_index,
                behaviour,
                on,
                agent,
                presses: Vec::new(),
                pulses_while_on: 0,
                pressed_at: None,
            },
        );
    }

    pub fn set_oper(&self, if_index: u32, up: bool) {
        sim_set(
            &self.sim,
            &format!(".1.3.6.1.2.1.2.2.1.8.{if_index}"),
            "i",
            if up { "1" } else { "2" },
        );
    }

    fn spawn_agent(&self, name: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_microfaas-agent"))
            .args(["--orchestrator", &self.endpoint, "--name", name])
            .args(["--token", &self.token, "--lifecycle", "warm"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start microfaas-agent")
    }

    /// What the board does when its button is released after `held`.
    fn released(&self, name: &str, held: Duration) {
        let mut boards = lock(&self.boards);
        let Some(b) = boards.get_mut(name) else {
            return;
        };
        b.presses.push(held);
        if held >= FORCE_OFF {
            b.on = false;
            if let Some(mut c) = b.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let idx = b.if_index;
            drop(boards);
            self.set_oper(idx, false);
        } else if b.on {
            b.pulses_while_on += 1;
        } else {
            b.on = true;
            if b.behaviour != Behaviour::NoLink {
                if b.behaviour == Behaviour::Healthy {
                    b.agent = Some(self.spawn_agent(name));
                }
                let idx = b.if_index;
                drop(boards);
                self.set_oper(idx, true);
            }
        }
    }

    /// Boards whose agent exited (it obeyed `poweroff`) go dark, link down.
    pub fn reap(&self) {
        let mut down = Vec::new();
        for b in lock(&self.boards).values_mut() {
            if let Some(c) = &mut b.agent
                && let Ok(Some(_)) = c.try_wait()
            {
                b.agent = None;
                b.on = false;
                down.push(b.if_index);
            }
        }
        for idx in down {
            self.set_oper(idx, false);
        }
    }

    /// Stops the boards' agents and the switch. The engine keeps its buttons (and so this rack)
    /// until the test process ends, which runs no destructor: without this the `snmpsim`
    /// process outlives the test.
    pub fn shut_down(&self) {
        for b in lock(&self.boards).values_mut() {
            if let Some(mut c) = b.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.sim.terminate();
    }

    pub fn presses(&self, name: &str) -> Vec<Duration> {
        lock(&self.boards)
            .get(name)
            .map(|b| b.presses.clone())
            .unwrap_or_default()
    }

    pub fn is_on(&self, name: &str) -> bool {
        lock(&self.boards).get(name).is_some_and(|b| b.on)
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        for b in lock(&self.boards).values_mut() {
            if let Some(mut c) = b.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A board's power button: pressing and releasing it acts on the rack's board.
pub struct SimLine {
    rack: Arc<Rack>,
    worker: String,
}

impl ButtonLine for SimLine {
    fn set(&self, pressed: bool) -> Result<(), GpioError> {
        let mut boards = lock(&self.rack.boards);
        let Some(b) = boards.get_mut(&self.worker) else {
            return Ok(());
        };
        if pressed {
            b.pressed_at = Some(Instant::now());
        } else if let Some(t) = b.pressed_at.take() {
            drop(boards);
            self.rack.released(&self.worker, t.elapsed());
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("simulated button of {}", self.worker)
    }
}

/// Opens every worker's line onto the rack: `GpioButtons::new(SimOpener(rack))`.
pub struct SimOpener(pub Arc<Rack>);

impl LineOpener for SimOpener {
    type Line = SimLine;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError> {
        let offset = match spec {
            LineSpec::Chip { line, .. } => *line,
            _ => 0,
        };
        Ok(Located {
            chip: "/sim".into(),
            offset,
            label: spec.to_string(),
        })
    }
    fn open(&self, worker: &str, _at: Located, _low: bool) -> Result<SimLine, GpioError> {
        Ok(SimLine {
            rack: self.0.clone(),
            worker: worker.to_string(),
        })
    }
}

/// A Warm board worker's spec: button `line` of the simulated chip (200 ms pulse, the
/// `FORCE_OFF` hold), on `port` of `switch`.
pub fn board_spec(power: &str, line: u32, switch: &str, port: &str, bounce: bool) -> Value {
    json!({"power": power, "lifecycle": {"mode": "Warm"}, "board": {
        "powerButton": {"chip": "sim", "line": line, "pulse": "200ms", "forceOff": "1500ms"},
        "network": {"switch": switch, "port": port, "bounceOnFailure": bounce}}})
}

/// A v2c Switch spec for an SNMP agent on loopback `port`, polled every 500 ms.
pub fn switch_spec(port: u16, community_file: &Path) -> Value {
    json!({"address": format!("127.0.0.1:{port}"),
           "snmp": {"version": "v2c", "communityFile": community_file.to_str().expect("utf8")},
           "timeout": "300ms", "retries": 1, "pollInterval": "500ms"})
}

/// Occurrences of event `reason` on worker `name` (identical repeats share one row with a
/// count).
pub fn event_count<D: VmDriver, P: Presence>(
    engine: &Engine<D, P>,
    name: &str,
    reason: &str,
) -> i64 {
    engine
        .with_store(|s| s.events(Kind::Worker, name, 200))
        .unwrap_or_default()
        .iter()
        .filter(|e| e.reason == reason)
        .map(|e| e.count)
        .sum()
}

/// A whole host (store, engine, agent endpoint, gateway; see tests/support/host.rs) with no VM,
/// whose board workers are simulated on a `Rack` on a real `snmpsim` switch declared as `tor`.
/// A board whose agent obeyed `poweroff` goes dark (link down) by itself, as a real one does.
pub struct BoardHost {
    pub host: Host<FakeDriver>,
    pub rack: Arc<Rack>,
    reaping: Arc<AtomicBool>,
    reaper: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl BoardHost {
    /// Applies a Cluster with `defaults`, the switch `tor` and `objects` (workers whose boards
    /// are given in `boards` as (worker, ifIndex), all off), then starts the host with a 5 s
    /// agent timeout.
    pub async fn start(
        defaults: Value,
        objects: Vec<DesiredObject>,
        boards: &[(&str, u32)],
        opts: &HostOptions,
    ) -> BoardHost {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        let community = dir.path().join("community");
        std::fs::write(&community, "public\n").expect("community file");
        let sim = start_snmpsim();
        let mut all = vec![
            DesiredObject::new(Kind::Cluster, "c", json!({ "defaults": defaults })),
            DesiredObject::new(Kind::Switch, "tor", switch_spec(sim.port, &community)),
        ];
        all.extend(objects);
        Store::open(&state)
            .expect("store")
            .apply(&all, None, false, false)
            .expect("apply");
        let mut rack = None;
        let host = Host::start_with(
            &state,
            Arc::new(FakeDriver::default()),
            opts,
            |engine, endpoint| {
                let r = Rack::new(sim, endpoint.addr.to_string(), &opts.token);
                for &(name, if_index) in boards {
                    r.add(name, if_index, Behaviour::Healthy, false);
                }
                engine.set_buttons(Arc::new(GpioButtons::new(SimOpener(r.clone()))));
                engine.set_board_timing(BoardTiming {
                    agent_timeout: Duration::from_secs(5),
                    decay: Duration::from_secs(600),
                    bounce_hold: Duration::from_millis(1500),
                });
                rack = Some(r);
            },
        )
        .await;
        let rack = rack.expect("the rack is set up");
        let reaping = Arc::new(AtomicBool::new(true));
        let reaper = {
            let (rack, reaping) = (rack.clone(), reaping.clone());
            std::thread::spawn(move || {
                while reaping.load(Ordering::Relaxed) {
                    rack.reap();
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        BoardHost {
            host,
            rack,
            reaping,
            reaper,
            _dir: dir,
        }
    }

    /// The worker's status as the engine last wrote it.
    pub fn status(&self, worker: &str) -> Value {
        self.host
            .engine
            .get(Kind::Worker, worker)
            .map(|o| o.status)
            .unwrap_or(Value::Null)
    }

    /// Waits (up to 60 s) until the engine has `worker` Off and its board is dark.
    pub async fn until_off(&self, worker: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.status(worker)["phase"] != "Off" || self.rack.is_on(worker) {
            assert!(
                Instant::now() < deadline,
                "{what}: board on = {}, status {}",
                self.rack.is_on(worker),
                self.status(worker)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the reaper, then the host; the rack's agents go with the last `Rack` handle.
    pub async fn stop(self) {
        self.reaping.store(false, Ordering::Relaxed);
        self.reaper.join().expect("reaper");
        self.host.stop().await;
        self.rack.shut_down();
    }
}
