//! The eight service-backed functions against real servers started here (redis-server,
//! PostgreSQL, mosquitto, moto's S3 server; loopback, ephemeral ports, own data dirs, stopped
//! by PID), run through the agent's own dispatch: the data is really there afterwards, read
//! back with each server's own client, and a down or silent service fails the call naming the
//! service, within the function's deadline.

mod support;

use microfaas::agent::runtime::dispatch;
use microfaas::protocol::{ErrorKind, Invoke, Outcome, ServiceBinding};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use support::services::*;

fn binding(name: &str, protocol: &str, s: &Server) -> ServiceBinding {
    ServiceBinding {
        name: name.into(),
        protocol: protocol.into(),
        address: s.addr(),
        password: Some(PASSWORD.into()),
        ..Default::default()
    }
}

fn call(handler: &str, input: Value, role: &str, b: ServiceBinding, deadline_ms: u64) -> Outcome {
    let mut services = BTreeMap::new();
    services.insert(role.to_string(), b);
    let d = dispatch(&Invoke {
        id: "t".into(),
        function: handler.into(),
        runtime: "builtin".into(),
        handler: handler.into(),
        input,
        deadline_ms,
        services,
        code: None,
    });
    assert!(!d.overran, "{handler} overran its deadline");
    d.result.outcome
}

fn output(o: Outcome) -> Value {
    match o {
        Outcome::Output(v) => v,
        Outcome::Error(e) => panic!("function failed: {e:?}"),
    }
}

fn failure(o: Outcome) -> (ErrorKind, String) {
    match o {
        Outcome::Error(e) => (e.kind, e.message),
        Outcome::Output(v) => panic!("expected a failure, got {v}"),
    }
}

#[test]
fn redis_insert_and_modify_on_a_real_server() {
    let r = start_redis();
    let b = || binding("kv", "redis", &r);
    let out = output(call(
        "redis_insert",
        json!({"id": "1234567", "balance": "500"}),
        "redis",
        b(),
        10_000,
    ));
    assert_eq!(
        out,
        json!({"id": "1234567", "balance": 500, "stored": true})
    );
    assert_eq!(redis_cli(&r, &["GET", "1234567"]), "500");

    let out = output(call(
        "redis_modify",
        json!({"id": "1234567", "spend": "123"}),
        "redis",
        b(),
        10_000,
    ));
    assert_eq!(out, json!({"id": "1234567", "balance": 377}));
    assert_eq!(redis_cli(&r, &["GET", "1234567"]), "377");

    // A wrong password is refused by the server, and the failure says which service.
    let mut wrong = b();
    wrong.password = Some("nope".into());
    let (kind, msg) = failure(call(
        "redis_insert",
        json!({"id": "x", "balance": 1}),
        "redis",
        wrong,
        10_000,
    ));
    assert_eq!(kind, ErrorKind::Error);
    assert!(
        msg.contains("service `kv`") && msg.contains("authentication failed"),
        "{msg}"
    );
    assert_eq!(redis_cli(&r, &["EXISTS", "x"]), "0");

    // Bad input never reaches the server.
    let (kind, _) = failure(call(
        "redis_modify",
        json!({"id": "1234567", "spend": "lots"}),
        "redis",
        b(),
        10_000,
    ));
    assert_eq!(kind, ErrorKind::BadInput);
    assert_eq!(redis_cli(&r, &["GET", "1234567"]), "377");
}

