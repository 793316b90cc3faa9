//! The CLI contract, end to end through the real `microfaasctl` binary and a temporary state dir.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn ctl(state: &Path, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_microfaasctl"));
    // These tests are about the store and the CLI contract; convergence (which runs the engine
    // and binds the agent port) is tested with real QEMU in e2e_qemu.rs.
    let mut args = args.to_vec();
    if args.first() == Some(&"apply") && !args.contains(&"--dry-run") {
        args.push("--no-wait");
    }
    cmd.args(&args)
        .env("MICROFAAS_STATE_DIR", state)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run microfaasctl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn reference() -> String {
    format!("{}/examples/reference.yaml", env!("CARGO_MANIFEST_DIR"))
}

const TWO_VMS: &str = "apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: vm-0, labels: {rack: a}}
spec: {vm: {kernel: /k, memory: 256Mi}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: vm-1, labels: {rack: b}}
spec: {vm: {kernel: /k}}
";

#[test]
fn validate_exit_codes_and_positions() {
    let state = tempfile::tempdir().expect("tmp");
    let ok = ctl(
        state.path(),
        &["validate", "-f", &reference(), "--no-fs-checks"],
        None,
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stdout.contains("valid: 12 objects"), "{}", ok.stdout);

    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, TWO_VMS.replace("memory: 256Mi", "memory: huge")).expect("write");
    let r = ctl(
        state.path(),
        &[
            "validate",
            "-f",
            bad.to_str().expect("utf8"),
            "--no-fs-checks",
        ],
        None,
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(&format!(
            "{}:4:33: error: invalid size `huge`",
            bad.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn apply_get_diff_describe_delete() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("vms.yaml");
    std::fs::write(&f, TWO_VMS).expect("write");
    let f = f.to_str().expect("utf8");

    let d = ctl(s, &["apply", "-f", f, "--no-fs-checks", "--dry-run"], None);
    assert_eq!(
        d.stdout,
        "worker/vm-0 created (dry run)\nworker/vm-1 created (dry run)\n"
    );
    let g = ctl(s, &["get", "workers", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&g.stdout).expect("json");
    assert_eq!(
        v["items"].as_array().map(Vec::len),
        Some(0),
        "dry run stored something"
    );

    let a = ctl(s, &["apply", "-f", f, "--no-fs-checks"], None);
    assert_eq!(
        (a.code, a.stdout.as_str()),
        (0, "worker/vm-0 created\nworker/vm-1 created\n"),
        "{}",
        a.stderr
    );
    let a = ctl(s, &["apply", "-f", f, "--no-fs-checks"], None);
    assert_eq!(a.stdout, "worker/vm-0 unchanged\nworker/vm-1 unchanged\n");
    let same = ctl(s, &["diff", "-f", f, "--no-fs-checks"], None);
    assert_eq!((same.code, same.stdout.as_str()), (0, ""));

    // a spec change bumps the generation; a label change configures without bumping it
    std::fs::write(
        f,
        TWO_VMS
            .replace("256Mi", "512Mi")
            .replace("rack: b", "rack: c"),
    )
    .expect("write");
    let diff = ctl(s, &["diff", "-f", f, "--no-fs-checks"], None);
    assert_eq!(diff.code, 1);
    assert!(
        diff.stdout.contains("--- live/worker/vm-0") && diff.stdout.contains("+    memory: 512Mi"),
        "{}",
        diff.stdout
    );
    let a = ctl(s, &["apply", "-f", f, "--no-fs-checks"], None);
    assert_eq!(a.stdout, "worker/vm-0 configured\nworker/vm-1 configured\n");
    let g = ctl(s, &["get", "wk", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&g.stdout).expect("json");
    assert_eq!(v["kind"], "List");
    let items = v["items"].as_array().expect("items");
    assert_eq!(items[0]["metadata"]["generation"], 2);
    assert_eq!(items[1]["metadata"]["generation"], 1);
    assert_eq!(items[0]["apiVersion"], "microfaas.dev/v1alpha1");
    assert_eq!(items[0]["status"]["observedGeneration"], 0);
    assert!(items[0]["status"]["conditions"].is_array());
    assert!(items[0]["status"]["phase"].is_string());

    let one = ctl(s, &["get", "worker", "vm-1", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&one.stdout).expect("json");
    assert_eq!(v["kind"], "Worker");
    assert_eq!(v["metadata"]["labels"]["rack"], "c");

    let sel = ctl(s, &["get", "workers", "-l", "rack=c"], None);
    assert!(
        sel.stdout.contains("vm-1") && !sel.stdout.contains("vm-0"),
        "{}",
        sel.stdout
    );
    let yaml = ctl(s, &["get", "workers", "-o", "yaml"], None);
    assert!(yaml.stdout.contains("kind: List"), "{}", yaml.stdout);

    let desc = ctl(s, &["describe", "worker", "vm-0"], None);
    assert_eq!(desc.code, 0);
    for want in [
        "Name:         vm-0",
        "Generation:   2",
        "memory: 512Mi",
        "Conditions:",
        "Events:",
    ] {
        assert!(
            desc.stdout.contains(want),
            "missing {want:?} in\n{}",
            desc.stdout
        );
    }

    let del = ctl(s, &["delete", "worker", "vm-0"], None);
    assert_eq!(del.stdout, "worker/vm-0 deleted\n");
    let missing = ctl(s, &["delete", "worker", "vm-0"], None);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("worker/vm-0 not found"));
    let del = ctl(s, &["delete", "-f", f, "--ignore-not-found"], None);
    assert_eq!(
        (del.code, del.stdout.as_str()),
        (0, "worker/vm-1 deleted\n")
    );
}

#[test]
fn invalid_input_changes_nothing() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let first = ctl(s, &["apply", "-f", "-", "--no-fs-checks"], Some(TWO_VMS));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let broken = format!(
        "{}---\napiVersion: microfaas.dev/v1alpha1\nkind: Worker\nmetadata: {{name: vm-2}}\nspec: {{vm: {{kernel: /k, cpus: 0}}}}\n",
        TWO_VMS.replace("256Mi", "1Gi")
    );
    let r = ctl(s, &["apply", "-f", "-", "--no-fs-checks"], Some(&broken));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("<stdin>:14:31"), "{}", r.stderr);
    let g = ctl(s, &["get", "worker", "vm-0", "-o", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&g.stdout).expect("json");
    assert_eq!(
        v["spec"]["vm"]["memory"], "256Mi",
        "a rejected apply changed the store"
    );
    let none = ctl(s, &["get", "worker", "vm-2"], None);
    assert_eq!(none.code, 1);
}

/// `gateway` is the workload name the gateway records its calls under: a Workload may not
/// take it. validate and apply both refuse it (exit 1, the name's position), and the refused
/// apply stores nothing, not even the valid objects beside it.
#[test]
fn a_workload_named_gateway_is_refused() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let manifest = format!(
        "{TWO_VMS}---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: f}}\nspec: {{runtime: builtin, handler: cascading_sha256}}\n---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: gateway}}\nspec: {{functions: [{{function: f, count: 1}}]}}\n"
    );
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("gw.yaml");
    std::fs::write(&f, &manifest).expect("write");
    let path = f.to_str().expect("utf8");
    let want = format!("{path}:18:18: error: the workload name `gateway` is reserved");
    let v = ctl(s, &["validate", "-f", path, "--no-fs-checks"], None);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(v.stderr.contains(&want), "{}", v.stderr);
    let a = ctl(s, &["apply", "-f", path, "--no-fs-checks"], None);
    assert_eq!(a.code, 1, "{}", a.stderr);
    assert!(a.stderr.contains(&want), "{}", a.stderr);
    for kind in ["workloads", "functions", "workers"] {
        let g = ctl(s, &["get", kind, "-o", "json"], None);
        assert_eq!(g.code, 0, "{}", g.stderr);
        let v: serde_json::Value = serde_json::from_str(&g.stdout).expect("json");
        assert_eq!(
            v["items"],
            serde_json::json!([]),
            "{kind} after a refused apply"
        );
    }
    // Renamed, the same manifest applies.
    let ok = manifest.replace("name: gateway}", "name: gateway-load}");
    let r = ctl(s, &["apply", "-f", "-", "--no-fs-checks"], Some(&ok));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let g = ctl(s, &["get", "workload", "gateway-load"], None);
    assert_eq!(g.code, 0, "{}", g.stderr);
}

#[test]
fn prune_removes_only_what_this_set_applied() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let dir = tempfile::tempdir().expect("tmp");
    let sub = dir.path().join("nested/deeper");
    std::fs::create_dir_all(&sub).expect("mkdir");
    std::fs::write(sub.join("b.yml"), TWO_VMS).expect("write");
    std::fs::write(dir.path().join("a.yaml"), "apiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: exec, command: [true]}\n").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "not yaml").expect("write");
    let other = tempfile::tempdir().expect("tmp");
    std::fs::write(other.path().join("o.yaml"), "apiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: other}\nspec: {runtime: exec, command: [true]}\n").expect("write");
    let d = dir.path().to_str().expect("utf8");

    let a = ctl(s, &["apply", "-f", d, "--no-fs-checks"], None);
    assert_eq!(
        a.stdout, "function/f created\nworker/vm-0 created\nworker/vm-1 created\n",
        "{}",
        a.stderr
    );
    ctl(
        s,
        &["apply", "-f", other.path().to_str().expect("utf8")],
        None,
    );

    std::fs::remove_file(sub.join("b.yml")).expect("rm");
    let no_prune = ctl(s, &["apply", "-f", d, "--no-fs-checks"], None);
    assert_eq!(no_prune.stdout, "function/f unchanged\n");
    let pruned = ctl(s, &["apply", "-f", d, "--no-fs-checks", "--prune"], None);
    assert_eq!(
        pruned.stdout,
        "function/f unchanged\nworker/vm-0 pruned\nworker/vm-1 pruned\n"
    );
    let g = ctl(s, &["get", "fn", "other", "-o", "json"], None);
    assert_eq!(g.code, 0, "an object of another apply set was pruned");
}

