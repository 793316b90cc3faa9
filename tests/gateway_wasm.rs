//! User functions through the OpenFaaS-compatible gateway: `faas-cli deploy --image
//! wasm:PATH` stores a wasm Function pinned to the module's digest, a call runs the example
//! module (examples/wasm-fn) on a real loopback agent, and bad modules or inputs are refused
//! or fail with their reason while the worker keeps serving.

mod support;

use microfaas::gateway::Credentials;
use microfaas::manifest::Kind;
use microfaas::store::Store;
use serde_json::{Value, json};
use sha2::Digest;
use std::path::PathBuf;
use support::host::{AgentProcs, Host, HostOptions, body_text, call, faas_cli_deploy, objects};
use support::wasm_fn;

fn sha256_hex(bytes: &[u8]) -> String {
    microfaas::functions::hex(&sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_wasm_and_invoke_it_through_the_gateway() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let yaml = "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  defaults: {bootTimeout: 20s, powerOnHoldoff: 0s, jobTimeout: 5s}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: lo-0}\nspec: {power: OnDemand, lifecycle: {mode: Warm}, vm: {kernel: /k}}\n";
    Store::open(&state)
        .expect("store")
        .apply(&objects(yaml), None, false, false)
        .expect("apply");
    // A copy of the module the test can change after the deploy.
    let module = dir.path().join("wordfreq.wasm");
    std::fs::copy(wasm_fn::wordfreq(), &module).expect("copy module");
    let bytes = std::fs::read(&module).expect("read module");
    let sha = sha256_hex(&bytes);

    let driver = AgentProcs::new(PathBuf::from(env!("CARGO_BIN_EXE_microfaas-agent")));
    let opts = HostOptions {
        agent_listen: "127.0.0.1:0".into(),
        token: "gateway-wasm-token".into(),
        credentials: Some(Credentials::new("admin", "pw")),
    };
    let h = Host::start(&state, driver, &opts).await;

    // Refused deploys name `image`, and store nothing.
    let missing = dir.path().join("missing.wasm");
    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"\x7fELF not a module").expect("write");
    let zeros = "0".repeat(64);
    for (image, why) in [
        (format!("wasm:{}", missing.display()), "does not exist"),
        (
            format!("wasm:{}", not_wasm.display()),
            "not a valid WebAssembly module",
        ),
        (
            format!("wasm:{}@sha256:{zeros}", module.display()),
            "not the pinned",
        ),
        (
            format!("exec:{}", module.display()),
            "not an ELF executable",
        ),
    ] {
        let r = call(
            &h,
            "/system/functions",
            &faas_cli_deploy("wordfreq", &image),
        )
        .await;
        assert_eq!(r.status, 400, "{image}: {}", body_text(&r));
        let text = body_text(&r);
        assert!(
            text.contains("image") && text.contains(why),
            "{image}: {text}"
        );
    }
    assert!(h.engine.get(Kind::Function, "wordfreq").is_none());

    // Deployed with its digest pinned, stored as a manifest would declare it.
    let image = format!("wasm:{}@sha256:{sha}", module.display());
    let r = call(
        &h,
        "/system/functions",
        &faas_cli_deploy("wordfreq", &image),
    )
    .await;
    assert_eq!(r.status, 202, "{}", body_text(&r));
    let stored = h.engine.get(Kind::Function, "wordfreq").expect("stored");
    assert_eq!(stored.spec["runtime"], "wasm");
    assert_eq!(stored.spec["module"], module.display().to_string());
    assert_eq!(stored.spec["sha256"], sha);
    assert_eq!(stored.spec["memory"], "64Mi");
    let listed = call(&h, "GET /system/function/wordfreq", &json!({})).await;
    assert_eq!(
        serde_json::from_slice::<Value>(&listed.body).expect("json")["image"],
        image
    );

    let text = json!({"text": "a rose is a rose is a rose", "top": 2});
    let r = call(&h, "/function/wordfreq", &text).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    let out: Value = serde_json::from_slice(&r.body).expect("json output");
    assert_eq!(
        out,
        json!({"function": "wordfreq", "greeting": null, "words": 8, "chars": 26,
               "top": [["a", 3], ["rose", 3]]})
    );
    let worker = r.header("x-microfaas-worker").map(str::to_string);

    // More memory than limits.memory (64Mi): a 500 that says so; then the same worker serves.
    let r = call(&h, "/function/wordfreq", &json!({"allocMiB": 200})).await;
    assert_eq!(r.status, 500, "{}", body_text(&r));
    assert!(body_text(&r).contains("memory limit"), "{}", body_text(&r));
    // An endless loop: bounded by the 5 s job timeout, a failure, not a hang.
    let r = call(&h, "/function/wordfreq", &json!({"spin": true})).await;
    assert!(r.status >= 500, "{}", body_text(&r));
    assert!(body_text(&r).contains("deadline"), "{}", body_text(&r));
    let r = call(&h, "/function/wordfreq", &text).await;
    assert_eq!(r.status, 200, "{}", body_text(&r));
    assert_eq!(r.header("x-microfaas-worker").map(str::to_string), worker);

    // The file changed after the deploy: the pin refuses it, nothing is shipped.
    std::fs::write(&module, [bytes.as_slice(), b"\0"].concat()).expect("tamper");
    let r = call(&h, "/function/wordfreq", &text).await;
    assert_eq!(r.status, 500, "{}", body_text(&r));
    assert!(body_text(&r).contains("sha256"), "{}", body_text(&r));
}
