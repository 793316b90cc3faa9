//! One test per validation rule: a broken manifest, and the exact line and column the error
//! must point at. A rule that stops firing, or fires at the wrong place, fails here.

use microfaas::manifest::{Diagnostic, load_and_validate, validate::Options};
use std::path::PathBuf;

// TLS certificates for the etcd TLS rules, made with openssl (a file of its own: the rest of
// tests/support is not needed here).
#[allow(dead_code)]
#[path = "support/etcd.rs"]
mod etcd;

const HEAD: &str = "apiVersion: microfaas.dev/v1alpha1\n";

fn check(files: &[(&str, &str)], fs_checks: bool) -> (tempfile::TempDir, Vec<Diagnostic>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths: Vec<PathBuf> = Vec::new();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write manifest");
        paths.push(p);
    }
    let loaded = load_and_validate(&paths, Options { fs_checks });
    (dir, loaded.diagnostics)
}

/// Asserts exactly one error whose message contains `needle`, at `line:col` of `file`.
#[track_caller]
fn expect_error(text: &str, line: u32, col: u32, needle: &str) {
    let (_dir, diags) = check(&[("m.yaml", text)], false);
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {diags:#?}");
    let e = errors[0];
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
    assert_eq!(
        (e.pos.line, e.pos.col),
        (line, col),
        "wrong position for {:?}",
        e.message
    );
    assert!(e.file.ends_with("m.yaml"), "{}", e.file);
    assert!(e.to_string().contains(&format!("m.yaml:{line}:{col}")));
}

const VM_WORKER: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata:
  name: vm-0
spec:
  vm:
    kernel: /k
";

#[test]
fn reference_manifest_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let loaded = load_and_validate(
        &[PathBuf::from(root).join("examples/reference.yaml")],
        Options { fs_checks: false },
    );
    let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // 12 documents + 4 workers from the WorkerSet
    assert_eq!(loaded.resources.len(), 16);
}

#[test]
fn yaml_syntax() {
    expect_error(
        &format!("{HEAD}kind: Worker\nmetadata: {{name: [a\n"),
        3,
        18,
        "unclosed bracket",
    );
}

#[test]
fn wrong_api_version() {
    expect_error(
        "apiVersion: v1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: exec, command: [x]}\n",
        1,
        13,
        "unsupported apiVersion",
    );
}

#[test]
fn missing_name() {
    expect_error(
        &format!(
            "{HEAD}kind: Function\nmetadata: {{labels: {{a: b}}}}\nspec: {{runtime: exec, command: [x]}}\n"
        ),
        3,
        11,
        "missing `metadata.name`",
    );
}

#[test]
fn invalid_name() {
    expect_error(
        &format!(
            "{HEAD}kind: Function\nmetadata:\n  name: My_Fn\nspec: {{runtime: exec, command: [x]}}\n"
        ),
        4,
        9,
        "invalid name `My_Fn`",
    );
}

#[test]
fn unknown_kind_suggests() {
    let text = format!("{HEAD}kind: Wrokload\nmetadata: {{name: a}}\nspec: {{}}\n");
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (2, 7));
    assert_eq!(diags[0].help.as_deref(), Some("did you mean `Workload`?"));
}

#[test]
fn unknown_field_suggests() {
    let text = VM_WORKER.replace("    kernel: /k\n", "    kernel: /k\n    memroy: 1Gi\n");
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (8, 5));
    assert!(diags[0].message.contains("unknown field `memroy`"));
    assert_eq!(
        diags[0].help.as_deref(),
        Some("did you mean the field `memory`?")
    );
}

#[test]
fn unknown_enum_value_suggests() {
    let text = VM_WORKER.replace("spec:\n", "spec:\n  power: on\n");
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (6, 10));
    assert_eq!(
        diags[0].help.as_deref(),
        Some("did you mean the value `On`?")
    );
}