#[test]
fn workerset_expands_into_owned_workers() {
    let state = tempfile::tempdir().expect("tmp");
    let set = "apiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {name: vms}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {rack: v}}\n    spec: {vm: {kernel: /k}}\n";
    let a = ctl(
        state.path(),
        &["apply", "-f", "-", "--no-fs-checks"],
        Some(set),
    );
    assert_eq!(
        a.stdout,
        "workerset/vms created\nworker/vms-0 created\nworker/vms-1 created\nworker/vms-2 created\n"
    );
    let g = ctl(
        state.path(),
        &["get", "worker", "vms-2", "-o", "json"],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&g.stdout).expect("json");
    assert_eq!(v["metadata"]["ownerReferences"][0]["name"], "vms");
    assert_eq!(v["metadata"]["labels"]["rack"], "v");
    let d = ctl(state.path(), &["delete", "workerset", "vms"], None);
    assert_eq!(d.stdout.lines().count(), 4, "{}", d.stdout);
}

#[test]
fn a_second_engine_is_refused_naming_the_holder() {
    let state = tempfile::tempdir().expect("tmp");
    let _held = microfaas::store::StateLock::acquire(state.path()).expect("lock");
    let r = ctl(
        state.path(),
        &["serve", "-f", "-", "--no-fs-checks"],
        Some(TWO_VMS),
    );
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains(&format!("PID {}", std::process::id())),
        "{}",
        r.stderr
    );
}

