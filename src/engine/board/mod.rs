//! Board workers (BeagleBone class): a power button that toggles, so the engine presses it only
//! on observed power. Observed power comes from the agent's session, the switch port's link,
//! or the last commanded state until it decays to Unknown; Unknown alone never leads to a
//! press. Power on = one pulse when observed Off, then boot gating (link within the boot
//! timeout, a port bounce when the worker allows it, then the agent); power off = ask the
//! agent, force-off hold only when it has not gone within the agent timeout. Failed boots climb
//! the ladder re-pulse → force off → Bad. Every press and bounce is an event with its reason.
//! Operators' `microfaasctl power on|off|cycle` requests go through the same rules.

mod buttons;
mod evidence;
#[cfg(test)]
mod tests;

pub use buttons::{BoxFuture, Cdev, GpioButtons, LineOpener, PowerButtons, Press};
pub use evidence::{Commanded, Evidence, Power, observe};

use super::status::{CondStatus, Status};
use super::vm::{Presence, VmDriver};
use super::{Engine, Next, lock};
use crate::drivers::gpio::ButtonConfig;
use crate::manifest::Kind;
use crate::manifest::types::{BoardSpec, PowerPolicy, WorkerSpec};
use crate::store::{EventType, StoredObject, clock};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Status field holding an operator's `microfaasctl power on|off|cycle` until it is done.
pub const POWER_REQUEST: &str = "powerRequest";
/// Status field with the outcome of the last power request (the CLI waits for its id).
pub const POWER_RESULT: &str = "powerResult";
/// Status field: the state an operator's request left, held until the spec changes.
pub const POWER_OVERRIDE: &str = "powerOverride";

/// Timings of the board paths that the manifest does not carry.
#[derive(Debug, Clone, Copy)]
pub struct BoardTiming {
    /// How long an agent has to power its board off (or to connect and be asked) before the
    /// force-off hold.
    pub agent_timeout: Duration,
    /// How long a commanded state counts as evidence when nothing else says anything.
    pub decay: Duration,
    /// How long a bounced port stays down.
    pub bounce_hold: Duration,
}

impl Default for BoardTiming {
    fn default() -> Self {
        BoardTiming {
            agent_timeout: Duration::from_secs(30),
            decay: Duration::from_secs(600),
            bounce_hold: Duration::from_secs(2),
        }
    }
}

/// A power-on in progress.
#[derive(Debug, Clone, Copy)]
struct OnAttempt {
    /// When the button was pressed (or the board was found on without its agent).
    since: Instant,
    link_up: Option<Instant>,
    bounced: Option<Instant>,
    /// When its agent said hello, seen as it happened: a OneShot job can come and go between
    /// two turns, and the board is then going down, not failing to boot.
    agent_at: Option<Instant>,
}

impl OnAttempt {
    /// A boot starting now, with nothing seen of it yet.
    fn starting_now() -> Self {
        OnAttempt {
            since: Instant::now(),
            link_up: None,
            bounced: None,
            agent_at: None,
        }
    }
}

/// A power-off in progress.
#[derive(Debug, Clone, Copy)]
struct OffAttempt {
    started: Instant,
    asked: bool,
    /// When the agent's session ended (it is shutting its board down).
    agent_left: Option<Instant>,
}

#[derive(Debug, Default)]
struct BoardRuntime {
    on: Option<OnAttempt>,
    off: Option<OffAttempt>,
    /// The agent connected since the last power-on: its leaving means the board goes down.
    was_ready: bool,
    /// The last follow-up told the worker to reboot itself: its agent's leaving starts a boot.
    reboot_expected: bool,
}

/// The engine's board state: buttons, timings, attempts in progress.
pub struct Boards {
    buttons: Mutex<Arc<dyn PowerButtons>>,
    timing: Mutex<BoardTiming>,
    runtime: Mutex<HashMap<String, BoardRuntime>>,
}

impl Default for Boards {
    fn default() -> Self {
        Boards {
            buttons: Mutex::new(Arc::new(GpioButtons::new(Cdev))),
            timing: Mutex::new(BoardTiming::default()),
            runtime: Mutex::new(HashMap::new()),
        }
    }
}

