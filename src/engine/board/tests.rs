//! The power semantics against a fake line whose board reacts like a BeagleBone: a short
//! press turns an off board on (its agent connects), a long press cuts power.

use super::*;
use crate::drivers::gpio::{ButtonLine, GpioError, LineSpec, Located};
use crate::engine::Config;
use crate::engine::vm::FakeDriver;
use crate::store::{DesiredObject, Store};
use std::collections::HashSet;

const PULSE: Duration = Duration::from_millis(30);
const HOLD: Duration = Duration::from_millis(150);
const AGENT_TIMEOUT: Duration = Duration::from_millis(400);

/// One simulated board: power, the presses it felt, and its agent.
#[derive(Default)]
struct Sim {
    on: bool,
    /// (pressed at, released at)
    presses: Vec<(Instant, Instant)>,
    pressed_at: Option<Instant>,
    /// A line set pressed while already pressed (two presses interleaving).
    overlapped: bool,
    connected: HashSet<String>,
    /// The agent obeys `poweroff`.
    obeys: bool,
    /// A pulse boots the board to a connected agent.
    boots: bool,
}

#[derive(Clone, Default)]
struct World(Arc<Mutex<Sim>>);

struct SimLine(World, String);

impl ButtonLine for SimLine {
    fn set(&self, pressed: bool) -> Result<(), GpioError> {
        let mut s = lock(&(self.0).0);
        let now = Instant::now();
        match (pressed, s.pressed_at) {
            (true, Some(_)) => s.overlapped = true,
            (true, None) => s.pressed_at = Some(now),
            (false, Some(t)) => {
                s.pressed_at = None;
                s.presses.push((t, now));
                if now - t >= HOLD {
                    s.on = false;
                    s.connected.remove(&self.1);
                } else if !s.on {
                    s.on = true;
                    if s.boots {
                        s.connected.insert(self.1.clone());
                    }
                }
            }
            (false, None) => {}
        }
        Ok(())
    }
    fn describe(&self) -> String {
        "sim".into()
    }
}

struct SimOpener(World);

impl LineOpener for SimOpener {
    type Line = SimLine;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError> {
        Ok(Located {
            chip: "/sim".into(),
            offset: 1,
            label: spec.to_string(),
        })
    }
    fn open(&self, worker: &str, _at: Located, _low: bool) -> Result<SimLine, GpioError> {
        Ok(SimLine(self.0.clone(), worker.to_string()))
    }
}

impl Presence for World {
    fn is_connected(&self, worker: &str) -> bool {
        lock(&self.0).connected.contains(worker)
    }
    async fn request_poweroff(&self, worker: &str) -> bool {
        let mut s = lock(&self.0);
        if !s.connected.contains(worker) {
            return false;
        }
        if s.obeys {
            s.connected.remove(worker);
            s.on = false;
        }
        true
    }
}

type TestEngine = Arc<Engine<FakeDriver, World>>;

fn engine(power: &str, status: Option<Value>, world: &World) -> (TestEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("store");
    let obj = DesiredObject::new;
    store
        .apply(
            &[
                obj(
                    Kind::Cluster,
                    "c",
                    json!({"defaults": {"bootTimeout": "2s", "powerOnHoldoff": "0s",
                                        "powerOffHoldoff": "0s", "quarantineAfter": 3}}),
                ),
                obj(
                    Kind::Worker,
                    "bbb",
                    json!({"power": power, "board": {"powerButton":
                        {"pin": "P9_12", "pulse": "30ms", "forceOff": "150ms"}}}),
                ),
            ],
            None,
            false,
            false,
        )
        .expect("apply");
    if let Some(st) = status {
        store.set_status(Kind::Worker, "bbb", &st).expect("status");
    }
    let e = Engine::new(
        store,
        Arc::new(FakeDriver::default()),
        Arc::new(world.clone()),
        Config {
            state_dir: dir.path().to_path_buf(),
            orchestrator_port: 1,
            token: "t".into(),
            default_initrd: None,
            concurrency: 1,
            resync: Duration::from_secs(3600),
        },
    );
    e.set_buttons(Arc::new(GpioButtons::new(SimOpener(world.clone()))));
    e.set_board_timing(BoardTiming {
        agent_timeout: AGENT_TIMEOUT,
        decay: Duration::from_secs(60),
        bounce_hold: Duration::from_millis(10),
    });
    (e, dir)
}

