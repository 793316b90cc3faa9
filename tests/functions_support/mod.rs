//! Shared by the function and agent tests: running the independent Python reference
//! (tests/functions_reference.py) on inputs to get the outputs they must produce.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/functions_reference.py");

/// Run the reference script with `args`, `stdin` as JSON on its stdin; its JSON output.
pub fn python(args: &[&str], stdin: &Value) -> Value {
    let mut child = Command::new("python3")
        .arg(REFERENCE)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python finishes");
    assert!(out.status.success(), "reference script failed");
    serde_json::from_slice(&out.stdout).expect("reference prints JSON")
}

/// The reference outputs of `function` for each input.
pub fn reference(function: &str, inputs: &[Value]) -> Vec<Value> {
    let out = python(&[], &json!({ "function": function, "inputs": inputs }));
    let out = out.as_array().expect("a list").clone();
    assert_eq!(out.len(), inputs.len());
    out
}
