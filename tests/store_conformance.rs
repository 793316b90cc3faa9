//! The store's behaviour, asserted the same way on both backends: the embedded SQLite file and
//! a real 3-member etcd cluster on loopback (tests/support/etcd.rs), over plain HTTP and over
//! TLS with client certificates. Then what only a shared store has: writers racing from
//! several connections, a member down, quorum lost and back.

mod support;

use microfaas::manifest::Kind;
use microfaas::store::energy::Sample;
use microfaas::store::gateway::{CallState, LogQuery};
use microfaas::store::{
    ApplyOutcome, Attempt, AttemptStatus, DesiredObject, EventNote, EventType, RunCounts, RunPhase,
    Store, StoreError,
};
use serde_json::json;
use std::time::{Duration, Instant};
use support::etcd::{EtcdCluster, TlsOptions};

fn obj(kind: Kind, name: &str, spec: serde_json::Value) -> DesiredObject {
    DesiredObject::new(kind, name, spec)
}

fn attempt(id: &str, run: i64, seq: u64, n: u32, status: AttemptStatus) -> Attempt {
    Attempt {
        invocation_id: id.into(),
        workload: "wl".into(),
        run,
        generation: 1,
        seq,
        function: "f".into(),
        worker: Some("w".into()),
        attempt: n,
        queued_ms: 1,
        dispatched_ms: Some(2),
        finished_ms: 3,
        exec_us: Some(1),
        rtt_us: Some(2),
        cold_start_ms: None,
        status,
        error: None,
        output_size: Some(3),
        output_sha256: None,
    }
}

