//! Workload reports on a fixed recorded set: attempts written through `Store::record_attempt`
//! into a temporary store, read back, and the report's numbers compared with values computed
//! by hand (below, next to the data). Then the renderings (JSON keys, CSV, HTML) and the
//! `microfaasctl report` command on the same store.

use microfaas::store::{Attempt, AttemptStatus, RunCounts, RunPhase, Store, output_digest};
use microfaas::workload::{Report, Stats, to_csv, to_html};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

#[allow(clippy::too_many_arguments)]
fn attempt(
    id: &str,
    seq: u64,
    function: &str,
    worker: &str,
    n: u32,
    status: AttemptStatus,
    (queued, dispatched, finished): (i64, i64, i64),
    exec_ms: Option<i64>,
    rtt_ms: Option<i64>,
    cold_ms: Option<i64>,
) -> Attempt {
    let ok = status == AttemptStatus::Succeeded;
    Attempt {
        invocation_id: id.into(),
        workload: "wl".into(),
        run: 1,
        generation: 2,
        seq,
        function: function.into(),
        worker: Some(worker.into()),
        attempt: n,
        queued_ms: queued,
        dispatched_ms: Some(dispatched),
        finished_ms: finished,
        exec_us: exec_ms.map(|m| m * 1000),
        rtt_us: rtt_ms.map(|m| m * 1000),
        cold_start_ms: cold_ms,
        status,
        error: (!ok).then(|| format!("{status}: \"boom\", again")),
        output_size: ok.then_some(2),
        output_sha256: ok.then(|| output_digest(b"{}").1),
    }
}

/// Five invocations, seven attempts.
///
/// | inv   | function    | attempts                          | rtt | exec | cold |
/// |-------|-------------|-----------------------------------|-----|------|------|
/// | inv-a | matmul      | vm-0 ok                           | 400 | 200  | 3000 |
/// | inv-b | matmul      | vm-1 lost, vm-0 ok                | 300 | 100  | -    |
/// | inv-c | regex_match | vm-1 ok                           | 100 | 20   | 5000 |
/// | inv-<d>& | regex_match | vm-1 timeout, vm-0 failed      | (10, failed: not counted) |
/// | inv-e | matmul      | vm-0 ok                           | 600 | 300  | -    |
///
/// First queued at 10 000 ms, last finished at 20 020 ms: 10.02 s.
// One attempt a line, so the data reads as the table above.
#[rustfmt::skip]
fn recorded() -> Vec<Attempt> {
    use AttemptStatus::*;
    vec![
        attempt("inv-a", 0, "matmul", "vm-0", 1, Succeeded, (10_000, 10_100, 10_500), Some(200), Some(400), Some(3000)),
        attempt("inv-b", 1, "matmul", "vm-1", 1, Lost, (10_000, 10_200, 12_000), None, None, None),
        attempt("inv-b", 1, "matmul", "vm-0", 2, Succeeded, (12_000, 12_050, 12_350), Some(100), Some(300), None),
        attempt("inv-c", 2, "regex_match", "vm-1", 1, Succeeded, (11_000, 11_000, 11_100), Some(20), Some(100), Some(5000)),
        attempt("inv-<d>&", 3, "regex_match", "vm-1", 1, Timeout, (11_000, 11_100, 20_000), None, None, None),
        attempt("inv-<d>&", 3, "regex_match", "vm-0", 2, Failed, (20_000, 20_010, 20_020), Some(5), Some(10), None),
        attempt("inv-e", 4, "matmul", "vm-0", 1, Succeeded, (13_000, 13_000, 13_600), Some(300), Some(600), None),
    ]
}