#[test]
fn duplicate_across_files() {
    let (_d, diags) = check(
        &[
            ("a.yaml", VM_WORKER),
            ("b.yaml", &format!("# c\n{VM_WORKER}")),
        ],
        false,
    );
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert!(d.file.ends_with("b.yaml") && d.message.contains("duplicate Worker `vm-0`"));
    assert_eq!((d.pos.line, d.pos.col), (5, 9));
    assert!(
        d.help.as_deref().is_some_and(|h| h.contains("a.yaml:4:9")),
        "{d:?}"
    );
}

#[test]
fn workerset_names_collide_with_workers() {
    let set = format!(
        "{HEAD}kind: WorkerSet\nmetadata: {{name: vm}}\nspec:\n  replicas: 2\n  template:\n    spec:\n      vm: {{kernel: /k}}\n"
    );
    let (_d, diags) = check(&[("a.yaml", &format!("{VM_WORKER}---\n{set}"))], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].message.contains("made by WorkerSet `vm`"),
        "{diags:?}"
    );
}

#[test]
fn board_or_vm_exactly_one() {
    expect_error(
        &format!("{HEAD}kind: Worker\nmetadata: {{name: w}}\nspec:\n  power: On\n"),
        5,
        3,
        "exactly one of `board`, `vm`",
    );
    expect_error(
        &format!(
            "{HEAD}kind: Worker\nmetadata: {{name: w}}\nspec:\n  board: {{powerButton: {{pin: P9_12}}}}\n  vm: {{kernel: /k}}\n"
        ),
        6,
        3,
        "not several",
    );
}

#[test]
fn unknown_header_pin() {
    let text = format!(
        "{HEAD}kind: Worker\nmetadata: {{name: w}}\nspec:\n  board:\n    powerButton:\n      pin: P9_99\n"
    );
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (7, 12));
    assert!(diags[0].message.contains("unknown header pin `P9_99`"));
}

#[test]
fn shared_gpio_line_after_resolving_pins() {
    let a = format!(
        "{HEAD}kind: Worker\nmetadata: {{name: a}}\nspec:\n  board:\n    powerButton: {{pin: P9_12}}\n"
    );
    let b = format!(
        "{HEAD}kind: Worker\nmetadata: {{name: b}}\nspec:\n  board:\n    powerButton:\n      chip: /dev/gpiochip1\n      line: 28\n"
    );
    let (_d, diags) = check(&[("a.yaml", &a), ("b.yaml", &b)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(diags[0].file.ends_with("b.yaml"));
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (7, 7));
    assert!(
        diags[0]
            .message
            .contains("gpiochip1:28, already used by worker `a`")
    );
}

#[test]
fn shared_switch_port() {
    let sw = format!(
        "{HEAD}kind: Switch\nmetadata: {{name: tor}}\nspec:\n  address: 127.0.0.1\n  snmp: {{version: v2c, communityEnv: C}}\n"
    );
    let w = |n: &str, pin: &str| {
        format!(
            "{HEAD}kind: Worker\nmetadata: {{name: {n}}}\nspec:\n  board:\n    powerButton: {{pin: {pin}}}\n    network:\n      switch: tor\n      port: \"3\"\n"
        )
    };
    let text = format!("{sw}---\n{}---\n{}", w("a", "P9_12"), w("b", "P9_15"));
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0]
            .message
            .contains("port `3` of switch `tor`, already used by worker `a`")
    );
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (26, 13));
}

#[test]
fn dangling_switch_reference() {
    expect_error(
        &format!(
            "{HEAD}kind: Worker\nmetadata: {{name: w}}\nspec:\n  board:\n    powerButton: {{pin: P9_12}}\n    network: {{switch: tor-9, port: \"1\"}}\n"
        ),
        7,
        23,
        "Switch `tor-9` is not declared",
    );
}