#[test]
fn psql_inventory_and_purchase_on_a_real_server() {
    let pg = start_postgres();
    let b = || ServiceBinding {
        user: Some("postgres".into()),
        target: Some("shop".into()),
        ..binding("shop-db", "postgres", &pg)
    };
    let out = output(call(
        "psql_purchase",
        json!({"id": 7}),
        "postgres",
        b(),
        20_000,
    ));
    assert_eq!(
        out,
        json!({"id": 7, "purchased": true, "name": "item-7", "quantity": 9})
    );
    assert_eq!(
        psql_value(&pg, "shop", "SELECT quantity FROM inventory WHERE id = 7"),
        "9"
    );
    // An item that does not exist is not purchased, and nothing changes.
    let out = output(call(
        "psql_purchase",
        json!({"id": 99}),
        "postgres",
        b(),
        20_000,
    ));
    assert_eq!(out, json!({"id": 99, "purchased": false}));
    assert_eq!(
        psql_value(&pg, "shop", "SELECT sum(quantity) FROM inventory"),
        "599"
    );

    let out = output(call(
        "psql_inventory",
        json!({"a": 1}),
        "postgres",
        b(),
        20_000,
    ));
    assert_eq!(out["count"], 60);
    assert_eq!(
        out["items"][6],
        json!({"id": 7, "name": "item-7", "quantity": 9})
    );
    assert_eq!(
        out["items"][0],
        json!({"id": 1, "name": "item-1", "quantity": 10})
    );

    // SCRAM with the wrong password: the server's refusal, naming the service.
    let mut wrong = b();
    wrong.password = Some("nope".into());
    let (_, msg) = failure(call("psql_inventory", json!({}), "postgres", wrong, 20_000));
    assert!(
        msg.contains("service `shop-db`") && msg.contains("password authentication failed"),
        "{msg}"
    );
    // A database that does not exist: the server's error, not a hang.
    let mut missing = b();
    missing.target = Some("nodb".into());
    let (_, msg) = failure(call(
        "psql_inventory",
        json!({}),
        "postgres",
        missing,
        20_000,
    ));
    assert!(msg.contains("\"nodb\" does not exist"), "{msg}");
}

#[test]
fn queue_produce_and_consume_on_a_real_broker() {
    let mq = start_mosquitto();
    let b = || ServiceBinding {
        user: Some(MQTT_USER.into()),
        target: Some("orders".into()),
        ..binding("queue", "mqtt", &mq)
    };
    // A reader of the broker's own: a persistent QoS 1 session subscribed before publishing.
    mosquitto_tool(
        &mq,
        "mosquitto_sub",
        &["-c", "-i", "reader", "-q", "1", "-t", "orders", "-E"],
    );
    let out = output(call(
        "queue_produce",
        json!({"message": "hello 1"}),
        "queue",
        b(),
        10_000,
    ));
    assert_eq!(out, json!({"topic": "orders", "bytes": 7}));
    let got = mosquitto_tool(
        &mq,
        "mosquitto_sub",
        &[
            "-c", "-i", "reader", "-q", "1", "-t", "orders", "-C", "1", "-W", "10",
        ],
    );
    assert_eq!(got.trim(), "hello 1");

    // The consumer's first call creates its session (nothing waiting yet); what is published
    // afterwards waits for it and is taken once.
    let consume = || {
        call(
            "queue_consume",
            json!({"consumerID": "c1"}),
            "queue",
            b(),
            10_000,
        )
    };
    assert_eq!(output(consume())["count"], 0);
    mosquitto_tool(
        &mq,
        "mosquitto_pub",
        &["-q", "1", "-t", "orders", "-m", "first"],
    );
    mosquitto_tool(
        &mq,
        "mosquitto_pub",
        &["-q", "1", "-t", "orders", "-m", "second"],
    );
    let out = output(consume());
    assert_eq!(out["messages"], json!(["first", "second"]), "{out}");
    assert_eq!(
        output(consume())["count"],
        0,
        "acknowledged messages are not delivered again"
    );

    // Wrong credentials: the broker's refusal, naming the service.
    let mut wrong = b();
    wrong.password = Some("nope".into());
    let (_, msg) = failure(call(
        "queue_produce",
        json!({"message": "x"}),
        "queue",
        wrong,
        10_000,
    ));
    assert!(
        msg.contains("service `queue`") && msg.contains("not authorised"),
        "{msg}"
    );
}