/// An operator's request, from the status.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Request {
    pub(super) id: String,
    pub(super) action: String,
    force: bool,
}

pub(super) fn request_of(st: &Status) -> Option<Request> {
    let r = st.get(POWER_REQUEST)?;
    Some(Request {
        id: r.get("id")?.as_str()?.to_string(),
        action: r.get("action")?.as_str()?.to_string(),
        force: r.get("force").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// The desired state an operator's finished request left, while the spec is unchanged.
pub(super) fn override_of(st: &Status, generation: i64) -> Option<bool> {
    let o = st.get(POWER_OVERRIDE)?;
    if o.get("generation")?.as_i64()? != generation {
        return None;
    }
    Some(o.get("state")?.as_str()? == "On")
}

/// One reconcile of one board: what it is, what is asked of it, what is observed.
#[derive(Clone)]
struct Turn<'a> {
    name: &'a str,
    generation: i64,
    board: &'a BoardSpec,
    button: ButtonConfig,
    health: &'a str,
    request: Option<Request>,
    ev: Evidence,
    observed: Power,
    why: String,
    boot_timeout: Duration,
    holdoff: Duration,
    quarantine_after: u32,
}

impl Turn<'_> {
    /// The same turn for a step that must not complete the operator's request.
    fn without_request(&self) -> Self {
        Turn {
            request: None,
            health: "Good",
            ..self.clone()
        }
    }
}

impl<D: VmDriver, P: Presence> Engine<D, P> {
    /// Replaces the power buttons (tests plug in simulated boards; the default is real GPIO).
    pub fn set_buttons(&self, buttons: Arc<dyn PowerButtons>) {
        *lock(&self.boards.buttons) = buttons;
    }

    pub fn set_board_timing(&self, timing: BoardTiming) {
        *lock(&self.boards.timing) = timing;
    }

    /// The board timings in force (a workload run sizes its wait for a board by them).
    pub fn board_timing(&self) -> BoardTiming {
        *lock(&self.boards.timing)
    }

    fn buttons(&self) -> Arc<dyn PowerButtons> {
        lock(&self.boards.buttons).clone()
    }

    fn board_rt<T>(&self, name: &str, f: impl FnOnce(&mut BoardRuntime) -> T) -> T {
        f(lock(&self.boards.runtime)
            .entry(name.to_string())
            .or_default())
    }

    fn board_evidence(&self, name: &str, board: &BoardSpec, st: &mut Status) -> Evidence {
        let net = board
            .network
            .as_ref()
            .and_then(|n| Some((n.switch.as_ref()?, n.port.as_ref()?)));
        let link = net.map(|(sw, port)| {
            let (s, reason, message) = self.link_up(name, sw, port);
            st.condition("LinkUp", s, &reason, &message);
            (s, message)
        });
        let link_at_ms = net
            .and_then(|(sw, _)| self.get(Kind::Switch, sw))
            .and_then(|o| o.status.get("polledAtMs").and_then(Value::as_i64));
        Evidence {
            agent: self.presence.is_connected(name),
            link,
            link_at_ms,
            commanded: Commanded::from_status(st),
        }
    }

    fn command(&self, st: &mut Status, on: bool, reason: &str) {
        let c = Commanded {
            on,
            at_ms: clock::now_millis(),
            reason: reason.to_string(),
        };
        st.set("commanded", c.to_value());
    }

    /// One press, recorded as an event with its reason before it starts.
    async fn press(&self, t: &Turn<'_>, how: Press, why: &str) -> Result<(), String> {
        let (reason, length) = match how {
            Press::Pulse => ("PowerPulse", t.button.pulse),
            Press::Hold => ("PowerHold", t.button.force_off),
        };
        self.event(
            Kind::Worker,
            t.name,
            EventType::Normal,
            reason,
            &format!("pressing {length:?}: {why}"),
        );
        let r = self.buttons().press(t.name, &t.button, how).await;
        if let Err(e) = &r {
            self.event(
                Kind::Worker,
                t.name,
                EventType::Warning,
                "PressFailed",
                &format!("{reason}: {e}"),
            );
        }
        r
    }

    /// Ends the operator's request of this turn, if any, with `ok` and `msg`; a success leaves
    /// `state` as the worker's desired power until its spec changes.
    fn finish_request(
        &self,
        t: &Turn<'_>,
        st: &mut Status,
        ok: bool,
        msg: &str,
        state: Option<bool>,
    ) {
        if let Some(req) = &t.request {
            self.request_done(t.name, t.generation, st, req, (ok, msg), state);
        }
    }

    pub(super) fn request_done(
        &self,
        name: &str,
        generation: i64,
        st: &mut Status,
        req: &Request,
        (ok, msg): (bool, &str),
        state: Option<bool>,
    ) {
        st.set(POWER_REQUEST, Value::Null).set(
            POWER_RESULT,
            json!({"id": req.id, "action": req.action, "ok": ok, "message": msg, "at": clock::now()}),
        );
        if ok && let Some(on) = state {
            st.set(
                POWER_OVERRIDE,
                json!({"state": if on {"On"} else {"Off"}, "generation": generation}),
            );
        }
        let (t, reason) = if ok {
            (EventType::Normal, "PowerRequestDone")
        } else {
            (EventType::Warning, "PowerRequestFailed")
        };
        self.event(
            Kind::Worker,
            name,
            t,
            reason,
            &format!("power {}: {msg}", req.action),
        );
    }

    pub(super) async fn reconcile_board(
        &self,
        name: &str,
        obj: &StoredObject,
        spec: &WorkerSpec,
        board: &BoardSpec,
        mut st: Status,
        health: &str,
    ) -> Result<Next, String> {
        let generation = obj.generation;
        let button = match ButtonConfig::from_manifest(&board.power_button) {
            Ok(b) => b,
            Err(e) => {
                st.set_phase("Unknown")
                    .condition(
                        "PowerControl",
                        CondStatus::False,
                        "BadButton",
                        &e.to_string(),
                    )
                    .observed(generation);
                self.write_status(Kind::Worker, name, &mut st);
                return Ok(Next::Done);
            }
        };
        let control = self.buttons().claim(name, &button);
        match &control {
            Ok(line) => st.condition("PowerControl", CondStatus::True, "LineHeld", line),
            Err(e) => st.condition("PowerControl", CondStatus::False, "LineUnavailable", e),
        };
        let timing = *lock(&self.boards.timing);
        let defaults = self.defaults();
        let ev = self.board_evidence(name, board, &mut st);
        let (observed, why) = observe(&ev, clock::now_millis(), timing.decay);
        st.set(
            "observedPower",
            json!({"state": observed.as_str(), "evidence": why}),
        );
        let request = request_of(&st);
        let policy_on = match override_of(&st, generation) {
            Some(on) => on,
            None => match spec.power {
                PowerPolicy::On => true,
                PowerPolicy::Off => false,
                PowerPolicy::OnDemand => self.wants_on(name, spec),
            },
        };
        let want_on = match &request {
            Some(r) => r.action == "on",
            None => policy_on && health == "Good",
        };
        st.set("power", json!(if want_on { "On" } else { "Off" }));
        let t = Turn {
            name,
            generation,
            board,
            button,
            health,
            request,
            ev,
            observed,
            why,
            boot_timeout: defaults
                .boot_timeout
                .parse()
                .unwrap_or(Duration::from_secs(60)),
            holdoff: defaults.power_on_holdoff.parse().unwrap_or(Duration::ZERO),
            quarantine_after: u32::try_from(defaults.quarantine_after).unwrap_or(3),
        };
        if want_on && health != "Good" && t.request.is_some() {
            let msg = format!("health is {health}: `microfaasctl uncordon worker {name}` first");
            self.finish_request(&t, &mut st, false, &msg, None);
            st.observed(generation);
            self.write_status(Kind::Worker, name, &mut st);
            return Ok(Next::RequeueAfter(Duration::ZERO));
        }
        if let Err(e) = &control {
            // Without a line nothing can be pressed: report what is observed, act on nothing.
            let phase = match t.observed {
                _ if t.ev.agent => "Ready",
                Power::Off => "Off",
                _ => "Unknown",
            };
            st.set_phase(phase).observed(generation);
            if t.ev.agent {
                st.condition("Ready", CondStatus::True, "AgentConnected", "");
            } else if want_on && t.observed != Power::On {
                // Named, so work waiting for this board fails now rather than at its timeout.
                st.condition(
                    "Ready",
                    CondStatus::False,
                    "NoPowerControl",
                    &format!("cannot press its power button: {e}"),
                );
            }
            self.finish_request(&t, &mut st, false, &format!("no power control: {e}"), None);
            self.write_status(Kind::Worker, name, &mut st);
            return Ok(Next::Done);
        }
        let next = if want_on {
            self.board_on(&t, &mut st).await?
        } else {
            self.board_off(&t, &mut st).await
        };
        st.observed(generation);
        self.write_status(Kind::Worker, name, &mut st);
        Ok(next)
    }

    async fn board_on(&self, t: &Turn<'_>, st: &mut Status) -> Result<Next, String> {
        let name = t.name;
        // A power-off still in progress finishes first: never press into a shutdown.
        if self.board_rt(name, |r| r.off.is_some()) {
            return Ok(self
                .board_off(&t.without_request(), st)
                .await
                .min_requeue(Duration::from_millis(200)));
        }
        if t.ev.agent {
            let (first, since) = self.board_rt(name, |r| {
                let first = !std::mem::replace(&mut r.was_ready, true);
                (first, r.on.take().map(|a| a.since))
            });
            let (busy, function) = self.busy_for_status(name);
            if first {
                let msg = match since {
                    Some(at) => {
                        let secs = at.elapsed().as_secs_f64();
                        st.set("bootSeconds", json!(secs));
                        format!("agent connected {secs:.2} s after power on")
                    }
                    None => "agent connected".to_string(),
                };
                self.note_event(Kind::Worker, name, EventType::Normal, "Ready", &msg);
            }
            st.set_phase(if busy { "Busy" } else { "Ready" })
                .set("function", function)
                .set("failedBoots", Value::Null)
                .condition("PoweredOn", CondStatus::True, "AgentConnected", "")
                .condition("AgentConnected", CondStatus::True, "Connected", "")
                .condition("Ready", CondStatus::True, "AgentConnected", "")
                .condition("Healthy", CondStatus::True, "Good", "");
            self.finish_request(t, st, true, "agent connected", Some(true));
            return Ok(Next::Done);
        }
        st.condition("AgentConnected", CondStatus::False, "NotConnected", "");
        self.came_and_went(name, st);
        // The agent left a board it had reached after being told to reboot: that is a boot,
        // gated like a power-on (its agent within the boot timeout, else the ladder).
        if self.board_rt(name, |r| {
            let rebooting = r.was_ready && r.on.is_none() && r.reboot_expected;
            if rebooting {
                r.was_ready = false;
                r.reboot_expected = false;
                r.on = Some(OnAttempt::starting_now());
            }
            rebooting
        }) {
            st.set_phase("Booting")
                .condition("Ready", CondStatus::False, "Rebooting", "");
            return Ok(Next::RequeueAfter(t.boot_timeout));
        }
        // The agent left a board it had reached: it is powering its board off.
        if self.board_rt(name, |r| r.was_ready && r.on.is_none()) {
            self.board_rt(name, |r| {
                r.was_ready = false;
                r.off = Some(OffAttempt {
                    started: Instant::now(),
                    asked: true,
                    agent_left: Some(Instant::now()),
                });
            });
            st.set_phase("PoweringOff");
            return Ok(Next::RequeueAfter(Duration::ZERO));
        }
        if let Some(attempt) = self.board_rt(name, |r| r.on) {
            return self.board_booting(t, st, attempt).await;
        }
        let failures = super::worker::failed_boots(st);
        let why = &t.why;
        match t.observed {
            Power::Unknown => {
                st.set_phase("Unknown").condition(
                    "Ready",
                    CondStatus::Unknown,
                    "PowerUnknown",
                    &format!("not pressing on unknown power ({why})"),
                );
                let msg = format!(
                    "observed power is Unknown ({why}); not pressing: `microfaasctl power cycle {name} --force` forces it off first"
                );
                self.finish_request(t, st, false, &msg, None);
                Ok(Next::Done)
            }
            Power::On if failures > 0 => {
                // Ladder: on, but its boot failed; a pulse would not help.
                let what = format!("recovery: force off a board that failed to boot ({why})");
                self.recovery_hold(t, st, &what).await
            }
            Power::On => {
                // On without its agent: booting on its own, or an agent redialing a new engine.
                // Give it a boot timeout, then the ladder (this counts as one attempt).
                let link_up = matches!(t.ev.link, Some((CondStatus::True, _)));
                self.board_rt(name, |r| {
                    r.on = Some(OnAttempt {
                        since: Instant::now(),
                        link_up: link_up.then(Instant::now),
                        bounced: None,
                        agent_at: None,
                    })
                });
                st.set_phase("Booting").condition(
                    "Ready",
                    CondStatus::False,
                    "WaitingForAgent",
                    &format!("observed on ({why}); waiting for its agent"),
                );
                Ok(Next::RequeueAfter(t.boot_timeout))
            }
            Power::Off => {
                if let Some(c) = &t.ev.commanded
                    && !c.on
                {
                    let since = Duration::from_millis(
                        u64::try_from(clock::now_millis() - c.at_ms).unwrap_or(0),
                    );
                    if since < t.holdoff {
                        st.set_phase("Off");
                        return Ok(Next::RequeueAfter(t.holdoff - since));
                    }
                }
                // Second step of the ladder: a re-pulse did not help, so force off first.
                if failures >= 2 && t.ev.commanded.as_ref().is_none_or(|c| c.on) {
                    let what = format!(
                        "recovery after {failures} failed boots: force off before powering on again"
                    );
                    return self.recovery_hold(t, st, &what).await;
                }
                let what = if failures == 0 {
                    format!("power on: observed off ({why})")
                } else {
                    format!("recovery: re-pulse after a failed boot, observed off ({why})")
                };
                st.set_phase("PoweringOn");
                self.write_status(Kind::Worker, name, st);
                // The attempt starts with the press: an agent may say hello before the press
                // has returned.
                self.board_rt(name, |r| {
                    r.was_ready = false;
                    r.on = Some(OnAttempt::starting_now())
                });
                if let Err(e) = self.press(t, Press::Pulse, &what).await {
                    self.board_rt(name, |r| r.on = None);
                    return Err(e);
                }
                self.command(st, true, "pressed to power on");
                // Boot time counts from the end of the press.
                self.board_rt(name, |r| {
                    if let Some(a) = &mut r.on {
                        a.since = Instant::now();
                    }
                });
                st.condition("PoweredOn", CondStatus::True, "Pressed", "")
                    .condition("Ready", CondStatus::False, "Booting", "");
                Ok(Next::RequeueAfter(Duration::from_millis(200)))
            }
        }
    }

    /// The ladder's force-off step: hold, then power on again after the holdoff.
    async fn recovery_hold(
        &self,
        t: &Turn<'_>,
        st: &mut Status,
        what: &str,
    ) -> Result<Next, String> {
        st.set_phase("PoweringOff");
        self.write_status(Kind::Worker, t.name, st);
        self.press(t, Press::Hold, what).await?;
        self.command(st, false, "forced off (recovery)");
        Ok(Next::RequeueAfter(t.holdoff))
    }

    /// Boot gating after a press: the link within the boot timeout (bounce once if allowed),
    /// then the agent within the boot timeout; otherwise one more failed recovery.
    async fn board_booting(
        &self,
        t: &Turn<'_>,
        st: &mut Status,
        attempt: OnAttempt,
    ) -> Result<Next, String> {
        let (name, boot_timeout) = (t.name, t.boot_timeout);
        let link = t.ev.link.as_ref().map(|l| l.0);
        if link == Some(CondStatus::False) && attempt.link_up.is_some() {
            // Up, then down before the agent came: named, then waited for like a first link.
            self.event(
                Kind::Worker,
                name,
                EventType::Warning,
                "LinkLost",
                "the switch port's link went down while the board was booting",
            );
            self.board_rt(name, |r| {
                if let Some(a) = &mut r.on {
                    a.link_up = None;
                }
            });
        }
        let waiting_link = link == Some(CondStatus::False)
            || (link == Some(CondStatus::Unknown) && attempt.link_up.is_none());
        if waiting_link {
            let from = attempt.bounced.unwrap_or(attempt.since);
            if from.elapsed() < boot_timeout {
                st.set_phase("PoweringOn").condition(
                    "Ready",
                    CondStatus::False,
                    "WaitingForLink",
                    "waiting for the switch port's link",
                );
                return Ok(Next::RequeueAfter(
                    (boot_timeout - from.elapsed()).min(Duration::from_secs(1)),
                ));
            }
            // Only a link the switch reports down is bounced: an unreachable switch cannot be.
            let bounce = t
                .board
                .network
                .as_ref()
                .filter(|n| n.bounce_on_failure && link == Some(CondStatus::False));
            if attempt.bounced.is_none()
                && let Some(n) = bounce
                && let (Some(sw), Some(port)) = (&n.switch, &n.port)
            {
                let hold = lock(&self.boards.timing).bounce_hold;
                self.event(
                    Kind::Worker,
                    name,
                    EventType::Normal,
                    "PortBounce",
                    &format!(
                        "no link on {sw} port {port} within {boot_timeout:?}: ifAdminStatus down, {hold:?}, up"
                    ),
                );
                if let Err(e) = self.bounce_port(sw, port, hold).await {
                    self.event(Kind::Worker, name, EventType::Warning, "BounceFailed", &e);
                }
                self.board_rt(name, |r| {
                    if let Some(a) = &mut r.on {
                        a.bounced = Some(Instant::now());
                    }
                });
                st.set_phase("PoweringOn");
                return Ok(Next::RequeueAfter(Duration::from_millis(200)));
            }
            let why = format!("no link within {boot_timeout:?}");
            self.event(Kind::Worker, name, EventType::Warning, "LinkTimeout", &why);
            self.board_rt(name, |r| r.on = None);
            return self.board_failed(t, st, &why).await;
        }
        let up_at = match (link, attempt.link_up) {
            (Some(CondStatus::True), None) => {
                let now = Instant::now();
                self.board_rt(name, |r| {
                    if let Some(a) = &mut r.on {
                        a.link_up = Some(now);
                    }
                });
                now
            }
            (_, Some(at)) => at,
            _ => attempt.since,
        };
        if up_at.elapsed() < boot_timeout {
            st.set_phase("Booting")
                .condition("Ready", CondStatus::False, "WaitingForAgent", "");
            return Ok(Next::RequeueAfter(boot_timeout - up_at.elapsed()));
        }
        let why = format!("no agent within {boot_timeout:?}");
        self.event(Kind::Worker, name, EventType::Warning, "BootTimeout", &why);
        self.board_rt(name, |r| r.on = None);
        self.board_failed(t, st, &why).await
    }

    /// One more failed recovery (shared with VMs: backoff, or Bad after `quarantineAfter`).
    async fn board_failed(&self, t: &Turn<'_>, st: &mut Status, why: &str) -> Result<Next, String> {
        // The press stays on record as "commanded on": the ladder's next step reads it.
        let r = self
            .boot_failed(t.name, st, t.generation, t.quarantine_after, why)
            .await;
        if st.get("health").and_then(Value::as_str) == Some("Bad") {
            self.finish_request(t, st, false, &format!("quarantined: {why}"), None);
        }
        r
    }

    /// Power off: ask the agent; done when it has gone and the board is dark (link down, or
    /// the power-off holdoff without a link); the long hold once the agent timeout has passed.
    async fn board_off(&self, t: &Turn<'_>, st: &mut Status) -> Next {
        let (name, ev, observed, why) = (t.name, &t.ev, t.observed, t.why.as_str());
        if !ev.agent {
            self.came_and_went(name, st);
        }
        self.board_rt(name, |r| r.on = None);
        let timing = *lock(&self.boards.timing);
        // How long a board whose agent has left gets to go dark when no link says so.
        let settle: Duration = self
            .defaults()
            .power_off_holdoff
            .parse()
            .unwrap_or(Duration::ZERO)
            .min(timing.agent_timeout);
        let force = t.request.as_ref().is_some_and(|r| r.force);
        let attempt = match self.board_rt(name, |r| r.off) {
            Some(a) => a,
            None if ev.agent || observed == Power::On || (force && observed == Power::Unknown) => {
                // An agent that reached Ready and has gone is already shutting its board down.
                let left = !ev.agent && self.board_rt(name, |r| r.was_ready);
                let a = OffAttempt {
                    started: Instant::now(),
                    asked: left,
                    agent_left: left.then(Instant::now),
                };
                self.board_rt(name, |r| r.off = Some(a));
                a
            }
            None => {
                let phase = match observed {
                    Power::Off if t.health == "Good" => "Off",
                    Power::Off => "Failed",
                    _ => "Unknown",
                };
                st.set_phase(phase);
                if observed == Power::Off {
                    st.condition("PoweredOn", CondStatus::False, "PoweredOff", why)
                        .condition("AgentConnected", CondStatus::False, "PoweredOff", "")
                        .condition("Ready", CondStatus::False, "PoweredOff", "");
                }
                self.finish_request_off(t, st);
                return Next::Done;
            }
        };
        st.set_phase("PoweringOff");
        let mut attempt = attempt;
        if ev.agent && !attempt.asked {
            attempt.asked = true;
            self.ask_poweroff(name).await;
        }
        if !ev.agent && attempt.asked && attempt.agent_left.is_none() {
            attempt.agent_left = Some(Instant::now());
        }
        self.board_rt(name, |r| r.off = Some(attempt));
        // A poll older than the last press may predate the boot (a board can boot, serve and
        // go within one poll interval): it says nothing about the board going dark.
        let link = ev.fresh_link();
        if let Some(left) = attempt.agent_left
            && (link == Some(CondStatus::False)
                || (link != Some(CondStatus::True) && left.elapsed() >= settle))
        {
            self.board_rt(name, |r| {
                r.off = None;
                r.was_ready = false;
            });
            let how = if link == Some(CondStatus::False) {
                "the agent powered its board off; link down"
            } else {
                "the agent powered its board off"
            };
            self.command(st, false, how);
            self.powered_off(st, t.health, how);
            self.finish_request(t, st, true, how, Some(false));
            return Next::RequeueAfter(Duration::ZERO);
        }
        if attempt.started.elapsed() < timing.agent_timeout {
            let rest = timing.agent_timeout - attempt.started.elapsed();
            return Next::RequeueAfter(rest.min(Duration::from_millis(500)));
        }
        // The agent path timed out: the long press cuts power whatever the board is doing.
        let what = if attempt.asked {
            format!(
                "force off: the agent did not power off within {:?}",
                timing.agent_timeout
            )
        } else if observed == Power::Unknown {
            format!("force off on the operator's request (power Unknown: {why})")
        } else {
            format!(
                "force off: observed on ({why}) and no agent to ask within {:?}",
                timing.agent_timeout
            )
        };
        self.write_status(Kind::Worker, name, st);
        let pressed = self.press(t, Press::Hold, &what).await;
        self.board_rt(name, |r| {
            r.off = None;
            r.was_ready = false;
        });
        match pressed {
            Ok(()) => {
                self.command(st, false, "forced off");
                self.powered_off(st, t.health, "forced off");
                self.finish_request(t, st, true, "forced off", Some(false));
                Next::RequeueAfter(Duration::ZERO)
            }
            Err(e) => {
                st.set_phase("Unknown");
                self.finish_request(t, st, false, &format!("force off failed: {e}"), None);
                Next::RequeueAfter(Duration::from_secs(5))
            }
        }
    }

    fn powered_off(&self, st: &mut Status, health: &str, how: &str) {
        st.set_phase(if health == "Good" { "Off" } else { "Failed" })
            .set("observedPower", json!({"state": "Off", "evidence": how}))
            .condition("PoweredOn", CondStatus::False, "PoweredOff", how)
            .condition("AgentConnected", CondStatus::False, "PoweredOff", "")
            .condition("Ready", CondStatus::False, "PoweredOff", "");
    }

    /// An off or cycle request with no power-off in progress: done when the board is off
    /// (a cycle goes on to power on), refused on Unknown without --force.
    fn finish_request_off(&self, t: &Turn<'_>, st: &mut Status) {
        let Some(r) = &t.request else {
            return;
        };
        if t.observed != Power::Off {
            let msg = format!(
                "observed power is Unknown ({}); not pressing without --force",
                t.why
            );
            self.finish_request(t, st, false, &msg, None);
        } else if r.action == "cycle" {
            st.set(
                POWER_REQUEST,
                json!({"id": r.id, "action": "on", "cycle": true}),
            );
            self.event(
                Kind::Worker,
                t.name,
                EventType::Normal,
                "PowerCycle",
                "off; powering on",
            );
            self.queue.add((Kind::Worker, t.name.to_string()));
        } else {
            self.finish_request(t, st, true, &format!("off ({})", t.why), Some(false));
        }
    }

    /// A board whose agent said hello during a power-on and is gone again by this turn (a
    /// OneShot job can be that quick) booted: it counts as having reached Ready, so its agent's
    /// leaving means it is going down, not that its boot failed. Call only without an agent.
    fn came_and_went(&self, name: &str, st: &mut Status) {
        let Some((since, at)) =
            self.board_rt(name, |r| r.on.and_then(|a| Some((a.since, a.agent_at?))))
        else {
            return;
        };
        self.board_rt(name, |r| {
            r.on = None;
            r.was_ready = true;
        });
        st.set("failedBoots", Value::Null);
        let secs = at.saturating_duration_since(since).as_secs_f64();
        st.set("bootSeconds", json!(secs));
        let msg = format!("agent connected {secs:.2} s after power on, and has left");
        self.note_event(Kind::Worker, name, EventType::Normal, "Ready", &msg);
    }

    /// Whether the follow-up about to be sent to `name`'s agent tells it to reboot itself (a
    /// v1 worker with more work) rather than power off: its leaving is then a boot.
    pub fn expect_reboot(&self, name: &str, reboot: bool) {
        self.board_rt(name, |r| r.reboot_expected = reboot);
    }

    /// An agent said hello (called as it happens, not at the next turn).
    pub(super) fn board_agent_connected(&self, name: &str) {
        if let Some(a) = lock(&self.boards.runtime)
            .get_mut(name)
            .and_then(|r| r.on.as_mut())
        {
            a.agent_at.get_or_insert_with(Instant::now);
        }
    }

    /// Forgets a deleted worker's attempts and closes its line (if it was a board).
    pub(super) fn board_gone(&self, name: &str) {
        if lock(&self.boards.runtime).remove(name).is_some() {
            self.buttons().forget(name);
        }
    }

    /// Finalizer of a board: power it off (agent first, then the hold), then close its line.
    pub(super) async fn board_teardown(&self, name: &str, obj: &StoredObject, board: &BoardSpec) {
        let Ok(button) = ButtonConfig::from_manifest(&board.power_button) else {
            return;
        };
        let timing = *lock(&self.boards.timing);
        let mut st = Status::from_value(&obj.status);
        let deadline =
            Instant::now() + timing.agent_timeout + button.force_off + Duration::from_secs(10);
        loop {
            let ev = self.board_evidence(name, board, &mut st);
            let (observed, why) = observe(&ev, clock::now_millis(), timing.decay);
            let t = Turn {
                name,
                generation: obj.generation,
                board,
                button: button.clone(),
                health: "Good",
                request: None,
                ev,
                observed,
                why,
                boot_timeout: Duration::ZERO,
                holdoff: Duration::ZERO,
                quarantine_after: 0,
            };
            let next = self.board_off(&t, &mut st).await;
            if self.board_rt(name, |r| r.off.is_none()) || Instant::now() >= deadline {
                if observed == Power::Unknown {
                    self.event(
                        Kind::Worker,
                        name,
                        EventType::Warning,
                        "TeardownUnknown",
                        &format!("not pressing on unknown power ({})", t.why),
                    );
                }
                break;
            }
            if let Next::RequeueAfter(d) = next {
                tokio::time::sleep(d.max(Duration::from_millis(50))).await;
            }
        }
        self.board_gone(name);
        self.buttons().forget(name);
    }
}

trait MinRequeue {
    fn min_requeue(self, d: Duration) -> Next;
}

impl MinRequeue for Next {
    fn min_requeue(self, d: Duration) -> Next {
        match self {
            Next::Done => Next::RequeueAfter(d),
            Next::RequeueAfter(x) => Next::RequeueAfter(x.min(d)),
        }
    }
}