#[test]
fn dangling_function_reference_and_empty_selector_warning() {
    let text = format!(
        "{VM_WORKER}---\n{HEAD}kind: Workload\nmetadata: {{name: w}}\nspec:\n  functions:\n    - function: nope\n      count: 3\n  workers: {{matchLabels: {{rack: z}}}}\n"
    );
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 2, "{diags:#?}");
    let err = diags.iter().find(|d| d.is_error()).expect("an error");
    assert!(err.message.contains("Function `nope` is not declared"));
    assert_eq!((err.pos.line, err.pos.col), (14, 17));
    let warn = diags.iter().find(|d| !d.is_error()).expect("a warning");
    assert!(warn.message.contains("selects no declared worker"));
    assert_eq!((warn.pos.line, warn.pos.col), (16, 12));
}

#[test]
fn meter_selecting_nothing_is_a_warning() {
    let text = format!(
        "{VM_WORKER}---\n{HEAD}kind: PowerMeter\nmetadata: {{name: m}}\nspec:\n  model: {{vm: {{idle: 1.0}}}}\n  covers: {{matchLabels: {{rack: q}}}}\n"
    );
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(!diags[0].is_error());
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (14, 11));
}

#[test]
fn bad_duration_and_size() {
    expect_error(
        &format!(
            "{HEAD}kind: Function\nmetadata: {{name: f}}\nspec:\n  runtime: exec\n  command: [x]\n  timeout: 10 sec\n"
        ),
        7,
        12,
        "invalid duration `10 sec`",
    );
    expect_error(
        &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    memory: 1.5G\n"),
        8,
        13,
        "invalid size `1.5G`",
    );
}

#[test]
fn zero_and_negative_counts() {
    expect_error(
        &format!(
            "{HEAD}kind: WorkerSet\nmetadata: {{name: s}}\nspec:\n  replicas: 0\n  template:\n    spec:\n      vm: {{kernel: /k}}\n"
        ),
        5,
        13,
        "replicas must be at least 1, got 0",
    );
    expect_error(
        &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    cpus: -2\n"),
        8,
        11,
        "cpus must be at least 1, got -2",
    );
}

#[test]
fn vm_paths_must_exist_unless_skipped() {
    let text = VM_WORKER.replace("/k", "/definitely/not/here/bzImage");
    let (_d, diags) = check(&[("m.yaml", &text)], true);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (7, 13));
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn relative_kernel_path_is_relative_to_the_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bzImage"), b"k").expect("write");
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, VM_WORKER.replace("/k", "bzImage")).expect("write");
    let loaded = load_and_validate(&[m], Options { fs_checks: true });
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let spec = loaded.resources[0].spec.to_json();
    assert_eq!(
        spec["vm"]["kernel"],
        dir.path().join("bzImage").display().to_string()
    );
}

#[test]
fn inline_secrets_are_refused() {
    expect_error(
        &format!(
            "{HEAD}kind: Switch\nmetadata: {{name: s}}\nspec:\n  address: 10.0.0.1\n  snmp:\n    version: v2c\n    community: public\n"
        ),
        8,
        5,
        "`community` must not be written inline",
    );
}

#[test]
fn all_errors_are_reported_not_only_the_first() {
    let text = format!(
        "{HEAD}kind: Worker\nmetadata: {{name: A}}\nspec: {{vm: {{kernel: /k, memory: lots, cpus: 0}}}}\n---\n{HEAD}kind: Nope\nmetadata: {{name: b}}\nspec: {{}}\n"
    );
    let (_d, diags) = check(&[("m.yaml", &text)], false);
    let lines: Vec<u32> = diags.iter().map(|d| d.pos.line).collect();
    assert_eq!(diags.len(), 4, "{diags:#?}");
    assert_eq!(lines, vec![3, 4, 4, 7]);
}

