//! The gateway on a board worker, with no VM in the cluster: a function deployed and invoked
//! through the faas-provider API powers a simulated BeagleBone on with its button (a fake GPIO
//! line whose board starts a real `microfaas-agent` and raises its port on a real `snmpsim`
//! switch, see tests/support/boards.rs), runs on it, and the board is powered off again through
//! its agent when the call is done (no idle timeout) and when scale-function goes back to 0.

mod support;

use microfaas::engine::vm::FakeDriver;
use microfaas::gateway::Credentials;
use microfaas::manifest::Kind;
use microfaas::store::DesiredObject;
use serde_json::json;
use std::time::Duration;
use support::boards::{BoardHost, FORCE_OFF, board_spec, event_count};
use support::host::{
    Host, HostOptions, body_text, call, deploy, http, json_of, scale, wait_function,
};

const BOARD: &str = "bbb-1";

fn count(h: &Host<FakeDriver>, reason: &str) -> i64 {
    event_count(&h.engine, BOARD, reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_power_a_board_on_and_release_it() {
    let opts = HostOptions {
        agent_listen: "127.0.0.1:0".into(),
        token: "gateway-board-token".into(),
        credentials: Some(Credentials::new("admin", "pw")),
    };
    let b = BoardHost::start(
        json!({"bootTimeout": "20s", "powerOnHoldoff": "500ms", "powerOffHoldoff": "1s",
               "jobTimeout": "30s"}),
        // OnDemand and no idle timeout: on for a call, off again right after it.
        vec![DesiredObject::new(
            Kind::Worker,
            BOARD,
            board_spec("OnDemand", 1, "tor", "Gi1/0/5", false),
        )],
        &[(BOARD, 10105)],
        &opts,
    )
    .await;
    let (h, rack) = (&b.host, &b.rack);

    b.until_off(BOARD, "the board seen off on the switch").await;
    assert!(rack.presses(BOARD).is_empty());

    deploy(h, "sha", "builtin:cascading_sha256").await;

    // The call powers the board on with one pulse of its button and runs on it.
    let input = json!({"rounds": 5, "data": "beaglebone"});
    let want = microfaas::functions::run("cascading_sha256", &input).expect("local run");
    let r = call(h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-worker"), Some(BOARD));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("true"));
    let presses = rack.presses(BOARD);
    assert_eq!(presses.len(), 1, "{presses:?}");
    assert!(presses[0] < FORCE_OFF, "a pulse, not a hold: {presses:?}");

    // Released after the call (no idle timeout): the agent is asked to power the board off,
    // and no further press is needed.
    b.until_off(BOARD, "the board released after the call")
        .await;
    assert_eq!(rack.presses(BOARD).len(), 1, "{:?}", rack.presses(BOARD));
    assert!(count(h, "PowerOff") >= 1, "{}", b.status(BOARD));
    assert_eq!(count(h, "PowerHold"), 0);
    assert_eq!(b.status(BOARD)["power"], "Off");

    // scale-function 1 keeps the board powered: one more pulse, and a warm call.
    scale(h, "sha", 1).await;
    wait_function(h, "sha", "the board as a ready replica", |v| {
        v["availableReplicas"] == 1
    })
    .await;
    assert_eq!(rack.presses(BOARD).len(), 2, "{:?}", rack.presses(BOARD));
    let r = call(h, "/function/sha", &input).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(json_of(&r), want);
    assert_eq!(r.header("x-microfaas-worker"), Some(BOARD));
    assert_eq!(r.header("x-microfaas-cold-start"), Some("false"));
    // Still held after the call.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(rack.is_on(BOARD), "{}", b.status(BOARD));
    assert_eq!(b.status(BOARD)["power"], "On");

    // scale-function 0: boards off until work arrives.
    scale(h, "sha", 0).await;
    b.until_off(BOARD, "the board released by scale 0").await;
    assert_eq!(rack.presses(BOARD).len(), 2, "{:?}", rack.presses(BOARD));
    assert_eq!(count(h, "PowerHold"), 0);
    assert_eq!(b.status(BOARD)["power"], "Off");
    let f = json_of(&http("GET", &h.url("/system/function/sha"), true, vec![]).await);
    assert_eq!(
        (f["replicas"].as_u64(), f["invocationCount"].as_u64()),
        (Some(0), Some(2)),
        "{f}"
    );

    b.stop().await;
}