/// Waits (bounded) until the change feed moved past `before`. The bound is generous: after a
/// member stops, the watch waits for the others to elect a leader, which on a loaded two-core
/// machine running four 3-member clusters at once took more than 10 s.
fn feed_moves(rx: &mut tokio::sync::watch::Receiver<u64>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rx.has_changed().expect("feed open") {
        assert!(
            Instant::now() < deadline,
            "{what} was not announced on the change feed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.borrow_and_update();
}

/// Every assertion, run against each backend.
fn conformance(s: &mut Store) {
    let mut feed = s.changes();
    feed.borrow_and_update();

    // apply: created, then unchanged, then configured with a generation bump on spec change
    let set_paths = vec!["a.yaml".to_string()];
    let set = Some(("set1", set_paths.as_slice()));
    let f1 = obj(Kind::Function, "f1", json!({"runtime": "exec"}));
    let ws = obj(Kind::WorkerSet, "ws", json!({"replicas": 2}));
    let mut w1 = obj(Kind::Worker, "ws-0", json!({"driver": "qemu"}));
    w1.owner = Some("ws".into());
    let mut w2 = obj(Kind::Worker, "ws-1", json!({"driver": "qemu"}));
    w2.owner = Some("ws".into());
    let all = vec![f1.clone(), ws.clone(), w1.clone(), w2.clone()];
    let out = s.apply(&all, set, true, false).expect("apply");
    assert!(
        out.iter().all(|(_, _, o)| *o == ApplyOutcome::Created),
        "{out:?}"
    );
    feed_moves(&mut feed, "an apply");
    let out = s.apply(&all, set, true, false).expect("re-apply");
    assert!(
        out.iter().all(|(_, _, o)| *o == ApplyOutcome::Unchanged),
        "{out:?}"
    );
    let mut f1b = f1.clone();
    f1b.spec = json!({"runtime": "wasm"});
    let dry = s
        .apply(
            &[f1b.clone(), ws.clone(), w1.clone(), w2.clone()],
            set,
            true,
            true,
        )
        .expect("dry run");
    assert_eq!(dry[0].2, ApplyOutcome::Configured);
    assert_eq!(
        s.get(Kind::Function, "f1")
            .expect("get")
            .expect("f1")
            .generation,
        1,
        "dry run wrote"
    );
    let mut f1c = f1.clone();
    f1c.labels.insert("tier".into(), "a".into());
    let out = s
        .apply(&[f1c.clone()], None, false, false)
        .expect("label change");
    assert_eq!(out[0].2, ApplyOutcome::Configured);
    assert_eq!(
        s.get(Kind::Function, "f1")
            .expect("get")
            .expect("f1")
            .generation,
        1,
        "labels bumped the generation"
    );
    s.apply(&[f1b.clone()], None, false, false)
        .expect("spec change");
    let got = s.get(Kind::Function, "f1").expect("get").expect("f1");
    assert_eq!(got.generation, 2);
    assert_eq!(got.spec, json!({"runtime": "wasm"}));
    assert_eq!(got.status, json!({}));
    // list order: kind then name
    let names: Vec<(Kind, String)> = s
        .list(None)
        .expect("list")
        .into_iter()
        .map(|o| (o.kind, o.name))
        .collect();
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    assert_eq!(names, sorted);
    assert_eq!(s.list(Some(Kind::Worker)).expect("list").len(), 2);
    assert!(s.get(Kind::Function, "nope").expect("get").is_none());

    // status: its own write, no generation change, NotFound for a missing object
    s.set_status(Kind::Worker, "ws-0", &json!({"phase": "Booting"}))
        .expect("status");
    s.set_status(Kind::Worker, "ws-0", &json!({"phase": "Ready"}))
        .expect("status");
    s.set_status(Kind::Worker, "ws-0", &json!({"phase": "Ready", "x": 1}))
        .expect("status");
    let w = s.get(Kind::Worker, "ws-0").expect("get").expect("w");
    assert_eq!(w.status["phase"], "Ready");
    assert_eq!(w.generation, 1);
    assert_eq!(w.owner.as_deref(), Some("ws"));
    assert!(matches!(
        s.set_status(Kind::Worker, "ghost", &json!({"phase": "Ready"})),
        Err(StoreError::NotFound(_))
    ));
    assert!(
        s.phase_history("ghost", 0, i64::MAX)
            .expect("phases")
            .is_empty(),
        "a missing worker's status write left a phase"
    );
    let phases: Vec<String> = s
        .phase_history("ws-0", 0, i64::MAX)
        .expect("phases")
        .into_iter()
        .map(|p| p.phase)
        .collect();
    assert_eq!(
        phases,
        ["Booting", "Ready"],
        "a repeated phase was recorded twice"
    );
    // a status read alone, as the type asks for it (other fields skipped)
    #[derive(serde::Deserialize)]
    struct Phase {
        phase: String,
    }
    let p: Option<Phase> = s.status_of(Kind::Worker, "ws-0").expect("status");
    assert_eq!(p.map(|p| p.phase).as_deref(), Some("Ready"));
    assert!(
        s.status_of::<Phase>(Kind::Worker, "ghost")
            .expect("status")
            .is_none()
    );
    assert!(matches!(
        s.status_of::<Vec<i64>>(Kind::Worker, "ws-0"),
        Err(StoreError::Corrupt { .. })
    ));

    // a status with the events of its transition: both written, or neither for a missing object
    let noted = |m: &str| EventNote::now(EventType::Normal, "Ready", m);
    s.update_status(
        Kind::Worker,
        "ws-0",
        None,
        &json!({"phase": "Ready", "x": 2}),
        &[noted("agent connected"), noted("agent connected")],
    )
    .expect("status with events");
    assert_eq!(
        s.get(Kind::Worker, "ws-0").expect("get").expect("w").status["x"],
        2
    );
    let ev = s.events(Kind::Worker, "ws-0", 10).expect("events");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].reason.as_str(), ev[0].count), ("Ready", 2));
    for base in [None, Some(&json!({}))] {
        assert!(matches!(
            s.update_status(Kind::Worker, "ghost", base, &json!({}), &[noted("lost")]),
            Err(StoreError::NotFound(_))
        ));
    }
    assert!(
        s.events(Kind::Worker, "ghost", 10)
            .expect("events")
            .is_empty()
    );
    // a write of the status its writer read keeps what another writer stored since (an
    // operator's uncordon between a reconcile's read and its write)
    let read = s.get(Kind::Worker, "ws-0").expect("get").expect("w").status;
    let mut uncordoned = read.clone();
    uncordoned["health"] = json!("Good");
    s.update_status(Kind::Worker, "ws-0", Some(&read), &uncordoned, &[])
        .expect("operator's write");
    let mut reconciled = read.clone();
    reconciled["x"] = json!(3);
    let stored = s
        .update_status(Kind::Worker, "ws-0", Some(&read), &reconciled, &[])
        .expect("reconcile's write");
    assert_eq!(stored, json!({"phase": "Ready", "x": 3, "health": "Good"}));
    assert_eq!(
        s.get(Kind::Worker, "ws-0").expect("get").expect("w").status,
        stored
    );
    // without a base, a plain overwrite
    s.set_status(Kind::Worker, "ws-0", &read)
        .expect("overwrite");
    assert_eq!(
        s.get(Kind::Worker, "ws-0").expect("get").expect("w").status,
        read
    );
    // events noted earlier keep the times they were noted
    let mut early = noted("noted early");
    early.at = "2026-01-02T03:04:05.006Z".into();
    s.record_events(Kind::Worker, "ws-1", &[early.clone(), early])
        .expect("noted events");
    let ev = s.events(Kind::Worker, "ws-1", 10).expect("events");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].count, ev[0].first_time.as_str()),
        (2, "2026-01-02T03:04:05.006Z")
    );

    // desired revisions: a status write is not a change, a rerun request and a deletion mark are
    let key = (Kind::Function, "f1".to_string());
    let r0 = s.desired_revisions().expect("rev")[&key].clone();
    s.set_status(Kind::Function, "f1", &json!({"phase": "Ready"}))
        .expect("status");
    assert_eq!(s.desired_revisions().expect("rev")[&key], r0);
    s.set_status(Kind::Function, "f1", &json!({"rerunRequested": true}))
        .expect("status");
    let r1 = s.desired_revisions().expect("rev")[&key].clone();
    assert_ne!(r1, r0);
    assert!(!s.deletion_requested(Kind::Function, "f1").expect("q"));
    s.request_deletion(Kind::Function, "f1").expect("mark");
    assert!(s.deletion_requested(Kind::Function, "f1").expect("q"));
    assert_ne!(s.desired_revisions().expect("rev")[&key], r1);
    s.apply(&[f1b.clone()], None, false, false)
        .expect("re-apply clears the mark");
    assert!(!s.deletion_requested(Kind::Function, "f1").expect("q"));
    assert!(matches!(
        s.request_deletion(Kind::Function, "nope"),
        Err(StoreError::NotFound(_))
    ));

    // prune: objects of the applyset absent from the new apply go
    let out = s
        .apply(&[f1b.clone(), ws.clone(), w1.clone()], set, true, false)
        .expect("prune");
    assert!(
        out.contains(&(Kind::Worker, "ws-1".into(), ApplyOutcome::Pruned)),
        "{out:?}"
    );
    assert!(s.get(Kind::Worker, "ws-1").expect("get").is_none());

    // delete: a WorkerSet takes its workers with it
    let mut gone = s.delete(Kind::WorkerSet, "ws").expect("delete");
    gone.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        gone,
        vec![
            (Kind::WorkerSet, "ws".into()),
            (Kind::Worker, "ws-0".into())
        ]
    );
    assert!(s.get(Kind::Worker, "ws-0").expect("get").is_none());
    assert!(matches!(
        s.delete(Kind::WorkerSet, "ws"),
        Err(StoreError::NotFound(_))
    ));

    // events: a repeat bumps the count; ordering by last seen
    s.record_event(Kind::Function, "f1", EventType::Normal, "PoweredOn", "on")
        .expect("ev");
    s.record_event(Kind::Function, "f1", EventType::Warning, "Failed", "boom")
        .expect("ev");
    s.record_event(Kind::Function, "f1", EventType::Normal, "PoweredOn", "on")
        .expect("ev");
    s.record_event(Kind::Worker, "w9", EventType::Normal, "PoweredOn", "on")
        .expect("ev");
    let ev = s.events(Kind::Function, "f1", 10).expect("events");
    // (the order of two events last seen within the same clock tick is the backend's own)
    let mut by_reason: Vec<(String, i64)> =
        ev.iter().map(|e| (e.reason.clone(), e.count)).collect();
    by_reason.sort();
    assert_eq!(by_reason, [("Failed".into(), 1), ("PoweredOn".into(), 2)]);
    assert_eq!(s.events(Kind::Function, "f1", 1).expect("events").len(), 1);
    let recent = s.recent_events(2).expect("recent");
    assert_eq!(recent[0].name, "w9", "newest first");
    assert_eq!(recent.len(), 2);
    assert_eq!(
        s.event_counts(Kind::Function, "PoweredOn").expect("counts"),
        vec![("f1".to_string(), 2)]
    );

    // runs and attempts
    assert!(s.latest_run("wl").expect("latest").is_none());
    assert_eq!(s.start_run("wl", 1).expect("run"), 1);
    assert_eq!(s.start_run("wl", 1).expect("run"), 2);
    let counts = RunCounts {
        total: 3,
        succeeded: 1,
        failed: 0,
        retried: 0,
    };
    s.set_run_counts("wl", 1, &counts).expect("counts");
    assert_eq!(s.run("wl", 1).expect("run").expect("run 1").counts, counts);
    assert!(matches!(
        s.set_run_counts("wl", 9, &counts),
        Err(StoreError::NotFound(_))
    ));
    s.record_attempt(&attempt("i2", 1, 2, 1, AttemptStatus::Failed))
        .expect("attempt");
    s.record_attempt(&attempt("i1", 1, 1, 1, AttemptStatus::Succeeded))
        .expect("attempt");
    assert!(
        s.record_attempt(&attempt("i1", 1, 1, 1, AttemptStatus::Succeeded))
            .is_err(),
        "a duplicate"
    );
    assert!(
        s.record_attempt(&attempt("i1", 7, 1, 1, AttemptStatus::Succeeded))
            .is_err(),
        "no such run"
    );
    let a3 = attempt("i2", 1, 2, 2, AttemptStatus::Succeeded);
    let dup = attempt("i1", 1, 1, 1, AttemptStatus::Succeeded);
    let a4 = attempt("i3", 1, 3, 1, AttemptStatus::Failed);
    let rows = s.record_attempts(&[&a3, &dup, &a4]).expect("batch");
    assert!(
        rows[0].is_ok() && rows[1].is_err() && rows[2].is_ok(),
        "{rows:?}"
    );
    let order: Vec<(String, u32)> = s
        .attempts("wl", 1)
        .expect("attempts")
        .into_iter()
        .map(|a| (a.invocation_id, a.attempt))
        .collect();
    assert_eq!(
        order,
        [
            ("i1".into(), 1),
            ("i2".into(), 1),
            ("i2".into(), 2),
            ("i3".into(), 1)
        ]
    );
    let since = s.attempts_since("wl", 1, 0).expect("since");
    assert_eq!(since.len(), 4);
    assert_eq!(since[0].1.invocation_id, "i2", "recording order");
    let last = since[1].0;
    let after = s.attempts_since("wl", 1, last).expect("since");
    assert_eq!(
        after
            .iter()
            .map(|(_, a)| a.invocation_id.as_str())
            .collect::<Vec<_>>(),
        ["i2", "i3"]
    );
    s.close_runs("wl", true, "stopped").expect("close");
    let r1 = s.run("wl", 1).expect("run").expect("run 1");
    assert_eq!(r1.phase, RunPhase::Failed);
    assert_eq!(
        (r1.counts.total, r1.counts.succeeded, r1.counts.retried),
        (3, 2, 1)
    );
    assert_eq!(
        s.run("wl", 2).expect("run").expect("run 2").phase,
        RunPhase::Succeeded,
        "a run with no attempts failed nothing"
    );
    let c = RunCounts {
        total: 1,
        succeeded: 1,
        failed: 0,
        retried: 0,
    };
    let n = s.start_run("wl", 2).expect("run");
    s.finish_run("wl", n, RunPhase::Succeeded, &c, "done")
        .expect("finish");
    let latest = s.latest_run("wl").expect("latest").expect("run 3");
    assert_eq!(
        (latest.run, latest.phase, latest.generation),
        (3, RunPhase::Succeeded, 2)
    );
    assert!(latest.finished_ms.is_some());
    assert!(s.finish_run("wl", n, RunPhase::Running, &c, "").is_err());
    // a progress write that arrives after the finish (dispatch tasks race) changes nothing
    s.set_run_counts("wl", n, &RunCounts::default())
        .expect("late progress");
    assert_eq!(
        s.run("wl", n).expect("run").expect("run 3").counts,
        c,
        "a late progress write took back the final counts"
    );

    // energy samples: a window with its neighbours
    for (t, w) in [(1000, 1.0), (2000, 2.0), (3000, 3.0), (4000, 4.0)] {
        s.record_sample(&Sample {
            meter: "m".into(),
            at_ms: t,
            watts: w,
            volts: None,
            amps: None,
            watt_hours: None,
        })
        .expect("sample");
    }
    let got: Vec<i64> = s
        .samples("m", 2500, 2600)
        .expect("samples")
        .iter()
        .map(|x| x.at_ms)
        .collect();
    assert_eq!(got, vec![2000, 3000]);
    assert_eq!(
        s.latest_sample("m").expect("latest").map(|x| x.watts),
        Some(4.0)
    );
    assert!(s.samples("other", 0, 10_000).expect("none").is_empty());

    // the gateway's async calls: queued -> done -> delivered, the first result kept
    s.enqueue_call("c1", "f", &json!({"n": 1}), Some("http://127.0.0.1:9/cb"))
        .expect("enqueue");
    s.enqueue_call("c2", "f", &json!(null), None)
        .expect("enqueue");
    assert!(
        s.enqueue_call("c1", "f", &json!(1), None).is_err(),
        "a call queued twice"
    );
    s.finish_call("c1", 200, b"out", &json!({"X-A": "1"}))
        .expect("finish");
    let p = s.pending_calls().expect("pending");
    assert_eq!(p.len(), 2);
    let c1 = p.iter().find(|c| c.call_id == "c1").expect("c1 pending");
    assert_eq!((c1.state, c1.code), (CallState::Done, Some(200)));
    assert_eq!(c1.result.as_deref(), Some(&b"out"[..]));
    assert_eq!(c1.input, json!({"n": 1}));
    s.finish_call("c1", 500, b"other", &json!({}))
        .expect("finish");
    s.callback_tried("c1", None).expect("try");
    s.callback_tried("c1", Some(CallState::Delivered))
        .expect("delivered");
    let p = s.pending_calls().expect("pending");
    assert_eq!(
        p.iter().map(|c| c.call_id.as_str()).collect::<Vec<_>>(),
        ["c2"]
    );
    assert_eq!(
        s.call_state("c1").expect("state"),
        Some(CallState::Delivered)
    );
    assert_eq!(s.call_state("nope").expect("state"), None);
    s.set_scale("f", 2).expect("scale");
    s.set_scale("f", 0).expect("scale");
    s.set_scale("g", 1).expect("scale");
    s.delete_scale("g").expect("unscale");
    assert_eq!(s.scales().expect("scales"), vec![("f".to_string(), 0)]);

    // the gateway's invocations and log, over its runs
    let gw = microfaas::store::gateway::WORKLOAD;
    let run = s.start_run(gw, 1).expect("gateway run");
    for (id, n, status, function) in [
        ("g1", 1, AttemptStatus::Failed, "f"),
        ("g1", 2, AttemptStatus::Succeeded, "f"),
        ("h1", 1, AttemptStatus::Succeeded, "other"),
        ("g2", 1, AttemptStatus::Succeeded, "f"),
    ] {
        let mut a = attempt(id, run, 0, n, status);
        a.workload = gw.into();
        a.function = function.into();
        s.record_attempt(&a).expect("gateway attempt");
    }
    assert_eq!(s.gateway_invocations("f").expect("count"), 2);
    let log = s.gateway_log("f", LogQuery::default()).expect("log");
    let texts: Vec<&str> = log.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(
        texts[0].starts_with("call g1 attempt 1 on w: failed (round trip"),
        "{texts:?}"
    );
    assert!(
        texts[2].starts_with("call g2 attempt 1 on w: succeeded"),
        "{texts:?}"
    );
    let tail = s
        .gateway_log(
            "f",
            LogQuery {
                tail: Some(1),
                ..Default::default()
            },
        )
        .expect("log");
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].id, log[2].id);
    let after = s
        .gateway_log(
            "f",
            LogQuery {
                after_id: Some(log[0].id),
                ..Default::default()
            },
        )
        .expect("log");
    assert_eq!(
        after.iter().map(|l| l.id).collect::<Vec<_>>(),
        [log[1].id, log[2].id]
    );
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = Store::open(dir.path()).expect("open");
    conformance(&mut s);
}