/// A store in `dir` holding run 1 of `wl` with the recorded set (in scrambled order).
fn store_with_run(dir: &Path) -> Vec<Attempt> {
    let mut s = Store::open(dir).expect("open store");
    assert_eq!(s.start_run("wl", 2).expect("start run"), 1);
    let attempts = recorded();
    for i in [6, 2, 0, 4, 1, 5, 3] {
        s.record_attempt(&attempts[i]).expect("record");
    }
    let counts = RunCounts {
        total: 5,
        succeeded: 4,
        failed: 1,
        retried: 2,
    };
    s.finish_run("wl", 1, RunPhase::Failed, &counts, "1 invocation failed")
        .expect("finish");
    let back = s.attempts("wl", 1).expect("attempts");
    assert_eq!(
        back, attempts,
        "read back in plan order, every field intact"
    );
    back
}

fn stats(p50: f64, p95: f64, p99: f64, max: f64) -> Stats {
    Stats {
        p50: Some(p50),
        p95: Some(p95),
        p99: Some(p99),
        max: Some(max),
    }
}

#[test]
fn report_numbers_match_the_hand_computed_ones() {
    let dir = tempfile::tempdir().expect("tmp");
    let attempts = store_with_run(dir.path());
    let r = Report::from_attempts("wl", 1, &attempts);
    // invocations, not attempts: b and d were retried, d never succeeded
    assert_eq!((r.total, r.succeeded, r.failed, r.retried), (5, 4, 1, 2));
    assert_eq!(r.duration_seconds, 10.02);
    assert!((r.functions_per_minute - 4.0 * 60.0 / 10.02).abs() < 1e-9);
    // latency [100, 300, 400, 600]: p50 = rank ceil(2) = 300, p95 = rank ceil(3.8) = 600
    assert_eq!(r.latency_ms, stats(300.0, 600.0, 600.0, 600.0));
    assert_eq!(r.exec_ms, stats(100.0, 300.0, 300.0, 300.0));
    // cold [3000, 5000]: p50 = rank 1, p95 = rank ceil(1.9) = 2
    assert_eq!(r.cold_start_ms, stats(3000.0, 5000.0, 5000.0, 5000.0));

    let m = &r.functions["matmul"];
    assert_eq!((m.total, m.succeeded, m.failed, m.retried), (3, 3, 0, 1));
    assert_eq!(m.latency_ms, stats(400.0, 600.0, 600.0, 600.0));
    assert_eq!(m.exec_ms, stats(200.0, 300.0, 300.0, 300.0));
    assert_eq!(m.cold_start_ms, stats(3000.0, 3000.0, 3000.0, 3000.0));
    let x = &r.functions["regex_match"];
    assert_eq!((x.total, x.succeeded, x.failed, x.retried), (2, 1, 1, 1));
    assert_eq!(x.latency_ms, stats(100.0, 100.0, 100.0, 100.0));
    assert_eq!(r.functions.len(), 2);

    // per worker: attempts
    let w0 = &r.workers["vm-0"];
    assert_eq!(
        (w0.total, w0.succeeded, w0.failed, w0.retried),
        (4, 3, 1, 2)
    );
    assert_eq!(w0.latency_ms, stats(400.0, 600.0, 600.0, 600.0));
    let w1 = &r.workers["vm-1"];
    assert_eq!(
        (w1.total, w1.succeeded, w1.failed, w1.retried),
        (3, 1, 2, 0)
    );
    assert_eq!(w1.cold_start_ms, stats(5000.0, 5000.0, 5000.0, 5000.0));
    assert_eq!(w1.exec_ms, stats(20.0, 20.0, 20.0, 20.0));
}

#[test]
fn percentiles_are_nearest_rank() {
    let s = Stats::of((1..=20).rev().map(f64::from).collect());
    // ranks ceil(10) = 10, ceil(19) = 19, ceil(19.8) = 20
    assert_eq!(s, stats(10.0, 19.0, 20.0, 20.0));
    let s = Stats::of((1..=1000).map(f64::from).collect());
    assert_eq!(s, stats(500.0, 950.0, 990.0, 1000.0));
    assert_eq!(Stats::of(vec![7.5]), stats(7.5, 7.5, 7.5, 7.5));
    assert_eq!(Stats::of(Vec::new()), Stats::default());
}