#[test]
fn workload_named_gateway_is_reserved() {
    // The gateway records its calls as workload `gateway`: a Workload of that name would mix
    // its runs with the gateway's. The error points at the name.
    let fun = "kind: Function\nmetadata: {name: f}\nspec: {runtime: builtin, handler: cascading_sha256}\n";
    expect_error(
        &format!(
            "{VM_WORKER}---\n{HEAD}{fun}---\n{HEAD}kind: Workload\nmetadata:\n  name: gateway\nspec:\n  functions: [{{function: f, count: 1}}]\n"
        ),
        17,
        9,
        "the workload name `gateway` is reserved",
    );
    // Any other name (and a Function named `gateway`) is fine.
    let (_d, diags) = check(
        &[(
            "m.yaml",
            &format!(
                "{VM_WORKER}---\n{HEAD}{}---\n{HEAD}kind: Workload\nmetadata:\n  name: gateway-load\nspec:\n  functions: [{{function: gateway, count: 1}}]\n",
                fun.replace("name: f}", "name: gateway}")
            ),
        )],
        false,
    );
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
}

const SERVICES: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {name: c}
spec:
  services:
    kv:
      protocol: redis
      endpoint: 127.0.0.1:6379
      passwordFile: missing-pw
      functions: [a]
";

fn service_fn(name: &str, handler: &str, services: &str) -> String {
    format!(
        "---\n{HEAD}kind: Function\nmetadata: {{name: {name}}}\nspec:\n  runtime: builtin\n  handler: {handler}\n  services: {services}\n"
    )
}

#[test]
fn unknown_service_reference() {
    let text = format!(
        "{SERVICES}{}",
        service_fn("a", "redis_insert", "{redis: kvv}")
    );
    expect_error(&text, 18, 21, "service `kvv` is not declared");
    let (_dir, diags) = check(&[("m.yaml", &text)], false);
    assert_eq!(diags[0].help.as_deref(), Some("did you mean `kv`?"));
}

#[test]
fn service_backed_builtin_without_its_service() {
    let text = format!("{SERVICES}{}", service_fn("a", "redis_insert", "{}"));
    expect_error(
        &text,
        17,
        12,
        "builtin `redis_insert` needs a `redis` service",
    );
}

#[test]
fn service_of_the_wrong_protocol() {
    let text = format!(
        "{SERVICES}{}",
        service_fn("a", "psql_purchase", "{postgres: kv}")
    );
    expect_error(
        &text,
        18,
        24,
        "service `kv` speaks redis, but the `postgres` role needs postgres",
    );
}

#[test]
fn service_not_allowed_for_the_function() {
    let text = format!(
        "{SERVICES}{}",
        service_fn("b", "redis_modify", "{redis: kv}")
    );
    expect_error(&text, 18, 21, "service `kv` does not allow Function `b`");
}

#[test]
fn service_password_file_missing() {
    let text = format!(
        "{SERVICES}{}",
        service_fn("a", "redis_insert", "{redis: kv}")
    );
    let (dir, diags) = check(&[("m.yaml", &text)], true);
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{diags:#?}");
    // Relative to the manifest, and reported where it is named.
    let want = dir.path().join("missing-pw");
    assert!(
        errors[0].message.contains(&format!(
            "password file `{}` does not exist",
            want.display()
        )),
        "{}",
        errors[0].message
    );
    assert_eq!((errors[0].pos.line, errors[0].pos.col), (9, 21));
    // Present: valid.
    std::fs::write(&want, "pw\n").expect("write");
    let loaded = load_and_validate(&[dir.path().join("m.yaml")], Options { fs_checks: true });
    assert!(
        !loaded.diagnostics.iter().any(|d| d.is_error()),
        "{:#?}",
        loaded.diagnostics
    );
}

#[test]
fn s3_service_needs_bucket_and_keys() {
    let text = "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {name: c}
spec:
  services:
    objects: {protocol: s3, endpoint: 127.0.0.1:9000, bucket: b}
";
    expect_error(
        text,
        6,
        14,
        "an s3 service needs `user` (the access key id)",
    );
}

#[test]
fn v1_worker_needs_an_ipv4_address() {
    let head = "apiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: b3}\nspec:\n  protocol: microfaas-v1\n  board:\n    powerButton: {pin: P9_12}\n";
    expect_error(head, 7, 5, "needs `board.network.address`");
    expect_error(
        &format!("{head}    network:\n      address: bbb-3.local\n"),
        9,
        16,
        "IPv4 source address",
    );
}

#[test]
fn v1_worker_is_a_oneshot_board() {
    expect_error(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: b3}\nspec:\n  protocol: microfaas-v1\n  lifecycle: {mode: Warm}\n  board:\n    powerButton: {pin: P9_12}\n    network: {address: 10.0.0.3}\n",
        6,
        21,
        "must be OneShot",
    );
    expect_error(
        "apiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {name: v}\nspec:\n  protocol: microfaas-v1\n  vm: {kernel: /k}\n",
        5,
        13,
        "VMs boot our agent",
    );
}

