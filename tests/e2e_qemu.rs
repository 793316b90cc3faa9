//! `microfaasctl apply` end to end with real QEMU (TCG): the CI workload, power changes,
//! recreation on a spec change, adoption after `kill -9`, quarantine of a worker that cannot
//! boot, and nothing left behind.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"` (MICROFAAS_TEST_KERNEL, MICROFAAS_TEST_AGENT);
//! hack/test does it. Nothing is skipped when they are missing: the tests fail saying so.

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::testbed::{Env, ok};
use support::wasm_fn;

/// An example manifest with its image paths pointing at this test's image.
fn example(env: &Env, name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("../image/vmlinux", &env.vmlinux.display().to_string())
        .replace(
            "../image/initramfs.cpio.gz",
            &env.initrd.display().to_string(),
        )
}

#[test]
fn ci_workload_runs_to_completion() {
    let env = Env::new();
    let f = env.write("ci.yaml", &example(&env, "ci-qemu.yaml"));
    let out = env.ctl(&["apply", "-f", &f, "--timeout", "8m"]);
    ok(&out);
    let report = env.json(&["report", "ci", "--format", "json"]);
    assert_eq!(report["total"], 36, "{report}");
    assert_eq!(report["succeeded"], 36, "{report}");
    assert_eq!(report["failed"], 0);
    assert_eq!(report["functions"].as_object().map(|f| f.len()), Some(9));
    assert!(
        report["coldStartMs"]["p50"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "OneShot invocations wait for a boot"
    );
    check_energy(&env, &report);
    let workers = env.json(&["get", "workers", "-o", "json"]);
    for w in workers["items"].as_array().expect("items") {
        assert_eq!(
            w["status"]["phase"], "Off",
            "OnDemand workers are off after the run: {w}"
        );
    }
    assert!(
        env.qemus().is_empty(),
        "QEMU left running: {:?}",
        env.qemus()
    );
    let wl = env.json(&["get", "workload", "ci", "-o", "json"]);
    assert_eq!(wl["status"]["phase"], "Succeeded");
    // Applying it again unchanged does not run it again (one run per generation).
    let again = env.ctl(&["apply", "-f", &f]);
    ok(&again);
    assert_eq!(
        env.json(&["get", "workload", "ci", "-o", "json"])["status"]["run"],
        1
    );
    // `rerun` makes run 2 of the same generation, recorded apart from run 1.
    ok(&env.ctl(&["rerun", "workload", "ci", "--timeout", "8m"]));
    let second = env.json(&["report", "ci", "--run", "2", "--format", "json"]);
    assert_eq!(second["run"], 2, "{second}");
    assert_eq!(second["succeeded"], 36, "{second}");
    let first = env.json(&["report", "ci", "--run", "1", "--format", "json"]);
    assert_eq!(first["succeeded"], 36, "{first}");
    assert!(
        env.qemus().is_empty(),
        "QEMU left running: {:?}",
        env.qemus()
    );
}

/// The energy section of the CI run's report, against the stored samples: every invocation
/// cost energy, and exec + idle + boot add up to what the meter measured.
fn check_energy(env: &Env, report: &Value) {
    let e = &report["energy"];
    for key in microfaas::energy::report::DOCUMENTED_KEYS {
        assert!(!e[key].is_null(), "energy.{key} missing: {e}");
    }
    let total = e["joules"].as_f64().expect("joules");
    assert!(total > 0.0, "{e}");
    let invocations = e["perInvocation"].as_object().expect("perInvocation");
    assert_eq!(invocations.len(), 36);
    let mut exec_sum = 0.0;
    for (id, inv) in invocations {
        let j = inv["joules"].as_f64().unwrap_or(0.0);
        assert!(j > 0.0, "invocation {id} has no energy: {inv}");
        assert!(
            inv["execJoules"].as_f64().is_some_and(|x| x > 0.0),
            "{id}: {inv}"
        );
        assert!(
            inv["bootJoules"].as_f64().is_some_and(|x| x > 0.0),
            "a OneShot invocation is charged its boot: {id}: {inv}"
        );
        exec_sum += inv["execJoules"].as_f64().unwrap_or(0.0);
    }
    let idle = e["idleJoules"].as_f64().expect("idle");
    let boot = e["bootJoules"].as_f64().expect("boot");
    let sum = exec_sum + idle + boot;
    assert!(
        (sum - total).abs() <= 0.01 * total,
        "per-invocation {exec_sum} + idle {idle} + boot {boot} = {sum}, meter total {total}"
    );
    assert_eq!(e["perFunction"].as_object().map(|f| f.len()), Some(9));

    // The meter total, integrated here from the stored samples (trapezoids over the run).
    let store = microfaas::store::Store::open(&env.state).expect("store");
    let run = store.latest_run("ci").expect("run").expect("a run");
    let (a, b) = (run.started_ms, run.finished_ms.expect("finished"));
    let pts: Vec<(f64, f64)> = store
        .samples("ci-model", a, b)
        .expect("samples")
        .iter()
        .map(|s| (s.at_ms as f64, s.watts))
        .collect();
    assert!(pts.len() > 10, "the model meter sampled during the run");
    let at = |t: f64| {
        let i = pts.partition_point(|p| p.0 <= t).clamp(1, pts.len() - 1);
        let ((t0, w0), (t1, w1)) = (pts[i - 1], pts[i]);
        w0 + (w1 - w0) * (t - t0) / (t1 - t0)
    };
    let mut knots = vec![a as f64];
    knots.extend(
        pts.iter()
            .map(|p| p.0)
            .filter(|t| *t > a as f64 && *t < b as f64),
    );
    knots.push(b as f64);
    let independent: f64 = knots
        .windows(2)
        .map(|k| (at(k[0]) + at(k[1])) / 2.0 * (k[1] - k[0]) / 1000.0)
        .sum();
    assert!(
        (independent - total).abs() <= 0.01 * total,
        "report {total} J, samples integrated here {independent} J"
    );

    let csv = env.ctl(&["report", "ci", "--format", "csv"]);
    ok(&csv);
    let text = String::from_utf8_lossy(&csv.stdout);
    let mut lines = text.lines();
    assert!(
        lines
            .next()
            .is_some_and(|h| h.ends_with(",energy_j,exec_energy_j,boot_energy_j"))
    );
    for l in lines.filter(|l| l.contains(",succeeded,")) {
        let energy: f64 = l
            .split(',')
            .rev()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        assert!(energy > 0.0, "{l}");
    }
    let meters = env.ctl(&["get", "powermeters"]);
    ok(&meters);
    let table = String::from_utf8_lossy(&meters.stdout);
    assert!(
        table.contains("WATTS") && table.contains("ci-model") && table.contains("Sampling"),
        "{table}"
    );
    let m = env.json(&["get", "powermeter", "ci-model", "-o", "json"]);
    assert!(
        m["status"]["lastReading"]["watts"].as_f64().is_some(),
        "{m}"
    );
}

#[test]
fn power_changes_recreate_and_teardown() {
    let env = Env::new();
    let initrd = env.initrd.clone();
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}{}",
            env.cluster(""),
            env.vm("vm-a", "On", "128Mi", &initrd),
            env.vm("vm-b", "On", "128Mi", &initrd)
        ),
    );
    ok(&env.ctl(&["apply", "-f", &f]));
    let items = env.json(&["get", "workers", "-o", "json"]);
    for w in items["items"].as_array().expect("items") {
        assert_eq!(w["status"]["phase"], "Ready", "{w}");
        assert!(
            w["status"]["bootSeconds"].as_f64().is_some_and(|b| b > 0.0),
            "{w}"
        );
        assert_eq!(
            w["status"]["observedGeneration"],
            w["metadata"]["generation"]
        );
    }
    let first = env.qemus();
    assert_eq!(
        first.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["vm-a", "vm-b"],
        "{first:?}"
    );
    // The serial console, as `logs` shows it: the agent came up as PID 1 and dialled us.
    let logs = env.ctl(&["logs", "worker", "vm-a"]);
    ok(&logs);
    let console = String::from_utf8_lossy(&logs.stdout);
    assert!(
        console.contains("microfaas-agent: starting as PID 1")
            && console.contains("worker vm-a (Warm) dialling"),
        "{console}"
    );
    let missing = env.ctl(&["logs", "worker", "vm-z"]);
    assert_eq!(missing.status.code(), Some(1), "not found");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no console log for worker/vm-z"));

    // memory of vm-b changes: vm-b (only) is recreated
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}{}",
            env.cluster(""),
            env.vm("vm-a", "On", "128Mi", &initrd),
            env.vm("vm-b", "On", "160Mi", &initrd)
        ),
    );
    ok(&env.ctl(&["apply", "-f", &f]));
    let second = env.qemus();
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[0], first[0], "vm-a was restarted needlessly");
    assert_ne!(second[1].1, first[1].1, "vm-b was not recreated");
    let events = env.ctl(&["describe", "worker", "vm-b"]);
    assert!(String::from_utf8_lossy(&events.stdout).contains("Recreating"));

    // vm-a powered off: its QEMU goes, vm-b stays
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}{}",
            env.cluster(""),
            env.vm("vm-a", "Off", "128Mi", &initrd),
            env.vm("vm-b", "On", "160Mi", &initrd)
        ),
    );
    ok(&env.ctl(&["apply", "-f", &f]));
    let third = env.qemus();
    assert_eq!(third, vec![second[1].clone()], "{third:?}");
    assert_eq!(
        env.json(&["get", "worker", "vm-a", "-o", "json"])["status"]["phase"],
        "Off"
    );

    // delete: torn down before the records go
    ok(&env.ctl(&["delete", "-f", &f]));
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
    assert_eq!(
        env.json(&["get", "workers", "-o", "json"])["items"],
        serde_json::json!([])
    );
}

