//! Chaos: a workload on four TCG VM workers (two OneShot, two Warm, all OnDemand, so standbys
//! come and go) while the engine — `microfaasctl apply`, or `serve` in some trials — is killed
//! with SIGKILL at random points and started again until the workload has run to the end.
//! After every kill and every trial: no QEMU the store does not know, none left running once
//! the last engine stopped, never two QEMUs for one worker at once (a sampler scans /proc all
//! along), no planned invocation of a finished run without its final record, none with two.
//!
//! A killed engine's run is recorded `Cancelled` by the next engine; the trial then asks for
//! one more run (`microfaasctl rerun`), as an operator would, until one finishes.
//!
//! `cargo test --test chaos` runs 3 trials; `hack/chaos [TRIALS] [SEED]` the long mode. The
//! seed (default: the clock) is printed; `MICROFAAS_CHAOS_TRIALS`, `MICROFAAS_CHAOS_SEED`.
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use microfaas::store::Store;
use microfaas::store::invocations::RunPhase;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::chaos::{Audit, Qemu, audit, duplicates, qemus, unknown_to};
use support::testbed::Env;

/// Invocations the workload declares, and the attempts each may take.
const DECLARED: usize = 12;
const MAX_ATTEMPTS: u32 = 3;
/// Kills per trial at most; then the engine is left to finish.
const MAX_KILLS: u64 = 3;
/// A kill lands 50 ms to this long (ms) after the engine started: from its start-up to about
/// the end of one run here.
const KILL_WITHIN_MS: u64 = 8_000;
/// A trial that has not finished by then has failed (TCG boots on a loaded machine: generous).
const TRIAL_LIMIT: Duration = Duration::from_secs(600);

/// splitmix64: seedable, so a printed seed replays the same kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().and_then(|v| v.trim().parse().ok())
}

/// The Cluster, four workers and the workload (three builtins, `DECLARED` calls).
fn manifest(env: &Env) -> String {
    let mut text = env.cluster(", jobTimeout: 60s, maxAttempts: 3");
    for (i, mode) in ["OneShot", "OneShot", "Warm", "Warm"].iter().enumerate() {
        text.push_str(&env.ondemand_vm(&format!("vm-{i}"), mode, &env.vmlinux));
    }
    for (name, handler) in [
        ("fl", "float_operations"),
        ("sha", "cascading_sha256"),
        ("md5", "cascading_md5"),
    ] {
        text.push_str(&format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: {name}}}\nspec: {{runtime: builtin, handler: {handler}, timeout: 30s}}\n"
        ));
    }
    text.push_str(&format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  functions: [{{function: fl, count: 4}}, {{function: sha, count: 4}}, {{function: md5, count: 4}}]\n  arrival: {{pattern: balanced, period: 200ms}}\n  workers: {{matchLabels: {{pool: t}}}}\n  concurrency: 4\n  maxAttempts: {MAX_ATTEMPTS}\n"
    ));
    text
}

/// What one trial saw.
#[derive(Debug, Default)]
struct Trial {
    serve: bool,
    kills: u64,
    /// QEMUs the store did not know after a kill, or left running at the end.
    orphans: usize,
    /// Workers seen with two QEMUs at once, over the trial.
    duplicates: usize,
    audit: Audit,
    /// Running VMs and standbys adopted by a restarted engine.
    adopted: (usize, usize),
    wall: Duration,
    notes: Vec<String>,
}

impl Trial {
    /// Counts a kill and the QEMUs it orphaned.
    fn killed(&mut self, state: &Path) {
        self.kills += 1;
        let o = orphans_now(state);
        if !o.is_empty() {
            self.notes.push(format!("after kill {}: {o:?}", self.kills));
        }
        self.orphans += o.len();
    }
}

/// Workers seen with two QEMUs at once, with the PIDs.
type Pairs = BTreeSet<(String, Vec<i32>)>;