#[test]
fn kinds_accept_every_spelling_and_help_teaches() {
    let state = tempfile::tempdir().expect("tmp");
    for k in [
        "worker",
        "workers",
        "wk",
        "Worker",
        "fn",
        "functions",
        "wl",
        "sw",
        "pm",
        "ws",
        "cl",
    ] {
        let r = ctl(state.path(), &["get", k], None);
        assert_eq!(r.code, 0, "{k}: {}", r.stderr);
    }
    let bad = ctl(state.path(), &["get", "wrokers"], None);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("did you mean `workers`"),
        "{}",
        bad.stderr
    );
    let help = ctl(state.path(), &["--help"], None);
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    let v = ctl(state.path(), &["--version"], None);
    assert!(v.stdout.starts_with("microfaasctl "), "{}", v.stdout);
    let c = ctl(state.path(), &["completions", "bash"], None);
    assert!(
        c.stdout.contains("_microfaasctl"),
        "completion script looks wrong"
    );
    let sch = ctl(state.path(), &["schema", "wk"], None);
    let v: serde_json::Value = serde_json::from_str(&sch.stdout).expect("json");
    assert_eq!(v["title"], "Worker");
}

/// `power pulse|hold` on a machine without GPIO chips: bad command lines exit 2, a line that
/// cannot be found exits 5 naming what was looked for. (Pressing for real is tested against a
/// kernel in tests/gpio_sim.rs.)
#[test]
fn power_pulse_names_the_missing_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (arguments, exit code, a word stderr must contain)
    let cases: [(&[&str], i32, &str); 5] = [
        (&["power", "pulse"], 2, "--chip"),
        (&["power", "pulse", "--chip", "gpiochip0"], 2, "--line"),
        (
            &["power", "hold", "--pin", "P9_12", "--duration", "5q"],
            2,
            "5q",
        ),
        (&["power", "pulse", "--pin", "P9_99"], 5, "P9_99"),
        (
            &["power", "pulse", "--chip", "no-such-chip", "--line", "3"],
            5,
            "no-such-chip",
        ),
    ];
    for (args, code, word) in cases {
        let out = ctl(dir.path(), args, None);
        assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(word), "{args:?}: {}", out.stderr);
    }
}

