//! Board workers in the engine against simulated boards made of real parts: the power button is
//! a fake line, but a board it switches on runs a real `microfaas-agent` process (its non-PID-1
//! mode) that dials the engine's real agent endpoint on loopback, and the board's switch port
//! is a real `snmpsim` 24-port switch whose ifOperStatus follows the board (set with `snmpset`).
//! The engine polls that switch over SNMP like a real one.
//!
//! Covered: Off → Ready with one press; power off through the agent with no press; a hung agent
//! forced off by the long hold after the agent timeout; an operator's power cycle; boot gating with a port bounce (the SET
//! seen by the simulator) only where `bounceOnFailure` is set, then the ladder to Bad; and no
//! action at all when the switch does not answer.

mod support;

use microfaas::engine::board::{BoardTiming, GpioButtons, POWER_REQUEST, POWER_RESULT};
use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::Kind;
use microfaas::orchestrator::{Endpoint, Sessions};
use microfaas::store::{DesiredObject, Store};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::boards::{
    Behaviour, FORCE_OFF, Rack, SimOpener, board_spec, event_count, lock, switch_spec,
};
use support::snmp_agents::{snmp_tool, start_snmpsim};
use tokio::sync::watch;

const TOKEN: &str = "board-test-token";
/// How long an agent has to power its board off before the hold.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

fn obj(kind: Kind, name: &str, spec: Value) -> DesiredObject {
    DesiredObject::new(kind, name, spec)
}

struct World {
    engine: Arc<Engine<FakeDriver, Sessions>>,
    rack: Arc<Rack>,
    stop: watch::Sender<bool>,
    _endpoint: Endpoint,
    dir: tempfile::TempDir,
}

impl World {
    /// `boards`: (worker, ifIndex of its port, behaviour, initially on).
    async fn start(
        objects: Vec<DesiredObject>,
        boards: &[(&str, u32, Behaviour, bool)],
        boot_timeout: &str,
    ) -> World {
        let sim = start_snmpsim();
        let dir = tempfile::tempdir().expect("tmp");
        let community = dir.path().join("community");
        std::fs::write(&community, "public\n").expect("community file");
        let endpoint = Endpoint::bind("127.0.0.1:0", TOKEN.as_bytes().to_vec())
            .await
            .expect("bind the agent endpoint");
        let rack = Rack::new(sim, endpoint.addr.to_string(), TOKEN);
        for &(name, idx, behaviour, on) in boards {
            rack.add(name, idx, behaviour, on);
        }
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let silent_port = silent.local_addr().expect("addr").port();
        // Keep the silent port bound (nobody answers) for the test's life.
        std::mem::forget(silent);
        let switch = |port: u16| switch_spec(port, &community);
        let mut all = vec![
            obj(
                Kind::Cluster,
                "c",
                json!({"defaults": {"bootTimeout": boot_timeout, "powerOnHoldoff": "500ms",
                                    "powerOffHoldoff": "1s", "quarantineAfter": 3}}),
            ),
            obj(Kind::Switch, "tor", switch(rack.sim.port)),
            obj(Kind::Switch, "gone", switch(silent_port)),
        ];
        all.extend(objects);
        let mut store = Store::open(dir.path()).expect("store");
        store.apply(&all, None, false, false).expect("apply");
        let engine = Engine::new(
            store,
            Arc::new(FakeDriver::default()),
            endpoint.sessions.clone(),
            Config {
                state_dir: dir.path().to_path_buf(),
                orchestrator_port: endpoint.addr.port(),
                token: TOKEN.into(),
                default_initrd: None,
                concurrency: 4,
                resync: Duration::from_secs(2),
            },
        );
        engine.set_buttons(Arc::new(GpioButtons::new(SimOpener(rack.clone()))));
        engine.set_board_timing(BoardTiming {
            agent_timeout: AGENT_TIMEOUT,
            decay: Duration::from_secs(600),
            bounce_hold: Duration::from_millis(1500),
        });
        let (stop, rx) = watch::channel(false);
        tokio::spawn(engine.clone().run(rx, Some(endpoint.subscribe())));
        engine.enqueue_all();
        World {
            engine,
            rack,
            stop,
            _endpoint: endpoint,
            dir,
        }
    }

    fn status(&self, name: &str) -> Value {
        self.engine
            .get(Kind::Worker, name)
            .map(|o| o.status)
            .unwrap_or(Value::Null)
    }

    fn phase(&self, name: &str) -> String {
        self.status(name)["phase"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (reaping boards whose agent exited) until `done` or `limit`.
    async fn until(&self, limit: Duration, what: &str, done: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; statuses: {}",
                self.dump()
            );
            self.rack.reap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn dump(&self) -> String {
        let names: Vec<String> = lock(&self.rack.boards).keys().cloned().collect();
        names
            .iter()
            .map(|n| {
                format!(
                    "\n{n}: {}\n  events: {:?}",
                    self.status(n),
                    self.events(n)
                        .iter()
                        .map(|(r, m)| format!("{r}: {m}"))
                        .collect::<Vec<_>>()
                )
            })
            .collect()
    }

    /// (reason, message), by last occurrence, oldest first.
    fn events(&self, name: &str) -> Vec<(String, String)> {
        self.engine
            .with_store(|s| s.events(Kind::Worker, name, 200))
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.reason, e.message))
            .collect()
    }

