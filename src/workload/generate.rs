//! Workload generators: a `WorkloadSpec` becomes a deterministic plan, a list of [`Planned`]
//! invocations with their offsets from the run start, inputs and (for `balanced`) the worker
//! slot they are queued on. The same spec, handlers, worker count and trace give the same plan
//! on every machine and every release: that is what lets a published run be repeated.
//!
//! Rules shared by all patterns:
//! - Function choice: among the functions with quota left (a `count` not yet used up; a
//!   function without `count` never runs out), with probability proportional to `weight`
//!   (default 1, so the default is the original uniform choice).
//! - Inputs: the k-th invocation of a function gets `inputs[k % len]` when the manifest lists
//!   inputs, else the k-th of `functions::default_inputs(handler, s, ..)` for a seed `s` derived
//!   from the workload seed and the function's name, else JSON `null` (non-builtin functions).
//! - `duration`: nothing is planned at or after it. Without it every function needs a `count`.
//!
//! Patterns:
//! - `balanced` (the original MicroFaaS generator): every `period` (default 1 s), a random
//!   subset of randint(1, N) distinct worker slots is drawn and one invocation is queued on
//!   each, in the order drawn; all of a round share its offset.
//! - `fixed`: invocation i at `i / rate` seconds.
//! - `poisson`: exponential gaps of mean `1 / rate`; the first arrival is after the first gap.
//! - `trace`: one invocation per CSV row `offset, function, input`, ordered by offset (rows with
//!   equal offsets keep file order); counts and weights do not apply, an empty input draws from
//!   the function's inputs as above.
//!
//! Randomness comes from [`SplitMix64`], one independent stream per purpose so that, say, the
//! subset draws do not shift when a function's weight changes.

use crate::functions::{self, fnv1a, rng::SplitMix64};
use crate::manifest::types::{ArrivalPattern, WorkloadSpec};
use crate::manifest::validate::parse_rate;
use serde_json::Value;
use std::collections::BTreeMap;

/// More than this many planned invocations is refused: the plan is held in memory, and a
/// figure this large is a typo in a rate or a duration rather than an experiment.
pub const MAX_PLANNED: usize = 1_000_000;

/// One invocation to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// 0-based position in the plan (offset order).
    pub seq: u64,
    /// When to enqueue it, in milliseconds from the run start.
    pub at_ms: u64,
    /// The `Function` object's name.
    pub function: String,
    pub input: Value,
    /// `balanced`: the index (0..N) of the selected worker whose queue it joins; the
    /// scheduler maps slots to workers, e.g. in name order. `None`: any worker.
    pub worker_slot: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("the workload lists no functions")]
    NoFunctions,
    #[error("the balanced arrival pattern needs at least one selected worker")]
    NoWorkers,
    #[error("function `{function}`: unknown builtin handler `{handler}`")]
    UnknownHandler { function: String, handler: String },
    #[error("function `{0}` has no `count` and the workload no `duration`: it would never end")]
    Unbounded(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(
        "the workload would plan more than {MAX_PLANNED} invocations; lower the counts, the rate or the duration"
    )]
    TooLarge,
    #[error("a trace arrival needs the contents of its trace file")]
    MissingTrace,
    #[error("trace line {line}: {message}")]
    Trace { line: usize, message: String },
}

/// One row of a trace file.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRow {
    /// 1-based line in the file, for messages.
    pub line: usize,
    pub offset_ms: u64,
    pub function: String,
    /// `None` when the column is empty: the function's inputs are used in turn.
    pub input: Option<Value>,
}

