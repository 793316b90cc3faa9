//! `cargo bench --bench validate`: load and validate 10,000 documents spread over 100 files
//! (workers with unique GPIO lines and switch ports, functions, workloads referencing them),
//! the scale of a large testbed repository. Prints wall time per run and documents per second.

use microfaas::manifest::{load_and_validate, validate::Options};
use std::fmt::Write;
use std::time::Instant;

fn file(i: usize) -> String {
    let mut s = String::new();
    for j in 0..100 {
        let n = i * 100 + j;
        s.push_str("---\napiVersion: microfaas.dev/v1alpha1\n");
        match j % 4 {
            0 | 1 => {
                let _ = write!(
                    s,
                    "kind: Worker\nmetadata:\n  name: w-{n}\n  labels: {{rack: r{i}}}\nspec:\n  power: OnDemand\n  lifecycle: {{mode: OneShot}}\n  board:\n    powerButton: {{chip: gpiochip{i}, line: {j}, pulse: 500ms, forceOff: 8s}}\n    network: {{switch: sw-{i}, port: \"{j}\", address: 10.0.{i}.{j}}}\n"
                );
            }
            2 => {
                let _ = write!(
                    s,
                    "kind: Function\nmetadata: {{name: f-{n}}}\nspec:\n  runtime: exec\n  command: [/bin/true]\n  timeout: 30s\n"
                );
            }
            _ => {
                let f = n - 1;
                let _ = write!(
                    s,
                    "kind: Workload\nmetadata: {{name: l-{n}}}\nspec:\n  functions:\n    - {{function: f-{f}, count: 10}}\n  arrival: {{pattern: poisson, rate: 5/s}}\n  workers: {{matchLabels: {{rack: r{i}}}}}\n"
                );
            }
        }
    }
    if i == 0 {
        s.push_str("---\napiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec: {}\n");
    }
    let _ = write!(
        s,
        "---\napiVersion: microfaas.dev/v1alpha1\nkind: Switch\nmetadata: {{name: sw-{i}}}\nspec:\n  address: 10.0.{i}.254\n  snmp: {{version: v2c, communityEnv: C}}\n"
    );
    s
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..100 {
        std::fs::write(dir.path().join(format!("m{i:03}.yaml")), file(i)).expect("write");
    }
    let paths = vec![dir.path().to_path_buf()];
    let mut times = Vec::new();
    let mut docs = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let loaded = load_and_validate(&paths, Options { fs_checks: true });
        times.push(t.elapsed().as_secs_f64());
        let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(errors.is_empty(), "{:?}", errors.first());
        docs = loaded.resources.len();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "validate: {docs} documents in 100 files: median {:.3} s over {} runs (min {:.3} s, max {:.3} s), {:.0} documents/s",
        median,
        times.len(),
        times[0],
        times[times.len() - 1],
        docs as f64 / median
    );
}