#[test]
fn upload_and_download_on_a_real_object_store() {
    let s3 = start_s3();
    let b = || ServiceBinding {
        user: Some(S3_ACCESS_KEY.into()),
        target: Some(S3_BUCKET.into()),
        ..binding("objects", "s3", &s3)
    };
    let out = output(call(
        "upload_file",
        json!({"file": "dir/hosts file", "data": "127.0.0.1 localhost\n"}),
        "s3",
        b(),
        20_000,
    ));
    assert_eq!(out["bytes"], 20);
    let body = boto3(
        &s3,
        &format!(
            "sys.stdout.write(s3.get_object(Bucket={S3_BUCKET:?}, Key='dir/hosts file')['Body'].read().decode())"
        ),
    );
    assert_eq!(body, "127.0.0.1 localhost");

    boto3(
        &s3,
        &format!("s3.put_object(Bucket={S3_BUCKET:?}, Key='sample.doc', Body=b'x' * 100000)"),
    );
    let out = output(call(
        "download_file",
        json!({"file": "sample.doc"}),
        "s3",
        b(),
        20_000,
    ));
    assert_eq!(out["bytes"], 100_000);
    use sha2::Digest;
    let want = microfaas::functions::hex(&sha2::Sha256::digest([b'x'; 100_000]));
    assert_eq!(out["sha256"], want);
    let (_, msg) = failure(call(
        "download_file",
        json!({"file": "missing"}),
        "s3",
        b(),
        20_000,
    ));
    assert!(
        msg.contains("service `objects`") && msg.contains("404") && msg.contains("NoSuchKey"),
        "{msg}"
    );
}

#[test]
fn a_down_service_fails_the_call_naming_it() {
    // Nothing listens on a port just released.
    let port = free_tcp_port();
    let b = ServiceBinding {
        name: "kv".into(),
        protocol: "redis".into(),
        address: format!("127.0.0.1:{port}"),
        ..Default::default()
    };
    let (kind, msg) = failure(call(
        "redis_insert",
        json!({"id": "a", "balance": 1}),
        "redis",
        b,
        5_000,
    ));
    assert_eq!(kind, ErrorKind::Error);
    assert!(
        msg.contains("service `kv`") && msg.contains("cannot connect"),
        "{msg}"
    );
}

#[test]
fn a_silent_service_fails_the_call_within_its_deadline() {
    // Accepts connections and never says a word: every protocol's first read must give up.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let keep = std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().take(4) {
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    for (handler, role, protocol, input) in [
        (
            "redis_insert",
            "redis",
            "redis",
            json!({"id": "a", "balance": 1}),
        ),
        ("psql_inventory", "postgres", "postgres", json!({})),
        ("queue_produce", "queue", "mqtt", json!({"message": "m"})),
        ("upload_file", "s3", "s3", json!({"file": "f", "data": "d"})),
    ] {
        let b = ServiceBinding {
            name: "mute".into(),
            protocol: protocol.into(),
            address: addr.clone(),
            user: Some("u".into()),
            password: Some("p".into()),
            target: Some("t".into()),
            ..Default::default()
        };
        // `call` asserts the agent did not overrun: the call ended before its deadline, as an
        // error of the function (not a timeout that would take the worker's failsafe path).
        let (kind, msg) = failure(call(handler, input, role, b, 1_500));
        assert_eq!(kind, ErrorKind::Error, "{handler}: {msg}");
        assert!(
            msg.contains("service `mute`") && msg.contains("deadline"),
            "{handler}: {msg}"
        );
    }
    drop(keep);
}

#[test]
fn a_call_without_its_service_fails_saying_which_is_missing() {
    let d = dispatch(&Invoke {
        id: "t".into(),
        function: "f".into(),
        runtime: "builtin".into(),
        handler: "psql_purchase".into(),
        input: json!({"id": 1}),
        deadline_ms: 1000,
        services: BTreeMap::new(),
        code: None,
    });
    let (_, msg) = failure(d.result.outcome);
    assert!(msg.contains("no `postgres` service"), "{msg}");
}