#[test]
fn json_has_exactly_the_documented_keys() {
    let r = Report::from_attempts("wl", 1, &recorded());
    let v: Value = serde_json::from_str(&r.to_json()).expect("json");
    let keys = |v: &Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        [
            "coldStartMs",
            "durationSeconds",
            "energy",
            "execMs",
            "failed",
            "functions",
            "functionsPerMinute",
            "latencyMs",
            "retried",
            "run",
            "succeeded",
            "total",
            "workers",
            "workload"
        ]
    );
    assert_eq!(keys(&v["latencyMs"]), ["max", "p50", "p95", "p99"]);
    assert_eq!(
        v["latencyMs"],
        json!({"p50": 300.0, "p95": 600.0, "p99": 600.0, "max": 600.0})
    );
    assert_eq!(
        (&v["workload"], &v["run"], &v["total"]),
        (&json!("wl"), &json!(1), &json!(5))
    );
    assert_eq!(
        keys(&v["functions"]["matmul"]),
        [
            "coldStartMs",
            "execMs",
            "failed",
            "latencyMs",
            "retried",
            "succeeded",
            "total"
        ]
    );
    assert_eq!(v["workers"]["vm-1"]["failed"], json!(2));
    // no samples → null, not 0
    let empty = Report::from_attempts("wl", 1, &recorded()[4..5]);
    let v: Value = serde_json::from_str(&empty.to_json()).expect("json");
    assert_eq!(v["latencyMs"]["p50"], Value::Null);
    assert_eq!(
        (
            v["durationSeconds"].as_f64(),
            v["functionsPerMinute"].as_f64()
        ),
        (Some(9.0), Some(0.0))
    );
}

#[test]
fn csv_has_the_microfaas_columns_first_and_one_row_per_attempt() {
    let csv = to_csv(&recorded());
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("invocation_id,worker,function_id,exec_time(ms),rtt(ms),timestamp,")
    );
    assert_eq!(
        lines[0].split(',').count(),
        21,
        "original 6 columns then 15 of ours"
    );
    assert_eq!(lines.len(), 1 + 7);
    assert_eq!(
        lines[1],
        "inv-a,vm-0,matmul,200.000,400.000,1970-01-01T00:00:10.500Z,wl,1,2,0,1,succeeded,10000,10100,10500,200000,400000,3000,,2,44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    // unknown values are empty; an error with a comma and quotes is quoted RFC 4180 style
    assert_eq!(
        lines[2],
        "inv-b,vm-1,matmul,,,1970-01-01T00:00:12.000Z,wl,1,2,1,1,lost,10000,10200,12000,,,,\"lost: \"\"boom\"\", again\",,"
    );
}

/// A small well-formedness check: tags nest and close, attributes are quoted, `&` starts an
/// entity, `<` starts markup. Returns the element names in document order.
fn xml_elements(doc: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = doc.trim_start();
    if let Some(r) = rest.strip_prefix("<!DOCTYPE html>") {
        rest = r;
    }
    let check_text = |t: &str| {
        for (i, _) in t.match_indices('&') {
            let ent = &t[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bare & in {t:?}"
            );
        }
        assert!(!t.contains('>'), "bare > in {t:?}");
    };
    while let Some(open) = rest.find('<') {
        check_text(&rest[..open]);
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let (name, mut attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
            "tag {name:?}"
        );
        while let Some(eq) = attrs.find('=') {
            let value = attrs[eq + 1..]
                .strip_prefix('"')
                .expect("attribute value quoted");
            let end = value.find('"').expect("attribute value closed");
            assert!(!value[..end].contains('<'), "< in attribute");
            check_text(&value[..end]);
            attrs = &value[end + 1..];
        }
        assert!(
            !stack.is_empty() || names.is_empty(),
            "second root element <{name}>"
        );
        names.push(name.to_string());
        if !self_closing {
            stack.push(name.to_string());
        }
    }
    check_text(rest);
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    names
}