#[test]
fn v1_workers_have_distinct_addresses() {
    let w = |name: &str, pin: &str| {
        format!(
            "apiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: {name}}}\nspec:\n  protocol: microfaas-v1\n  board:\n    powerButton: {{pin: {pin}}}\n    network:\n      address: 10.0.0.3\n"
        )
    };
    expect_error(
        &format!("{}---\n{}", w("a", "P9_12"), w("b", "P9_15")),
        19,
        16,
        "already used by worker `a`",
    );
}

#[test]
fn snapshots_are_for_x86_64_vms() {
    expect_error(
        &VM_WORKER.replace(
            "kernel: /k\n",
            "kernel: /k\n    arch: armv7\n    start: snapshot\n",
        ),
        9,
        12,
        "`start: snapshot` is for x86_64 VMs, not armv7",
    );
    expect_error(
        &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    start: resume\n"),
        8,
        12,
        "resume",
    );
}

#[test]
fn vm_machine_must_match_its_architecture() {
    expect_error(
        &VM_WORKER.replace(
            "kernel: /k\n",
            "kernel: /k\n    arch: armv7\n    machine: microvm\n",
        ),
        9,
        14,
        "machine `microvm` does not run armv7 guests",
    );
    expect_error(
        &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    machine: virt\n"),
        8,
        14,
        "machine `virt` does not run x86_64 guests",
    );
    // armv7 alone picks virt; an unknown architecture is refused by name.
    let (_d, diags) = check(
        &[(
            "m.yaml",
            &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    arch: armv7\n"),
        )],
        false,
    );
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    expect_error(
        &VM_WORKER.replace("kernel: /k\n", "kernel: /k\n    arch: arm64\n"),
        8,
        11,
        "arm64",
    );
}

/// A wasm Function with `module: fn.wasm` at 6:11 and, when given, `sha256` at 7:11.
fn wasm_function(sha256: Option<&str>) -> String {
    let pin = sha256.map_or(String::new(), |s| format!("  sha256: {s}\n"));
    format!(
        "{HEAD}kind: Function\nmetadata: {{name: f}}\nspec:\n  runtime: wasm\n  module: fn.wasm\n{pin}  memory: 16Mi\n"
    )
}

/// Validates `manifest` (with file checks) beside a `fn.wasm` holding `module`, if any; the
/// errors as (line, col, message).
fn wasm_errors(manifest: &str, module: Option<&[u8]>) -> Vec<(u32, u32, String)> {
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(bytes) = module {
        std::fs::write(dir.path().join("fn.wasm"), bytes).expect("write module");
    }
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, manifest).expect("write manifest");
    let loaded = load_and_validate(&[m], Options { fs_checks: true });
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            assert!(
                d.to_string()
                    .contains(&format!("m.yaml:{}:{}", d.pos.line, d.pos.col))
            );
            (d.pos.line, d.pos.col, d.message.clone())
        })
        .collect()
}

