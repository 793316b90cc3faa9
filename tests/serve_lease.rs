//! Several `serve` processes on one etcd store (a real 3-member cluster on loopback) with real
//! QEMU (TCG) workers: each holds workers under its etcd lease. Killed with SIGKILL mid-
//! workload, the other takes its workers and the workload within TTL + 5 s, stops the VMs the
//! dead one left running (one QEMU per worker throughout) and finishes the run with every
//! invocation recorded once. One etcd member down changes nothing; with the
//! quorum lost the engine presses no power button (a VM that died is not started again)
//! until etcd is back, then says so and acts again.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"`; hack/test does it.

mod support;

use microfaas::manifest::Kind;
use microfaas::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::chaos::qemus;
use support::etcd::EtcdCluster;
use support::qemu::running_for;
use support::testbed::Env;
use support::testbed::ctl_on_store as ctl;

/// Boots under TCG on a loaded two-core machine: be generous, never assert on time except
/// the takeover bound the issue sets.
const LIMIT: Duration = Duration::from_secs(300);
const TTL_S: u64 = 5;

struct Serve {
    child: Child,
    log: PathBuf,
    state: PathBuf,
}

impl Serve {
    fn start(name: &str, state: &Path, manifest: &str, log: PathBuf) -> Serve {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = support::testbed::serve_command(state, &log)
            .args(["serve", "-f", manifest, "--name", name])
            .args(["--lease-ttl", &format!("{TTL_S}s")])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .spawn()
            .expect("serve");
        Serve {
            child,
            log,
            state: state.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&mut self, sig: i32) {
        // SAFETY: signalling the child this test started (and has not reaped).
        unsafe {
            libc::kill(i32::try_from(self.child.id()).expect("pid"), sig);
        }
    }
}

impl Drop for Serve {
    /// Nothing left behind: the serve, then the QEMUs of its state dir.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
        for (_, pid) in running_for(&self.state) {
            // SAFETY: a PID found running with this serve's state dir in its argv.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

fn manifest(
    env: &Env,
    cluster: &EtcdCluster,
    prefix: &str,
    workers: &[&str],
    count: u32,
) -> String {
    let mut m = format!(
        "{}  store: {{etcd: {{endpoints: [{}], prefix: {prefix}}}}}\n",
        env.cluster(""),
        cluster.endpoints().join(", ")
    );
    for w in workers {
        m.push_str(&env.vm(w, "On", "128Mi", &env.initrd));
    }
    if count > 0 {
        // Long enough under TCG that the kill finds invocations in flight.
        m.push_str(&Env::builtin_workload(
            "cascading_sha256",
            count,
            "2/s",
            "{rounds: 100000}",
        ));
    }
    m
}

/// The orchestrator the newest `Claimed` event of `kind/name` names, if any (events come
/// oldest first).
fn holder(store: &Store, kind: Kind, name: &str) -> Option<String> {
    store
        .events(kind, name, 50)
        .ok()?
        .into_iter()
        .rfind(|e| e.reason == "Claimed")
        .and_then(|e| e.message.rsplit(' ').next().map(str::to_string))
}

/// Scans /proc every 150 ms for QEMUs of the given state dirs; `stop` returns the workers
/// seen with more than one QEMU (across all the dirs) in two scans in a row, with their PIDs
/// (two in a row: a QEMU that has just been quit may still be in /proc for one scan).
struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(String, Vec<i32>)>>,
}

impl Sampler {
    fn start(states: Vec<PathBuf>) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut found = Vec::new();
            let mut previous = std::collections::BTreeMap::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let scan: Vec<_> = states.iter().flat_map(|d| qemus(d)).collect();
                let now = support::chaos::duplicates(&scan);
                for (worker, pids) in &now {
                    let entry = (worker.clone(), pids.iter().copied().collect());
                    if previous.contains_key(worker) && !found.contains(&entry) {
                        found.push(entry);
                    }
                }
                previous = now;
                std::thread::sleep(Duration::from_millis(150));
            }
            found
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Vec<(String, Vec<i32>)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("sampler")
    }
}