    fn count(&self, name: &str, reason: &str) -> i64 {
        event_count(&self.engine, name, reason)
    }

    fn set_power(&self, name: &str, spec: Value) {
        self.engine
            .with_store(|s| s.apply(&[obj(Kind::Worker, name, spec)], None, false, false))
            .expect("apply");
        self.engine.queue.add((Kind::Worker, name.to_string()));
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.rack.shut_down();
        let _ = &self.dir;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_press_to_ready_agent_led_off_and_forced_off() {
    let w = World::start(
        vec![
            obj(
                Kind::Worker,
                "bbb-1",
                board_spec("On", 1, "tor", "Gi1/0/5", false),
            ),
            obj(
                Kind::Worker,
                "bbb-2",
                board_spec("On", 2, "tor", "Gi1/0/6", false),
            ),
        ],
        // bbb-1 off (port down); bbb-2 already on with its agent.
        &[
            ("bbb-1", 10105, Behaviour::Healthy, false),
            ("bbb-2", 10106, Behaviour::Healthy, true),
        ],
        "20s",
    )
    .await;

    // Off → Ready with exactly one pulse; bbb-2, observed on, is never pressed.
    w.until(Duration::from_secs(60), "both Ready", |w| {
        w.phase("bbb-1") == "Ready" && w.phase("bbb-2") == "Ready"
    })
    .await;
    let p1 = w.rack.presses("bbb-1");
    assert_eq!(p1.len(), 1, "{p1:?}");
    assert!(p1[0] < FORCE_OFF, "a pulse: {p1:?}");
    assert!(w.rack.presses("bbb-2").is_empty(), "{}", w.dump());
    let pulse = w
        .events("bbb-1")
        .into_iter()
        .find(|(r, _)| r == "PowerPulse")
        .expect("the press is an event");
    assert!(
        pulse.1.contains("observed off") && pulse.1.contains("link down"),
        "{pulse:?}"
    );
    assert_eq!(w.status("bbb-1")["observedPower"]["state"], "On");
    // The agent may dial in before the next poll; the link follows the board on the switch.
    w.until(Duration::from_secs(30), "bbb-1 LinkUp", |w| {
        link_of(&w.status("bbb-1"))["status"] == "True"
    })
    .await;

    // Power off through the agent: it exits on `poweroff`, its link drops, no press at all.
    w.set_power("bbb-1", board_spec("Off", 1, "tor", "Gi1/0/5", false));
    w.until(Duration::from_secs(60), "bbb-1 Off", |w| {
        w.phase("bbb-1") == "Off"
    })
    .await;
    assert_eq!(w.rack.presses("bbb-1").len(), 1, "{}", w.dump());
    assert!(w.count("bbb-1", "PowerOff") >= 1, "{}", w.dump());
    assert_eq!(w.count("bbb-1", "PowerHold"), 0, "{}", w.dump());
    assert!(lock(&w.rack.boards)["bbb-1"].agent.is_none());

    // A hung board: its agent is stopped (SIGSTOP), so it never acts on `poweroff`. The hold
    // comes only after the agent timeout, and cuts power.
    let pid = lock(&w.rack.boards)["bbb-2"]
        .agent
        .as_ref()
        .map(|c| c.id())
        .expect("bbb-2 agent");
    // SAFETY: signalling a child this test spawned and has not reaped.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    let t0 = Instant::now();
    w.set_power("bbb-2", board_spec("Off", 2, "tor", "Gi1/0/6", false));
    w.until(Duration::from_secs(60), "bbb-2 forced Off", |w| {
        w.phase("bbb-2") == "Off"
    })
    .await;
    let p2 = w.rack.presses("bbb-2");
    assert_eq!(p2.len(), 1, "{p2:?}");
    assert!(p2[0] >= FORCE_OFF, "a hold: {p2:?}");
    assert!(t0.elapsed() >= AGENT_TIMEOUT + FORCE_OFF);
    let ev = w.events("bbb-2");
    let asked = ev.iter().position(|(r, _)| r == "PowerOff");
    let held = ev
        .iter()
        .position(|(r, m)| r == "PowerHold" && m.contains("did not power off"));
    assert!(asked.is_some() && held.is_some() && asked < held, "{ev:?}");
    for name in ["bbb-1", "bbb-2"] {
        assert_eq!(lock(&w.rack.boards)[name].pulses_while_on, 0, "{name}");
    }

    // An operator's `power cycle` of bbb-1 (wanted Off, observed Off): the off half is already
    // done, the on half is one pulse to Ready, and the result is recorded for the CLI.
    let request = json!({"id": "req-1", "action": "cycle", "force": false});
    w.until(Duration::from_secs(60), "the cycle's result", |w| {
        let st = w.status("bbb-1");
        if st[POWER_RESULT]["id"] == "req-1" {
            return true;
        }
        if st[POWER_REQUEST].is_null() {
            // Put the request (back) in: a reconcile's own status write may race this one.
            let mut st = st;
            st[POWER_REQUEST] = request.clone();
            let _ = w
                .engine
                .with_store(|s| s.set_status(Kind::Worker, "bbb-1", &st));
            w.engine.queue.add((Kind::Worker, "bbb-1".into()));
        }
        false
    })
    .await;
    let st = w.status("bbb-1");
    assert_eq!(st[POWER_RESULT]["ok"], true, "{st}");
    assert_eq!(st["phase"], "Ready", "{st}");
    assert_eq!(w.rack.presses("bbb-1").len(), 2, "{}", w.dump());
    assert!(w.count("bbb-1", "PowerCycle") >= 1 && w.count("bbb-1", "PowerRequestDone") >= 1);
}

fn link_of(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "LinkUp"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Samples one port's ifAdminStatus on the simulator until `stop`, keeping each change.
fn watch_admin(
    sim_port: u16,
    if_index: u32,
    stop: Arc<Mutex<bool>>,
) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut seen: Vec<String> = Vec::new();
        while !*lock(&stop) {
            let out = snmp_tool(
                "snmpget",
                &[
                    "-v2c",
                    "-c",
                    "public",
                    "-On",
                    "-Oqv",
                    "-t",
                    "0.3",
                    "-r",
                    "0",
                    &format!("127.0.0.1:{sim_port}"),
                    &format!(".1.3.6.1.2.1.2.2.1.7.{if_index}"),
                ],
            );
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && seen.last() != Some(&v) {
                seen.push(v);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_bounces_only_where_allowed_then_the_ladder_and_no_action_when_unreachable() {
    let w = World::start(
        vec![
            obj(
                Kind::Worker,
                "bbb-b",
                board_spec("On", 1, "tor", "Gi1/0/7", true),
            ),
            obj(
                Kind::Worker,
                "bbb-n",
                board_spec("On", 2, "tor", "Gi1/0/5", false),
            ),
            obj(
                Kind::Worker,
                "bbb-u",
                board_spec("On", 3, "gone", "Gi1/0/1", true),
            ),
        ],
        &[
            ("bbb-b", 10107, Behaviour::NoLink, false),
            ("bbb-n", 10105, Behaviour::NoLink, false),
            ("bbb-u", 10101, Behaviour::Healthy, false),
        ],
        "3s",
    )
    .await;
    let stop = Arc::new(Mutex::new(false));
    let bounced = watch_admin(w.rack.sim.port, 10107, stop.clone());
    let untouched = watch_admin(w.rack.sim.port, 10105, stop.clone());

    w.until(Duration::from_secs(120), "both quarantined", |w| {
        w.status("bbb-b")["health"] == "Bad" && w.status("bbb-n")["health"] == "Bad"
    })
    .await;
    *lock(&stop) = true;
    let bounced = bounced.join().expect("watcher");
    let untouched = untouched.join().expect("watcher");

    // The simulator saw the bounce's SETs on bbb-b's port: down, then up again.
    assert!(
        bounced.windows(2).any(|p| p[0] == "2" && p[1] == "1"),
        "ifAdminStatus.10107 went {bounced:?}"
    );
    assert!(w.count("bbb-b", "PortBounce") >= 1, "{}", w.dump());
    // Never on the worker that did not ask for it.
    assert_eq!(untouched, ["1"], "ifAdminStatus.10105 went {untouched:?}");
    assert_eq!(w.count("bbb-n", "PortBounce"), 0, "{}", w.dump());

    // The ladder, as the board felt it: pulse (power on), re-pulse, force off, pulse; then Bad.
    for name in ["bbb-b", "bbb-n"] {
        let p = w.rack.presses(name);
        let kinds: Vec<&str> = p
            .iter()
            .map(|d| if *d >= FORCE_OFF { "hold" } else { "pulse" })
            .collect();
        assert_eq!(kinds, ["pulse", "pulse", "hold", "pulse"], "{name}: {p:?}");
        assert!(
            w.events(name)
                .iter()
                .any(|(r, m)| r == "PowerPulse" && m.contains("re-pulse")),
            "{name}: {}",
            w.dump()
        );
        assert!(w.count(name, "Quarantined") >= 1, "{}", w.dump());
        assert_eq!(w.phase(name), "Failed");
        assert_eq!(w.count(name, "LinkTimeout"), 3, "{}", w.dump());
    }

    // The board behind the unreachable switch: link Unknown, power Unknown, never pressed.
    let u = w.status("bbb-u");
    assert_eq!(u["phase"], "Unknown", "{u}");
    assert_eq!(u["observedPower"]["state"], "Unknown", "{u}");
    let link = link_of(&u);
    assert_eq!(link["status"], "Unknown", "{u}");
    assert_eq!(link["reason"], "SwitchUnreachable", "{u}");
    assert!(w.rack.presses("bbb-u").is_empty());
    assert_eq!(w.count("bbb-u", "PortBounce"), 0);
}