#[track_caller]
fn one_error_at(errors: &[(u32, u32, String)], line: u32, col: u32, needle: &str) {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let (l, c, msg) = &errors[0];
    assert_eq!((*l, *c), (line, col), "{msg}");
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

#[test]
fn wasm_module_is_checked_relative_to_the_manifest() {
    let module =
        wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
            .expect("wat");
    let sha = microfaas::functions::hex(&<sha2::Sha256 as sha2::Digest>::digest(&module));
    assert_eq!(wasm_errors(&wasm_function(None), Some(&module)), []);
    assert_eq!(wasm_errors(&wasm_function(Some(&sha)), Some(&module)), []);

    one_error_at(
        &wasm_errors(&wasm_function(None), None),
        6,
        11,
        "does not exist",
    );
    let wrong = "ab".repeat(32);
    one_error_at(
        &wasm_errors(&wasm_function(Some(&wrong)), Some(&module)),
        7,
        11,
        &format!("has sha256 {sha}, not the pinned {wrong}"),
    );
    one_error_at(
        &wasm_errors(&wasm_function(None), Some(b"\x7fELF")),
        6,
        11,
        "not a valid WebAssembly module",
    );
    // exec: the module must be an ELF executable; which machine is the worker's to judge.
    let exec = wasm_function(None).replace("runtime: wasm", "runtime: exec");
    one_error_at(
        &wasm_errors(&exec, Some(&module)),
        6,
        11,
        "not an ELF executable",
    );
    assert_eq!(wasm_errors(&exec, Some(b"\x7fELF\x02\x01\x01")), []);
}

#[test]
fn wasm_pin_and_fuel_are_checked_without_files() {
    expect_error(&wasm_function(Some("abc")), 7, 11, "not a sha256");
    expect_error(
        &format!(
            "{HEAD}kind: Function\nmetadata: {{name: f}}\nspec:\n  runtime: wasm\n  module: fn.wasm\n  fuel: 0\n"
        ),
        7,
        9,
        "fuel must be at least 1",
    );
    expect_error(
        &format!("{HEAD}kind: Function\nmetadata: {{name: f}}\nspec:\n  runtime: wasm\n"),
        5,
        3,
        "needs `module`",
    );
}

/// A worker on tap networking, its `network` as given (flow style, on line 7).
fn tap_worker(name: &str, network: &str) -> String {
    format!(
        "{HEAD}kind: Worker\nmetadata: {{name: {name}}}\nspec:\n  vm:\n    kernel: /k\n    network: {network}\n"
    )
}

#[test]
fn tap_networking_needs_a_bridge_and_an_address() {
    expect_error(
        &tap_worker("t", "{mode: tap, address: 10.0.0.2/24}"),
        7,
        14,
        "needs `bridge`",
    );
    expect_error(
        &tap_worker("t", "{mode: tap, bridge: br0}"),
        7,
        14,
        "needs the guest's `address`",
    );
    // An `ip=` of the user's own is the other way to give the agent its address.
    let own = format!(
        "{HEAD}kind: Worker\nmetadata: {{name: t}}\nspec:\n  vm:\n    kernel: /k\n    cmdline: ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off\n    network: {{mode: tap, bridge: br0}}\n"
    );
    let (_d, diags) = check(&[("m.yaml", &own)], false);
    assert!(diags.is_empty(), "{diags:#?}");
}

#[test]
fn tap_addresses_must_be_hosts_with_a_prefix() {
    expect_error(
        &tap_worker("t", "{mode: tap, bridge: br0, address: 10.0.0.2}"),
        7,
        48,
        "expected A.B.C.D/PREFIX",
    );
    expect_error(
        &tap_worker("t", "{mode: tap, bridge: br0, address: 10.0.0.255/24}"),
        7,
        48,
        "broadcast",
    );
    expect_error(
        &tap_worker(
            "t",
            "{mode: tap, bridge: br0, address: 10.0.0.2/24, gateway: x}",
        ),
        7,
        70,
        "not an IPv4 address",
    );
    expect_error(
        &tap_worker("t", "{address: 10.0.0.2/24}"),
        7,
        15,
        "is for tap networking",
    );
}

#[test]
fn tap_addresses_are_unique_and_replicas_fit() {
    let two = format!(
        "{}---\n{}",
        tap_worker("a", "{mode: tap, bridge: br0, address: 10.0.0.2/24}"),
        tap_worker("b", "{mode: tap, bridge: br0, address: 10.0.0.2/24}")
    );
    let (_d, diags) = check(&[("m.yaml", &two)], false);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].message.contains("already used by worker `a`"),
        "{diags:?}"
    );
    assert_eq!((diags[0].pos.line, diags[0].pos.col), (15, 48));
    // 10.0.0.250 + 5 is the broadcast address: the sixth replica has none.
    expect_error(
        &format!(
            "{HEAD}kind: WorkerSet\nmetadata: {{name: s}}\nspec:\n  replicas: 6\n  template:\n    spec:\n      vm:\n        kernel: /k\n        network: {{mode: tap, bridge: br0, address: 10.0.0.250/24}}\n"
        ),
        10,
        52,
        "6 replicas counting up from `10.0.0.250/24` do not fit",
    );
}

