//! Boots real worker images in QEMU (TCG, isolated user networking) and drives the agent
//! through a loopback test orchestrator: hello with correct auth, each of the nine builtin
//! functions checked against the independent Python vectors (tests/functions_reference.py),
//! then `poweroff`, after which QEMU must exit by itself with status 0.
//!
//! Artefacts (nothing is skipped when they are missing; the test fails saying what to run):
//!   eval "$(hack/test-artifacts.sh)"   # exports MICROFAAS_TEST_KERNEL and MICROFAAS_TEST_AGENT
//!   cargo test --test qemu_boot
//! MICROFAAS_TEST_KERNEL is the small kernel from hack/build-kernel.sh, MICROFAAS_TEST_AGENT
//! the static musl microfaas-agent. The Debian cloud kernel is fetched by the image builder
//! itself (apt-get download, cached in ${MICROFAAS_CACHE:-~/.cache/microfaas}). QEMU, python3
//! and apt come from hack/install-deps.sh.

mod functions_support;
mod support;

use std::time::Duration;

use microfaas::functions;
use microfaas::image::{BuildOptions, KernelSource, build};
use microfaas::protocol::Outcome;

use functions_support::reference;
use support::orchestrator::TestOrchestrator;
use support::qemu::{BootSpec, Vm};
use support::{AGENT_VAR, KERNEL_VAR, artifact};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const WORKER: &str = "vm-test";

/// Where the token reaches the agent: baked into the image, or on the kernel command line.
#[derive(Clone, Copy)]
enum TokenVia {
    Image,
    Cmdline,
}

/// `pvh`: boot the extracted uncompressed vmlinux instead of the bzImage.
fn boot_and_run_all_functions(kernel: KernelSource, token_via: TokenVia, pvh: bool) {
    let agent = artifact(AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let token = format!(
        "token-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    );
    let token: String = token.chars().filter(char::is_ascii_alphanumeric).collect();
    let mut opts = BuildOptions::new(kernel, agent, dir.path().join("image"));
    opts.token = matches!(token_via, TokenVia::Image).then(|| token.clone());
    opts.pvh = pvh;
    let image = build(&opts).unwrap_or_else(|e| panic!("image build: {e}"));
    let kernel = match (&image.vmlinux, pvh) {
        (Some(v), true) => v.clone(),
        _ => image.bzimage.clone(),
    };

    let orchestrator = TestOrchestrator::bind().unwrap_or_else(|e| panic!("{e}"));
    let mut spec = BootSpec::new(&kernel, &image.initramfs, &image.cmdline, orchestrator.port);
    spec.extra_cmdline = format!("microfaas.worker={WORKER}");
    if let TokenVia::Cmdline = token_via {
        spec.extra_cmdline += &format!(" microfaas.token={token}");
    }
    let mut vm = Vm::launch(&spec).unwrap_or_else(|e| panic!("{e}"));

    let outcome = drive(&orchestrator, &mut vm, token.as_bytes());
    if let Err(e) = outcome {
        panic!("{e}\n(modules {:?})\n{}", image.modules, vm.post_mortem());
    }
}

fn drive(orchestrator: &TestOrchestrator, vm: &mut Vm, token: &[u8]) -> Result<(), String> {
    let mut session = orchestrator.accept(vm, BOOT_TIMEOUT)?;
    let (hello, _) = session.handshake(token)?;
    if hello.worker != WORKER {
        return Err(format!("hello from {:?}, expected {WORKER}", hello.worker));
    }
    for name in functions::names() {
        if !hello.capabilities.functions.iter().any(|f| f == name) {
            return Err(format!(
                "agent does not offer {name}: {:?}",
                hello.capabilities
            ));
        }
    }

    for (i, name) in functions::names().iter().enumerate() {
        let inputs = functions::default_inputs(name, 2026, 1);
        let expected = reference(name, &inputs);
        let result = session.invoke(&format!("inv{i:03}"), name, &inputs[0])?;
        match &result.outcome {
            Outcome::Output(got) if functions::outputs_match(&expected[0], got) => {}
            other => {
                return Err(format!(
                    "{name}({}) in the VM gave {other:?}, reference says {}",
                    inputs[0], expected[0]
                ));
            }
        }
    }

    session.poweroff()?;
    match vm.wait_exit(EXIT_TIMEOUT) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(format!("QEMU exited with {status} after poweroff")),
        None => Err(format!(
            "QEMU still running {EXIT_TIMEOUT:?} after poweroff"
        )),
    }
}

#[test]
fn small_kernel_runs_every_function_and_powers_off() {
    let kernel = artifact(KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    boot_and_run_all_functions(KernelSource::Path(kernel), TokenVia::Image, false);
}

#[test]
fn debian_cloud_kernel_runs_every_function_and_powers_off() {
    boot_and_run_all_functions(KernelSource::DebianCloud, TokenVia::Cmdline, false);
}

#[test]
fn debian_cloud_kernel_boots_through_pvh() {
    boot_and_run_all_functions(KernelSource::DebianCloud, TokenVia::Image, true);
}
