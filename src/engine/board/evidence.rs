//! Observed power of a board from its evidence: the agent's session, the switch link, the last
//! commanded state (until it decays). Pure, so the order of evidence is unit-tested directly.

use crate::engine::status::{CondStatus, Status};
use crate::store::clock;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
    Unknown,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::On => "On",
            Power::Off => "Off",
            Power::Unknown => "Unknown",
        }
    }
}

/// The last state the engine put a board in (or saw its agent put it in), with when and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Commanded {
    pub on: bool,
    pub at_ms: i64,
    pub reason: String,
}

impl Commanded {
    pub(super) fn from_status(st: &Status) -> Option<Commanded> {
        let c = st.get("commanded")?;
        Some(Commanded {
            on: c.get("state")?.as_str()? == "On",
            at_ms: c.get("atMs")?.as_i64()?,
            reason: c.get("reason")?.as_str()?.to_string(),
        })
    }

    pub(super) fn to_value(&self) -> Value {
        json!({"state": if self.on {"On"} else {"Off"}, "atMs": self.at_ms,
               "at": clock::format_unix_millis(self.at_ms), "reason": self.reason})
    }
}

/// What is known about a board's power right now.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub agent: bool,
    /// `None` when the board is on no switch.
    pub link: Option<(CondStatus, String)>,
    /// When the switch was last polled (unix ms).
    pub link_at_ms: Option<i64>,
    pub commanded: Option<Commanded>,
}

impl Evidence {
    /// Whether a switch poll is older than the last command (and so predates what it did).
    fn stale_link(&self) -> bool {
        match (&self.commanded, self.link_at_ms) {
            (Some(c), Some(at)) => c.at_ms > at,
            _ => false,
        }
    }

    /// The link's state, unless the switch was last polled before the last command.
    pub fn fresh_link(&self) -> Option<CondStatus> {
        let link = self.link.as_ref().map(|l| l.0);
        if self.stale_link() { None } else { link }
    }
}

/// Observed power and the evidence it rests on: the agent, then the link, then a commanded
/// state younger than `decay`; otherwise Unknown. A command newer than the last switch poll
/// (a hold that just cut power) outranks that poll's link.
pub fn observe(e: &Evidence, now_ms: i64, decay: Duration) -> (Power, String) {
    if e.agent {
        return (Power::On, "agent connected".into());
    }
    let stale_link = e.stale_link();
    match &e.link {
        _ if stale_link => {}
        Some((CondStatus::True, m)) => return (Power::On, format!("link up ({m})")),
        Some((CondStatus::False, m)) => return (Power::Off, format!("link down ({m})")),
        _ => {}
    }
    let link_note = match &e.link {
        Some((_, m)) if !m.is_empty() => format!("; link unknown ({m})"),
        Some(_) => "; link unknown".to_string(),
        None => String::new(),
    };
    if let Some(c) = &e.commanded {
        let age = Duration::from_millis(u64::try_from(now_ms - c.at_ms).unwrap_or(0));
        if age < decay {
            let p = if c.on { Power::On } else { Power::Off };
            return (
                p,
                format!(
                    "no agent{link_note}; {} {:.0} s ago: {}",
                    if c.on {
                        "commanded on"
                    } else {
                        "commanded off"
                    },
                    age.as_secs_f64(),
                    c.reason
                ),
            );
        }
        return (
            Power::Unknown,
            format!(
                "no agent{link_note}; last command ({}) older than {:?}",
                c.reason, decay
            ),
        );
    }
    (
        Power::Unknown,
        format!("no agent{link_note}; no command on record"),
    )
}
