//! `cargo bench --bench v1_side_by_side` (through `hack/bench-v1`, which prepares upstream):
//! the upstream MicroFaaS v1 orchestrator and ours, one after the other in one run, against the
//! same fake v1 workers — the Python fake workers of the v1 anchor bench
//! (`../shared/bench/microfaas-v1/`), which answer at once and reboot at once — with 1, 4 and
//! 10 workers and the same job count. Prints jobs/s for both (jobs over the makespan the
//! workers see: first job received to last follow-up received), the ratio, and the jobs each
//! lost (never completed by a worker). For ours it also prints the fake workers' own p50 of
//! connection accepted → job received and result sent → follow-up received (`a/f`, ms): the
//! parts of a worker's cycle spent waiting on the orchestrator.
//!
//! Upstream is driven by the anchor bench's own harness (`bench` mode, its GPIO double sending
//! presses as loopback datagrams). Ours is the engine as `apply` runs it, with `protocol:
//! microfaas-v1` board workers whose button presses go out as the same datagrams
//! (tests/support/v1.rs `UdpOpener`) to the fake workers in `serve` mode.
//!
//! A last column runs ours once more against the tests' in-process Rust fake boards
//! (`V1Fleet`, instant answers, back at once after a reboot, the same makespan): not the
//! comparison the ratio is about, but what our side does when the Python workers' own CPU —
//! on this 2-core machine half of it at ours's rate — is not in the way.
//!
//! Environment: `MICROFAAS_V1_FAKES` (the directory of `microfaas_v1_fakeworkers.py`),
//! `MICROFAAS_V1_ORCH` (upstream's `orchestrator/` directory), `MICROFAAS_V1_PYTHON` (an
//! interpreter with numpy for it), `MICROFAAS_V1_JOBS` (multiple of 17, default 170),
//! `MICROFAAS_V1_WORKERS` (default `1,4,10`), `MICROFAAS_V1_PERIOD` (seconds between load
//! rounds, default 0), `MICROFAAS_V1_SIDES` (`both`, `ours` or `v1`).

#[path = "../tests/support/host.rs"]
#[allow(dead_code)]
mod host;
#[path = "../tests/support/v1.rs"]
#[allow(dead_code)]
mod v1;

use host::{Host, HostOptions, objects};
use microfaas::engine::board::{BoardTiming, GpioButtons};
use microfaas::engine::vm::FakeDriver;
use microfaas::store::{RunPhase, Store};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        s.local_addr().expect("addr").port()
    } else {
        let s = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        s.local_addr().expect("addr").port()
    }
}

/// What one side did with `n` workers.
#[derive(Default, Clone, Copy)]
struct Side {
    jobs_per_s: f64,
    lost: u64,
    retried: u64,
    /// p50 of the fake workers' accept → job and result → follow-up (ours only), in ms: where
    /// a worker's cycle waits on the orchestrator.
    accept_to_job_ms: f64,
    reply_to_follow_ms: f64,
}

fn fakes_script(fakes: &Path) -> PathBuf {
    fakes.join("microfaas_v1_fakeworkers.py")
}

/// Upstream v1 through the anchor bench's harness.
fn upstream(fakes: &Path, n: usize, jobs: usize, period: &str, out: &Path) -> Side {
    let orch = env("MICROFAAS_V1_ORCH", "/tmp/mfaas-src/orchestrator");
    let python = env("MICROFAAS_V1_PYTHON", "/tmp/mfaas-venv/bin/python");
    let dir = out.join(format!("v1-n{n}"));
    let status = Command::new("python3")
        .arg(fakes_script(fakes))
        .args(["bench", "--orch-dir", &orch, "--python", &python])
        .args(["--workers", &n.to_string(), "--reps", "1"])
        .args(["--count", &jobs.to_string(), "--period", period])
        .args(["--port", &free_port(false).to_string()])
        .arg("--out")
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .expect("run the v1 anchor bench");
    assert!(status.success(), "the v1 anchor bench failed: {status}");
    let all: Value = serde_json::from_slice(
        &std::fs::read(dir.join("all_results.json")).expect("all_results.json"),
    )
    .expect("json");
    let r = &all[0];
    let completed = r["completed_jobs"].as_u64().unwrap_or(0);
    Side {
        jobs_per_s: r["jobs_per_s"].as_f64().unwrap_or(0.0),
        lost: (jobs as u64).saturating_sub(completed),
        retried: 0,
        ..Side::default()
    }
}

