//! The function suite checked against vectors computed independently: a Python
//! re-implementation (tests/functions_reference.py: hashlib, zlib, re, math, openssl for AES)
//! fed the same inputs, plus a few published known-answer vectors.

use std::io::Write;
use std::process::{Command, Stdio};

mod functions_support;

use functions_support::{python, reference};
use microfaas::functions::{self, FunctionError};
use serde_json::{Value, json};

/// Run `function` on every input in Rust and in the reference; all outputs must agree.
fn check_against_reference(function: &str, inputs: &[Value]) {
    let expected = reference(function, inputs);
    for (input, want) in inputs.iter().zip(&expected) {
        let got = functions::run(function, input)
            .unwrap_or_else(|e| panic!("{function}({input}) failed: {e}"));
        assert!(
            functions::outputs_match(want, &got),
            "{function}({input}):\n  rust:   {got}\n  python: {want}"
        );
    }
}

/// The seeded defaults plus the hand-written inputs.
fn inputs(function: &str, extra: Vec<Value>) -> Vec<Value> {
    let mut v = functions::default_inputs(function, 7, 6);
    v.extend(extra);
    v
}

#[test]
fn float_operations_matches_python() {
    let extra = vec![json!({"n": 0}), json!({"n": 1}), json!({"n": 20000})];
    check_against_reference("float_operations", &inputs("float_operations", extra));
}

#[test]
fn cascading_sha256_matches_hashlib() {
    let extra = vec![
        json!({"rounds": 1, "data": "abc"}),
        json!({"rounds": 0, "seed": 3}),
        json!({"rounds": 2500, "data": "x".repeat(64)}),
        json!({"rounds": 3, "seed": 99, "length": 1000}),
    ];
    check_against_reference("cascading_sha256", &inputs("cascading_sha256", extra));
}

#[test]
fn cascading_md5_matches_hashlib() {
    let extra = vec![
        json!({"rounds": 1, "data": "abc"}),
        json!({"rounds": 10000, "seed": 12345}),
        json!({"rounds": 5, "data": "ünïcødé"}),
    ];
    check_against_reference("cascading_md5", &inputs("cascading_md5", extra));
}

#[test]
fn cascading_hashes_match_published_vectors() {
    // FIPS 180-2 / RFC 1321 "abc" vectors: independent of the Python reference.
    let sha = functions::run("cascading_sha256", &json!({"rounds": 1, "data": "abc"})).unwrap();
    assert_eq!(
        sha["digest"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let md5 = functions::run("cascading_md5", &json!({"rounds": 1, "data": "abc"})).unwrap();
    assert_eq!(md5["digest"], "900150983cd24fb0d6963f7d28e17f72");
}

#[test]
fn matmul_matches_python() {
    let extra = vec![
        json!({"size": 0}),
        json!({"size": 1, "seed": 5}),
        json!({"size": 17}),
    ];
    check_against_reference("matmul", &inputs("matmul", extra));
}

#[test]
fn html_generation_matches_python() {
    let extra = vec![json!({"n": 0}), json!({"n": 1000, "seed": 4242})];
    check_against_reference("html_generation", &inputs("html_generation", extra));
}

#[test]
fn pyaes_matches_openssl() {
    let mut v = functions::default_inputs("pyaes", 7, 3);
    v.extend([
        json!({"rounds": 1, "text": ""}),
        json!({"rounds": 0, "text": "exactly sixteen!"}),
        json!({"rounds": 3, "length": 1000, "seed": 8, "key": "000102030405060708090A0B0C0D0E0F"}),
    ]);
    check_against_reference("pyaes", &v);
}

#[test]
fn zlib_decompress_matches_python_zlib() {
    check_against_reference(
        "zlib_decompress",
        &functions::default_inputs("zlib_decompress", 7, 6),
    );
}

#[test]
fn zlib_decompress_inflates_what_python_compressed() {
    let texts = json!([
        "",
        "hello, world",
        "The quick brown fox jumps over the lazy dog. ".repeat(500),
        (0..5000)
            .map(|i| ((i * 7919 % 251) as u8 as char).to_string())
            .collect::<String>(),
    ]);
    let cases = python(&["compress"], &texts);
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = functions::run("zlib_decompress", &json!({"data": case["data"]})).unwrap();
        assert_eq!(got["length"], text.len(), "level {}", case["level"]);
        let want = functions::hex(&sha256(text.as_bytes()));
        assert_eq!(got["sha256"], want.as_str(), "level {}", case["level"]);
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    // sha256sum(1) as an independent digest for the zlib check.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    functions::unhex(&hex[..64]).unwrap()
}

#[test]
fn zlib_decompress_rejects_corrupt_and_oversized_input() {
    assert!(matches!(
        functions::run("zlib_decompress", &json!({"data": "zz"})),
        Err(FunctionError::BadInput(_))
    ));
    assert!(matches!(
        functions::run("zlib_decompress", &json!({"data": "789c0102"})),
        Err(FunctionError::Failed(_))
    ));
    // 32 MiB of zeros compresses to ~32 KiB: a zip bomb must hit the output limit, not memory.
    let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 32 << 20], 9);
    assert!(matches!(
        functions::run("zlib_decompress", &json!({"data": functions::hex(&bomb)})),
        Err(FunctionError::Failed(_))
    ));
}

