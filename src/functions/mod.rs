//! The benchmark function suite (placeholder until the suite lands).

/// Names of the builtin functions.
pub fn names() -> &'static [&'static str] {
    &[]
}
