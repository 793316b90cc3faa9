//! The energy section of a workload report, computed from what a store holds: hand-made
//! samples, phase history and attempts whose energy is worked out by hand below.

use microfaas::manifest::Kind;
use microfaas::store::energy::Sample;
use microfaas::store::invocations::{Run, RunCounts, RunPhase};
use microfaas::store::{Attempt, AttemptStatus, DesiredObject, Store};
use microfaas::workload::{Report, to_csv_with_energy};

fn object(
    kind: Kind,
    name: &str,
    labels: &[(&str, &str)],
    spec: serde_json::Value,
) -> DesiredObject {
    DesiredObject {
        kind,
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: Default::default(),
        spec,
        owner: None,
        source: None,
    }
}

fn attempt(id: &str, function: &str, worker: &str, start: i64, end: i64) -> Attempt {
    Attempt {
        invocation_id: id.into(),
        workload: "wl".into(),
        run: 1,
        generation: 1,
        seq: 0,
        function: function.into(),
        worker: Some(worker.into()),
        attempt: 1,
        queued_ms: start,
        dispatched_ms: Some(start),
        finished_ms: end,
        exec_us: Some((end - start) * 1000),
        rtt_us: Some((end - start) * 1000),
        cold_start_ms: None,
        status: AttemptStatus::Succeeded,
        error: None,
        output_size: None,
        output_sha256: None,
    }
}

/// Stores workers `a` and `b` (with these specs), labelled `rack: r`, and the meter `strip`
/// covering them: a command meter whose model shares are off 0, booting 4, idle 2, busy 6 W.
fn rack(store: &mut Store, a: serde_json::Value, b: serde_json::Value) {
    store
        .apply(
            &[
                object(Kind::Worker, "a", &[("rack", "r")], a),
                object(Kind::Worker, "b", &[("rack", "r")], b),
                object(
                    Kind::PowerMeter,
                    "strip",
                    &[],
                    serde_json::json!({
                        "command": {"command": ["true"], "interval": "1s", "timeout": "1s"},
                        "model": {"vm": {"off": 0.0, "booting": 4.0, "idle": 2.0, "busy": 6.0}},
                        "covers": {"matchLabels": {"rack": "r"}}
                    }),
                ),
            ],
            None,
            false,
            false,
        )
        .expect("apply");
}

/// Stores `strip`'s samples `(ms after base, watts)` and phase changes `(worker, ms after
/// base, phase)`.
fn record(
    store: &mut Store,
    base: i64,
    samples: impl IntoIterator<Item = (i64, f64)>,
    phases: &[(&str, i64, &str)],
) {
    for (t, watts) in samples {
        store
            .record_sample(&Sample {
                meter: "strip".into(),
                at_ms: base + t,
                watts,
                volts: None,
                amps: None,
                watt_hours: None,
            })
            .expect("sample");
    }
    for (w, t, p) in phases {
        store.record_phase_at(w, base + t, p).expect("phase");
    }
}

