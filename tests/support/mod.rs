//! Shared by the QEMU tests and hack/bench-boot: where the prepared artefacts are, a QEMU
//! launcher and a minimal orchestrator.
#![allow(dead_code)] // each user takes a different subset

// Needs the agent binary, which only test targets are given.
#[cfg(test)]
pub mod boards;
pub mod etcd;
// Reads the store the CLI writes; only the chaos suite uses it.
#[cfg(test)]
pub mod chaos;
pub mod faulty;
pub mod host;
pub mod orchestrator;
pub mod qemu;
pub mod services;
pub mod snmp_agents;
pub mod v1;
pub mod wasm_fn;
// Needs the CLI binary, which only test targets are given.
#[cfg(test)]
pub mod testbed;
// Drives a real chromedriver; only the browser tests use it.
#[cfg(test)]
pub mod webdriver;

use std::path::PathBuf;

/// The small all-built-in kernel (hack/build-kernel.sh).
pub const KERNEL_VAR: &str = "MICROFAAS_TEST_KERNEL";
/// The static musl agent.
pub const AGENT_VAR: &str = "MICROFAAS_TEST_AGENT";
/// The ARMv7 zImage (hack/build-kernel.sh armv7), am335x-boneblack.dtb next to it.
pub const ARMV7_KERNEL_VAR: &str = "MICROFAAS_TEST_KERNEL_ARMV7";
/// The static ARMv7 agent (hack/build-agent-armv7.sh).
pub const ARMV7_AGENT_VAR: &str = "MICROFAAS_TEST_AGENT_ARMV7";

/// A file named by environment variable `var`, as exported by hack/test-artifacts.sh.
pub fn artifact(var: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            format!("{var} is not set: run `eval \"$(hack/test-artifacts.sh)\"` first")
        })?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!(
            "{var}={} does not exist: re-run `eval \"$(hack/test-artifacts.sh)\"`",
            path.display()
        ));
    }
    Ok(path)
}