#[test]
fn tap_vms_need_an_advertised_orchestrator() {
    let text = format!(
        "{HEAD}kind: Cluster\nmetadata: {{name: c}}\nspec: {{}}\n---\n{}",
        tap_worker("t", "{mode: tap, bridge: br0, address: 10.0.0.2/24}")
    );
    expect_error(&text, 12, 14, "no `orchestrator.advertise`");
}

#[test]
fn tap_replicas_count_up_from_the_template_address() {
    let set = format!(
        "{HEAD}kind: WorkerSet\nmetadata: {{name: s}}\nspec:\n  replicas: 3\n  template:\n    spec:\n      vm:\n        kernel: /k\n        network: {{mode: tap, bridge: br0, address: 10.0.0.10/24}}\n"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("s.yaml");
    std::fs::write(&p, set).expect("write");
    let loaded = load_and_validate(&[p], Options { fs_checks: false });
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let addresses: Vec<(String, String)> = loaded
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            microfaas::manifest::Spec::Worker(w) => Some((
                r.name().to_string(),
                w.vm.as_ref()?.network.address.clone()?,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        addresses,
        [
            ("s-0".to_string(), "10.0.0.10/24".to_string()),
            ("s-1".to_string(), "10.0.0.11/24".to_string()),
            ("s-2".to_string(), "10.0.0.12/24".to_string()),
        ]
    );
}

#[test]
fn cluster_store_etcd_endpoints_prefix_and_unknown_fields() {
    let cluster = |store: &str| {
        format!("{HEAD}kind: Cluster\nmetadata: {{name: c}}\nspec:\n  store:\n    etcd:\n{store}")
    };
    // valid: three members, the prefix defaulted
    let (_d, diags) = check(
        &[(
            "m.yaml",
            &cluster("      endpoints: [10.0.0.1:2379, \"http://h2:2379\", h3:2379]\n"),
        )],
        false,
    );
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    expect_error(
        &cluster("      endpoints: [h1:2379, h2]\n"),
        7,
        28,
        "invalid address `h2`",
    );
    expect_error(&cluster("      endpoints: []\n"), 7, 18, "no endpoint");
    expect_error(
        &cluster("      endpoints: [h1:2379]\n      prefix: \"a b\"\n"),
        8,
        15,
        "invalid prefix",
    );
    // an https:// endpoint needs `tls`, and `tls` takes no http:// endpoint
    expect_error(
        &cluster("      endpoints: [\"https://h1:2379\"]\n"),
        7,
        19,
        "is a TLS endpoint: set `tls`",
    );
    expect_error(
        &cluster("      endpoints: [\"http://h1:2379\"]\n      tls: {ca: /x}\n"),
        7,
        19,
        "plain-HTTP endpoint, but `tls` is set",
    );
    // unknown keys under tls are refused, not ignored
    expect_error(
        &cluster("      endpoints: [h1:2379]\n      tls: {ca: /x, insecure: true}\n"),
        8,
        21,
        "insecure",
    );
}

/// `Cluster.spec.store.etcd.tls`: files relative to the manifest, read as the store reads
/// them; each error points at the key of the file at fault.
#[test]
fn cluster_store_etcd_tls_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = etcd::Pki::make(dir.path(), true);
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").expect("write");
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n",
    )
    .expect("write");
    let manifest = |tls: &str| {
        format!(
            "{HEAD}kind: Cluster\nmetadata: {{name: c}}\nspec:\n  store:\n    etcd:\n      endpoints: [\"https://127.0.0.1:2379\"]\n      tls:\n{tls}"
        )
    };
    // Written beside the PEM files, so the relative names below are relative to it.
    let run = |tls: &str| {
        let m = dir.path().join("m.yaml");
        std::fs::write(&m, manifest(tls)).expect("write manifest");
        load_and_validate(&[m], Options { fs_checks: true })
    };
    let good = run("        ca: ca.pem\n        cert: client.pem\n        key: client.key\n");
    assert!(
        good.diagnostics.iter().all(|d| !d.is_error()),
        "{:#?}",
        good.diagnostics
    );
    // stored absolute, resolved against the manifest's directory
    let spec = good.resources[0].spec.to_json();
    assert_eq!(
        spec["store"]["etcd"]["tls"]["ca"],
        pki.ca.display().to_string(),
        "{spec}"
    );
    let one_error = |tls: &str, line: u32, col: u32, wants: &[&str]| {
        let loaded = run(tls);
        let errors: Vec<&Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{tls}: {:#?}", loaded.diagnostics);
        let text = errors[0].to_string();
        assert!(
            text.contains(&format!("m.yaml:{line}:{col}")),
            "{tls}: {text}"
        );
        for w in wants {
            assert!(text.contains(w), "{tls}: {w:?} missing in {text}");
        }
    };
    one_error(
        "        ca: missing.pem\n",
        9,
        13,
        &["ca file", "missing.pem", "does not exist"],
    );
    one_error(
        "        ca: garbage.pem\n",
        9,
        13,
        &["garbage.pem", "holds no PEM certificate"],
    );
    one_error(
        "        ca: broken.pem\n",
        9,
        13,
        &["broken.pem", "is not valid PEM"],
    );
    one_error(
        "        ca: ca.pem\n        cert: client.pem\n",
        10,
        9,
        &["`cert` without `key`"],
    );
    one_error(
        "        ca: ca.pem\n        key: client.key\n",
        10,
        9,
        &["`key` without `cert`"],
    );
    one_error(
        "        ca: ca.pem\n        cert: client.pem\n        key: other-client.key\n",
        11,
        14,
        &["key file", "is not the private key of the certificate"],
    );
    one_error(
        "        ca: ca.pem\n        cert: client.key\n        key: client.key\n",
        10,
        15,
        &["cert file", "holds no PEM certificate"],
    );
    one_error(
        "        ca: ca.pem\n        cert: client.pem\n        key: client.pem\n",
        11,
        14,
        &["key file", "holds no PEM private key"],
    );
    // without file checks only the structure is checked
    let m = dir.path().join("m.yaml");
    std::fs::write(&m, manifest("        ca: missing.pem\n")).expect("write");
    let loaded = load_and_validate(&[m], Options { fs_checks: false });
    assert!(loaded.diagnostics.iter().all(|d| !d.is_error()));
}

#[test]
fn orchestrator_names_are_checked_where_they_are_written() {
    // VM_WORKER is 7 lines: `orchestrators` is on line 8.
    expect_error(
        &format!("{VM_WORKER}  orchestrators: [rack-a, Rack_B]\n"),
        8,
        27,
        "orchestrator name `Rack_B`",
    );
    expect_error(
        &format!("{VM_WORKER}  orchestrators:\n    - rack-a\n    - rack-a\n"),
        10,
        7,
        "`rack-a` is listed twice",
    );
    // In a WorkerSet's template too.
    expect_error(
        &format!(
            "{HEAD}kind: WorkerSet\nmetadata: {{name: s}}\nspec:\n  replicas: 2\n  template:\n    spec:\n      vm: {{kernel: /k}}\n      orchestrators: [\"\"]\n"
        ),
        9,
        23,
        "must not be empty",
    );
}
