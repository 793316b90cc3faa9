//! `protocol: microfaas-v1` workers driven by the engine as `apply` runs it: fake v1 boards
//! (tests/support/v1.rs) on 127.0.0.<id> speak the v1 worker protocol on a real loopback
//! endpoint and run the real builtin functions; their power buttons are pressed by the
//! engine's board path through `GpioButtons`. Covered: a workload whose workers power off
//! between rounds and are pressed back on within 0.6 s, every job recorded once with its
//! output; a burst that v1 workers work through by rebooting themselves, not by presses; and
//! jobs a worker dies with, recorded Lost and retried elsewhere.

mod support;

use microfaas::engine::board::{BoardTiming, GpioButtons};
use microfaas::engine::vm::FakeDriver;
use microfaas::store::invocations::{Attempt, AttemptStatus, RunPhase, output_digest};
use microfaas::store::{Run, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::host::{Host, HostOptions, objects};
use support::v1::{Job, V1Fleet, V1Opener, known_off, manifests};

struct World {
    host: Host<FakeDriver>,
    fleet: Arc<V1Fleet>,
    _dir: tempfile::TempDir,
}

/// Stores the manifests for `n` v1 workers and a workload `wl` of `count` jobs, starts a host
/// whose buttons press the fake boards, and the boards (all off).
async fn start(n: u8, count: usize, period: &str, drop: &[(&str, usize)]) -> World {
    // RUST_LOG=microfaas=debug shows the engine's decisions when a run stalls.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    Store::open(&state)
        .expect("store")
        .apply(
            &objects(&manifests(n, "50ms", count, period, "wl")),
            None,
            false,
            false,
        )
        .expect("apply");
    let fleet = Mutex::new(None);
    let host = Host::start_with(
        &state,
        Arc::new(FakeDriver::default()),
        &HostOptions {
            agent_listen: "127.0.0.1:0".into(),
            token: "v1-test-token".into(),
            credentials: None,
        },
        |engine, endpoint| {
            let boards: Vec<(String, u8)> = (3..3 + n).map(|id| (format!("v1-{id}"), id)).collect();
            let names: Vec<String> = boards.iter().map(|b| b.0.clone()).collect();
            known_off(engine, &names);
            let f = V1Fleet::start(&boards, endpoint.addr, false, Duration::ZERO);
            for (name, k) in drop {
                f.drop_jobs(name, *k);
            }
            engine.set_buttons(Arc::new(GpioButtons::new(V1Opener(f.clone()))));
            engine.set_board_timing(BoardTiming {
                agent_timeout: Duration::from_secs(5),
                ..BoardTiming::default()
            });
            *fleet.lock().expect("fleet") = Some(f);
        },
    )
    .await;
    let fleet = fleet.into_inner().expect("fleet").expect("fleet started");
    World {
        host,
        fleet,
        _dir: dir,
    }
}

impl World {
    /// Waits (up to 120 s) for the workload's first run to end; it and its attempts.
    async fn finished(&self) -> (Run, Vec<Attempt>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let run = self
                .host
                .engine
                .with_store(|s| s.latest_run("wl"))
                .expect("read run");
            if let Some(run) = run
                && run.phase != RunPhase::Running
            {
                let attempts = self
                    .host
                    .engine
                    .with_store(|s| s.attempts("wl", run.run))
                    .expect("attempts");
                return (run, attempts);
            }
            assert!(
                Instant::now() < deadline,
                "run not finished; fake boards answered {} jobs",
                self.fleet.completed()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.fleet.stop();
        self.host.stop().await;
    }
}

/// Every invocation has exactly one Succeeded attempt, whose recorded output is what a fake
/// board answered for it; returns the boards' jobs by invocation id.
fn assert_each_recorded_once(attempts: &[Attempt], jobs: &[Job], count: usize) {
    let by_id: HashMap<&str, &Job> = jobs.iter().map(|j| (j.i_id.as_str(), j)).collect();
    assert_eq!(by_id.len(), jobs.len(), "a job reached the boards twice");
    let mut succeeded: HashMap<&str, usize> = HashMap::new();
    for a in attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Succeeded)
    {
        *succeeded.entry(a.invocation_id.as_str()).or_default() += 1;
        let job = by_id
            .get(a.invocation_id.as_str())
            .unwrap_or_else(|| panic!("{} recorded but never answered", a.invocation_id));
        let bytes = serde_json::to_vec(&job.result).expect("json");
        assert_eq!(
            a.output_sha256.as_deref(),
            Some(output_digest(&bytes).1.as_str()),
            "{}: recorded output is not what the board answered",
            a.invocation_id
        );
        assert_eq!(
            a.worker.as_deref(),
            Some(format!("v1-{}", job.board).as_str()),
            "{}",
            a.invocation_id
        );
        assert!(a.exec_us.is_some() && a.rtt_us.is_some(), "{a:?}");
    }
    assert_eq!(
        succeeded.len(),
        count,
        "invocations with a Succeeded attempt"
    );
    assert!(succeeded.values().all(|&n| n == 1), "{succeeded:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_workers_power_off_between_rounds_and_come_back_fast_losing_nothing() {
    // Rounds every 250 ms put a job on 1..4 random workers: a worker without one is told to
    // power off and is pressed on again when the next round gives it one.
    let w = start(4, 36, "250ms", &[]).await;
    let (run, attempts) = w.finished().await;
    assert_eq!(run.phase, RunPhase::Succeeded, "{}", run.message);
    assert_eq!(run.counts.succeeded, 36);
    assert_eq!(
        attempts.len(),
        36,
        "nothing lost, nothing retried: {attempts:?}"
    );
    let jobs = w.fleet.jobs();
    assert_eq!(jobs.len(), 36);
    assert_each_recorded_once(&attempts, &jobs, 36);
    // The jobs named the builtin handlers and carried inputs they accept: no board answered
    // with an error.
    for j in &jobs {
        assert!(
            microfaas::functions::names().contains(&j.f_id.as_str()),
            "{j:?}"
        );
        assert!(
            !j.result.as_str().is_some_and(|r| r.starts_with("error")),
            "{j:?}"
        );
    }
    let gaps = w.fleet.off_gaps();
    assert!(
        gaps.iter().any(|g| *g < Duration::from_millis(600)),
        "no worker came back within 0.6 s of a power-off: {gaps:?}"
    );
    // Presses only ever found boards off: the engine never pressed one it knew was on.
    for id in 3..7 {
        let (presses, while_on, _) = w.fleet.counters(&format!("v1-{id}"));
        assert!(presses >= 1);
        assert_eq!(while_on, 0, "v1-{id} pressed while on");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_is_worked_through_by_rebooting_rather_than_pressing() {
    let w = start(3, 60, "1ms", &[]).await;
    let (run, attempts) = w.finished().await;
    assert_eq!(run.phase, RunPhase::Succeeded, "{}", run.message);
    assert_eq!(attempts.len(), 60, "{attempts:?}");
    let jobs = w.fleet.jobs();
    assert_each_recorded_once(&attempts, &jobs, 60);
    let (mut reboots, mut presses) = (0, 0);
    for id in 3..6 {
        let (p, while_on, r) = w.fleet.counters(&format!("v1-{id}"));
        assert_eq!(while_on, 0, "v1-{id} pressed while on");
        presses += p;
        reboots += r;
    }
    // Queued work: a job ends with a reboot, not a power-off and another press (a queue can
    // run dry between load rounds, and its worker is then powered off and pressed again).
    assert!(
        reboots >= 30 && presses <= 60 - reboots + 3,
        "{reboots} reboots, {presses} presses for 60 jobs on 3 boards"
    );
    assert_eq!(
        jobs.iter().filter(|j| j.follow == "reboot").count(),
        reboots
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_a_v1_worker_dies_with_are_recorded_lost_and_retried() {
    let w = start(3, 30, "1ms", &[("v1-3", 2)]).await;
    let (run, attempts) = w.finished().await;
    assert_eq!(run.phase, RunPhase::Succeeded, "{}", run.message);
    let lost: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status == AttemptStatus::Lost)
        .collect();
    assert_eq!(lost.len(), 2, "{attempts:?}");
    assert!(lost.iter().all(|a| a.worker.as_deref() == Some("v1-3")));
    assert_eq!(run.counts.retried, 2);
    assert_eq!(attempts.len(), 32);
    assert_each_recorded_once(&attempts, &w.fleet.jobs(), 30);
    // Each lost job's retry ran elsewhere and was recorded as its second attempt.
    for l in lost {
        let retry = attempts
            .iter()
            .find(|a| a.invocation_id == l.invocation_id && a.attempt == 2)
            .expect("a second attempt");
        assert_eq!(retry.status, AttemptStatus::Succeeded);
        assert_ne!(retry.worker.as_deref(), Some("v1-3"));
    }
    w.stop().await;
}
