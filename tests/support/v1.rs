//! MicroFaaS v1 workers for tests and the side-by-side bench, without GPIO or boards.
//!
//! `V1Fleet` is a fleet of fake v1 boards: board `id` dials from 127.0.0.<id> (v1 knows a
//! worker by the last octet of its address) and speaks the v1 worker protocol — a greeting
//! that is not a number, one job line, one result line (the real builtin function's output, or
//! instantly a fixed one), then the follow-up: sysrq `b` reboots it (back after `reboot`),
//! `o` powers it off. Its power button is a `ButtonLine` the engine presses through
//! `GpioButtons` (`V1Opener`): a press powers an off board on, a hold of `FORCE_OFF` cuts its
//! power, and a board that powers off while its button is held comes straight back on.
//!
//! `UdpOpener` instead turns every press into the loopback datagram `"<id> <pin> LOW|HIGH"`,
//! which the Python fake workers of the v1 anchor bench (`serve` mode) and upstream's GPIO
//! wrapper use.

use microfaas::drivers::gpio::{ButtonLine, GpioError, LineSpec, Located};
use microfaas::engine::board::LineOpener;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::Notify;

/// A press at least this long cuts a fake board's power (the manifests' `forceOff`).
pub const FORCE_OFF: Duration = Duration::from_millis(1500);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The header pins upstream v1 wires workers 3..12 to (its `AVAILABLE_WORKERS`).
pub const V1_PINS: [&str; 10] = [
    "P9_12", "P9_15", "P9_23", "P9_25", "P9_27", "P8_8", "P8_10", "P8_11", "P8_14", "P9_26",
];

/// The pin of v1 worker `id` (3..12), as upstream wires it.
pub fn v1_pin(id: u8) -> &'static str {
    V1_PINS[usize::from(id.saturating_sub(3)) % V1_PINS.len()]
}

/// One job a fake board ran: what it got, what it answered and how it was told to go.
#[derive(Debug, Clone)]
pub struct Job {
    pub board: u8,
    pub i_id: String,
    pub f_id: String,
    pub result: Value,
    pub follow: &'static str,
    /// When the job line arrived and when the follow-up did (the side-by-side bench's makespan
    /// runs from the first of the one to the last of the other, as the Python fakes count it).
    pub received: Instant,
    pub followed: Instant,
}

#[derive(Default)]
struct State {
    powered: bool,
    button_since: Option<Instant>,
    stopping: bool,
    /// Jobs still to be dropped: the board takes the job and dies without answering.
    drop_jobs: usize,
    presses: usize,
    presses_while_on: usize,
    power_ons: Vec<Instant>,
    power_offs: Vec<Instant>,
    reboots: usize,
}

enum Outcome {
    Reboot,
    Off,
    Refused,
}

/// One fake v1 board.
pub struct FakeBoard {
    pub id: u8,
    state: Mutex<State>,
    wake: Notify,
    cut: Notify,
    jobs: Mutex<Vec<Job>>,
}