#[test]
fn etcd_store_conforms_and_shares_state_between_connections() {
    let cluster = EtcdCluster::start(3);
    let loc = cluster.location("conf");
    let mut s = Store::open_etcd(&loc).expect("open etcd");
    conformance(&mut s);
    // another connection (another orchestrator or CLI) sees the same records, and another
    // prefix is another store
    let other = Store::open_etcd(&loc).expect("open etcd");
    assert!(other.get(Kind::Function, "f1").expect("get").is_some());
    let elsewhere = Store::open_etcd(&cluster.location("elsewhere")).expect("open");
    assert!(elsewhere.list(None).expect("list").is_empty());
}

/// The same suite over TLS, the members requiring a client certificate; with a member down
/// the client does the handshake with the next one.
#[test]
fn etcd_store_conforms_over_tls_with_client_certificates() {
    let mut cluster = EtcdCluster::start_tls(
        3,
        TlsOptions {
            client_cert_auth: true,
        },
    );
    let loc = cluster.location("conf-tls");
    assert_eq!(
        Store::open_etcd(&loc)
            .expect("open")
            .path()
            .display()
            .to_string(),
        cluster.url("conf-tls"),
        "the store's URL says etcds://"
    );
    let mut s = Store::open_etcd(&loc).expect("open etcd over TLS");
    conformance(&mut s);
    cluster.stop_member(0);
    s.apply(
        &[obj(Kind::Function, "after", json!({}))],
        None,
        false,
        false,
    )
    .expect("write with member 0 down");
    let other = Store::open_etcd(&loc).expect("open etcd over TLS");
    assert!(other.get(Kind::Function, "after").expect("get").is_some());
    assert!(other.get(Kind::Function, "f1").expect("get").is_some());
}