/// Plans `spec`. `handlers` maps each builtin function's name to its handler (functions
/// missing from it are non-builtin); `workers` is N, the number of selected workers (only
/// `balanced` uses it); `trace` is the trace file's text (only `trace` uses it).
pub fn generate(
    spec: &WorkloadSpec,
    handlers: &BTreeMap<String, String>,
    workers: usize,
    trace: Option<&str>,
) -> Result<Vec<Planned>, PlanError> {
    if spec.functions.is_empty() {
        return Err(PlanError::NoFunctions);
    }
    for f in &spec.functions {
        if let Some(h) = handlers.get(&f.function)
            && !functions::all_names().contains(&h.as_str())
        {
            return Err(PlanError::UnknownHandler {
                function: f.function.clone(),
                handler: h.clone(),
            });
        }
    }
    let duration_ms = match &spec.duration {
        Some(d) => Some(millis(d.parse().map_err(|e| PlanError::Invalid {
            field: "duration",
            message: e.to_string(),
        })?)),
        None => None,
    };
    let before_end = |t: u64| duration_ms.is_none_or(|d| t < d);
    // A trace bounds itself: its rows are the invocations.
    let bounded = duration_ms.is_some() || spec.arrival.pattern == ArrivalPattern::Trace;
    let mut mix = Mix::new(spec, bounded)?;
    let seed = spec.seed;

    // First pass: when, what and where; inputs are filled in afterwards because a function
    // without `count` only knows how many it needs at the end.
    let mut slots: Vec<(u64, usize, Option<usize>, Option<Value>)> = Vec::new();
    let push = |slots: &mut Vec<_>, item| {
        if slots.len() >= MAX_PLANNED {
            return Err(PlanError::TooLarge);
        }
        slots.push(item);
        Ok(())
    };
    match spec.arrival.pattern {
        ArrivalPattern::Balanced => {
            if workers == 0 {
                return Err(PlanError::NoWorkers);
            }
            let period = match &spec.arrival.period {
                Some(p) => millis(p.parse().map_err(|e| PlanError::Invalid {
                    field: "arrival period",
                    message: e.to_string(),
                })?),
                None => 1000,
            };
            if period == 0 {
                return Err(PlanError::Invalid {
                    field: "arrival period",
                    message: "must be longer than 0".into(),
                });
            }
            let mut subset_rng = stream(seed, 1);
            let mut choice_rng = stream(seed, 2);
            let mut order: Vec<usize> = (0..workers).collect();
            'rounds: for round in 0u64.. {
                let at = round.saturating_mul(period);
                if !before_end(at) {
                    break;
                }
                // randint(1, N) slots, drawn without replacement (partial Fisher-Yates).
                let k = subset_rng.range(1, workers as u64) as usize;
                for i in 0..k {
                    let j = i + subset_rng.below((workers - i) as u64) as usize;
                    order.swap(i, j);
                }
                for &slot in &order[..k] {
                    let Some(f) = mix.choose(&mut choice_rng) else {
                        break 'rounds;
                    };
                    push(&mut slots, (at, f, Some(slot), None))?;
                }
            }
        }
        ArrivalPattern::Fixed | ArrivalPattern::Poisson => {
            let rate = spec.arrival.rate.as_deref().ok_or(PlanError::Invalid {
                field: "arrival rate",
                message: "this arrival pattern needs `rate`, e.g. `5/s`".into(),
            })?;
            let per_ms = parse_rate(rate).map_err(|message| PlanError::Invalid {
                field: "arrival rate",
                message,
            })? / 1000.0;
            let poisson = spec.arrival.pattern == ArrivalPattern::Poisson;
            let mut gap_rng = stream(seed, 3);
            let mut choice_rng = stream(seed, 2);
            let mut t = 0.0_f64;
            for i in 0u64.. {
                t = if poisson {
                    // 1 - u is in (0, 1], so ln never sees 0.
                    t - (1.0 - gap_rng.unit_f64()).ln() / per_ms
                } else {
                    i as f64 / per_ms
                };
                let at = t.round() as u64;
                if !before_end(at) {
                    break;
                }
                let Some(f) = mix.choose(&mut choice_rng) else {
                    break;
                };
                push(&mut slots, (at, f, None, None))?;
            }
        }
        ArrivalPattern::Trace => {
            let rows = parse_trace(trace.ok_or(PlanError::MissingTrace)?)?;
            for row in rows {
                let Some(f) = mix.index(&row.function) else {
                    return Err(PlanError::Trace {
                        line: row.line,
                        message: format!(
                            "function `{}` is not one of this workload's functions ({})",
                            row.function,
                            mix.names().join(", ")
                        ),
                    });
                };
                if before_end(row.offset_ms) {
                    push(&mut slots, (row.offset_ms, f, None, row.input))?;
                }
            }
        }
    }

    // Second pass: inputs, the k-th use of a function taking the k-th of its list.
    let mut uses = vec![0usize; mix.entries.len()];
    for (_, f, _, given) in &slots {
        if given.is_none() {
            uses[*f] += 1;
        }
    }
    let mut lists: Vec<std::vec::IntoIter<Value>> = mix
        .entries
        .iter()
        .zip(&uses)
        .map(|(e, &n)| {
            let list: Vec<Value> = if !e.inputs.is_empty() {
                e.inputs.iter().cycle().take(n).cloned().collect()
            } else if let Some(h) = handlers.get(&e.name) {
                let s = SplitMix64::new(seed ^ fnv1a(e.name.as_bytes())).next_u64();
                functions::default_inputs(h, s, n)
            } else {
                vec![Value::Null; n]
            };
            list.into_iter()
        })
        .collect();
    Ok(slots
        .into_iter()
        .enumerate()
        .map(|(seq, (at_ms, f, worker_slot, given))| Planned {
            seq: seq as u64,
            at_ms,
            function: mix.entries[f].name.clone(),
            input: given.unwrap_or_else(|| lists[f].next().unwrap_or(Value::Null)),
            worker_slot,
        })
        .collect())
}

