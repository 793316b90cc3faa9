//! Sharing a meter's energy out. Over a window, each covered worker is in one model phase at a
//! time (from its recorded phase history, with the recorded invocations as its busy spans);
//! every stretch between two breakpoints (a sample, a phase change, an invocation start or
//! end) has its measured energy split among the covered workers in proportion to their modeled
//! watts then. A worker's share lands on the invocation it was running (exec energy), on the
//! boot it was in (boot energy, charged to the invocation that boot served on a OneShot
//! worker), or on idle or off. Energy no covered worker accounts for (every modeled watt zero)
//! is overhead. Nothing is lost: exec + boot + idle + off + overhead = the meters' total.

use super::integrate::Curve;
use crate::drivers::meter::model::{self, Phase};
use crate::manifest::types::ModelMeter;
use std::collections::BTreeMap;

/// One meter and the workers its reading includes.
#[derive(Debug, Clone)]
pub struct MeterInput {
    pub name: String,
    pub curve: Curve,
    /// Shares are taken from this model.
    pub model: ModelMeter,
    pub covers: Vec<String>,
}

/// One worker: its kind, lifecycle and phase history (`(unix ms, phase)` sorted; before the
/// first entry it was off).
#[derive(Debug, Clone)]
pub struct WorkerInput {
    pub name: String,
    pub kind: model::Kind,
    pub oneshot: bool,
    pub phases: Vec<(i64, Phase)>,
}

/// One invocation attempt on a worker, `[start, end]` in unix ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub worker: String,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerEnergy {
    pub exec: f64,
    pub boot: f64,
    pub idle: f64,
    pub off: f64,
}