/// `power on|off|cycle|status WORKER` on a machine without GPIO chips: a VM or a missing worker
/// is refused; a board's request is recorded and fails with the reason (no power control), and
/// `power status` shows the observed power with its evidence. (Presses through the engine are
/// tested with simulated boards in tests/board_engine.rs.)
#[test]
fn power_requests_go_through_the_engine() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    let board = "apiVersion: microfaas.dev/v1alpha1
kind: Cluster
metadata: {name: c}
spec: {orchestrator: {listen: 127.0.0.1:0}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Worker
metadata: {name: bbb-1}
spec: {power: Off, board: {powerButton: {pin: P9_12}}}
";
    let yaml = format!("{TWO_VMS}---\n{board}");
    let applied = ctl(s, &["apply", "-f", "-", "--no-fs-checks"], Some(&yaml));
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let vm = ctl(s, &["power", "on", "vm-0"], None);
    assert_eq!(vm.code, 1);
    assert!(vm.stderr.contains("is a VM"), "{}", vm.stderr);
    let missing = ctl(s, &["power", "status", "nope"], None);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);

    let on = ctl(s, &["power", "on", "bbb-1", "--timeout", "30s"], None);
    assert_eq!(on.code, 1, "{}", on.stderr);
    assert!(
        on.stderr.contains("no power control") && on.stderr.contains("P9_12"),
        "{}",
        on.stderr
    );
    let st = ctl(s, &["power", "status", "bbb-1"], None);
    assert_eq!(st.code, 0, "{}", st.stderr);
    for line in [
        "Observed:      Unknown",
        "Power control: False",
        "PowerRequested",
        "PowerRequestFailed",
    ] {
        assert!(st.stdout.contains(line), "{line}: {}", st.stdout);
    }
}

#[test]
fn cordon_and_uncordon_set_health() {
    let state = tempfile::tempdir().expect("tmp");
    let s = state.path();
    assert_eq!(
        ctl(s, &["apply", "-f", "-", "--no-fs-checks"], Some(TWO_VMS)).code,
        0
    );
    let c = ctl(s, &["cordon", "worker", "vm-0"], None);
    assert_eq!(
        (c.code, c.stdout.as_str()),
        (0, "worker/vm-0 cordoned\n"),
        "{}",
        c.stderr
    );
    let get = |s: &Path| -> serde_json::Value {
        serde_json::from_str(&ctl(s, &["get", "worker", "vm-0", "-o", "json"], None).stdout)
            .expect("json")
    };
    assert_eq!(get(s)["status"]["health"], "Maintenance");
    let u = ctl(s, &["uncordon", "worker", "vm-0"], None);
    assert_eq!(u.code, 0);
    assert_eq!(get(s)["status"]["health"], "Good");
    let d = ctl(s, &["describe", "worker", "vm-0"], None);
    assert!(
        d.stdout.contains("Cordoned") && d.stdout.contains("Uncordoned"),
        "{}",
        d.stdout
    );
    let wrong = ctl(s, &["cordon", "function", "x"], None);
    assert_eq!(wrong.code, 1);
}