impl FakeBoard {
    fn address(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, self.id)
    }

    /// The button's line went to `pressed`.
    fn button(&self, pressed: bool) {
        let mut st = lock(&self.state);
        if pressed {
            st.presses += 1;
            st.button_since = Some(Instant::now());
            if st.powered {
                st.presses_while_on += 1;
            } else {
                st.powered = true;
                st.power_ons.push(Instant::now());
                self.wake.notify_waiters();
            }
        } else if let Some(since) = st.button_since.take()
            && since.elapsed() >= FORCE_OFF
            && st.powered
        {
            st.powered = false;
            st.power_offs.push(Instant::now());
            self.cut.notify_waiters();
        }
    }

    async fn run(self: Arc<Self>, orch: SocketAddr, instant: bool, reboot: Duration) {
        loop {
            loop {
                let woken = self.wake.notified();
                {
                    let st = lock(&self.state);
                    if st.stopping {
                        return;
                    }
                    if st.powered {
                        break;
                    }
                }
                let _ = tokio::time::timeout(Duration::from_millis(100), woken).await;
            }
            let cut = self.cut.notified();
            let outcome = tokio::select! {
                o = self.session(orch, instant) => o,
                _ = cut => continue,
            };
            match outcome {
                Outcome::Reboot => {
                    lock(&self.state).reboots += 1;
                    // Even a zero sleep waits for the timer's next millisecond tick.
                    if !reboot.is_zero() {
                        tokio::time::sleep(reboot).await;
                    }
                }
                Outcome::Off => {
                    let mut st = lock(&self.state);
                    // A board powering off with its button held comes straight back on.
                    if st.button_since.is_none() {
                        st.powered = false;
                        st.power_offs.push(Instant::now());
                    }
                }
                Outcome::Refused => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// One boot's connection.
    async fn session(&self, orch: SocketAddr, instant: bool) -> Outcome {
        let Ok(sock) = TcpSocket::new_v4() else {
            return Outcome::Refused;
        };
        if sock
            .bind(SocketAddr::new(self.address().into(), 0))
            .is_err()
        {
            return Outcome::Refused;
        }
        let Ok(stream) = sock.connect(orch).await else {
            return Outcome::Refused;
        };
        let _ = stream.set_nodelay(true);
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        if w.write_all(b"w\n").await.is_err() {
            return Outcome::Reboot;
        }
        let mut line = String::new();
        if !matches!(r.read_line(&mut line).await, Ok(n) if n > 0) {
            return Outcome::Reboot;
        }
        let Ok(cmd) = serde_json::from_str::<Value>(&line) else {
            return Outcome::Reboot;
        };
        if let Some(kind) = control(&cmd) {
            return kind;
        }
        {
            let mut st = lock(&self.state);
            if st.drop_jobs > 0 {
                // Dies with the job: the connection closes, no result.
                st.drop_jobs -= 1;
                return Outcome::Reboot;
            }
        }
        let received = Instant::now();
        let i_id = cmd["i_id"].as_str().unwrap_or_default().to_string();
        let f_id = cmd["f_id"].as_str().unwrap_or_default().to_string();
        let started = Instant::now();
        let result = if instant {
            json!("fake")
        } else {
            match microfaas::functions::run(&f_id, &cmd["f_args"]) {
                Ok(v) => v,
                Err(e) => json!(format!("error: {e}")),
            }
        };
        let exec_ms = started.elapsed().as_secs_f64() * 1000.0;
        let reply = json!({"f_id": f_id, "i_id": i_id, "result": result, "exec_time": exec_ms});
        if w.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return Outcome::Reboot;
        }
        line.clear();
        let follow = match r.read_line(&mut line).await {
            Ok(n) if n > 0 => serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| control(&v)),
            _ => None,
        };
        // A real worker reboots on anything but a clear power-off.
        let (outcome, follow) = match follow {
            Some(Outcome::Off) => (Outcome::Off, "off"),
            _ => (Outcome::Reboot, "reboot"),
        };
        lock(&self.jobs).push(Job {
            board: self.id,
            i_id,
            f_id,
            result,
            follow,
            received,
            followed: Instant::now(),
        });
        outcome
    }
}

/// A reboot or power-off follow-up (a write to /proc/sysrq-trigger), or `None` for a job.
fn control(cmd: &Value) -> Option<Outcome> {
    if cmd["f_id"] != "fwrite" || cmd["f_args"]["path"] != "/proc/sysrq-trigger" {
        return None;
    }
    Some(if cmd["f_args"]["data"] == "o" {
        Outcome::Off
    } else {
        Outcome::Reboot
    })
}