fn regex_cases() -> Vec<Value> {
    vec![
        json!({"text": "ab1x2cd"}),
        json!({"text": "1x2 at the start"}),
        json!({"text": "no digits here"}),
        json!({"text": "12345"}),
        json!({"text": "a1b2c3", "pattern": r"[a-z]\d"}),
        json!({"text": "foo=42;bar=7", "pattern": r"(\w+)=(\d+)"}),
    ]
}

#[test]
fn regex_search_matches_python_re() {
    check_against_reference("regex_search", &inputs("regex_search", regex_cases()));
}

#[test]
fn regex_match_matches_python_re() {
    let mut v = functions::default_inputs("regex_match", 7, 200);
    v.extend(regex_cases());
    // Some of the generated texts must start with a match, or this would test only `None`.
    let hits = v
        .iter()
        .filter(|i| functions::run("regex_match", i).unwrap()["matched"] == true)
        .count();
    assert!(hits >= 2, "only {hits} anchored matches");
    check_against_reference("regex_match", &v);
}

#[test]
fn registry_lists_the_nine_and_rejects_others() {
    assert_eq!(
        functions::names(),
        [
            "float_operations",
            "cascading_sha256",
            "cascading_md5",
            "matmul",
            "html_generation",
            "pyaes",
            "zlib_decompress",
            "regex_search",
            "regex_match"
        ]
    );
    assert_eq!(
        functions::run("nope", &json!({})),
        Err(FunctionError::UnknownFunction("nope".into()))
    );
    assert!(functions::default_inputs("nope", 1, 3).is_empty());
}

#[test]
fn bad_inputs_are_reported_not_panicked() {
    for name in functions::names() {
        for input in [json!("a string"), json!([1, 2]), json!(3)] {
            assert!(
                matches!(
                    functions::run(name, &input),
                    Err(FunctionError::BadInput(_))
                ),
                "{name}({input}) should be bad input"
            );
        }
    }
    let bad = [
        ("float_operations", json!({"n": -1})),
        ("float_operations", json!({})),
        ("cascading_sha256", json!({"rounds": "x"})),
        ("cascading_md5", json!({"rounds": 1, "length": u64::MAX})),
        ("matmul", json!({"size": 1.5})),
        ("matmul", json!({"size": 100_000})),
        ("html_generation", json!({"n": 1_000_000})),
        ("pyaes", json!({"rounds": 1, "key": "abcd"})),
        ("pyaes", json!({"rounds": 1, "text": 5})),
        ("zlib_decompress", json!({})),
        ("regex_search", json!({"pattern": "(", "text": "x"})),
        ("regex_match", json!({"pattern": "x".repeat(5000)})),
    ];
    for (name, input) in bad {
        assert!(
            matches!(
                functions::run(name, &input),
                Err(FunctionError::BadInput(_))
            ),
            "{name}({input}) should be bad input"
        );
    }
}

#[test]
fn default_inputs_are_seeded_and_in_the_original_ranges() {
    for name in functions::names() {
        let a = functions::default_inputs(name, 1, 50);
        assert_eq!(a.len(), 50);
        assert_eq!(
            a,
            functions::default_inputs(name, 1, 50),
            "{name} not deterministic"
        );
        assert_ne!(
            a,
            functions::default_inputs(name, 2, 50),
            "{name} ignores the seed"
        );
    }
    let within = |name: &str, key: &str, lo: u64, hi: u64| {
        for i in functions::default_inputs(name, 3, 500) {
            let v = i[key].as_u64().unwrap();
            assert!((lo..=hi).contains(&v), "{name}.{key} = {v}");
        }
    };
    within("float_operations", "n", 1, 10_000);
    within("cascading_sha256", "rounds", 1, 10_000);
    within("cascading_md5", "rounds", 1, 10_000);
    within("matmul", "size", 2, 10);
    within("html_generation", "n", 1, 128);
    within("pyaes", "rounds", 1, 100);
    let texts: std::collections::HashSet<String> =
        functions::default_inputs("zlib_decompress", 3, 200)
            .into_iter()
            .map(|i| i["data"].as_str().unwrap().to_string())
            .collect();
    assert_eq!(texts.len(), 5, "five fixed texts");
}

#[test]
fn outputs_match_tolerates_last_bit_float_noise_only() {
    let a = json!({"x": 1.0, "v": [2.5, "s"]});
    assert!(functions::outputs_match(
        &a,
        &json!({"x": 1.0 + 1e-15, "v": [2.5, "s"]})
    ));
    assert!(!functions::outputs_match(
        &a,
        &json!({"x": 1.001, "v": [2.5, "s"]})
    ));
    assert!(!functions::outputs_match(
        &a,
        &json!({"x": 1.0, "v": [2.5, "t"]})
    ));
    assert!(!functions::outputs_match(
        &a,
        &json!({"x": 1.0, "v": [2.5, "s"], "y": 0})
    ));
    assert!(!functions::outputs_match(&json!(1), &json!(2)));
    // Near zero the tolerance is absolute: accumulated last-bit noise, not a different sum.
    assert!(functions::outputs_match(&json!(1e-4), &json!(1e-4 + 1e-12)));
    assert!(!functions::outputs_match(&json!(1e-4), &json!(2e-4)));
    assert!(functions::outputs_match(&json!(1e12), &json!(1e12 + 1.0)));
    assert!(!functions::outputs_match(&json!(1e12), &json!(1e12 + 1e4)));
}
