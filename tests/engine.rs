//! The controller runtime against the in-memory fake driver: convergence, observedGeneration,
//! recovery, quarantine, one reconcile per object at a time.

use microfaas::engine::vm::FakeDriver;
use microfaas::engine::{Config, Engine};
use microfaas::manifest::{self, Kind, validate::Options};
use microfaas::store::{DesiredObject, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn objects(yaml: &str) -> Vec<DesiredObject> {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("m.yaml");
    std::fs::write(&f, yaml).expect("write");
    let loaded = manifest::load_and_validate(&[f], Options { fs_checks: false });
    assert!(
        loaded.diagnostics.iter().all(|d| !d.is_error()),
        "{:?}",
        loaded.diagnostics
    );
    // Stored exactly as `apply` stores them.
    loaded
        .resources
        .iter()
        .map(microfaas::daemon::declare::desired)
        .collect()
}

fn workers(n: usize, power: &str) -> String {
    let mut s = String::from(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {bootTimeout: 300ms, powerOnHoldoff: 0s, quarantineAfter: 2}\n",
    );
    s.push_str(&format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {{name: vm}}\nspec:\n  replicas: {n}\n  template:\n    spec: {{power: {power}, vm: {{kernel: /k}}}}\n"
    ));
    s
}

struct World {
    engine: Arc<Engine<FakeDriver, FakeDriver>>,
    driver: Arc<FakeDriver>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn world(yaml: &str) -> World {
    world_with(yaml, FakeDriver::default())
}

/// A world whose driver is set up before the engine starts (so no reconcile sees it unset).
fn world_with(yaml: &str, driver: FakeDriver) -> World {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(dir.path()).expect("store");
    store
        .apply(&objects(yaml), None, false, false)
        .expect("apply");
    let driver = Arc::new(driver);
    let engine = Engine::new(
        store,
        driver.clone(),
        driver.clone(),
        Config {
            state_dir: dir.path().to_path_buf(),
            orchestrator_port: 1,
            token: "t".into(),
            default_initrd: None,
            concurrency: 4,
            resync: Duration::from_secs(3600),
        },
    );
    let (stop, rx) = watch::channel(false);
    tokio::spawn(engine.clone().run(rx, None));
    engine.enqueue_all();
    World {
        engine,
        driver,
        stop,
        _dir: dir,
    }
}

/// Waits until every worker satisfies `pred(phase, health)`, or panics after `limit`.
async fn until(w: &World, limit: Duration, pred: impl Fn(&str, &str) -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut changes = w.engine.subscribe_changes();
    loop {
        let all = w
            .engine
            .with_store(|s| s.list(Some(Kind::Worker)))
            .expect("list");
        let ok = all.iter().all(|o| {
            let phase = o.status["phase"].as_str().unwrap_or("");
            let health = o.status["health"].as_str().unwrap_or("");
            o.status["observedGeneration"] == o.generation && pred(phase, health)
        });
        if ok && !all.is_empty() {
            return;
        }
        let summary: Vec<String> = all
            .iter()
            .map(|o| format!("{}={}", o.name, o.status["phase"]))
            .collect();
        assert!(
            tokio::time::Instant::now() < deadline,
            "not converged: {summary:?}"
        );
        let _ = tokio::time::timeout(Duration::from_millis(50), changes.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_converge_to_ready_and_back_off() {
    let w = world(&workers(3, "On"));
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    assert_eq!(w.driver.running(), 3);
    assert_eq!(
        w.driver.launches.lock().expect("lock").len(),
        3,
        "a VM launched twice"
    );

    // desired Off: generation 2 observed, VMs gone
    let mut store_objs = objects(&workers(3, "Off"));
    store_objs.retain(|o| o.kind != Kind::Cluster);
    w.engine
        .with_store(|s| s.apply(&store_objs, None, false, false))
        .expect("apply");
    w.engine.enqueue_all();
    until(&w, Duration::from_secs(5), |p, _| p == "Off").await;
    assert_eq!(w.driver.running(), 0);
    let o = w.engine.get(Kind::Worker, "vm-0").expect("vm-0");
    assert_eq!(o.generation, 2);
    assert_eq!(o.status["observedGeneration"], 2);
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_vm_is_relaunched() {
    let w = world(&workers(1, "On"));
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    w.driver.crash("vm-0");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while w.driver.launches.lock().expect("lock").len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "not relaunched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_boots_is_quarantined() {
    // Set before the engine starts: a first boot that succeeded would add a launch.
    let driver = FakeDriver::default();
    driver
        .never_boot
        .lock()
        .expect("lock")
        .insert("vm-0".into());
    let w = world_with(&workers(1, "On"), driver);
    until(&w, Duration::from_secs(10), |_, h| h == "Bad").await;
    let o = w.engine.get(Kind::Worker, "vm-0").expect("vm-0");
    assert_eq!(o.status["phase"], "Failed");
    let launches = w.driver.launches.lock().expect("lock").len();
    assert_eq!(launches, 2, "quarantineAfter: 2 means two boot attempts");
    assert_eq!(
        w.driver.running(),
        0,
        "a quarantined worker's VM must be stopped"
    );
    let events = w
        .engine
        .with_store(|s| s.events(Kind::Worker, "vm-0", 50))
        .expect("events");
    assert!(
        events.iter().any(|e| e.reason == "Quarantined"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason == "BootTimeout" && e.count == 2),
        "{events:?}"
    );
    // Bad workers stay Bad: no further launches
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(w.driver.launches.lock().expect("lock").len(), 2);

    // Uncordoned, it gets the whole ladder again (the count starts over), not one boot.
    w.engine
        .with_store(|s| microfaas::engine::operator::set_health(s, "vm-0", "Good"))
        .expect("uncordon");
    w.engine.enqueue_all();
    until(&w, Duration::from_secs(10), |_, h| h == "Bad").await;
    assert_eq!(
        w.driver.launches.lock().expect("lock").len(),
        4,
        "two more boot attempts after uncordon"
    );
    let events = w
        .engine
        .with_store(|s| s.events(Kind::Worker, "vm-0", 50))
        .expect("events");
    let quarantined: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "Quarantined")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        quarantined
            .iter()
            .all(|m| m.starts_with("2 failed recoveries in a row")),
        "{quarantined:?}"
    );
    let _ = w.stop.send(true);
}

/// A cordon stored while a reconcile is between its read and its write (here: launching the
/// VM) is merged with that write, not overwritten by it, and so takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordon_during_a_reconcile_is_kept() {
    let driver = FakeDriver::default();
    let gate = Arc::new(tokio::sync::Notify::new());
    *driver.launch_gate.lock().expect("lock") = Some(gate.clone());
    let w = world_with(&workers(1, "On"), driver);
    // The reconcile has written PoweringOn and waits in the launch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.engine.get(Kind::Worker, "vm-0").expect("vm-0").status["phase"] != "PoweringOn" {
        assert!(tokio::time::Instant::now() < deadline, "no launch");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.engine
        .with_store(|s| microfaas::engine::operator::set_health(s, "vm-0", "Maintenance"))
        .expect("cordon");
    w.engine.enqueue_all();
    gate.notify_one();
    until(&w, Duration::from_secs(10), |p, h| {
        p == "Failed" && h == "Maintenance"
    })
    .await;
    assert_eq!(
        w.driver.running(),
        0,
        "a cordoned worker's VM must be stopped"
    );
    let _ = w.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_follows_demand() {
    let w = world(&workers(2, "OnDemand"));
    until(&w, Duration::from_secs(5), |p, _| p == "Off").await;
    assert_eq!(w.driver.running(), 0);
    w.engine.want("vm-1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let o = w.engine.get(Kind::Worker, "vm-1").expect("vm-1");
        if o.status["phase"] == "Ready" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "vm-1 not Ready: {}",
            o.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.driver.running(), 1);
    w.engine.release("vm-1");
    until(&w, Duration::from_secs(5), |p, _| p == "Off").await;
    assert_eq!(w.driver.running(), 0);
    let _ = w.stop.send(true);
}

/// Deletion is a mark the engine finalizes: a WorkerSet's workers are torn down (VMs stopped)
/// under their own keys, then the records go, the set last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_objects_are_torn_down_then_removed() {
    let w = world(&workers(2, "On"));
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    assert_eq!(w.driver.running(), 2);
    let marked = w
        .engine
        .with_store(|s| {
            microfaas::daemon::declare::request_deletion(s, &[(Kind::WorkerSet, "vm".into())])
        })
        .expect("mark");
    assert_eq!(marked.len(), 3, "{marked:?}");
    for k in marked {
        w.engine.queue.add(k);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = w.engine.with_store(|s| s.list(None)).expect("list");
        if left.iter().all(|o| o.kind == Kind::Cluster) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not finalized: {:?}",
            left.iter().map(|o| (o.kind, &o.name)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        w.driver.running(),
        0,
        "a deleted worker's VM was left running"
    );
    let _ = w.stop.send(true);
}

/// The phases recorded for `worker` so far (its status writes' phase changes).
fn phases(w: &World, worker: &str) -> Vec<String> {
    w.engine
        .with_store(|s| s.phase_history(worker, 0, i64::MAX))
        .expect("phase history")
        .into_iter()
        .map(|p| p.phase)
        .collect()
}

/// A call shorter than `BUSY_SHOWN_AFTER` writes no Busy (nor the Ready after it); one that
/// lasts longer is shown Busy with its function, and Ready again once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_call_that_lasts_is_shown_busy() {
    use microfaas::engine::BUSY_SHOWN_AFTER;
    let w = world(&workers(1, "On"));
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    // Reconciles still queued from the boot would show any call Busy (rightly): let them end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = phases(&w, "vm-0");
    assert_eq!(
        before.last().map(String::as_str),
        Some("Ready"),
        "{before:?}"
    );

    w.engine.set_busy("vm-0", Some("short"));
    tokio::time::sleep(Duration::from_millis(1)).await;
    w.engine.set_busy("vm-0", None);
    tokio::time::sleep(BUSY_SHOWN_AFTER * 3).await;
    assert_eq!(
        phases(&w, "vm-0"),
        before,
        "a short call changed the status"
    );

    w.engine.set_busy("vm-0", Some("long"));
    until(&w, Duration::from_secs(5), |p, _| p == "Busy").await;
    let o = w.engine.get(Kind::Worker, "vm-0").expect("vm-0");
    assert_eq!(o.status["function"], "long");
    w.engine.set_busy("vm-0", None);
    until(&w, Duration::from_secs(5), |p, _| p == "Ready").await;
    let o = w.engine.get(Kind::Worker, "vm-0").expect("vm-0");
    assert!(o.status["function"].is_null(), "{}", o.status);
    let mut want = before.clone();
    want.extend(["Busy".to_string(), "Ready".to_string()]);
    assert_eq!(phases(&w, "vm-0"), want);
    let _ = w.stop.send(true);
}

/// While something holds the engine's store (a status write waiting for the recorder's fsync
/// does), a call's worker lookup still answers (it reads through a connection of its own),
/// and a task waiting for the store leaves the runtime's only worker thread to the others:
/// on 2 cores, two reconciles waiting had stalled every agent session.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_held_store_stalls_neither_dispatch_reads_nor_the_runtime() {
    let w = world(&workers(1, "Off"));
    until(&w, Duration::from_secs(5), |p, _| p == "Off").await;
    let (held, is_held) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let engine = w.engine.clone();
    // Released by the test once it saw both, or after 10 s: only the order is asserted.
    let holder = std::thread::spawn(move || {
        engine.with_store(|_| {
            held.send(()).expect("held");
            released.recv_timeout(Duration::from_secs(10)).is_ok()
        })
    });
    is_held.recv().expect("the store is held");

    let read = w.engine.with_reader(|s| s.get(Kind::Worker, "vm-0"));
    assert!(
        matches!(read, Ok(Some(_))),
        "the dispatch read found no worker: {read:?}"
    );

    let waiter = {
        let engine = w.engine.clone();
        tokio::spawn(async move { engine.with_store(|s| s.get(Kind::Worker, "vm-0").is_ok()) })
    };
    // Give the waiter the worker thread first, then ask another task to run.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (ping, pinged) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = ping.send(());
    });
    let ran = tokio::time::timeout(Duration::from_secs(5), pinged).await;
    release.send(()).expect("release");
    assert!(
        holder.join().expect("holder"),
        "the store was held until the timeout: a read or the runtime waited for it"
    );
    assert!(
        matches!(ran, Ok(Ok(()))),
        "no other task ran while one waited for the store"
    );
    assert!(waiter.await.expect("waiter"), "the waiting read failed");
    let _ = w.stop.send(true);
}