impl WorkerEnergy {
    pub fn total(&self) -> f64 {
        self.exec + self.boot + self.idle + self.off
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attribution {
    /// The meters' energy over the window.
    pub joules: f64,
    /// Per meter: (name, joules, covered ms).
    pub meters: Vec<(String, f64, i64)>,
    /// Per exec (same order as given): its own energy, and the boot energy charged to it.
    pub exec: Vec<f64>,
    pub boot_charged: Vec<f64>,
    pub boot: f64,
    pub idle: f64,
    pub off: f64,
    pub overhead: f64,
    pub workers: BTreeMap<String, WorkerEnergy>,
    /// Per OneShot worker, its latest boot when none of the given execs was charged it: a
    /// later exec may still be (see [`attribute_carrying`]).
    pub uncharged: Vec<Boot>,
}

/// The energy of one boot on a OneShot worker, named by the worker and when the boot started.
#[derive(Debug, Clone, PartialEq)]
pub struct Boot {
    pub worker: String,
    pub start: i64,
    pub joules: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Exec(usize),
    /// A boot, named by when it started.
    Boot(i64),
    Idle,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start: i64,
    end: i64,
    phase: Phase,
    act: Act,
}

/// The worker's segments over `[a, b]`: its phase history (busy taken from `execs` only) with
/// its execs laid over it.
fn segments(w: &WorkerInput, execs: &[(usize, &Exec)], a: i64, b: i64) -> Vec<Segment> {
    // Base phases as (start, phase, boot start).
    let mut base: Vec<(i64, Phase, i64)> = Vec::new();
    let mut current = (i64::MIN, Phase::Off, i64::MIN);
    for &(t, p) in &w.phases {
        // Busy from the status lags the invocation records and ends later: they decide.
        let p = if p == Phase::Busy { Phase::Idle } else { p };
        let boot = if p == Phase::Booting && current.1 == Phase::Booting {
            current.2
        } else {
            t
        };
        if t <= a {
            current = (i64::MIN, p, boot);
        } else {
            base.push(current);
            current = (t, p, boot);
        }
    }
    base.push(current);
    let phase_at = |t: i64| {
        let i = base.partition_point(|s| s.0 <= t).saturating_sub(1);
        base.get(i)
            .copied()
            .unwrap_or((i64::MIN, Phase::Off, i64::MIN))
    };
    let mut cuts: Vec<i64> = vec![a, b];
    cuts.extend(base.iter().map(|s| s.0).filter(|t| *t > a && *t < b));
    for (_, e) in execs {
        cuts.extend([e.start, e.end].into_iter().filter(|t| *t > a && *t < b));
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<Segment> = Vec::new();
    for pair in cuts.windows(2) {
        let (s, e) = (pair[0], pair[1]);
        // `execs` is sorted by start; attempts on one worker do not overlap, so only the
        // last one starting by `s` can cover the stretch.
        let exec = execs[..execs.partition_point(|(_, x)| x.start <= s)]
            .last()
            .filter(|(_, x)| x.end >= e && x.end > x.start);
        let seg = match exec {
            Some((i, _)) => Segment {
                start: s,
                end: e,
                phase: Phase::Busy,
                act: Act::Exec(*i),
            },
            None => {
                let (_, p, boot) = phase_at(s);
                let act = match p {
                    Phase::Booting => Act::Boot(boot),
                    Phase::Off => Act::Off,
                    _ => Act::Idle,
                };
                Segment {
                    start: s,
                    end: e,
                    phase: p,
                    act,
                }
            }
        };
        match out.last_mut() {
            Some(l) if l.phase == seg.phase && l.act == seg.act && l.end == s => l.end = e,
            _ => out.push(seg),
        }
    }
    out
}

/// Attributes the meters' energy over `[a, b]` (unix ms).
pub fn attribute(
    window: (i64, i64),
    meters: &[MeterInput],
    workers: &[WorkerInput],
    execs: &[Exec],
) -> Attribution {
    attribute_carrying(window, meters, workers, execs, &[])
}

/// [`attribute`] for one of consecutive windows: `carried` are boots from before `a` that no
/// exec was charged yet (the previous window's `uncharged`). They are charged by the same rule
/// as the window's own boots, their energy added to the window's part of the same boot, so
/// attributing `[a, m]` then `[m, b]` charges every exec what attributing `[a, b]` would.
pub fn attribute_carrying(
    (a, b): (i64, i64),
    meters: &[MeterInput],
    workers: &[WorkerInput],
    execs: &[Exec],
    carried: &[Boot],
) -> Attribution {
    let mut out = Attribution {
        exec: vec![0.0; execs.len()],
        boot_charged: vec![0.0; execs.len()],
        ..Attribution::default()
    };
    let by_name: BTreeMap<&str, &WorkerInput> =
        workers.iter().map(|w| (w.name.as_str(), w)).collect();
    let mut segs: BTreeMap<&str, (Vec<Segment>, Vec<f64>)> = BTreeMap::new();
    for w in workers {
        let mut mine: Vec<(usize, &Exec)> = execs
            .iter()
            .enumerate()
            .filter(|(_, e)| e.worker == w.name)
            .collect();
        mine.sort_by_key(|(_, e)| e.start);
        let s = segments(w, &mine, a, b);
        let n = s.len();
        segs.insert(&w.name, (s, vec![0.0; n]));
    }

    for m in meters {
        let total = m.curve.integrate(a, b);
        out.joules += total.joules;
        out.meters
            .push((m.name.clone(), total.joules, total.covered_ms));
        let covered: Vec<&WorkerInput> = m
            .covers
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .collect();
        let mut cuts: Vec<i64> = vec![a, b];
        cuts.extend(m.curve.times_within(a, b));
        for w in &covered {
            if let Some((s, _)) = segs.get(w.name.as_str()) {
                cuts.extend(s.iter().map(|s| s.start).filter(|t| *t > a && *t < b));
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        let mut cursor = vec![0usize; covered.len()];
        for pair in cuts.windows(2) {
            let (s, e) = (pair[0], pair[1]);
            let energy = m.curve.integrate(s, e).joules;
            if energy == 0.0 {
                continue;
            }
            let mut shares: Vec<(usize, usize, f64)> = Vec::with_capacity(covered.len());
            for (k, w) in covered.iter().enumerate() {
                let Some((ws, _)) = segs.get(w.name.as_str()) else {
                    continue;
                };
                while cursor[k] + 1 < ws.len() && ws[cursor[k]].end <= s {
                    cursor[k] += 1;
                }
                if let Some(seg) = ws.get(cursor[k]) {
                    shares.push((k, cursor[k], model::watts(&m.model, w.kind, seg.phase)));
                }
            }
            let sum: f64 = shares.iter().map(|s| s.2).sum();
            if sum <= 0.0 {
                out.overhead += energy;
                continue;
            }
            for (k, i, watts) in shares {
                if let Some((_, acc)) = segs.get_mut(covered[k].name.as_str()) {
                    acc[i] += energy * watts / sum;
                }
            }
        }
    }

    for w in workers {
        let Some((ws, acc)) = segs.get(w.name.as_str()) else {
            continue;
        };
        let mut we = WorkerEnergy::default();
        let mut boots: BTreeMap<i64, f64> = BTreeMap::new();
        for (seg, e) in ws.iter().zip(acc) {
            match seg.act {
                Act::Exec(i) => {
                    out.exec[i] += e;
                    we.exec += e;
                }
                Act::Boot(id) => {
                    *boots.entry(id).or_default() += e;
                    we.boot += e;
                }
                Act::Idle => we.idle += e,
                Act::Off => we.off += e,
            }
        }
        out.boot += we.boot;
        out.idle += we.idle;
        out.off += we.off;
        if w.oneshot {
            // A boot still going at `a` is the carried one (it was the latest before `a`);
            // its name here comes from the phase entry before `a`, which may be a later step
            // of the same boot (PoweringOn, then Booting): one boot, one key.
            let going = ws.first().and_then(|s| match s.act {
                Act::Boot(id) if s.start == a => Some(id),
                _ => None,
            });
            for c in carried.iter().filter(|c| c.worker == w.name) {
                *boots.entry(going.unwrap_or(c.start)).or_default() += c.joules;
            }
            // A OneShot boot serves the first invocation that starts after it, unless another
            // boot started first (this one failed).
            let mut mine: Vec<(i64, usize)> = execs
                .iter()
                .enumerate()
                .filter(|(_, x)| x.worker == w.name)
                .map(|(i, x)| (x.start, i))
                .collect();
            mine.sort_unstable();
            let starts: Vec<i64> = boots.keys().copied().collect();
            for (j, (&start, &e)) in boots.iter().enumerate() {
                let next_boot = starts.get(j + 1).copied().unwrap_or(i64::MAX);
                let first = mine.partition_point(|(t, _)| *t < start);
                if let Some(&(t, i)) = mine.get(first)
                    && t < next_boot
                {
                    out.boot_charged[i] += e;
                } else if next_boot == i64::MAX {
                    // The latest boot: an exec not given yet may still be the one it served.
                    out.uncharged.push(Boot {
                        worker: w.name.clone(),
                        start,
                        joules: e,
                    });
                }
            }
        }
        out.workers.insert(w.name.clone(), we);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    fn vm(name: &str, phases: &[(i64, Phase)]) -> WorkerInput {
        WorkerInput {
            name: name.into(),
            kind: model::Kind::Vm { cpus: 1 },
            oneshot: true,
            phases: phases.to_vec(),
        }
    }

    fn flat(watts: f64, from: i64, to: i64) -> Curve {
        Curve::new(
            (from / 1000..=to / 1000)
                .map(|s| (s * 1000, watts))
                .collect(),
            5000,
        )
    }

    /// Fixed model: off 0, booting 4, idle 1, busy 3 W.
    fn model() -> ModelMeter {
        let mut m = ModelMeter::default();
        m.vm.off = Some(0.0);
        m.vm.booting = Some(4.0);
        m.vm.idle = Some(1.0);
        m.vm.busy = Some(3.0);
        m
    }

    #[test]
    fn one_worker_gets_everything_in_its_phases() {
        // 10 W for 10 s. Worker: off 0-2 s, booting 2-4 s, ready 4-10 s, an invocation 5-7 s.
        let w = vm(
            "a",
            &[(0, Phase::Off), (2000, Phase::Booting), (4000, Phase::Idle)],
        );
        let execs = vec![Exec {
            worker: "a".into(),
            start: 5000,
            end: 7000,
        }];
        let m = MeterInput {
            name: "m".into(),
            curve: flat(10.0, 0, 10_000),
            model: model(),
            covers: vec!["a".into()],
        };
        let r = attribute((0, 10_000), &[m], &[w], &execs);
        assert!(close(r.joules, 100.0));
        // Off draws 0 W in the model: those 20 J are nobody's (the meter's own overhead).
        assert!(close(r.overhead, 20.0), "{r:?}");
        assert!(close(r.boot, 20.0));
        assert!(close(r.exec[0], 20.0));
        assert!(
            close(r.boot_charged[0], 20.0),
            "the boot served the invocation"
        );
        assert!(close(r.idle, 40.0));
        assert!(close(
            r.exec[0] + r.boot + r.idle + r.off + r.overhead,
            r.joules
        ));
    }

    #[test]
    fn shares_follow_modeled_power() {
        // 8 W for 4 s over two workers: `a` busy (3 W) and `b` idle (1 W) throughout:
        // a gets 3/4 of 32 J = 24 J, b 8 J.
        let a = vm("a", &[(0, Phase::Idle)]);
        let b = vm("b", &[(0, Phase::Idle)]);
        let execs = vec![Exec {
            worker: "a".into(),
            start: 0,
            end: 4000,
        }];
        let m = MeterInput {
            name: "m".into(),
            curve: flat(8.0, 0, 4000),
            model: model(),
            covers: vec!["a".into(), "b".into()],
        };
        let r = attribute((0, 4000), &[m], &[a, b], &execs);
        assert!(close(r.exec[0], 24.0), "{r:?}");
        assert!(close(r.workers["b"].idle, 8.0));
        assert_eq!(r.boot_charged[0], 0.0, "no boot in the window");
    }

    #[test]
    fn a_failed_boot_is_not_charged_and_a_ramp_splits_exactly() {
        // Power ramps 0 -> 10 W over 10 s (50 J). Boot 0-2 s (failed), boot 4-6 s, exec 6-8 s.
        let w = vm(
            "a",
            &[
                (0, Phase::Booting),
                (2000, Phase::Off),
                (4000, Phase::Booting),
                (6000, Phase::Idle),
            ],
        );
        let execs = vec![Exec {
            worker: "a".into(),
            start: 6000,
            end: 8000,
        }];
        let m = MeterInput {
            name: "m".into(),
            curve: Curve::new(vec![(0, 0.0), (10_000, 10.0)], 20_000),
            model: model(),
            covers: vec!["a".into()],
        };
        let r = attribute((0, 10_000), &[m], &[w], &execs);
        assert!(close(r.joules, 50.0));
        // ∫ t dt: boots [0,2] = 2 J and [4,6] = 10 J; exec [6,8] = 14 J; idle [8,10] = 18 J;
        // off [2,4] = 6 J goes to overhead (0 W modeled).
        assert!(close(r.boot, 12.0), "{r:?}");
        assert!(close(r.boot_charged[0], 10.0));
        assert!(close(r.exec[0], 14.0));
        assert!(close(r.idle, 18.0));
        assert!(close(r.overhead, 6.0));
    }

    #[test]
    fn a_gap_in_the_samples_is_attributed_to_nobody() {
        let w = vm("a", &[(0, Phase::Idle)]);
        let curve = Curve::new(
            vec![(0, 5.0), (1000, 5.0), (9000, 5.0), (10_000, 5.0)],
            2000,
        );
        let m = MeterInput {
            name: "m".into(),
            curve,
            model: model(),
            covers: vec!["a".into()],
        };
        let r = attribute((0, 10_000), &[m], &[w], &[]);
        assert!(close(r.joules, 10.0));
        assert!(close(r.idle, 10.0));
        assert_eq!(r.meters[0].2, 2000, "2 s of 10 were measured");
    }
}