/// A rack meter reading a constant 12 W for 10 s (120 J) over two OneShot VMs whose model
/// watts are off 0, booting 4, idle 2, busy 6:
/// - 0-2 s: a boots (4 W), b off (0 W): a gets all 24 J (boot, charged to a's invocation).
/// - 2-4 s: a runs `f` (6 W), b boots (4 W): a 14.4 J exec, b 9.6 J boot.
/// - 4-6 s: a idle (2 W), b runs `g` (6 W): a 6 J idle, b 18 J exec.
/// - 6-10 s: both off: 48 J that no worker accounts for (idle, unattributed).
#[test]
fn rack_meter_energy_is_shared_by_model_and_charged_to_invocations() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("store");
    let vm = serde_json::json!({"power": "OnDemand", "lifecycle": {"mode": "OneShot"}, "vm": {"kernel": "/k", "cpus": 1}});
    rack(&mut store, vm.clone(), vm);
    let base = 1_000_000;
    record(
        &mut store,
        base,
        (0..=10).map(|s| (s * 1000, 12.0)),
        &[
            ("a", 0, "PoweringOn"),
            ("a", 500, "Booting"),
            ("a", 2000, "Ready"),
            ("a", 6000, "Off"),
            ("b", 0, "Off"),
            ("b", 2000, "Booting"),
            ("b", 4000, "Ready"),
            ("b", 6000, "PoweringOff"),
            ("b", 6000, "Off"),
        ],
    );
    let attempts = vec![
        attempt("i-1", "f", "a", base + 2000, base + 4000),
        attempt("i-2", "g", "b", base + 4000, base + 6000),
    ];
    let run = Run {
        workload: "wl".into(),
        run: 1,
        generation: 1,
        phase: RunPhase::Succeeded,
        counts: RunCounts {
            total: 2,
            succeeded: 2,
            failed: 0,
            retried: 0,
        },
        started_ms: base,
        finished_ms: Some(base + 10_000),
        message: String::new(),
    };
    let e = microfaas::energy::report::compute(&store, &run, &attempts, base + 20_000)
        .expect("compute")
        .expect("energy");
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(e.joules, 120.0), "{e:?}");
    assert!(close(e.watt_hours, 120.0 / 3600.0));
    let i1 = &e.per_invocation["i-1"];
    assert!(
        close(i1.exec_joules, 14.4) && close(i1.boot_joules, 24.0),
        "{i1:?}"
    );
    let i2 = &e.per_invocation["i-2"];
    assert!(
        close(i2.exec_joules, 18.0) && close(i2.boot_joules, 9.6),
        "{i2:?}"
    );
    assert!(close(e.boot_joules, 33.6));
    assert!(close(e.idle_joules, 6.0 + 48.0));
    assert!(close(e.overhead_joules, 48.0));
    assert!(close(
        e.exec_joules + e.boot_joules + e.idle_joules,
        e.joules
    ));
    assert!(close(
        e.joules_per_invocation.expect("mean"),
        (38.4 + 27.6) / 2.0
    ));
    assert!(close(e.microfaas_joules_per_function.expect("paper"), 60.0));
    assert!(close(e.average_watts.expect("avg"), 12.0));
    assert!(close(e.per_worker["a"].idle_joules, 6.0));

    // The JSON carries the documented keys; CSV rows carry each attempt's energy.
    let report = Report::from_attempts("wl", 1, &attempts).with_energy(Some(e.clone()));
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    for key in microfaas::energy::report::DOCUMENTED_KEYS {
        assert!(!v["energy"][key].is_null(), "energy.{key}: {}", v["energy"]);
    }
    assert!(close(
        v["energy"]["perFunction"]["f"]["joulesPerInvocation"]
            .as_f64()
            .expect("f"),
        38.4
    ));
    let csv = to_csv_with_energy(&attempts, Some(&e));
    let first = csv.lines().nth(1).expect("row");
    assert!(first.ends_with(",38.400000,14.400000,24.000000"), "{first}");
    let table = report.to_table();
    assert!(table.contains("Energy:         120.000 J"), "{table}");
    let html = microfaas::workload::to_html(&report, &attempts);
    assert_eq!(html.matches("<svg").count(), 6, "two energy plots added");
    assert!(html.contains("Power over time"));
}

#[test]
fn no_samples_means_no_energy_section() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("store");
    let run = Run {
        workload: "wl".into(),
        run: 1,
        generation: 1,
        phase: RunPhase::Succeeded,
        counts: RunCounts::default(),
        started_ms: 0,
        finished_ms: Some(1000),
        message: String::new(),
    };
    assert!(
        microfaas::energy::report::compute(&store, &run, &[], 5000)
            .expect("compute")
            .is_none()
    );
    let report = Report::from_attempts("wl", 1, &[]);
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
    assert!(v["energy"].is_null());
}