/// Writers on separate connections racing on the same records: compare-and-swap loses no
/// update and never hands out a run number twice.
#[test]
fn etcd_concurrent_writers_lose_nothing() {
    let cluster = EtcdCluster::start(3);
    let loc = cluster.location("race");
    let mut s = Store::open_etcd(&loc).expect("open");
    s.apply(
        &[obj(Kind::Function, "f", json!({"v": 0}))],
        None,
        false,
        false,
    )
    .expect("apply");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let loc = loc.clone();
            std::thread::spawn(move || {
                let mut s = Store::open_etcd(&loc).expect("open");
                let mut runs = Vec::new();
                for i in 0..5 {
                    s.record_event(Kind::Function, "f", EventType::Normal, "Tick", "same")
                        .expect("event");
                    runs.push(s.start_run("wl", 1).expect("run"));
                    s.apply(
                        &[obj(Kind::Function, "f", json!({"v": t * 100 + i + 1}))],
                        None,
                        false,
                        false,
                    )
                    .expect("apply");
                }
                runs
            })
        })
        .collect();
    let mut runs: Vec<i64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("thread"))
        .collect();
    runs.sort_unstable();
    assert_eq!(
        runs,
        (1..=20).collect::<Vec<_>>(),
        "run numbers taken twice or skipped"
    );
    let ev = s.events(Kind::Function, "f", 10).expect("events");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].count, 20, "an event count update was lost");
    // every apply changed the spec: 1 + 20 generations
    assert_eq!(
        s.get(Kind::Function, "f")
            .expect("get")
            .expect("f")
            .generation,
        21
    );
}

