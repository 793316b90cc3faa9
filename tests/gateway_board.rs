//! The gateway on a board worker, with no VM in the cluster: a function deployed and invoked
//! through the faas-provider API powers a simulated BeagleBone on with its button (a fake GPIO
//! line whose board starts a real `microfaas-agent` and raises its port on a real `snmpsim`
//! switch, see tests/support/boards.rs), runs on it, and the board is powered off again through
//! its agent when the call is done (no idle timeout) and when scale-function goes back to 0.

mod support;

use microfaas::engine::board::{BoardTiming, GpioButtons};
use microfaas::engine::vm::FakeDriver;
use microfaas::gateway::Credentials;
use microfaas::manifest::Kind;
use microfaas::store::{DesiredObject, Store};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::boards::{
    Behaviour, FORCE_OFF, Rack, SimOpener, board_spec, event_count, switch_spec,
};
use support::host::{
    Host, HostOptions, body_text, call, deploy, http, json_of, scale, wait_function,
};
use support::snmp_agents::start_snmpsim;

const BOARD: &str = "bbb-1";

fn status(h: &Host<FakeDriver>) -> Value {
    h.engine
        .get(Kind::Worker, BOARD)
        .map(|o| o.status)
        .unwrap_or(Value::Null)
}

fn count(h: &Host<FakeDriver>, reason: &str) -> i64 {
    event_count(&h.engine, BOARD, reason)
}

/// Waits until the engine has the board Off (powered down, dark on the switch).
async fn until_off(h: &Host<FakeDriver>, rack: &Rack, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status(h)["phase"] != "Off" || rack.is_on(BOARD) {
        assert!(
            Instant::now() < deadline,
            "{what}: board on = {}, status {}",
            rack.is_on(BOARD),
            status(h)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_power_a_board_on_and_release_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let community = dir.path().join("community");
    std::fs::write(&community, "public\n").expect("community file");
    let sim = start_snmpsim();
    Store::open(&state)
        .expect("store")
        .apply(
            &[
                DesiredObject::new(
                    Kind::Cluster,
                    "c",
                    json!({"defaults": {"bootTimeout": "20s", "powerOnHoldoff": "500ms",
                                        "powerOffHoldoff": "1s", "jobTimeout": "30s"}}),
                ),
                DesiredObject::new(Kind::Switch, "tor", switch_spec(sim.port, &community)),
                // OnDemand and no idle timeout: on for a call, off again right after it.
                DesiredObject::new(
                    Kind::Worker,
                    BOARD,
                    board_spec("OnDemand", 1, "tor", "Gi1/0/5", false),
                ),
            ],
            None,
            false,
            false,
        )
        .expect("apply");
    let opts = HostOptions {
        agent_listen: "127.0.0.1:0".into(),
        token: "gateway-board-token".into(),
        credentials: Some(Credentials::new("admin", "pw")),
    };
    let mut rack = None;
    let h = Host::start_with(
        &state,
        Arc::new(FakeDriver::default()),
        &opts,
        |engine, endpoint| {
            let r = Rack::new(sim, endpoint.addr.to_string(), &opts.token);
            r.add(BOARD, 10105, Behaviour::Healthy, false);
            engine.set_buttons(Arc::new(GpioButtons::new(SimOpener(r.clone()))));
            engine.set_board_timing(BoardTiming {
                agent_timeout: Duration::from_secs(5),
                decay: Duration::from_secs(600),
                bounce_hold: Duration::from_millis(1500),
            });
            rack = Some(r);
        },
    )
    .await;
    let rack = rack.expect("the rack is set up");
    // A board whose agent obeyed `poweroff` goes dark (link down), as a real one does.
    let reaping = Arc::new(AtomicBool::new(true));
    let reaper = {
        let (rack, reaping) = (rack.clone(), reaping.clone());
        std::thread::spawn(move || {
            while reaping.load(Ordering::Relaxed) {
                rack.reap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    until_off(&h, &rack, "the board seen off on the switch").await;
    assert!(rack.presses(BOARD).is_empty());

    deploy(&h, "sha", "builtin:cascading_sha256").await;

    // The call powers the board on with one pulse of its button and runs on it.
    let input = json!({"rounds": 5, "data": "beaglebone"});
    let want = microfaas::functions::run("cascading_sha256", &input).expect("local run");
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-worker"), Some(BOARD));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    let presses = rack.presses(BOARD);
    assert_eq!(presses.len(), 1, "{presses:?}");
    assert!(presses[0] < FORCE_OFF, "a pulse, not a hold: {presses:?}");

    // Released after the call (no idle timeout): the agent is asked to power the board off,
    // and no further press is needed.
    until_off(&h, &rack, "the board released after the call").await;
    assert_eq!(rack.presses(BOARD).len(), 1, "{:?}", rack.presses(BOARD));
    assert!(count(&h, "PowerOff") >= 1, "{}", status(&h));
    assert_eq!(count(&h, "PowerHold"), 0);
    assert_eq!(status(&h)["power"], "Off");

    // scale-function 1 keeps the board powered: one more pulse, and a warm call.
    scale(&h, "sha", 1).await;
    wait_function(&h, "sha", "the board as a ready replica", |v| {
        v["availableReplicas"] == 1
    })
    .await;
    assert_eq!(rack.presses(BOARD).len(), 2, "{:?}", rack.presses(BOARD));
    let r = call(&h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-worker"), Some(BOARD));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("false"));
    // Still held after the call.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rack.is_on(BOARD), "{}", status(&h));
    assert_eq!(status(&h)["power"], "On");

    // scale-function 0: boards off until work arrives.
    scale(&h, "sha", 0).await;
    until_off(&h, &rack, "the board released by scale 0").await;
    assert_eq!(rack.presses(BOARD).len(), 2, "{:?}", rack.presses(BOARD));
    assert_eq!(count(&h, "PowerHold"), 0);
    assert_eq!(status(&h)["power"], "Off");
    let f = json_of(&http("GET", &h.url("/system/function/sha"), true, vec![]).await);
    assert_eq!(
        (f["replicas"].as_u64(), f["invocationCount"].as_u64()),
        (Some(0), Some(2)),
        "{f}"
    );

    reaping.store(false, Ordering::Relaxed);
    reaper.join().expect("reaper");
    h.stop().await;
}