/// Live attribution (what the gateway's energy metrics use) taken in windows that cut a boot,
/// an exec and the gap between a boot and the invocation it served, with attempts recorded
/// only as they would be by then, gives each invocation what the report over the whole run
/// gives it, and each invocation is reported final exactly once.
#[test]
fn live_attribution_in_windows_matches_the_report() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("store");
    let oneshot = serde_json::json!({"power": "OnDemand", "lifecycle": {"mode": "OneShot"}, "vm": {"kernel": "/k", "cpus": 1}});
    let warm = serde_json::json!({"power": "OnDemand", "lifecycle": {"mode": "Warm"}, "vm": {"kernel": "/k", "cpus": 2}});
    rack(&mut store, oneshot, warm);
    let run_no = store.start_run("wl", 1).expect("run");
    let base = store
        .run("wl", run_no)
        .expect("read")
        .expect("run")
        .started_ms;
    // A power curve that is not flat, so window edges must be interpolated.
    record(
        &mut store,
        base,
        (0..=20).map(|s| (s * 1000, 10.0 + (s % 3) as f64 * 2.5)),
        &[
            ("a", 0, "PoweringOn"),
            ("a", 500, "Booting"),
            ("a", 3000, "Ready"),
            ("a", 5500, "Off"),
            ("a", 8000, "Booting"),
            ("a", 10_400, "Ready"),
            ("a", 12_500, "Off"),
            ("b", 0, "Ready"),
        ],
    );
    let mut retried = attempt("i-5", "g", "b", base + 15_500, base + 16_000);
    retried.status = AttemptStatus::Lost;
    let mut second = attempt("i-5", "g", "b", base + 16_200, base + 17_000);
    second.attempt = 2;
    let attempts: Vec<Attempt> = [
        attempt("i-1", "f", "a", base + 3200, base + 5000),
        attempt("i-2", "g", "b", base + 4000, base + 7300),
        attempt("i-3", "f", "a", base + 10_500, base + 12_000),
        attempt("i-4", "f", "b", base + 12_000, base + 15_000),
        retried,
        second,
    ]
    .into_iter()
    .map(|a| Attempt { run: run_no, ..a })
    .collect();

    let mut live = microfaas::energy::live::Live::new("wl", run_no, base);
    let mut recorded = 0;
    let mut counted: std::collections::BTreeMap<String, f64> = Default::default();
    let mut finished: Vec<(String, f64)> = Vec::new();
    // 1.7 s: in a's first boot; 4.1 s: in i-1 and i-2; 10.45 s: after a's second boot, before
    // i-3 (not recorded yet) started; 15.7 s: in i-5's first attempt.
    for h in [1700, 4100, 6000, 9000, 10_450, 13_000, 15_700, 20_000] {
        while recorded < attempts.len()
            && attempts[recorded].dispatched_ms.expect("dispatched") < base + h
        {
            store.record_attempt(&attempts[recorded]).expect("record");
            recorded += 1;
        }
        let step = live.advance(&store, base + h).expect("advance");
        for (f, j) in step.charged {
            *counted.entry(f).or_default() += j;
        }
        finished.extend(step.finished);
        assert_eq!(live.watermark(), base + h);
    }

    let run = store.run("wl", run_no).expect("read").expect("run");
    let e = microfaas::energy::report::compute(&store, &run, &attempts, base + 20_000)
        .expect("compute")
        .expect("energy");
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
    assert!(
        e.per_invocation["i-3"].boot_joules > 1.0,
        "the second boot is charged to i-3: {:?}",
        e.per_invocation["i-3"]
    );
    for (f, fe) in &e.per_function {
        assert!(close(counted[f], fe.joules), "{f}: {counted:?} vs {fe:?}");
    }
    // Final once each, with the report's figure.
    let mut want: Vec<(String, f64)> = ["i-1", "i-2", "i-3", "i-4", "i-5"]
        .iter()
        .map(|i| {
            let inv = &e.per_invocation[*i];
            (inv.function.clone(), inv.joules)
        })
        .collect();
    want.sort_by(|x, y| x.partial_cmp(y).expect("numbers"));
    finished.sort_by(|x, y| x.partial_cmp(y).expect("numbers"));
    assert_eq!(finished.len(), want.len(), "{finished:?}");
    for (got, w) in finished.iter().zip(&want) {
        assert!(
            got.0 == w.0 && close(got.1, w.1),
            "{finished:?} vs {want:?}"
        );
    }
}
