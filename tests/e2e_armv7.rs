//! The BeagleBone's agent under `qemu-system-arm -M virt` through a normal `microfaasctl apply`:
//! two `vm: {arch: armv7}` workers boot the ARMv7 kernel (the same zImage that ships to the
//! boards) with the ARM agent as /init, dial the orchestrator, run the nine MicroFaaS
//! functions, are recorded, and power off. Every output must be byte-for-byte what the
//! functions compute on this (x86_64) host for the same input.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"` (MICROFAAS_TEST_KERNEL_ARMV7,
//! MICROFAAS_TEST_AGENT_ARMV7). Nothing is skipped when they are missing: the test fails.

mod support;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use support::testbed::{Env, ok};

/// (handler, the input the workload gives it): the first seeded input, as a default workload
/// would draw, written into the manifest so that the host can compute the expected output.
fn cases() -> Vec<(&'static str, serde_json::Value)> {
    microfaas::functions::names()
        .iter()
        .map(|h| {
            let input = microfaas::functions::default_inputs(h, 15, 1)
                .pop()
                .expect("every builtin has inputs");
            (*h, input)
        })
        .collect()
}

fn manifest(env: &Env, cases: &[(&str, serde_json::Value)]) -> String {
    let mut m = env.cluster(", jobTimeout: 180s, maxAttempts: 2");
    m += &format!(
        "---
apiVersion: microfaas.dev/v1alpha1
kind: WorkerSet
metadata: {{name: arm}}
spec:
  replicas: 2
  template:
    metadata: {{labels: {{pool: arm}}}}
    spec:
      power: OnDemand
      lifecycle: {{mode: OneShot}}
      vm: {{arch: armv7, kernel: {}, initrd: {}, memory: 128Mi, accel: tcg}}
",
        env.kernel.display(),
        env.initrd.display()
    );
    let mut mix = String::new();
    for (h, input) in cases {
        m += &format!(
            "---\napiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {{name: {}}}\nspec: {{runtime: builtin, handler: {h}, timeout: 180s}}\n",
            h.replace('_', "-")
        );
        // JSON is YAML flow syntax.
        mix += &format!(
            "    - {{function: {}, count: 1, inputs: [{input}]}}\n",
            h.replace('_', "-")
        );
    }
    m += &format!(
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Workload\nmetadata: {{name: arm}}\nspec:\n  functions:\n{mix}  arrival: {{pattern: balanced, period: 500ms}}\n  workers: {{matchLabels: {{pool: arm}}}}\n  concurrency: 2\n"
    );
    m
}

#[test]
fn armv7_workers_run_the_nine_functions_like_x86() {
    let env = Env::armv7();
    let cases = cases();
    assert_eq!(cases.len(), 9);
    let f = env.write("arm.yaml", &manifest(&env, &cases));
    ok(&env.ctl(&["apply", "-f", &f, "--timeout", "15m"]));

    let report = env.json(&["report", "arm", "--format", "json"]);
    assert_eq!(report["total"], 9, "{report}");
    assert_eq!(report["succeeded"], 9, "{report}");
    assert!(
        report["coldStartMs"]["p50"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "OneShot invocations wait for an ARM boot: {report}"
    );

    eprintln!(
        "armv7 cold start (ms an invocation waited for its worker to boot, TCG): {}",
        report["coldStartMs"]
    );

    // What the x86 suite computes for the same inputs, digested as the store digests outputs.
    let expected: BTreeMap<String, String> = cases
        .iter()
        .map(|(h, input)| {
            let out = microfaas::functions::run(h, input).expect("host run");
            let bytes = serde_json::to_vec(&out).expect("json");
            (
                h.replace('_', "-"),
                microfaas::functions::hex(&Sha256::digest(&bytes)),
            )
        })
        .collect();
    let csv = env.ctl(&["report", "arm", "--format", "csv"]);
    ok(&csv);
    let text = String::from_utf8_lossy(&csv.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("csv header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let (function, status, digest) = (col("function_id"), col("status"), col("output_sha256"));
    let mut seen = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.get(status) == Some(&"succeeded") {
            seen.insert(cells[function].to_owned(), cells[digest].to_owned());
        }
    }
    assert_eq!(seen, expected, "ARM outputs differ from the host's");

    // Powered off after the run: OnDemand OneShot workers end Off, no QEMU is left.
    let workers = env.json(&["get", "workers", "-o", "json"]);
    for w in workers["items"].as_array().expect("items") {
        assert_eq!(w["status"]["phase"], "Off", "{w}");
    }
    assert!(
        env.qemus().is_empty(),
        "QEMU left running: {:?}",
        env.qemus()
    );
    // The guest really was an ARM machine talking on its PL011.
    let console = std::fs::read_to_string(env.state.join("vms/arm-0/console.log"))
        .expect("console log of arm-0");
    assert!(console.contains("microfaas-agent"), "{console}");
}