/// The fake workers our side drives: the Python ones v1 is measured against, or the in-process
/// Rust fleet of the tests (tests/support/v1.rs), which costs next to no CPU and so shows what
/// our orchestrator does when its peers are not the bound.
#[derive(Clone, Copy)]
enum Fakes<'a> {
    Python(&'a Path),
    Rust,
}

/// Ours: the engine with `n` v1 board workers against `fakes`.
async fn ours(fakes: Fakes<'_>, n: usize, jobs: usize, period: &str) -> Side {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let port = free_port(false);
    let gpio = free_port(true);
    let ids: Vec<u8> = (3..3 + n as u8).collect();
    let id_list: Vec<String> = ids.iter().map(u8::to_string).collect();
    let python = match fakes {
        Fakes::Python(dir) => {
            let fleet = Command::new("python3")
                .arg(fakes_script(dir))
                .args(["serve", "--ids", &id_list.join(",")])
                .args([
                    "--port",
                    &port.to_string(),
                    "--gpio-port",
                    &gpio.to_string(),
                ])
                .args(["--count", &jobs.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start the fake workers");
            // Their UDP listener is up before the engine presses anything.
            std::thread::sleep(Duration::from_millis(500));
            Some(fleet)
        }
        Fakes::Rust => None,
    };

    // v1's period 0 is a tight loop; the planner needs a period, so rounds are 1 ms apart.
    let period = if period.parse::<f64>().unwrap_or(0.0) <= 0.0 {
        "1ms".to_string()
    } else {
        format!(
            "{}ms",
            (period.parse::<f64>().unwrap_or(0.0) * 1000.0).round()
        )
    };
    Store::open(&state)
        .expect("store")
        .apply(
            &objects(&v1::manifests(n as u8, "1ms", jobs, &period, "bench")),
            None,
            false,
            false,
        )
        .expect("apply");
    let names: HashMap<String, u8> = ids.iter().map(|id| (format!("v1-{id}"), *id)).collect();
    let rust_fleet = std::sync::Mutex::new(None);
    let host = Host::start_with(
        &state,
        Arc::new(FakeDriver::default()),
        &HostOptions {
            agent_listen: format!("127.0.0.1:{port}"),
            token: "bench-token".into(),
            credentials: None,
        },
        |engine, endpoint| {
            let workers: Vec<String> = names.keys().cloned().collect();
            v1::known_off(engine, &workers);
            if python.is_some() {
                engine.set_buttons(Arc::new(GpioButtons::new(v1::UdpOpener {
                    to: format!("127.0.0.1:{gpio}").parse().expect("addr"),
                    ids: names.clone(),
                })));
            } else {
                let boards: Vec<(String, u8)> =
                    names.iter().map(|(n, id)| (n.clone(), *id)).collect();
                let f = v1::V1Fleet::start(&boards, endpoint.addr, true, Duration::ZERO);
                engine.set_buttons(Arc::new(GpioButtons::new(v1::V1Opener(f.clone()))));
                *rust_fleet.lock().expect("fleet") = Some(f);
            }
            engine.set_board_timing(BoardTiming {
                agent_timeout: Duration::from_secs(5),
                ..BoardTiming::default()
            });
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(900);
    let run = loop {
        let run = host
            .engine
            .with_store(|s| s.latest_run("bench"))
            .ok()
            .flatten();
        if let Some(r) = run.filter(|r| r.phase != RunPhase::Running) {
            break r;
        }
        assert!(Instant::now() < deadline, "our run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lost = run.counts.total.saturating_sub(run.counts.succeeded);
    let retried = run.counts.retried;
    let Some(fleet) = python else {
        let fleet = rust_fleet
            .into_inner()
            .expect("fleet")
            .expect("fleet started");
        let done = fleet.jobs();
        fleet.stop();
        host.stop().await;
        let first = done.iter().map(|j| j.received).min();
        let last = done.iter().map(|j| j.followed).max();
        let span = first
            .zip(last)
            .map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
        return Side {
            jobs_per_s: if span > 0.0 {
                done.len() as f64 / span
            } else {
                0.0
            },
            lost,
            retried,
            accept_to_job_ms: f64::NAN,
            reply_to_follow_ms: f64::NAN,
        };
    };
    // The fake workers exit once they have answered every job; a run that lost some leaves
    // them waiting, and Ctrl-C makes them report.
    let pid = fleet.id() as i32;
    let waiter = std::thread::spawn(move || fleet.wait_with_output());
    let give_up = Instant::now() + Duration::from_secs(5);
    while !waiter.is_finished() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !waiter.is_finished() {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
    }
    let output = waiter.join().expect("waiter").expect("fake workers");
    host.stop().await;
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    Side {
        jobs_per_s: stats["jobs_per_s"].as_f64().unwrap_or(0.0),
        lost,
        retried,
        accept_to_job_ms: stats["accept_to_job_ms"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
        reply_to_follow_ms: stats["reply_to_followup_ms"]["p50"]
            .as_f64()
            .unwrap_or(f64::NAN),
    }
}

fn main() {
    let fakes = PathBuf::from(env(
        "MICROFAAS_V1_FAKES",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/bench/microfaas-v1"),
    ));
    if !fakes_script(&fakes).is_file() {
        eprintln!(
            "v1_side_by_side: no fake workers at {} (set MICROFAAS_V1_FAKES); run hack/bench-v1",
            fakes.display()
        );
        std::process::exit(2);
    }
    let jobs: usize = env("MICROFAAS_V1_JOBS", "170")
        .parse()
        .expect("MICROFAAS_V1_JOBS");
    assert!(
        jobs.is_multiple_of(17),
        "MICROFAAS_V1_JOBS must be a multiple of 17 (v1's load generator)"
    );
    let period = env("MICROFAAS_V1_PERIOD", "0");
    let sides = env("MICROFAAS_V1_SIDES", "both");
    let workers: Vec<usize> = env("MICROFAAS_V1_WORKERS", "1,4,10")
        .split(',')
        .map(|w| w.trim().parse().expect("MICROFAAS_V1_WORKERS"))
        .collect();
    let out = tempfile::tempdir().expect("tmp");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "v1 side by side: {jobs} jobs, load period {period} s, instant fake v1 workers (Python)"
    );
    println!(
        "{:>7} {:>12} {:>13} {:>8} {:>8} {:>10} {:>12} {:>16} {:>15} {:>9}",
        "workers",
        "v1 jobs/s",
        "ours jobs/s",
        "ratio",
        "v1 lost",
        "ours lost",
        "ours retried",
        "ours p50 ms a/f",
        "ours, Rust fakes",
        "lost"
    );
    for n in workers {
        let theirs = if sides != "ours" {
            upstream(&fakes, n, jobs, &period, out.path())
        } else {
            Side::default()
        };
        let (mine, alone) = if sides != "v1" {
            (
                rt.block_on(ours(Fakes::Python(&fakes), n, jobs, &period)),
                rt.block_on(ours(Fakes::Rust, n, jobs, &period)),
            )
        } else {
            (Side::default(), Side::default())
        };
        let ratio = if theirs.jobs_per_s > 0.0 {
            mine.jobs_per_s / theirs.jobs_per_s
        } else {
            f64::NAN
        };
        println!(
            "{n:>7} {:>12.2} {:>13.1} {:>7.1}x {:>8} {:>10} {:>12} {:>16} {:>15.1} {:>9}",
            theirs.jobs_per_s,
            mine.jobs_per_s,
            ratio,
            theirs.lost,
            mine.lost,
            mine.retried,
            format!(
                "{:.2}/{:.2}",
                mine.accept_to_job_ms, mine.reply_to_follow_ms
            ),
            alone.jobs_per_s,
            alone.lost
        );
    }
}
