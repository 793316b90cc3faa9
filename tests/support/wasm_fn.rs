//! The example user function (examples/wasm-fn, `wordfreq`), built from source once per test
//! process into `$CARGO_TARGET_DIR/wasm-fn`: for wasm32-wasip1, and as a static musl executable
//! for the `exec` runtime (hack/install-deps.sh installs both targets).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The built `wordfreq.wasm`.
pub fn wordfreq() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build("wasm32-wasip1").join("wordfreq.wasm"))
        .clone()
}

/// The same function as a static x86-64 executable (musl).
pub fn wordfreq_static() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| build("x86_64-unknown-linux-musl").join("wordfreq"))
        .clone()
}

/// Builds examples/wasm-fn in release for `triple`; the folder its artefacts land in. Panics
/// with cargo's exit status when the build fails.
fn build(triple: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-fn");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--target", triple])
        .arg("--manifest-path")
        .arg(root.join("examples/wasm-fn/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "building examples/wasm-fn for {triple} failed ({status}); \
         hack/install-deps.sh installs the target"
    );
    target.join(triple).join("release")
}