#[test]
fn html_is_one_well_formed_page_with_four_plots() {
    let attempts = recorded();
    let r = Report::from_attempts("wl", 1, &attempts);
    let html = to_html(&r, &attempts);
    let names = xml_elements(&html);
    assert_eq!(names[0], "html");
    assert_eq!(names.iter().filter(|n| *n == "svg").count(), 4);
    assert!(
        !names
            .iter()
            .any(|n| n == "script" || n == "link" || n == "img"),
        "self-contained"
    );
    for title in [
        "Latency CDF per function",
        "Throughput over time",
        "Cold-start breakdown",
        "Per-worker timeline",
    ] {
        assert!(html.contains(title), "{title}");
    }
    // the CDF draws one line per function, the timeline one bar per attempt (+ 2 boot waits)
    assert_eq!(html.matches("<polyline").count(), 2);
    assert_eq!(html.matches("attempt 1 succeeded").count(), 3);
    assert!(html.contains("inv-&lt;d&gt;&amp; regex_match attempt 2 failed"));
    assert!(html.contains("inv-a boot wait 3000 ms"));
    // nothing recorded still gives a well-formed page
    let empty = to_html(&Report::from_attempts("wl", 1, &[]), &[]);
    assert_eq!(
        xml_elements(&empty).iter().filter(|n| *n == "svg").count(),
        4
    );
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(state: &Path, args: &[&str]) -> Out {
    let out = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(args)
        .env("MICROFAAS_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .output()
        .expect("run microfaasctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `report wl --run 1 --format FORMAT -o PATH`: nothing on stdout, the file's contents.
fn report_to_file(state: &Path, format: &str, path: &Path) -> String {
    let path_arg = path.to_str().expect("utf-8 path");
    let out = ctl(
        state,
        &[
            "report", "wl", "--run", "1", "--format", format, "-o", path_arg,
        ],
    );
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{}", out.stderr);
    std::fs::read_to_string(path).expect("report written")
}

#[test]
fn report_command_on_a_state_dir() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    store_with_run(&state);
    {
        // a second, still running run with one attempt: the default is the latest run
        let mut s = Store::open(&state).expect("open");
        assert_eq!(s.start_run("wl", 3).expect("start"), 2);
        let mut a = recorded()[0].clone();
        a.run = 2;
        s.record_attempt(&a).expect("record");
    }

    let latest = ctl(&state, &["report", "wl", "--format", "json"]);
    assert_eq!(latest.code, 0, "{}", latest.stderr);
    let v: Value = serde_json::from_str(&latest.stdout).expect("json");
    assert_eq!((v["run"].as_i64(), v["total"].as_u64()), (Some(2), Some(1)));

    let json = ctl(&state, &["report", "wl", "--run", "1", "--format", "json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(
        (&v["total"], &v["succeeded"], &v["failed"], &v["retried"]),
        (&json!(5), &json!(4), &json!(1), &json!(2))
    );
    assert_eq!(v["execMs"]["p50"], json!(100.0));

    let table = ctl(&state, &["report", "wl", "--run", "1"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("Phase:          Failed"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("5 total, 4 succeeded, 1 failed, 2 retried"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .contains("Latency (ms)     300.000   600.000   600.000   600.000"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("400.000/600.000/600.000/600.000"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("regex_match"));

    let csv = report_to_file(&state, "csv", &dir.path().join("out.csv"));
    assert_eq!(csv, to_csv(&recorded()));
    let page = report_to_file(&state, "html", &dir.path().join("out.html"));

    assert_eq!(
        xml_elements(&page).iter().filter(|n| *n == "svg").count(),
        4
    );

    let missing = ctl(&state, &["report", "wl", "--run", "7"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("workload wl has no run 7 (runs are 1 to 2)"),
        "{}",
        missing.stderr
    );
    let unknown = ctl(&state, &["report", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown
            .stderr
            .contains("workload nope has no recorded runs"),
        "{}",
        unknown.stderr
    );
    let bad_format = ctl(&state, &["report", "wl", "--format", "pdf"]);
    assert_eq!(bad_format.code, 2);
}
