//! Invocation energy as it becomes final, for live counters (the gateway's `/metrics`): the
//! workload report's attribution ([`super::report::inputs`], [`super::report::execs`],
//! [`attribute_carrying`]) run over consecutive windows of one run, each window attributed
//! once, so a reader pays only for what the store got since its last step.
//!
//! Why the windows add up to the report: a stretch's energy is shared by the phases and execs
//! in that stretch alone, and the trapezoidal integral is additive, so cutting the run at a
//! window edge changes no exec's share; a OneShot boot whose invocation has not been recorded
//! yet is carried to the next window and charged there by the same rule. What the caller must
//! guarantee is that a window ends at a horizon up to which everything is in the store: every
//! meter's samples (see [`samples_horizon`]) and every attempt of every invocation that started
//! before it (the gateway holds the horizon at the start of its oldest call in flight).

use super::attribute::{Boot, attribute_carrying};
use super::report::{execs, inputs, max_gap};
use crate::manifest::Kind;
use crate::manifest::types::PowerMeterSpec;
use crate::store::{Attempt, Store};
use std::collections::BTreeMap;

/// One run's energy, attributed up to a watermark.
#[derive(Debug, Clone)]
pub struct Live {
    workload: String,
    run: i64,
    /// Energy before this instant (unix ms) is attributed.
    watermark: i64,
    /// The last invocations row read.
    last_row: i64,
    /// Recorded attempts that end after the watermark: part of their energy may still come.
    open: Vec<Attempt>,
    /// Boots no recorded exec was charged yet (at most one per OneShot worker).
    carried: Vec<Boot>,
    /// Joules so far of invocations with open attempts.
    partial: BTreeMap<String, f64>,
}

/// What one step attributed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    /// (function, joules) charged in this step, one entry per attempt that got some.
    pub charged: Vec<(String, f64)>,
    /// (function, joules) of each invocation whose energy became final in this step.
    pub finished: Vec<(String, f64)>,
}

impl Live {
    /// Attribution of `workload`'s run `run`, which started at `started_ms` (the report's
    /// window starts there too).
    pub fn new(workload: &str, run: i64, started_ms: i64) -> Live {
        Live {
            workload: workload.to_string(),
            run,
            watermark: started_ms,
            last_row: 0,
            open: Vec::new(),
            carried: Vec::new(),
            partial: BTreeMap::new(),
        }
    }

    pub fn run(&self) -> i64 {
        self.run
    }

    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Attributes `[watermark, horizon]` and moves the watermark there. Reads the attempts
    /// recorded since the last step, the meters' samples and the covered workers' phase changes
    /// in the window: the cost follows what is new, not the run's length.
    pub fn advance(&mut self, store: &Store, horizon: i64) -> crate::store::Result<Step> {
        for (row, a) in store.attempts_since(&self.workload, self.run, self.last_row)? {
            self.last_row = row;
            self.open.push(a);
        }
        let mut step = Step::default();
        if horizon <= self.watermark {
            return Ok(step);
        }
        let window = (self.watermark, horizon);
        if let Some(inp) = inputs(store, window)? {
            // Attempts recorded but starting after the horizon go in too: no exec energy falls
            // in the window for them, but a boot in it may be theirs.
            let (ran, execs) = execs(&self.open);
            let at = attribute_carrying(window, &inp.meters, &inp.workers, &execs, &self.carried);
            for (i, a) in ran.iter().enumerate() {
                let j = at.exec[i] + at.boot_charged[i];
                *self.partial.entry(a.invocation_id.clone()).or_default() += j;
                if j > 0.0 {
                    step.charged.push((a.function.clone(), j));
                }
            }
            self.carried = at.uncharged;
        }
        self.watermark = horizon;
        let (done, open): (Vec<Attempt>, Vec<Attempt>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|a| a.finished_ms <= horizon);
        self.open = open;
        let mut seen: Vec<&str> = Vec::new();
        for a in &done {
            let id = a.invocation_id.as_str();
            if seen.contains(&id) || self.open.iter().any(|o| o.invocation_id == id) {
                continue;
            }
            seen.push(id);
            let j = self.partial.remove(id).unwrap_or(0.0);
            step.finished.push((a.function.clone(), j));
        }
        Ok(step)
    }
}

/// The instant up to which every declared meter's samples are in the store, or `None` when no
/// meter is declared. A meter whose last sample is older than its gap tolerance is dead until
/// it samples again, and its next sample, stored as it is taken, cannot bridge the time since
/// (see [`crate::energy::integrate`]): it holds nothing back beyond `now` minus that tolerance.
pub fn samples_horizon(store: &Store, now_ms: i64) -> crate::store::Result<Option<i64>> {
    let mut horizon: Option<i64> = None;
    for m in store.list(Some(Kind::PowerMeter))? {
        let Ok(spec) = serde_json::from_value::<PowerMeterSpec>(m.spec.clone()) else {
            continue;
        };
        let gap = max_gap(&spec).as_millis() as i64;
        let h = match store.latest_sample(&m.name)? {
            Some(s) if s.at_ms >= now_ms - gap => s.at_ms.min(now_ms),
            _ => now_ms - gap,
        };
        horizon = Some(horizon.map_or(h, |x: i64| x.min(h)));
    }
    Ok(horizon)
}
