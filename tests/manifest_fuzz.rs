//! Mutated manifests never panic the loader or the validator: they give diagnostics.

use microfaas::manifest::{self, Loaded, validate};
use proptest::prelude::*;

const REFERENCE: &str = include_str!("../examples/reference.yaml");

fn run(text: String) -> Loaded {
    manifest::validate_text("fuzz.yaml", text, validate::Options { fs_checks: true })
}

/// One edit of the reference manifest: delete, duplicate, or replace a byte range.
fn mutated() -> impl Strategy<Value = String> {
    let len = REFERENCE.len();
    (
        0..len,
        0..64usize,
        prop::collection::vec(any::<u8>(), 0..16),
        0..3u8,
    )
        .prop_map(move |(at, n, bytes, op)| {
            let mut b = REFERENCE.as_bytes().to_vec();
            let end = (at + n).min(len);
            match op {
                0 => {
                    b.drain(at..end);
                }
                1 => {
                    let copy = b[at..end].to_vec();
                    b.splice(at..at, copy);
                }
                _ => {
                    b.splice(at..end, bytes);
                }
            }
            String::from_utf8_lossy(&b).into_owned()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn mutated_manifests_never_panic(text in mutated()) {
        let loaded = run(text);
        for d in &loaded.diagnostics {
            prop_assert!(d.pos.line >= 1, "{d:?}");
            prop_assert!(!d.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = run(text);
    }
}

#[test]
fn unmutated_reference_is_clean() {
    let loaded = run(REFERENCE.to_string());
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && !d.message.contains("does not exist"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(loaded.resources.len(), 16);
}

/// Regression (tests/fuzz_inputs.rs, seed 20261207, manifest input 363): a manifest nested ~200
/// flow mappings deep overflowed a 2 MiB stack, the size of tokio's workers and test threads,
/// killing the process. Now every depth is a diagnostic, on such a stack.
#[test]
fn deep_nesting_is_a_diagnostic_not_a_stack_overflow() {
    for opener in ["{a: ", "[", "- "] {
        for depth in [33usize, 64, 200, 10_000] {
            let text = if opener == "- " {
                let mut s =
                    String::from("apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nspec:\n");
                for i in 0..depth {
                    s.push_str(&" ".repeat(2 * i + 2));
                    s.push_str("-\n");
                }
                s
            } else {
                format!(
                    "apiVersion: microfaas.dev/v1alpha1\nkind: Cluster\nspec: {}1",
                    opener.repeat(depth)
                )
            };
            let first = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let loaded = run(text);
                    loaded
                        .diagnostics
                        .first()
                        .map(|d| (d.pos.line, d.message.clone()))
                })
                .expect("thread")
                .join()
                .expect("no panic");
            let (line, message) = first.expect("a diagnostic");
            assert!(line >= 1, "{opener:?} x{depth}");
            assert!(
                message.starts_with("invalid YAML"),
                "{opener:?} x{depth}: {message}"
            );
        }
    }
}