/// Scans the state dir's QEMUs every 100 ms while a trial runs; collects every worker ever
/// seen with two at once.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Pairs>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(state: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let (s, f) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            // A pair counts when two scans in a row see it: a daemonizing QEMU's parent lives
            // on for a moment beside its child, with the same command line.
            let mut before = BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                let now: Pairs = duplicates(&qemus(&state))
                    .into_iter()
                    .map(|(w, pids)| (w, pids.into_iter().collect()))
                    .collect();
                f.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(now.intersection(&before).cloned());
                before = now;
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Pairs {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `microfaasctl ARGS` on `state`, its stderr (the engine's log) appended to `engine.log` next
/// to the state dir.
fn ctl(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_microfaasctl"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_of(state))
        .map_or_else(|_| Stdio::null(), Stdio::from);
    c.args(args)
        .env("MICROFAAS_STATE_DIR", state)
        // Info for every command (`apply` logs warnings only by default): adoptions are counted
        // from these lines.
        .env("RUST_LOG", "microfaas=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    c
}

fn log_of(state: &Path) -> PathBuf {
    state.with_extension("log")
}

/// How often the trial's engines adopted a running VM (`Adopted` events) and a previous
/// engine's standby (their logs).
fn adoptions(state: &Path, store: &Store) -> (usize, usize) {
    let vms = (0..4)
        .map(|i| {
            store
                .events(
                    microfaas::manifest::Kind::Worker,
                    &format!("vm-{i}"),
                    10_000,
                )
                .unwrap_or_default()
                .iter()
                .filter(|e| e.reason == "Adopted")
                .count()
        })
        .sum();
    let log = std::fs::read_to_string(log_of(state)).unwrap_or_default();
    (vms, log.matches("adopted a standby").count())
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling a child this test started and has not reaped yet.
    unsafe {
        libc::kill(i32::try_from(child.id()).expect("pid"), sig);
    }
}

/// The latest run of `w` and whether a rerun is still asked for, from the store.
fn latest(state: &Path) -> Option<(RunPhase, bool)> {
    if !state.join("state.db").exists() {
        return None;
    }
    let store = Store::open(state).ok()?;
    let run = store.latest_run("w").ok()??;
    let rerun = store
        .get(microfaas::manifest::Kind::Workload, "w")
        .ok()??
        .status
        .get(microfaas::engine::RERUN)
        .is_some_and(|v| v == true);
    Some((run.phase, rerun))
}

fn workload_stored(state: &Path) -> bool {
    state.join("state.db").exists()
        && Store::open(state)
            .ok()
            .and_then(|s| s.get(microfaas::manifest::Kind::Workload, "w").ok())
            .flatten()
            .is_some()
}

/// After a kill: every QEMU of the state dir must be one the store leads the next engine to.
fn orphans_now(state: &Path) -> Vec<Qemu> {
    // A QEMU still starting when its engine died writes nothing more; give /proc a moment.
    std::thread::sleep(Duration::from_millis(300));
    let scan = qemus(state);
    match Store::open(state) {
        Ok(store) => unknown_to(&store, &scan),
        Err(_) => scan,
    }
}

/// Runs `apply`, then `rerun` after each kill, until a run of `w` finishes.
fn trial_apply(state: &Path, file: &str, rng: &mut Rng, kills_wanted: u64, t: &mut Trial) {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < TRIAL_LIMIT,
            "trial did not finish: {t:?}"
        );
        let args: Vec<&str> = if workload_stored(state) {
            vec!["rerun", "workload", "w", "--timeout", "8m"]
        } else {
            vec!["apply", "-f", file, "--timeout", "8m"]
        };
        let mut child = ctl(state, &args).spawn().expect("start the engine");
        let kill_at = Duration::from_millis(50 + rng.below(KILL_WITHIN_MS));
        let mut killed = false;
        let spawned = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if t.kills < kills_wanted && spawned.elapsed() >= kill_at {
                signal(&child, libc::SIGKILL);
                killed = true;
                break child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if killed {
            t.killed(state);
            continue;
        }
        if !status.success() {
            t.notes.push(format!("{} exited {status}", args[0]));
        }
        // A run that ended before any kill landed proves nothing: run it again.
        if t.kills > 0
            && matches!(latest(state), Some((p, false)) if p != RunPhase::Running && p != RunPhase::Cancelled)
        {
            return;
        }
    }
}

/// Runs `serve`, asks for a rerun after each kill, and stops it (SIGTERM) once a run of `w`
/// has finished.
fn trial_serve(state: &Path, file: &str, rng: &mut Rng, kills_wanted: u64, t: &mut Trial) {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < TRIAL_LIMIT,
            "trial did not finish: {t:?}"
        );
        // Asked before the daemon starts: a `rerun` racing it for the state dir would make
        // one of the two engines.
        if t.kills > 0 {
            let out = ctl(state, &["rerun", "workload", "w", "--no-wait"])
                .output()
                .expect("rerun");
            if !out.status.success() {
                t.notes
                    .push(format!("rerun --no-wait exited {}", out.status));
            }
        }
        let mut child = ctl(state, &["serve", "-f", file])
            .spawn()
            .expect("start serve");
        let kill_at = Duration::from_millis(50 + rng.below(KILL_WITHIN_MS));
        let spawned = Instant::now();
        loop {
            if started.elapsed() >= TRIAL_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("trial did not finish: {t:?}");
            }
            if let Some(s) = child.try_wait().expect("wait") {
                t.notes.push(format!("serve exited by itself: {s}"));
                break;
            }
            if t.kills < kills_wanted && spawned.elapsed() >= kill_at {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                t.killed(state);
                break;
            }
            if t.kills >= kills_wanted
                && matches!(latest(state), Some((p, false)) if p != RunPhase::Running && p != RunPhase::Cancelled)
            {
                signal(&child, libc::SIGTERM);
                let s = child.wait().expect("wait");
                if !s.success() {
                    t.notes.push(format!("serve stopped with {s}"));
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn run_trial(env: &mut Env, n: u64, seed: u64) -> Trial {
    // Each trial its own stream: how many draws a trial makes depends on timing.
    let rng = &mut Rng(seed ^ n.wrapping_mul(0x2545_f491_4f6c_dd1d));
    env.state = env.dir.path().join(format!("state-{n}"));
    let state = env.state.clone();
    let file = env.write(&format!("m-{n}.yaml"), &manifest(env));
    let mut t = Trial {
        // Every other trial kills `serve` rather than `apply`.
        serve: n % 2 == 1,
        ..Trial::default()
    };
    let kills_wanted = 1 + rng.below(MAX_KILLS);
    let sampler = Sampler::start(state.clone());
    let started = Instant::now();
    if t.serve {
        trial_serve(&state, &file, rng, kills_wanted, &mut t);
    } else {
        trial_apply(&state, &file, rng, kills_wanted, &mut t);
    }
    t.wall = started.elapsed();
    let dups = sampler.finish();
    t.duplicates = dups.len();
    if !dups.is_empty() {
        t.notes.push(format!("two QEMUs for one worker: {dups:?}"));
    }
    // The last engine has stopped: nothing of this state dir may still run.
    std::thread::sleep(Duration::from_millis(500));
    let left = qemus(&state);
    if !left.is_empty() {
        t.notes.push(format!("left running: {left:?}"));
        for q in &left {
            // SAFETY: a QEMU found with this trial's state dir in its command line.
            unsafe {
                libc::kill(q.pid, libc::SIGKILL);
            }
        }
    }
    t.orphans += left.len();
    let store = Store::open(&state).expect("store");
    t.audit = audit(&store, "w", DECLARED, MAX_ATTEMPTS);
    t.adopted = adoptions(&state, &store);
    t
}

#[test]
fn killed_engines_leave_no_orphan_no_duplicate_and_lose_no_invocation() {
    let trials = env_u64("MICROFAAS_CHAOS_TRIALS").unwrap_or(3);
    let seed = env_u64("MICROFAAS_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs())
    });
    println!(
        "chaos: {trials} trials, seed {seed} (MICROFAAS_CHAOS_SEED={seed} MICROFAAS_CHAOS_TRIALS={trials} replays the schedule)"
    );
    let mut env = Env::new();
    let started = Instant::now();
    let mut all = Vec::new();
    println!(
        "{:>5} {:>6} {:>5} {:>5} {:>8} {:>9} {:>8} {:>10} {:>5} {:>15} {:>11} {:>7}",
        "trial",
        "engine",
        "kills",
        "runs",
        "adopted",
        "standbys",
        "orphans",
        "duplicates",
        "lost",
        "double-counted",
        "final count",
        "wall s"
    );
    for n in 0..trials {
        let t = run_trial(&mut env, n, seed);
        println!(
            "{:>5} {:>6} {:>5} {:>5} {:>8} {:>9} {:>8} {:>10} {:>5} {:>15} {:>11} {:>7.1}",
            n,
            if t.serve { "serve" } else { "apply" },
            t.kills,
            t.audit.runs,
            t.adopted.0,
            t.adopted.1,
            t.orphans,
            t.duplicates,
            t.audit.lost,
            t.audit.double_counted,
            format!("{}/{DECLARED}", t.audit.final_succeeded),
            t.wall.as_secs_f64()
        );
        for note in t.notes.iter().chain(&t.audit.problems) {
            println!("       {note}");
        }
        all.push(t);
    }
    let sum = |f: &dyn Fn(&Trial) -> usize| all.iter().map(f).sum::<usize>();
    println!(
        "total: trials {trials}, kills {}, orphans {}, duplicates {}, lost {}, double-counted {}, wall {:.1} s",
        all.iter().map(|t| t.kills).sum::<u64>(),
        sum(&|t| t.orphans),
        sum(&|t| t.duplicates),
        sum(&|t| t.audit.lost),
        sum(&|t| t.audit.double_counted),
        started.elapsed().as_secs_f64()
    );
    for (n, t) in all.iter().enumerate() {
        assert_eq!(
            (
                t.orphans,
                t.duplicates,
                t.audit.lost,
                t.audit.double_counted
            ),
            (0, 0, 0, 0),
            "trial {n} (seed {seed}): {t:?}"
        );
        assert_eq!(
            t.audit.final_phase,
            Some(RunPhase::Succeeded),
            "trial {n} (seed {seed}): {t:?}"
        );
        assert_eq!(
            (t.audit.final_succeeded, t.audit.final_counts),
            (DECLARED, (DECLARED as u64, DECLARED as u64)),
            "trial {n} (seed {seed}): the final run's count: {t:?}"
        );
        assert!(t.kills >= 1, "trial {n}: no kill landed: {t:?}");
    }
}
