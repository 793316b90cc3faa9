//! `wordfreq`, an example microfaas user function. The calling convention: the input is JSON
//! on stdin, the output is JSON on stdout, argv[0] is the Function's name and the environment
//! is `Function.spec.env`; a non-zero exit or a trap is a failed invocation.
//!
//! Input `{"text": "...", "top": 3}`: counts the words (lower-cased, split on anything that is
//! not alphanumeric) and answers the `top` most frequent (ties in alphabetical order), the word
//! and character counts, and the `GREETING` variable. Two more inputs exist to show the
//! runtime's bounds: `{"allocMiB": N}` holds N MiB, `{"spin": true}` never returns.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use serde_json::{Value, json};

fn main() -> ExitCode {
    let mut raw = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut raw) {
        eprintln!("cannot read the input: {e}");
        return ExitCode::from(2);
    }
    let input: Value = match serde_json::from_str(&raw) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("input is not JSON: {e}");
            return ExitCode::from(2);
        }
    };
    if input["spin"] == true {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if let Some(mib) = input["allocMiB"].as_u64() {
        let held = vec![1u8; (mib as usize) << 20];
        println!(
            "{}",
            json!({"allocatedMiB": mib, "sum": held.iter().map(|&b| b as u64).sum::<u64>() >> 20})
        );
        return ExitCode::SUCCESS;
    }
    let Some(text) = input["text"].as_str() else {
        eprintln!("input needs a string field \"text\"");
        return ExitCode::from(2);
    };
    let top = input["top"].as_u64().unwrap_or(3) as usize;

    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut words = 0u64;
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        words += 1;
        *counts.entry(w.to_lowercase()).or_default() += 1;
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(top);

    let function = std::env::args().next().unwrap_or_default();
    let out = json!({
        "function": function,
        "greeting": std::env::var("GREETING").ok(),
        "words": words,
        "chars": text.chars().count(),
        "top": ranked.iter().map(|(w, n)| json!([w, n])).collect::<Vec<_>>(),
    });
    println!("{out}");
    ExitCode::SUCCESS
}