fn commanded(on: bool, age: Duration) -> Value {
    let at = clock::now_millis() - i64::try_from(age.as_millis()).unwrap_or(0);
    json!({"commanded": {"state": if on {"On"} else {"Off"}, "atMs": at, "reason": "test"}})
}

fn phase(e: &TestEngine) -> String {
    e.get(Kind::Worker, "bbb")
        .and_then(|o| o.status["phase"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Reconciles like the queue would (requeues honoured, capped) until `done` or `limit`.
async fn drive(e: &TestEngine, limit: Duration, done: impl Fn(&TestEngine) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(e) && Instant::now() < deadline {
        let wait = match e.reconcile(&(Kind::Worker, "bbb".into())).await {
            Ok(Next::RequeueAfter(d)) => d,
            _ => Duration::from_millis(50),
        };
        tokio::time::sleep(wait.clamp(Duration::from_millis(5), Duration::from_millis(50))).await;
    }
}

fn presses(w: &World) -> Vec<Duration> {
    lock(&w.0).presses.iter().map(|(a, b)| *b - *a).collect()
}

#[tokio::test]
async fn no_press_when_observed_on() {
    let w = World::default();
    lock(&w.0).connected.insert("bbb".into());
    lock(&w.0).on = true;
    let (e, _d) = engine("On", Some(commanded(false, Duration::ZERO)), &w);
    for _ in 0..5 {
        let _ = e.reconcile(&(Kind::Worker, "bbb".into())).await;
    }
    assert_eq!(phase(&e), "Ready");
    assert!(
        presses(&w).is_empty(),
        "pressed a board that is on: {:?}",
        presses(&w)
    );
}

#[tokio::test]
async fn no_press_on_unknown() {
    for (power, status) in [
        ("On", None),
        ("Off", None),
        // A command older than the decay is no evidence either.
        ("On", Some(commanded(false, Duration::from_secs(120)))),
        ("Off", Some(commanded(true, Duration::from_secs(120)))),
    ] {
        let w = World::default();
        let (e, _d) = engine(power, status, &w);
        drive(&e, Duration::from_secs(1), |_| false).await;
        assert_eq!(phase(&e), "Unknown", "{power}");
        assert!(presses(&w).is_empty(), "{power}: {:?}", presses(&w));
        let st = e.get(Kind::Worker, "bbb").expect("worker").status;
        assert_eq!(st["observedPower"]["state"], "Unknown");
    }
}

#[tokio::test]
async fn one_pulse_when_observed_off_then_ready() {
    let w = World::default();
    lock(&w.0).boots = true;
    let (e, _d) = engine("On", Some(commanded(false, Duration::from_secs(1))), &w);
    drive(&e, Duration::from_secs(5), |e| phase(e) == "Ready").await;
    assert_eq!(phase(&e), "Ready");
    // Ready stays Ready without another press.
    drive(&e, Duration::from_secs(1), |_| false).await;
    let p = presses(&w);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0] >= PULSE && p[0] < HOLD, "{p:?}");
    let events = e
        .with_store(|s| s.events(Kind::Worker, "bbb", 50))
        .expect("events");
    assert!(
        events
            .iter()
            .any(|ev| ev.reason == "PowerPulse" && ev.message.contains("observed off")),
        "{events:?}"
    );
    // Noted by the reconcile that found the agent, stored with its Ready status.
    assert!(
        events
            .iter()
            .any(|ev| ev.reason == "Ready" && ev.message.contains("after power on")),
        "{events:?}"
    );
}

/// An event noted by a reconcile that writes no status is stored when the reconcile ends, and
/// one whose status write fails is stored without it.
#[tokio::test]
async fn noted_events_are_stored_without_a_status_write() {
    let w = World::default();
    let (e, _d) = engine("On", None, &w);
    e.note_event(
        Kind::Worker,
        "ghost",
        EventType::Normal,
        "Noted",
        "by a reconcile",
    );
    let noted_at = crate::store::clock::now();
    // Stamped with the time it was noted, not the (later) time it is stored.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // No such worker: its reconcile writes nothing.
    let _ = e.reconcile(&(Kind::Worker, "ghost".into())).await;
    let events = e
        .with_store(|s| s.events(Kind::Worker, "ghost", 10))
        .expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason, "Noted");
    assert!(
        events[0].first_time <= noted_at,
        "stored at {}, noted by {noted_at}",
        events[0].first_time
    );

    // A status write that fails (no such object) still leaves its events on record.
    e.note_event(Kind::Worker, "ghost", EventType::Normal, "Noted", "again");
    let mut st = crate::engine::status::Status::from_value(&json!({}));
    st.set_phase("Ready");
    e.write_status(Kind::Worker, "ghost", &mut st);
    let events = e
        .with_store(|s| s.events(Kind::Worker, "ghost", 10))
        .expect("events");
    assert!(events.iter().any(|ev| ev.message == "again"), "{events:?}");
}