/// Parses a trace: `offset, function, input` per line, offset in seconds (fractions allowed),
/// input as JSON (the rest of the line, so it may contain commas; CSV-quoted with `""` also
/// works; empty = the function's inputs). Blank lines and lines starting with `#` are
/// skipped, as is a first line whose offset is not a number (a header). Rows come back
/// sorted by offset, ties in file order.
pub fn parse_trace(text: &str) -> Result<Vec<TraceRow>, PlanError> {
    let mut rows = Vec::new();
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| PlanError::Trace { line, message };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let was_first = std::mem::replace(&mut first, false);
        let mut parts = l.splitn(3, ',');
        let offset = parts.next().unwrap_or("").trim();
        let Ok(secs) = offset.parse::<f64>() else {
            if was_first {
                continue; // a header row
            }
            return Err(err(format!("offset `{offset}` is not a number of seconds")));
        };
        // Upper bound: about 31 years, far beyond any run, and exact in u64 milliseconds.
        if !(secs.is_finite() && (0.0..1e9).contains(&secs)) {
            return Err(err(format!(
                "offset {offset} must be between 0 and 1e9 seconds"
            )));
        }
        let function = unquote(parts.next().unwrap_or("").trim());
        if function.is_empty() {
            return Err(err(
                "expected `offset, function, input`: the function is missing".into(),
            ));
        }
        let input = match parts.next().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(parse_input(s).map_err(|e| err(format!("input is not JSON: {e}")))?),
        };
        rows.push(TraceRow {
            line,
            offset_ms: (secs * 1000.0).round() as u64,
            function,
            input,
        });
    }
    rows.sort_by_key(|r| r.offset_ms);
    Ok(rows)
}

