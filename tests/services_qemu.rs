//! All 17 MicroFaaS functions and one user function (WebAssembly, examples/wasm-fn) on QEMU
//! workers through `microfaasctl apply` (examples/ci-services.yaml), the eight service-backed
//! ones against real servers started here, which the guests reach only through their
//! per-service guestfwd. Afterwards the data is read back with each server's own client.
//!
//! Artefacts as for tests/e2e_qemu.rs (`eval "$(hack/test-artifacts.sh)"`); servers from
//! hack/install-deps.sh. Nothing is skipped when something is missing: the test fails saying so.

mod support;

use support::services::*;
use support::testbed::{Env, ok};
use support::wasm_fn;

#[test]
fn all_seventeen_functions_and_a_user_function_run_on_qemu_workers_with_real_services() {
    let redis = start_redis();
    let pg = start_postgres();
    let s3 = start_s3();
    let mq = start_mosquitto();
    // What download_file's default inputs fetch (the original's sample documents).
    for key in [
        "file-sample_1MB.doc",
        "file_example_ODS_5000.ods",
        "file_example_PPT_1MB.ppt",
    ] {
        boto3(
            &s3,
            &format!("s3.put_object(Bucket={S3_BUCKET:?}, Key={key:?}, Body=b'd' * 4096)"),
        );
    }
    // A reader of the broker's own, subscribed before the run, sees what queue_produce sent.
    mosquitto_tool(
        &mq,
        "mosquitto_sub",
        &["-c", "-i", "reader", "-q", "1", "-t", "SampleTopic", "-E"],
    );

    let env = Env::new();
    for (name, server) in [
        ("redis-password", &redis),
        ("postgres-password", &pg),
        ("s3-secret", &s3),
        ("mqtt-password", &mq),
    ] {
        std::fs::copy(&server.password_file, env.dir.path().join(name)).expect("password file");
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ci-services.yaml"
    ))
    .expect("manifest")
    .replace("../image/vmlinux", &env.vmlinux.display().to_string())
    .replace(
        "../image/initramfs.cpio.gz",
        &env.initrd.display().to_string(),
    )
    .replace("127.0.0.1:6379", &redis.addr())
    .replace("127.0.0.1:5432", &pg.addr())
    .replace("127.0.0.1:9000", &s3.addr())
    .replace("127.0.0.1:1883", &mq.addr())
    .replace(
        "wasm-fn/target/wasm32-wasip1/release/wordfreq.wasm",
        &wasm_fn::wordfreq().display().to_string(),
    );
    let f = env.write("services.yaml", &text);
    ok(&env.ctl(&["apply", "-f", &f, "--timeout", "8m"]));

    let report = env.json(&["report", "services", "--format", "json"]);
    let csv = env.ctl(&["report", "services", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert_eq!(report["total"], 18, "{report}\n{csv}");
    assert_eq!(report["succeeded"], 18, "{report}\n{csv}");
    assert_eq!(report["functions"].as_object().map(|f| f.len()), Some(18));
    // The user function's recorded output is what wordfreq computes for its input.
    let want = serde_json::json!({"function": "wordfreq", "greeting": "hello from microfaas",
        "words": 8, "chars": 31, "top": [["the", 3], ["and", 2]]});
    let want =
        microfaas::store::invocations::output_digest(&serde_json::to_vec(&want).expect("json")).1;
    assert!(
        csv.lines()
            .any(|row| row.contains(",wordfreq,") && row.contains(&want)),
        "no wordfreq row with output digest {want}:\n{csv}"
    );
    assert!(env.qemus().is_empty(), "QEMU left running");

    // Redis: redis_insert's 7-digit account and redis_modify's spend are there.
    let keys = redis_cli(&redis, &["KEYS", "*"]);
    assert!(
        keys.lines()
            .any(|k| k.len() == 7 && k.bytes().all(|b| b.is_ascii_digit())),
        "{keys}"
    );
    assert!(
        keys.lines().any(|k| ["Jenny", "Jack", "Joe"].contains(&k)),
        "{keys}"
    );
    // PostgreSQL: one unit of one item was bought (60 items x 10 before).
    assert_eq!(
        psql_value(&pg, "shop", "SELECT sum(quantity) FROM inventory"),
        "599"
    );
    // S3: the three samples and the uploaded object.
    let count = boto3(
        &s3,
        &format!("print(s3.list_objects_v2(Bucket={S3_BUCKET:?})['KeyCount'])"),
    );
    assert_eq!(count, "4");
    // MQTT: the produced message reached the broker's own subscriber.
    let got = mosquitto_tool(
        &mq,
        "mosquitto_sub",
        &[
            "-c",
            "-i",
            "reader",
            "-q",
            "1",
            "-t",
            "SampleTopic",
            "-C",
            "1",
            "-W",
            "10",
        ],
    );
    assert!(got.contains("Hello World"), "{got:?}");

    // With its server gone, a service-backed call fails on the VM naming the service; it
    // does not hang the worker or the run.
    drop(redis);
    let down = env.write(
        "down.yaml",
        "apiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {name: down}\nspec:\n  \
         functions: [{function: redis-insert, count: 1}]\n  workers: {matchLabels: {pool: ci}}\n  \
         maxAttempts: 1\n",
    );
    // `apply` reports the failed workload with its exit status.
    let out = env.ctl(&["apply", "-f", &f, "-f", &down, "--timeout", "5m"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("workload/down Failed: 1/1 done, 1 failed"),
        "{stderr}"
    );
    let report = env.json(&["report", "down", "--format", "json"]);
    assert_eq!(report["failed"], 1, "{report}");
    let csv = env.ctl(&["report", "down", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.contains("service `accounts`"), "{csv}");
    assert!(env.qemus().is_empty(), "QEMU left running");
}