#[tokio::test]
async fn power_off_asks_the_agent_and_presses_nothing() {
    let w = World::default();
    {
        let mut s = lock(&w.0);
        s.connected.insert("bbb".into());
        s.on = true;
        s.obeys = true;
    }
    let (e, _d) = engine("Off", None, &w);
    drive(&e, Duration::from_secs(5), |e| phase(e) == "Off").await;
    assert_eq!(phase(&e), "Off");
    assert!(presses(&w).is_empty(), "{:?}", presses(&w));
}

#[tokio::test]
async fn force_off_only_after_the_agent_path_timed_out() {
    let w = World::default();
    {
        let mut s = lock(&w.0);
        s.connected.insert("bbb".into());
        s.on = true;
    }
    let (e, _d) = engine("Off", None, &w);
    let t0 = Instant::now();
    drive(&e, Duration::from_secs(5), |e| phase(e) == "Off").await;
    assert_eq!(phase(&e), "Off");
    let s = lock(&w.0);
    assert_eq!(s.presses.len(), 1, "{:?}", s.presses);
    let (start, end) = s.presses[0];
    assert!(end - start >= HOLD, "a hold, not a pulse");
    assert!(
        start - t0 >= AGENT_TIMEOUT,
        "held {:?} after the start, before the agent's {AGENT_TIMEOUT:?}",
        start - t0
    );
    drop(s);
    let events = e
        .with_store(|s| s.events(Kind::Worker, "bbb", 50))
        .expect("events");
    let asked = events.iter().position(|ev| ev.reason == "PowerOff");
    let held = events.iter().position(|ev| ev.reason == "PowerHold");
    assert!(
        asked.is_some() && held.is_some() && asked < held,
        "{events:?}"
    );
}

#[tokio::test]
async fn presses_never_interleave() {
    let w = World::default();
    let buttons = GpioButtons::new(SimOpener(w.clone()));
    let cfg = ButtonConfig {
        spec: LineSpec::HeaderPin("P9_12".into()),
        active_low: true,
        pulse: PULSE,
        force_off: HOLD,
    };
    let (a, b, c) = tokio::join!(
        buttons.press("bbb", &cfg, Press::Pulse),
        buttons.press("bbb", &cfg, Press::Hold),
        buttons.press("bbb", &cfg, Press::Pulse)
    );
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    let s = lock(&w.0);
    assert!(!s.overlapped, "a press started while another was held");
    assert_eq!(s.presses.len(), 3);
    for pair in s.presses.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "{:?}", s.presses);
    }
}

#[test]
fn observation_order() {
    let ev = |agent, link: Option<CondStatus>, c: Option<bool>| Evidence {
        agent,
        link: link.map(|s| (s, "port 1".to_string())),
        link_at_ms: Some(1_500),
        commanded: c.map(|on| Commanded {
            on,
            at_ms: 1_000,
            reason: "r".into(),
        }),
    };
    let decay = Duration::from_secs(10);
    let at = |e: &Evidence, now| observe(e, now, decay).0;
    assert_eq!(
        at(&ev(true, Some(CondStatus::False), Some(false)), 2_000),
        Power::On
    );
    assert_eq!(
        at(&ev(false, Some(CondStatus::True), Some(false)), 2_000),
        Power::On
    );
    assert_eq!(
        at(&ev(false, Some(CondStatus::False), Some(true)), 2_000),
        Power::Off
    );
    assert_eq!(
        at(&ev(false, Some(CondStatus::Unknown), Some(true)), 2_000),
        Power::On
    );
    assert_eq!(
        at(&ev(false, Some(CondStatus::Unknown), Some(true)), 20_000),
        Power::Unknown
    );
    assert_eq!(
        at(&ev(false, Some(CondStatus::Unknown), None), 2_000),
        Power::Unknown
    );
    assert_eq!(at(&ev(false, None, None), 2_000), Power::Unknown);
    // A command after the last poll outranks that poll's link.
    let mut newer = ev(false, Some(CondStatus::True), Some(false));
    newer.commanded = newer.commanded.map(|c| Commanded { at_ms: 1_600, ..c });
    assert_eq!(at(&newer, 2_000), Power::Off);
}