#[test]
fn killed_apply_is_adopted_not_duplicated() {
    let env = Env::new();
    let initrd = env.initrd.clone();
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}{}",
            env.cluster(""),
            env.vm("vm-a", "On", "128Mi", &initrd),
            env.vm("vm-b", "On", "128Mi", &initrd)
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["apply", "-f", &f])
        .env("MICROFAAS_STATE_DIR", &env.state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("apply");
    let started = Instant::now();
    while env.qemus().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "VMs never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill -9 apply");
    let _ = child.wait();
    // `-daemonize` forks: the launcher exits once the daemon has written its pidfile. Settled
    // = one process per VM, and it is the one its pidfile names.
    let settled = Instant::now();
    let before = loop {
        let now = env.qemus();
        let pidfile = |name: &str| -> Option<i32> {
            std::fs::read_to_string(env.state.join("vms").join(name).join("qemu.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let expected: Vec<(String, i32)> = ["vm-a", "vm-b"]
            .iter()
            .filter_map(|n| Some((n.to_string(), pidfile(n)?)))
            .collect();
        if expected.len() == 2 && now == expected {
            break now;
        }
        assert!(
            settled.elapsed() < Duration::from_secs(30),
            "QEMUs did not settle: {now:?} vs pidfiles {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ok(&env.ctl(&["apply", "-f", &f]));
    let after = env.qemus();
    assert_eq!(
        after, before,
        "VMs were restarted or duplicated instead of adopted"
    );
    let d = String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-a"]).stdout).into_owned();
    assert!(d.contains("Adopted"), "{d}");
    ok(&env.ctl(&["delete", "-f", &f]));
    assert!(env.qemus().is_empty());
}

#[test]
fn a_worker_that_cannot_boot_is_quarantined() {
    let env = Env::new();
    let garbage = env.dir.path().join("garbage.cpio.gz");
    std::fs::write(&garbage, b"this is not an initramfs").expect("write");
    let f = env.write(
        "m.yaml",
        &format!(
            "{}{}",
            env.cluster(""),
            env.vm("vm-bad", "On", "128Mi", &garbage)
        ),
    );
    let out = env.ctl(&["apply", "-f", &f, "--timeout", "4m"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker/vm-bad: failed: health Bad"),
        "{stderr}"
    );
    let w = env.json(&["get", "worker", "vm-bad", "-o", "json"]);
    assert_eq!(w["status"]["health"], "Bad");
    let d =
        String::from_utf8_lossy(&env.ctl(&["describe", "worker", "vm-bad"]).stdout).into_owned();
    assert!(d.contains("Quarantined") && d.contains("BootFailed"), "{d}");
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
}

#[test]
fn a_vm_killed_mid_invocation_costs_one_attempt_and_is_replaced() {
    let env = Env::new();
    let text = format!(
        "{}---
apiVersion: microfaas.dev/v1alpha1
kind: WorkerSet
metadata: {{name: vm}}
spec:
  replicas: 2
  template:
    metadata: {{labels: {{pool: t}}}}
    spec:
      power: OnDemand
      lifecycle: {{mode: OneShot}}
      vm: {{kernel: {}, initrd: {}, memory: 128Mi, machine: pc, accel: tcg}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {{name: aes}}
spec: {{runtime: builtin, handler: pyaes, timeout: 60s}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {{name: slow}}
spec:
  functions:
    - {{function: aes, count: 4, inputs: [{{rounds: 1500}}]}}
  arrival: {{pattern: fixed, rate: 20/s}}
  concurrency: 2
",
        env.cluster(""),
        env.kernel.display(),
        env.initrd.display()
    );
    let f = env.write("m.yaml", &text);
    let mut apply = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["apply", "-f", &f, "--timeout", "8m"])
        .env("MICROFAAS_STATE_DIR", &env.state)
        .stdin(Stdio::null())
        // Files, not pipes: nobody reads a pipe until the end, and a full one would stall apply.
        .stdout(std::fs::File::create(env.dir.path().join("apply.out")).expect("out file"))
        .stderr(std::fs::File::create(env.dir.path().join("apply.err")).expect("err file"))
        .spawn()
        .expect("apply");
    // Wait for a worker to be Busy (running an invocation), then kill its QEMU from outside.
    let started = Instant::now();
    let victim = loop {
        let err = || std::fs::read_to_string(env.dir.path().join("apply.err")).unwrap_or_default();
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no worker ever got Busy:\n{}",
            err()
        );
        if let Ok(Some(st)) = apply.try_wait() {
            panic!(
                "apply ended before any worker got Busy ({st:?}):\n{}",
                err()
            );
        }
        let out = env.ctl(&["get", "workers", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let busy = v["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|w| w["status"]["phase"] == "Busy")
                .and_then(|w| w["metadata"]["name"].as_str().map(str::to_string))
        });
        if let Some(name) = busy {
            break name;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, pid) = env
        .qemus()
        .into_iter()
        .find(|(n, _)| *n == victim)
        .expect("the busy worker's QEMU");
    // SAFETY: a PID found running with this test's state dir in its argv.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let status = apply.wait().expect("apply");
    assert!(
        status.success(),
        "apply: {status:?}\n{}",
        std::fs::read_to_string(env.dir.path().join("apply.err")).unwrap_or_default()
    );

    let report = env.json(&["report", "slow", "--format", "json"]);
    assert_eq!(report["succeeded"], 4, "{report}");
    assert!(
        report["retried"].as_u64().is_some_and(|r| r >= 1),
        "{report}"
    );
    let csv = String::from_utf8_lossy(&env.ctl(&["report", "slow", "--format", "csv"]).stdout)
        .into_owned();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    // columns: invocation_id, worker, ..., attempt (10), status (11)
    let lost: Vec<&Vec<&str>> = rows
        .iter()
        .filter(|r| r[11] == "lost" || r[11] == "timeout")
        .collect();
    assert!(!lost.is_empty(), "no failed attempt recorded:\n{csv}");
    for l in &lost {
        assert_eq!(l[1], victim, "the failed attempt ran elsewhere:\n{csv}");
        let retry = rows
            .iter()
            .find(|r| r[0] == l[0] && r[10] == "2")
            .unwrap_or_else(|| panic!("invocation {} was not retried:\n{csv}", l[0]));
        assert_eq!(retry[11], "succeeded", "{csv}");
        assert_ne!(retry[1], victim, "retried on the same worker:\n{csv}");
    }
    let d = String::from_utf8_lossy(&env.ctl(&["describe", "worker", &victim]).stdout).into_owned();
    // The killed VM was started again for the work still queued on it: PoweredOn twice or more.
    let launches = powered_on(&d);
    assert!(launches >= 2, "the killed VM was not relaunched:\n{d}");
    assert!(env.qemus().is_empty(), "{:?}", env.qemus());
}

/// How many times `describe worker` says the worker was powered on (cold or from a standby:
/// one event row each).
fn powered_on(describe: &str) -> u32 {
    describe
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() > 3 && w[0] == "Normal" && w[1] == "PoweredOn")
        .filter_map(|w| w.get(3).and_then(|n| n.parse::<u32>().ok()))
        .sum()
}

/// Standbys in `apply`: a OneShot worker powered off between calls 10 s apart gets its next
/// QEMU ready, paused, and the next power-on resumes it (an event says so); at the end `apply`
/// leaves no QEMU behind, standbys included.
#[test]
fn oneshot_worker_boots_again_from_its_standby() {
    let env = Env::new();
    let text = example(&env, "ci-qemu.yaml");
    let cut = text
        .find("---\napiVersion: microfaas.dev/v1alpha1\nkind: PowerMeter")
        .expect("ci-qemu.yaml has a PowerMeter after its WorkerSet");
    let manifest = format!(
        "{}---
apiVersion: microfaas.dev/v1alpha1
kind: Function
metadata: {{name: float-operations}}
spec: {{runtime: builtin, handler: float_operations, timeout: 30s}}
---
apiVersion: microfaas.dev/v1alpha1
kind: Workload
metadata: {{name: spaced}}
spec:
  functions: [{{function: float-operations, count: 3}}]
  arrival: {{pattern: fixed, rate: 6/m}}
  workers: {{matchLabels: {{pool: ci}}}}
",
        text[..cut].replace("replicas: 2", "replicas: 1")
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{}", env.port));
    let f = env.write("spaced.yaml", &manifest);
    ok(&env.ctl(&["apply", "-f", &f, "--timeout", "5m"]));

    let report = env.json(&["report", "spaced", "--format", "json"]);
    assert_eq!(report["succeeded"], 3, "{report}");
    let workers = env.json(&["get", "workers", "-o", "json"]);
    let name = workers["items"][0]["metadata"]["name"]
        .as_str()
        .expect("one worker")
        .to_string();
    let d = String::from_utf8_lossy(&env.ctl(&["describe", "worker", &name]).stdout).into_owned();
    assert_eq!(powered_on(&d), 3, "one boot per call:\n{d}");
    assert!(
        d.contains("VM started (standby resumed)"),
        "no power-on resumed a standby:\n{d}"
    );
    assert!(env.qemus().is_empty(), "left running: {:?}", env.qemus());
}

/// The example user function on a Warm VM worker through `apply`, twice: as a WebAssembly
/// module (Rust → wasm32-wasip1, built from examples/wasm-fn) and as the same source built as a
/// static x86-64 executable (`exec`). Every invocation succeeds, `report` lists both functions,
/// and each recorded output is exactly what `wordfreq` answers for one of the inputs (by the
/// stored digest), whichever runtime ran it.
#[test]
fn user_functions_run_on_a_vm_worker() {
    let env = Env::new();
    let module = wasm_fn::wordfreq();
    let native = wasm_fn::wordfreq_static();
    let text = example(&env, "wasm-qemu.yaml")
        .replace(
            "wasm-fn/target/wasm32-wasip1/release/wordfreq.wasm",
            &module.display().to_string(),
        )
        .replace(
            "wasm-fn/target/x86_64-unknown-linux-musl/release/wordfreq",
            &native.display().to_string(),
        )
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", env.port));
    let f = env.write("wasm.yaml", &text);
    ok(&env.ctl(&["apply", "-f", &f, "--timeout", "5m"]));

    let report = env.json(&["report", "wasm", "--format", "json"]);
    assert_eq!(report["total"], 6, "{report}");
    assert_eq!(report["succeeded"], 6, "{report}");
    for function in ["wordfreq", "wordfreq-native"] {
        assert!(report["functions"][function].is_object(), "{report}");
    }

    // argv[0] is the Function's name in both runtimes, and wordfreq echoes it.
    let digests = |function: &str| -> Vec<String> {
        [
            serde_json::json!({"function": function, "greeting": "hello from microfaas",
                "words": 8, "chars": 31, "top": [["the", 3], ["and", 2]]}),
            serde_json::json!({"function": function, "greeting": "hello from microfaas",
                "words": 10, "chars": 41, "top": [["be", 2], ["to", 2], ["is", 1]]}),
        ]
        .iter()
        .map(|o| {
            let bytes = serde_json::to_vec(o).expect("json");
            microfaas::store::invocations::output_digest(&bytes).1
        })
        .collect()
    };
    let csv = env.ctl(&["report", "wasm", "--format", "csv"]);
    ok(&csv);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("csv header").split(',').collect();
    let function_col = header
        .iter()
        .position(|h| *h == "function_id")
        .unwrap_or_else(|| panic!("no function_id column in {header:?}"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "{csv}");
    for function in ["wordfreq", "wordfreq-native"] {
        let mine: Vec<String> = rows
            .iter()
            .filter(|r| r.get(function_col) == Some(&function))
            .map(|r| r.join(","))
            .collect();
        assert_eq!(mine.len(), 3, "{function}:\n{csv}");
        // Each output is one of the two inputs' answers and both inputs were used.
        let digests = digests(function);
        for row in &mine {
            assert!(
                digests.iter().any(|d| row.contains(d.as_str())),
                "{function}: no expected output digest in {row}"
            );
        }
        for d in &digests {
            assert!(
                mine.iter().any(|r| r.contains(d.as_str())),
                "{function}: no invocation answered with {d}:\n{csv}"
            );
        }
    }
    assert!(
        env.qemus().is_empty(),
        "QEMU left running: {:?}",
        env.qemus()
    );
}