/// One member down changes nothing; with quorum lost the store says so and writes nothing;
/// once a member is back it works again, from the same connection.
#[test]
fn etcd_member_down_and_quorum_loss() {
    let mut cluster = EtcdCluster::start(3);
    let loc = cluster.location("quorum");
    let mut s = Store::open_etcd(&loc).expect("open");
    let mut feed = s.changes();
    feed.borrow_and_update();
    s.apply(&[obj(Kind::Function, "f", json!({}))], None, false, false)
        .expect("apply");
    feed_moves(&mut feed, "a write");
    cluster.stop_member(0);
    s.set_status(Kind::Function, "f", &json!({"phase": "Ready"}))
        .expect("status with a member down");
    assert_eq!(
        s.get(Kind::Function, "f").expect("get").expect("f").status["phase"],
        "Ready"
    );
    // the watch followed the surviving members
    feed_moves(&mut feed, "a write with a member down");
    cluster.stop_member(1);
    let err = s
        .set_status(Kind::Function, "f", &json!({"phase": "Lost"}))
        .expect_err("a write without quorum");
    assert!(matches!(err, StoreError::Etcd(_)), "{err}");
    assert!(err.to_string().contains("has no quorum"), "{err}");
    cluster.start_member(1);
    s.set_status(Kind::Function, "f", &json!({"phase": "Back"}))
        .expect("status after quorum is back");
    assert_eq!(
        s.get(Kind::Function, "f").expect("get").expect("f").status["phase"],
        "Back"
    );
    cluster.start_member(0);
}