/// JSON as written, or CSV-quoted JSON (`"{""n"": 1}"`) as spreadsheets save it.
fn parse_input(s: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(s).or_else(|e| {
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            serde_json::from_str(&s[1..s.len() - 1].replace("\"\"", "\""))
        } else {
            Err(e)
        }
    })
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
        .to_string()
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An independent PRNG stream for one purpose, derived from the workload seed.
fn stream(seed: u64, purpose: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

struct Entry {
    name: String,
    weight: f64,
    /// Invocations left; `None` = unlimited (bounded by the workload's duration).
    left: Option<u64>,
    inputs: Vec<Value>,
}

/// The function mix and what remains of each quota.
struct Mix {
    entries: Vec<Entry>,
}

impl Mix {
    fn new(spec: &WorkloadSpec, bounded: bool) -> Result<Mix, PlanError> {
        let mut entries = Vec::with_capacity(spec.functions.len());
        for f in &spec.functions {
            let left = match f.count {
                Some(c) => Some(u64::try_from(c).map_err(|_| PlanError::Invalid {
                    field: "count",
                    message: format!("function `{}`: count must not be negative", f.function),
                })?),
                None if bounded => None,
                None => return Err(PlanError::Unbounded(f.function.clone())),
            };
            let weight = f.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(PlanError::Invalid {
                    field: "weight",
                    message: format!(
                        "function `{}`: weight must be a positive number, got {weight}",
                        f.function
                    ),
                });
            }
            entries.push(Entry {
                name: f.function.clone(),
                weight,
                left,
                inputs: f.inputs.clone(),
            });
        }
        Ok(Mix { entries })
    }

    /// Picks a function with quota left (weighted) and uses one of its quota; `None` when
    /// every quota is used up.
    fn choose(&mut self, rng: &mut SplitMix64) -> Option<usize> {
        let open = |e: &Entry| e.left != Some(0);
        let total: f64 = self
            .entries
            .iter()
            .filter(|e| open(e))
            .map(|e| e.weight)
            .sum();
        if total <= 0.0 {
            return None;
        }
        let mut x = rng.unit_f64() * total;
        let mut pick = None;
        for (i, e) in self.entries.iter().enumerate().filter(|(_, e)| open(e)) {
            pick = Some(i);
            if x < e.weight {
                break;
            }
            x -= e.weight;
        }
        // Rounding can leave x just above the last weight: `pick` is then the last open one.
        let i = pick?;
        if let Some(left) = &mut self.entries[i].left {
            *left -= 1;
        }
        Some(i)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn spec(v: Value) -> WorkloadSpec {
        serde_json::from_value(v).expect("workload spec")
    }

    /// Every builtin function under its own name.
    fn builtin() -> BTreeMap<String, String> {
        functions::names()
            .iter()
            .map(|n| (n.to_string(), n.to_string()))
            .collect()
    }

    /// The CI workload: the nine builtins, `count` each.
    fn ci(count: i64, seed: u64) -> WorkloadSpec {
        let fns: Vec<Value> = functions::names()
            .iter()
            .map(|n| json!({"function": n, "count": count}))
            .collect();
        spec(json!({"functions": fns, "seed": seed}))
    }

    fn per_function(plan: &[Planned]) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for p in plan {
            *m.entry(p.function.as_str()).or_default() += 1;
        }
        m
    }

    fn inputs_of<'a>(plan: &'a [Planned], f: &str) -> Vec<&'a Value> {
        plan.iter()
            .filter(|p| p.function == f)
            .map(|p| &p.input)
            .collect()
    }

    #[test]
    fn balanced_counts_rounds_and_slots() {
        let plan = generate(&ci(4, 63302), &builtin(), 2, None).expect("plan");
        assert_eq!(plan.len(), 36);
        assert!(per_function(&plan).values().all(|&n| n == 4));
        assert_eq!(per_function(&plan).len(), 9);
        assert!(plan.iter().enumerate().all(|(i, p)| p.seq == i as u64));
        // rounds: one per second, back to back, each on 1..=N distinct slots
        let mut rounds: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for p in &plan {
            assert_eq!(p.at_ms % 1000, 0);
            rounds
                .entry(p.at_ms)
                .or_default()
                .push(p.worker_slot.expect("balanced places on a slot"));
        }
        let keys: Vec<u64> = rounds.keys().copied().collect();
        assert_eq!(
            keys,
            (0..keys.len() as u64).map(|r| r * 1000).collect::<Vec<_>>()
        );
        for (at, slots) in &rounds {
            let distinct: BTreeSet<_> = slots.iter().collect();
            assert_eq!(distinct.len(), slots.len(), "round {at} reuses a slot");
            assert!(slots.iter().all(|&s| s < 2));
        }
        // with 5 workers every subset size 1..=5 shows up and all slots get work
        let plan = generate(&ci(100, 1), &builtin(), 5, None).expect("plan");
        let mut sizes = BTreeSet::new();
        let mut rounds: BTreeMap<u64, usize> = BTreeMap::new();
        for p in &plan {
            *rounds.entry(p.at_ms).or_default() += 1;
        }
        let last = *rounds.keys().last().expect("rounds");
        for (at, n) in rounds {
            if at != last {
                sizes.insert(n); // the last round may be cut short by the quotas
            }
        }
        assert_eq!(sizes, (1..=5).collect());
        let used: BTreeSet<_> = plan.iter().filter_map(|p| p.worker_slot).collect();
        assert_eq!(used, (0..5).collect());
    }

    #[test]
    fn same_seed_same_plan_forever() {
        let a = generate(&ci(4, 63302), &builtin(), 2, None).expect("plan");
        let b = generate(&ci(4, 63302), &builtin(), 2, None).expect("plan");
        assert_eq!(a, b);
        let c = generate(&ci(4, 63303), &builtin(), 2, None).expect("plan");
        assert_ne!(
            a.iter()
                .map(|p| (&p.function, p.worker_slot))
                .collect::<Vec<_>>(),
            c.iter()
                .map(|p| (&p.function, p.worker_slot))
                .collect::<Vec<_>>()
        );
        // Golden values: a change here changes every published plan. Update only on purpose.
        let head: Vec<(u64, &str, Option<usize>)> = a
            .iter()
            .take(8)
            .map(|p| (p.at_ms, p.function.as_str(), p.worker_slot))
            .collect();
        assert_eq!(head, GOLDEN_HEAD);
        assert_eq!(a[0].input, golden_first_input());
    }

    const GOLDEN_HEAD: &[(u64, &str, Option<usize>)] = &[
        (0, "regex_search", Some(1)),
        (0, "regex_match", Some(0)),
        (1000, "pyaes", Some(1)),
        (1000, "pyaes", Some(0)),
        (2000, "html_generation", Some(1)),
        (3000, "cascading_md5", Some(0)),
        (3000, "regex_search", Some(1)),
        (4000, "html_generation", Some(1)),
    ];

    fn golden_first_input() -> Value {
        json!({"length": 64, "seed": 3_921_624_706_u64})
    }

    #[test]
    fn inputs_explicit_in_turn_default_seeded_and_prefix_stable() {
        let s = spec(json!({"functions": [
            {"function": "a", "count": 5, "inputs": [{"n": 1}, {"n": 2}]},
            {"function": "b", "count": 4},
            {"function": "c", "count": 4},
            {"function": "ext", "count": 2},
        ], "arrival": {"pattern": "fixed", "rate": "10/s"}}));
        let handlers: BTreeMap<String, String> =
            [("a", "matmul"), ("b", "matmul"), ("c", "matmul")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let plan = generate(&s, &handlers, 0, None).expect("plan");
        let a = inputs_of(&plan, "a");
        assert_eq!(
            a,
            [
                &json!({"n": 1}),
                &json!({"n": 2}),
                &json!({"n": 1}),
                &json!({"n": 2}),
                &json!({"n": 1})
            ]
        );
        // builtin without inputs: the handler's generator, one list per function name
        let b = inputs_of(&plan, "b");
        let c = inputs_of(&plan, "c");
        assert!(b.iter().all(|v| v.get("size").is_some()), "{b:?}");
        assert_ne!(b, c, "two functions on one handler share their inputs");
        // not builtin and no inputs: null
        assert_eq!(inputs_of(&plan, "ext"), [&Value::Null, &Value::Null]);
        // more invocations extend a function's inputs, they do not change the first ones
        let mut more = s.clone();
        more.functions[1].count = Some(9);
        let plan9 = generate(&more, &handlers, 0, None).expect("plan");
        assert_eq!(inputs_of(&plan9, "b")[..4], b[..]);
    }

    #[test]
    fn fixed_is_evenly_spaced_with_exact_counts() {
        let s = spec(json!({"functions": [
            {"function": "matmul", "count": 7},
            {"function": "regex_match", "count": 3},
        ], "arrival": {"pattern": "fixed", "rate": "300/m"}}));
        let plan = generate(&s, &builtin(), 0, None).expect("plan");
        let at: Vec<u64> = plan.iter().map(|p| p.at_ms).collect();
        assert_eq!(at, (0..10).map(|i| i * 200).collect::<Vec<_>>());
        assert_eq!(per_function(&plan)["matmul"], 7);
        assert_eq!(per_function(&plan)["regex_match"], 3);
        assert!(plan.iter().all(|p| p.worker_slot.is_none()));
    }

    #[test]
    fn duration_bounds_weighted_workloads() {
        let s = spec(json!({"functions": [
            {"function": "matmul", "weight": 1},
            {"function": "regex_match", "weight": 3},
            {"function": "pyaes", "count": 5},
        ], "arrival": {"pattern": "fixed", "rate": "100/s"}, "duration": "60s"}));
        let plan = generate(&s, &builtin(), 0, None).expect("plan");
        assert_eq!(plan.len(), 6000);
        assert_eq!(plan.last().map(|p| p.at_ms), Some(59_990));
        let n = per_function(&plan);
        assert_eq!(n["pyaes"], 5);
        let share = n["regex_match"] as f64 / (n["regex_match"] + n["matmul"]) as f64;
        assert!((0.72..0.78).contains(&share), "weight 3 of 4 got {share}");
        // balanced with a duration: rounds at 0, 1 and 2 s only, though counts remain
        let s = spec(json!({"functions": [{"function": "matmul", "count": 1000}],
                            "arrival": {"period": "1s"}, "duration": "3s"}));
        let plan = generate(&s, &builtin(), 3, None).expect("plan");
        let rounds: BTreeSet<u64> = plan.iter().map(|p| p.at_ms).collect();
        assert_eq!(rounds, [0, 1000, 2000].into());
    }

    #[test]
    fn poisson_has_the_rate_and_exact_counts() {
        let s = spec(json!({"functions": [
            {"function": "matmul", "count": 1500},
            {"function": "cascading_md5", "count": 500},
        ], "arrival": {"pattern": "poisson", "rate": "10/s"}, "seed": 7}));
        let plan = generate(&s, &builtin(), 0, None).expect("plan");
        assert_eq!(per_function(&plan)["matmul"], 1500);
        assert_eq!(per_function(&plan)["cascading_md5"], 500);
        assert!(plan.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let mean_gap = plan.last().map_or(0, |p| p.at_ms) as f64 / 2000.0;
        assert!((90.0..110.0).contains(&mean_gap), "mean gap {mean_gap} ms");
        // exponential gaps: about e^-1 of them are longer than the mean
        let long = plan
            .windows(2)
            .filter(|w| w[1].at_ms - w[0].at_ms > 100)
            .count() as f64;
        assert!((0.33..0.41).contains(&(long / 1999.0)), "{long}");
        assert_eq!(plan, generate(&s, &builtin(), 0, None).expect("plan"));
    }

    #[test]
    fn trace_rows_become_the_plan() {
        let s = spec(json!({"functions": [
            {"function": "matmul", "inputs": [{"size": 3}]},
            {"function": "regex_match", "count": 1},
        ], "arrival": {"pattern": "trace", "file": "t.csv"}, "duration": "10s"}));
        let text = "offset,function,input\n\
                    # a comment\n\
                    \n\
                    2.5, regex_match, {\"text\": \"a1b2\", \"x\": [1, 2]}\n\
                    0, matmul,\n\
                    0.25,\"matmul\",\"{\"\"size\"\": 4}\"\r\n\
                    2.5, regex_match, {}\n\
                    11, matmul, {}\n";
        let plan = generate(&s, &builtin(), 0, Some(text)).expect("plan");
        let got: Vec<(u64, &str, &Value)> = plan
            .iter()
            .map(|p| (p.at_ms, p.function.as_str(), &p.input))
            .collect();
        assert_eq!(
            got,
            [
                (0, "matmul", &json!({"size": 3})),
                (250, "matmul", &json!({"size": 4})),
                (2500, "regex_match", &json!({"text": "a1b2", "x": [1, 2]})),
                (2500, "regex_match", &json!({})),
            ]
        );
    }

    #[test]
    fn trace_errors_name_the_line() {
        let cases = [
            ("0,matmul,{}\nsoon,matmul,{}\n", 2, "offset `soon`"),
            ("0,matmul,{}\n-1,matmul,{}\n", 2, "between 0"),
            ("# c\n1\n", 2, "function is missing"),
            ("1,matmul,{\"size\": \n", 1, "input is not JSON"),
            (
                "offset,function,input\n1,nope,{}\n",
                2,
                "`nope` is not one of",
            ),
        ];
        let s = spec(json!({"functions": [{"function": "matmul"}],
                            "arrival": {"pattern": "trace", "file": "t.csv"}}));
        for (text, line, needle) in cases {
            match generate(&s, &builtin(), 0, Some(text)) {
                Err(PlanError::Trace { line: l, message }) => {
                    assert_eq!(l, line, "{text:?}: {message}");
                    assert!(message.contains(needle), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert_eq!(
            generate(&s, &builtin(), 0, None),
            Err(PlanError::MissingTrace)
        );
    }

    #[test]
    fn impossible_workloads_are_refused() {
        let unbounded = spec(json!({"functions": [{"function": "matmul", "weight": 2}]}));
        assert_eq!(
            generate(&unbounded, &builtin(), 1, None),
            Err(PlanError::Unbounded("matmul".into()))
        );
        assert_eq!(
            generate(&ci(1, 1), &builtin(), 0, None),
            Err(PlanError::NoWorkers)
        );
        let mut h = builtin();
        h.insert("matmul".into(), "matmull".into());
        assert!(matches!(
            generate(&ci(1, 1), &h, 1, None),
            Err(PlanError::UnknownHandler { .. })
        ));
        let huge = spec(json!({"functions": [{"function": "matmul", "weight": 1}],
                               "arrival": {"pattern": "fixed", "rate": "1000/s"},
                               "duration": "2000s"}));
        assert_eq!(
            generate(&huge, &builtin(), 0, None),
            Err(PlanError::TooLarge)
        );
        let no_rate = spec(json!({"functions": [{"function": "matmul", "count": 1}],
                                  "arrival": {"pattern": "poisson"}}));
        assert!(matches!(
            generate(&no_rate, &builtin(), 0, None),
            Err(PlanError::Invalid {
                field: "arrival rate",
                ..
            })
        ));
        let empty = spec(json!({"functions": []}));
        assert_eq!(
            generate(&empty, &builtin(), 1, None),
            Err(PlanError::NoFunctions)
        );
    }
}