/// Starts `orch-a` on manifest `f`, waits until it holds both workers and the workload,
/// starts `orch-b` (state dir `state_b`), and returns once at least `min` invocations, but
/// not all `total`, succeeded: mid-run. Also when the run started.
fn a_holds_then_b_joins(
    env: &Env,
    store: &Store,
    (reader, url): (&Path, &str),
    (f, state_b): (&str, &Path),
    total: u32,
    min: u64,
) -> (Serve, Serve, Instant) {
    let a = Serve::start("orch-a", &env.state, f, env.dir.path().join("a.log"));
    let started = Instant::now();
    while ["vm-0", "vm-1"]
        .iter()
        .any(|w| holder(store, Kind::Worker, w).as_deref() != Some("orch-a"))
        || holder(store, Kind::Workload, "wl").as_deref() != Some("orch-a")
    {
        assert!(started.elapsed() < LIMIT, "a claimed nothing:\n{}", a.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    let b = Serve::start("orch-b", state_b, f, env.dir.path().join("b.log"));
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "the run made no progress:\n{}",
            a.log()
        );
        if let Some(r) = report(reader, url)
            && r["succeeded"].as_u64().unwrap_or(0) >= min
        {
            assert!(
                r["succeeded"].as_u64().unwrap_or(0) < u64::from(total),
                "the run ended too soon: {r}"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    (a, b, started)
}

/// Waits (up to LIMIT from `started`) until workload `wl`'s latest run is over and its report
/// accounts for all `total` invocations; the report. `log`: for the failure message.
fn finished_report(
    store: &Store,
    (reader, url): (&Path, &str),
    total: u32,
    started: Instant,
    log: &dyn Fn() -> String,
) -> Value {
    loop {
        assert!(
            started.elapsed() < LIMIT,
            "the run did not finish:\n{}",
            log()
        );
        let finished = store
            .latest_run("wl")
            .ok()
            .flatten()
            .is_some_and(|r| r.phase != microfaas::store::RunPhase::Running);
        if finished
            && let Some(r) = report(reader, url)
            && r["total"] == total
            && r["succeeded"].as_u64().unwrap_or(0) + r["failed"].as_u64().unwrap_or(0)
                == u64::from(total)
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn report(reader: &Path, url: &str) -> Option<Value> {
    let r = ctl(reader, url, &["report", "wl", "--format", "json"]);
    serde_json::from_slice(&r.stdout).ok()
}

#[test]
fn a_killed_orchestrators_workers_and_workload_are_taken_over_and_finish_once() {
    // The testbed first: it runs one test at a time, so no other test's etcd takes the port
    // of a member this one stops and restarts.
    let env = Env::new();
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("lease");
    let total = 24;
    let m = manifest(&env, &cluster, "lease", &["vm-0", "vm-1"], total);
    let f = env.write("m.yaml", &m);
    let reader = tempfile::tempdir().expect("tmp");
    let store = Store::open_etcd(&cluster.location("lease")).expect("open");
    let state_b = env.dir.path().join("state-b");
    let (mut a, b, started) = a_holds_then_b_joins(
        &env,
        &store,
        (reader.path(), &url),
        (&f, &state_b),
        total,
        4,
    );
    assert!(
        !b.log().contains("reason=\"Claimed\""),
        "b claimed what a held:\n{}",
        b.log()
    );
    // a's VMs, which outlive it (detached QEMUs in a's state dir).
    let orphans = qemus(&env.state);
    assert_eq!(
        orphans
            .iter()
            .map(|q| q.worker.as_str())
            .collect::<Vec<_>>(),
        ["vm-0", "vm-1"],
        "{orphans:?}"
    );
    assert!(
        qemus(&state_b).is_empty(),
        "b started a VM it does not hold"
    );
    let sampler = Sampler::start(vec![env.state.clone(), state_b.clone()]);
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = a.child.wait();
    // b holds a's workers and the workload within TTL + 5 s.
    let took = loop {
        let all = ["vm-0", "vm-1"]
            .iter()
            .all(|w| holder(&store, Kind::Worker, w).as_deref() == Some("orch-b"))
            && holder(&store, Kind::Workload, "wl").as_deref() == Some("orch-b");
        if all {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(TTL_S + 5),
            "b did not take over within TTL + 5 s:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("takeover after {:.1} s", took.as_secs_f64());
    // The run completes on b, every invocation recorded once.
    let r = finished_report(&store, (reader.path(), &url), total, started, &|| b.log());
    assert_eq!(r["succeeded"], total, "{r}\n{}", b.log());
    let run = store.latest_run("wl").expect("run").expect("a run");
    assert_eq!(
        run.run, 1,
        "b carried a's run on rather than starting another"
    );
    assert_eq!(run.phase, microfaas::store::RunPhase::Succeeded);
    let audit = support::chaos::audit(&store, "wl", total as usize, 3);
    assert_eq!(audit.lost, 0, "{audit:?}");
    assert_eq!(audit.double_counted, 0, "{audit:?}");
    let attempts = store.attempts("wl", 1).expect("attempts");
    for seq in 0..u64::from(total) {
        let ok = attempts
            .iter()
            .filter(|a| a.seq == seq && a.status == microfaas::store::AttemptStatus::Succeeded)
            .count();
        assert_eq!(ok, 1, "invocation {seq}: {attempts:?}");
    }
    let events = ctl(reader.path(), &url, &["describe", "workload", "wl"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(text.contains("Resumed"), "{text}");
    eprintln!(
        "{}",
        text.lines().find(|l| l.contains("Resumed")).unwrap_or("")
    );
    // Exactly one QEMU per worker: b stopped each of a's (by the PID a launched, which no
    // longer runs) before starting its own, and at no time did two run for one worker.
    let twice = sampler.stop();
    assert!(twice.is_empty(), "two QEMUs for one worker: {twice:?}");
    for o in &orphans {
        assert!(
            !std::fs::read(format!("/proc/{}/cmdline", o.pid)).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&o.uuid) && c.contains(&env.state.display().to_string())
            }),
            "a's QEMU {o:?} still runs:\n{}",
            b.log()
        );
        let stopped = store
            .events(Kind::Worker, &o.worker, 50)
            .expect("events")
            .into_iter()
            .find(|e| e.reason == "OrphanStopped")
            .map(|e| e.message);
        assert!(
            stopped
                .as_deref()
                .is_some_and(|m| m.contains(&format!("pid {},", o.pid)) && m.contains("orch-a")),
            "{}: {stopped:?}\n{}",
            o.worker,
            b.log()
        );
    }
    assert!(qemus(&env.state).is_empty(), "{:?}", qemus(&env.state));
    let now = qemus(&state_b);
    assert_eq!(
        now.iter().map(|q| q.worker.as_str()).collect::<Vec<_>>(),
        ["vm-0", "vm-1"],
        "{now:?}"
    );
    for q in &now {
        let orphan = orphans
            .iter()
            .find(|o| o.worker == q.worker)
            .expect("orphan");
        assert_eq!(
            q.uuid, orphan.uuid,
            "the same worker's VM, started again by b"
        );
        assert_ne!(q.pid, orphan.pid);
    }
    drop(b);
    drop(a);
}

/// A worker handed over mid-run: its `orchestrators` list now names only `orch-b`, so
/// `orch-a`, which runs the workload, gives it up; `orch-a` moves the worker's queued
/// invocations to the worker it still holds and finishes the run there, every invocation
/// recorded once, while `orch-b` takes the worker, stopping the VM `orch-a` started (alive,
/// on this host) before it starts its own.
#[test]
fn a_worker_handed_over_mid_run_leaves_no_queue_waiting() {
    let env = Env::new();
    let cluster = EtcdCluster::start(3);
    let url = cluster.url("handover");
    let total = 24;
    let with_lists = |vm1: &str| {
        // Calls arrive faster than the two workers finish them, so queues build up and
        // invocations are still to come at the hand-over: without it some would wait on vm-1.
        let m = manifest(&env, &cluster, "handover", &["vm-0", "vm-1"], total)
            .replacen("2/s", "8/s", 1);
        // Each worker document ends with its `vm:` line; the list goes after it, in `spec`.
        m.replacen(
            "accel: tcg}\n",
            "accel: tcg}\n  orchestrators: [orch-a]\n",
            1,
        )
        .replacen(
            "accel: tcg}\n---",
            &format!("accel: tcg}}\n  orchestrators: [{vm1}]\n---"),
            1,
        )
    };
    let before = with_lists("orch-a");
    assert!(before.contains("8/s"), "{before}");
    assert_eq!(
        before.matches("orchestrators: [orch-a]").count(),
        2,
        "{before}"
    );
    let f = env.write("m.yaml", &before);
    let reader = tempfile::tempdir().expect("tmp");
    let store = Store::open_etcd(&cluster.location("handover")).expect("open");
    let state_b = env.dir.path().join("state-b");
    let (a, b, started) = a_holds_then_b_joins(
        &env,
        &store,
        (reader.path(), &url),
        (&f, &state_b),
        total,
        3,
    );
    let after = env.write("m2.yaml", &with_lists("orch-b"));
    support::testbed::ok(&ctl(
        reader.path(),
        &url,
        &["apply", "-f", &after, "--no-wait"],
    ));
    let moved = Instant::now();
    while holder(&store, Kind::Worker, "vm-1").as_deref() != Some("orch-b") {
        assert!(
            moved.elapsed() < Duration::from_secs(60),
            "b never got vm-1:\n{}\n{}",
            a.log(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Without the hand-over the jobs queued for vm-1 would wait for ever.
    let r = finished_report(&store, (reader.path(), &url), total, started, &|| a.log());
    assert_eq!(r["succeeded"], total, "{r}\n{}", a.log());
    let run = store.latest_run("wl").expect("run").expect("a run");
    assert_eq!(
        (run.run, run.phase),
        (1, microfaas::store::RunPhase::Succeeded)
    );
    let audit = support::chaos::audit(&store, "wl", total as usize, 3);
    assert_eq!((audit.lost, audit.double_counted), (0, 0), "{audit:?}");
    let events = store.events(Kind::Workload, "wl", 50).expect("events");
    let handed = events
        .iter()
        .find(|e| e.reason == "WorkerHandedOver")
        .map(|e| e.message.clone());
    assert!(
        handed.as_deref().is_some_and(|m| m.contains("`vm-1`")
            && m.contains("orch-a")
            && !m.contains("its 0 queued")),
        "{events:?}"
    );
    eprintln!("{}", handed.unwrap_or_default());
    // vm-1 runs from b's state dir now, and only there.
    let vm1 = || {
        qemus(&env.state)
            .into_iter()
            .chain(qemus(&state_b))
            .filter(|q| q.worker == "vm-1")
            .collect::<Vec<_>>()
    };
    let t = Instant::now();
    while vm1().len() != 1 || qemus(&state_b).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{:?}\n{}",
            vm1(),
            b.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(qemus(&env.state).iter().all(|q| q.worker == "vm-0"));
    let stopped = store
        .events(Kind::Worker, "vm-1", 50)
        .expect("events")
        .into_iter()
        .find(|e| e.reason == "OrphanStopped")
        .map(|e| e.message);
    assert!(
        stopped.as_deref().is_some_and(|m| m.contains("orch-a")),
        "{stopped:?}\n{}",
        b.log()
    );
    eprintln!("{}", stopped.unwrap_or_default());
    drop(b);
    drop(a);
}

#[test]
fn without_etcd_quorum_no_power_is_pressed_until_it_is_back() {
    let env = Env::new();
    let mut cluster = EtcdCluster::start(3);
    let url = cluster.url("quorum");
    let m = manifest(&env, &cluster, "quorum", &["vm-0"], 0);
    let f = env.write("m.yaml", &m);
    let reader = tempfile::tempdir().expect("tmp");
    let s = Serve::start("orch-q", &env.state, &f, env.dir.path().join("q.log"));
    let ready = |what: &str| {
        let started = Instant::now();
        loop {
            let out = ctl(
                reader.path(),
                &url,
                &["get", "worker", "vm-0", "-o", "json"],
            );
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
                && v["status"]["phase"] == "Ready"
                && running_for(&env.state).len() == 1
            {
                return;
            }
            assert!(started.elapsed() < LIMIT, "{what}:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let kill_vm = || {
        let vms = running_for(&env.state);
        assert_eq!(vms.len(), 1, "{vms:?}");
        // SAFETY: the QEMU of this test's state dir.
        unsafe {
            libc::kill(vms[0].1, libc::SIGKILL);
        }
        let pid = vms[0].1;
        let killed = Instant::now();
        while running_for(&env.state).iter().any(|v| v.1 == pid) {
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "QEMU {pid} did not die"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        pid
    };
    ready("vm-0 never became Ready");
    // One member down: no effect, the engine still restarts a VM that died.
    cluster.stop_member(0);
    let first = kill_vm();
    ready("with one etcd member down the engine did not restart the VM");
    assert_ne!(running_for(&env.state)[0].1, first);
    assert!(!s.log().contains("QuorumLost"), "{}", s.log());
    // Quorum lost: the VM that dies stays off.
    cluster.stop_member(1);
    std::thread::sleep(Duration::from_secs(TTL_S));
    kill_vm();
    let lost = Instant::now();
    // At least 10 s, and until the serve has said it cannot renew its lease (a member without
    // a leader may take its request timeout to answer).
    while lost.elapsed() < Duration::from_secs(10)
        || !s.log().contains("cannot renew the etcd lease")
    {
        assert!(
            running_for(&env.state).is_empty(),
            "a VM was started without quorum:\n{}",
            s.log()
        );
        assert!(
            lost.elapsed() < Duration::from_secs(90),
            "the serve never said it lost its lease:\n{}",
            s.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Back: the engine says so and starts the VM again.
    cluster.start_member(1);
    ready("the engine did not act again once the quorum was back");
    let d = ctl(reader.path(), &url, &["describe", "cluster", "t"]);
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(
        text.contains("QuorumLost") && text.contains("pressed no power button"),
        "{text}"
    );
    cluster.start_member(0);
    drop(s);
}

#[test]
fn a_bad_orchestrator_name_is_refused_on_a_shared_store() {
    // Refused before the store is opened: no etcd needs to answer at this address.
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n  orchestrator: {listen: 127.0.0.1:0}\n  store: {etcd: {endpoints: [127.0.0.1:9], prefix: bad}}\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["serve", "-f"])
        .arg(&f)
        .args(["--name", "Rack_A"])
        .env("MICROFAAS_STATE_DIR", dir.path().join("state"))
        .env_remove("MICROFAAS_STORE")
        .stdin(Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("orchestrator name `Rack_A`"), "{err}");
}

/// Without QEMU (workers kept Off): a worker listing only `orch-b` is never held by `orch-a`,
/// even when `orch-a` starts first; and SIGTERM revokes the lease, so `orch-b` takes the rest
/// over long before a 30 s TTL could expire.
#[test]
fn eligibility_is_honoured_and_sigterm_hands_over_at_once() {
    let cluster = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tmp");
    let worker = |name: &str, extra: &str| {
        format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}}}\nspec:\n  power: Off\n  vm: {{kernel: /nonexistent/k}}\n{extra}"
        )
    };
    let m = format!(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  store: {{etcd: {{endpoints: [{}], prefix: elig}}}}\n{}{}",
        cluster.endpoints().join(", "),
        worker("any", ""),
        worker("only-b", "  orchestrators: [orch-b]\n"),
    );
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, m).expect("write");
    let f = f.display().to_string();
    let store = Store::open_etcd(&cluster.location("elig")).expect("open");
    let serve = |name: &str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let log = dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
            .args(["serve", "--no-fs-checks", "-f", &f, "--name", name])
            .args([
                "--lease-ttl",
                "30s",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("MICROFAAS_STATE_DIR", dir.path().join(name))
            .env_remove("MICROFAAS_STORE")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("serve");
        Serve {
            child,
            log,
            state: dir.path().join(name),
        }
    };
    let wait_for = |what: &str, f: &dyn Fn() -> bool, limit: Duration, log: &dyn Fn() -> String| {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < limit, "{what}:\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    };
    let mut a = serve("orch-a");
    wait_for(
        "orch-a did not claim `any`",
        &|| holder(&store, Kind::Worker, "any").as_deref() == Some("orch-a"),
        LIMIT,
        &|| a.log(),
    );
    let b = serve("orch-b");
    wait_for(
        "orch-b did not claim `only-b`",
        &|| holder(&store, Kind::Worker, "only-b").as_deref() == Some("orch-b"),
        LIMIT,
        &|| b.log(),
    );
    let only_b = store.events(Kind::Worker, "only-b", 50).expect("events");
    assert!(
        !only_b.iter().any(|e| e.message.contains("orch-a")),
        "{only_b:?}"
    );
    a.signal(libc::SIGTERM);
    let took = wait_for(
        "orch-b did not take `any` over after orch-a's SIGTERM",
        &|| holder(&store, Kind::Worker, "any").as_deref() == Some("orch-b"),
        Duration::from_secs(20),
        &|| b.log(),
    );
    eprintln!("handover after SIGTERM: {:.1} s", took.as_secs_f64());
    let st = a.child.wait().expect("wait");
    assert!(st.success(), "{st}\n{}", a.log());
    drop(b);
}