/// Fake v1 boards by worker name.
pub struct V1Fleet {
    boards: HashMap<String, Arc<FakeBoard>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl V1Fleet {
    /// Boards `(worker name, id)`, all off, dialling `orch`; `instant` answers "fake" at once
    /// instead of running the function; a rebooted board dials again after `reboot`.
    pub fn start(
        boards: &[(String, u8)],
        orch: SocketAddr,
        instant: bool,
        reboot: Duration,
    ) -> Arc<V1Fleet> {
        let mut map = HashMap::new();
        let mut tasks = Vec::new();
        for (name, id) in boards {
            let b = Arc::new(FakeBoard {
                id: *id,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                cut: Notify::new(),
                jobs: Mutex::new(Vec::new()),
            });
            tasks.push(tokio::spawn(b.clone().run(orch, instant, reboot)));
            map.insert(name.clone(), b);
        }
        Arc::new(V1Fleet { boards: map, tasks })
    }

    pub fn board(&self, name: &str) -> &Arc<FakeBoard> {
        &self.boards[name]
    }

    /// The next `n` jobs `name` receives are dropped: the board dies with them.
    pub fn drop_jobs(&self, name: &str, n: usize) {
        lock(&self.board(name).state).drop_jobs = n;
    }

    /// Every job answered, all boards.
    pub fn jobs(&self) -> Vec<Job> {
        self.boards
            .values()
            .flat_map(|b| lock(&b.jobs).clone())
            .collect()
    }

    pub fn completed(&self) -> usize {
        self.boards.values().map(|b| lock(&b.jobs).len()).sum()
    }

    pub fn is_on(&self, name: &str) -> bool {
        lock(&self.board(name).state).powered
    }

    /// (presses, presses while on, reboots) of `name`.
    pub fn counters(&self, name: &str) -> (usize, usize, usize) {
        let st = lock(&self.board(name).state);
        (st.presses, st.presses_while_on, st.reboots)
    }

    /// For every power-on that followed a power-off, how long the board was off.
    pub fn off_gaps(&self) -> Vec<Duration> {
        let mut gaps = Vec::new();
        for b in self.boards.values() {
            let st = lock(&b.state);
            for off in &st.power_offs {
                if let Some(on) = st.power_ons.iter().find(|on| *on > off) {
                    gaps.push(on.duration_since(*off));
                }
            }
        }
        gaps
    }

    /// Stops every board (their connections close).
    pub fn stop(&self) {
        for b in self.boards.values() {
            lock(&b.state).stopping = true;
            b.wake.notify_waiters();
            b.cut.notify_waiters();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A distinct line per pin (`P9_12` → 912), as the engine keeps one button per line.
fn located(spec: &LineSpec) -> Located {
    let (offset, label) = match spec {
        LineSpec::Chip { line, .. } => (*line, spec.to_string()),
        LineSpec::HeaderPin(p) => {
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            (digits.parse().unwrap_or(0), p.clone())
        }
        LineSpec::Name(n) => (0, n.clone()),
    };
    Located {
        chip: "/v1-sim".into(),
        offset,
        label,
    }
}

/// The power button of a fake board.
pub struct FleetLine(Arc<FakeBoard>);

impl ButtonLine for FleetLine {
    fn set(&self, pressed: bool) -> Result<(), GpioError> {
        self.0.button(pressed);
        Ok(())
    }
    fn describe(&self) -> String {
        format!("button of fake v1 board {}", self.0.id)
    }
}

/// Opens each worker's line onto its fake board: `GpioButtons::new(V1Opener(fleet))`.
pub struct V1Opener(pub Arc<V1Fleet>);

impl LineOpener for V1Opener {
    type Line = FleetLine;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError> {
        Ok(located(spec))
    }
    fn open(&self, worker: &str, at: Located, _low: bool) -> Result<FleetLine, GpioError> {
        match self.0.boards.get(worker) {
            Some(b) => Ok(FleetLine(b.clone())),
            None => Err(GpioError::LineNameNotFound(at.label)),
        }
    }
}

/// A button whose presses are datagrams `"<id> <pin> LOW"` (pressed) and `"... HIGH"`.
pub struct UdpLine {
    sock: UdpSocket,
    to: SocketAddr,
    id: u8,
    pin: String,
}

impl ButtonLine for UdpLine {
    fn set(&self, pressed: bool) -> Result<(), GpioError> {
        let level = if pressed { "LOW" } else { "HIGH" };
        // Loopback datagrams are not lost short of a full socket buffer; a send error is the
        // only failure there is to report, and the line API has no I/O variant for it.
        if let Err(e) = self.sock.send_to(
            format!("{} {} {level}", self.id, self.pin).as_bytes(),
            self.to,
        ) {
            eprintln!("v1 button datagram to {}: {e}", self.to);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("{} of v1 worker {} (UDP {})", self.pin, self.id, self.to)
    }
}

/// Sends each worker's presses to `to`, knowing the workers' v1 ids by name.
pub struct UdpOpener {
    pub to: SocketAddr,
    pub ids: HashMap<String, u8>,
}

impl LineOpener for UdpOpener {
    type Line = UdpLine;
    fn locate(&self, spec: &LineSpec) -> Result<Located, GpioError> {
        Ok(located(spec))
    }
    fn open(&self, worker: &str, at: Located, _low: bool) -> Result<UdpLine, GpioError> {
        let id = *self
            .ids
            .get(worker)
            .ok_or_else(|| GpioError::LineNameNotFound(at.label.clone()))?;
        let sock = UdpSocket::bind("127.0.0.1:0")
            .map_err(|_| GpioError::LineNameNotFound(at.label.clone()))?;
        Ok(UdpLine {
            sock,
            to: self.to,
            id,
            pin: at.label,
        })
    }
}

/// Manifests for `n` v1 board workers `v1-<id>` (ids from 3, upstream's pins), a Cluster with
/// no power-on holdoff, 100 ms for a board to go dark after its worker powers it off (these
/// fake boards take microseconds; a real one, seconds), a `pulse` press, and the workload `name` of
/// `count` jobs spread over the nine builtin functions with `period` between rounds.
pub fn manifests(n: u8, pulse: &str, count: usize, period: &str, name: &str) -> String {
    let mut y = String::from(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {powerOnHoldoff: 0s, powerOffHoldoff: 100ms, bootTimeout: 10s, jobTimeout: 10s, maxAttempts: 3}\n",
    );
    for id in 3..3 + n {
        y.push_str(&format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: v1-{id}, labels: {{pool: v1}}}}\nspec:\n  protocol: microfaas-v1\n  board:\n    powerButton: {{pin: {pin}, pulse: {pulse}, forceOff: 1500ms}}\n    network: {{address: 127.0.0.{id}}}\n",
            pin = v1_pin(id)
        ));
    }
    let functions = microfaas::functions::names();
    for f in functions {
        let fname = f.replace('_', "-");
        y.push_str(&format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: {fname}}}\nspec: {{runtime: builtin, handler: {f}}}\n"
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}}}\nspec:\n  workers: {{matchLabels: {{pool: v1}}}}\n  concurrency: {n}\n  arrival: {{pattern: balanced, period: {period}}}\n  functions:\n"
    ));
    let per = count / functions.len();
    let mut extra = count % functions.len();
    for f in functions {
        let mut c = per;
        if extra > 0 {
            c += 1;
            extra -= 1;
        }
        if c > 0 {
            y.push_str(&format!(
                "  - {{function: {}, count: {c}}}\n",
                f.replace('_', "-")
            ));
        }
    }
    y
}

/// Records the fake boards as commanded off, as `microfaasctl power off` would have left them:
/// they start off, and with neither a switch port nor a session to say so the engine would
/// otherwise see Unknown power, on which it never presses.
pub fn known_off<D: microfaas::engine::vm::VmDriver>(
    engine: &microfaas::engine::Engine<D, microfaas::orchestrator::Sessions>,
    names: &[String],
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for name in names {
        let st =
            json!({"commanded": {"state": "Off", "atMs": now, "reason": "off before the test"}});
        engine
            .with_store(|s| s.set_status(microfaas::manifest::Kind::Worker, name, &st))
            .expect("status");
    }
}
