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
    store
        .apply(
            &[
                object(Kind::Worker, "a", &[("rack", "r")], vm.clone()),
                object(Kind::Worker, "b", &[("rack", "r")], vm),
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
    let base = 1_000_000;
    for s in 0..=10 {
        store
            .record_sample(&Sample {
                meter: "strip".into(),
                at_ms: base + s * 1000,
                watts: 12.0,
                volts: None,
                amps: None,
                watt_hours: None,
            })
            .expect("sample");
    }
    for (w, t, p) in [
        ("a", 0, "PoweringOn"),
        ("a", 500, "Booting"),
        ("a", 2000, "Ready"),
        ("a", 6000, "Off"),
        ("b", 0, "Off"),
        ("b", 2000, "Booting"),
        ("b", 4000, "Ready"),
        ("b", 6000, "PoweringOff"),
        ("b", 6000, "Off"),
    ] {
        store.record_phase_at(w, base + t, p).expect("phase");
    }
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
