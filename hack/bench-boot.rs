//! Boot-time benchmark behind hack/bench-boot: N cold boots per configuration (Debian cloud
//! kernel and the small kernel; each as bzImage and, when it has a PVH entry, as uncompressed
//! vmlinux (`+pvh`); each with SeaBIOS, with qboot (`+qboot`) when present, and on the
//! `microvm` machine (`+microvm`, the default of VM workers)), under TCG
//! with the real agent, split into
//!   QEMU start → kernel   (hello's arrival minus the guest's CLOCK_BOOTTIME in hello)
//!   kernel → /init        (the agent's first console line "starting as PID 1")
//!   /init → hello         (hello frame received by the orchestrator)
//! plus the total QEMU start → hello and poweroff → QEMU exit; p50/p95 per configuration.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use microfaas::image::{BuildOptions, ImageError, KernelSource, build};

use support::orchestrator::TestOrchestrator;
use support::qemu::{BootSpec, Vm};
use support::{AGENT_VAR, KERNEL_VAR, artifact};

const QBOOT: &str = "/usr/share/qemu/qboot.rom";
const TOKEN: &str = "bench-token";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const INIT_MARKER: &str = "starting as PID 1";
/// Retries per configuration for boots that another process killed.
const MAX_OUTSIDE_KILLS: usize = 5;

struct Config {
    name: String,
    kernel: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    bios: Option<PathBuf>,
    /// `-machine` and the kernel arguments it needs; `pc` when `None`.
    machine: Option<(String, String)>,
}

/// One boot's phases, in seconds.
#[derive(Default, Clone, Copy)]
struct Sample {
    to_kernel: f64,
    kernel_to_init: f64,
    init_to_hello: f64,
    total: f64,
    poweroff_to_exit: f64,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-boot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Command-line options.
struct RunOpts {
    boots: usize,
    only: Vec<String>,
    append: String,
    nice: i32,
    plain: bool,
}

const USAGE: &str = "usage: hack/bench-boot [-n BOOTS] [--append KERNEL-ARGS] [--plain] [--nice N] \
                     [CONFIG...]\n  CONFIG: NAME[+pvh][+qboot|+microvm], NAME = debian-cloud | small\n  \
                     --plain: boot with only `console=ttyS0 quiet`, not the image's cmdline";

fn parse_args() -> Result<Option<RunOpts>, String> {
    let mut o = RunOpts {
        boots: 10,
        only: Vec::new(),
        append: String::new(),
        nice: 0,
        plain: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-n" => {
                o.boots = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&v| v > 0)
                    .ok_or("-n needs a positive number")?
            }
            "--append" => o.append = args.next().ok_or("--append needs kernel arguments")?,
            "--plain" => o.plain = true,
            "--nice" => {
                o.nice = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--nice needs a number (-20..19)")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            c => o.only.push(c.to_owned()),
        }
    }
    Ok(Some(o))
}

fn run() -> Result<(), String> {
    let Some(opts) = parse_args()? else {
        return Ok(());
    };
    let n = opts.boots;
    // Removed when it goes out of scope, images and all.
    let work = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let configs = prepare(work.path(), &opts.only)?;
    println!(
        "{n} cold boots per configuration, qemu-system-x86_64 -accel tcg, {} host cores, \
         QEMU nice {}, load average at start {}\n",
        std::thread::available_parallelism().map_or(0, |p| p.get()),
        opts.nice,
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    if opts.plain {
        println!("kernel arguments: only `console=ttyS0 quiet` (--plain)\n");
    }
    if !opts.append.is_empty() {
        println!("extra kernel arguments: {}\n", opts.append);
    }
    println!(
        "{:<24} {:>15} {:>15} {:>15} {:>15} {:>15}",
        "config  p50/p95 s",
        "QEMU→kernel",
        "kernel→/init",
        "/init→hello",
        "QEMU→hello",
        "poweroff→exit"
    );
    for c in &configs {
        let mut samples = Vec::with_capacity(n);
        let mut outside_kills = 0;
        while samples.len() < n {
            match boot_once(c, &opts) {
                Ok(s) => samples.push(s),
                Err(Boot::KilledFromOutside) if outside_kills < MAX_OUTSIDE_KILLS => {
                    outside_kills += 1;
                    eprintln!(
                        "bench-boot: {} boot {}: QEMU was killed by another process; retrying",
                        c.name,
                        samples.len() + 1
                    );
                }
                Err(Boot::KilledFromOutside) => {
                    return Err(format!(
                        "{}: QEMU killed from outside {outside_kills} times; is something \
                         killing qemu-system processes?",
                        c.name
                    ));
                }
                Err(Boot::Failed(e)) => {
                    return Err(format!("{} boot {}: {e}", c.name, samples.len() + 1));
                }
            }
        }
        let col = |f: fn(&Sample) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            format!("{:.2} / {:.2}", percentile(&v, 50), percentile(&v, 95))
        };
        println!(
            "{:<24} {:>15} {:>15} {:>15} {:>15} {:>15}",
            c.name,
            col(|s| s.to_kernel),
            col(|s| s.kernel_to_init),
            col(|s| s.init_to_hello),
            col(|s| s.total),
            col(|s| s.poweroff_to_exit),
        );
    }
    Ok(())
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: usize) -> f64 {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn prepare(work: &Path, only: &[String]) -> Result<Vec<Config>, String> {
    let agent = artifact(AGENT_VAR)?;
    let small = artifact(KERNEL_VAR)?;
    let image = |name: &str, kernel: KernelSource| {
        eprintln!("bench-boot: building the {name} image");
        let mut opts = BuildOptions::new(kernel, agent.clone(), work.join(name));
        opts.token = Some(TOKEN.into());
        opts.pvh = true;
        match build(&opts) {
            Err(ImageError::Vmlinux { reason, .. }) => {
                eprintln!("bench-boot: {name}: no PVH variant: {reason}");
                opts.pvh = false;
                build(&opts)
            }
            other => other,
        }
        .map_err(|e| format!("building the {name} image: {e}"))
    };
    let images = [
        (
            "debian-cloud",
            image("debian-cloud", KernelSource::DebianCloud)?,
        ),
        ("small", image("small", KernelSource::Path(small))?),
    ];
    let qboot = Path::new(QBOOT).is_file().then(|| PathBuf::from(QBOOT));
    if qboot.is_none() {
        eprintln!("bench-boot: {QBOOT} not present, SeaBIOS only");
    }
    let mut configs = Vec::new();
    for (name, img) in images {
        let kernels = [
            Some((name.to_owned(), img.bzimage.clone())),
            img.vmlinux.clone().map(|v| (format!("{name}+pvh"), v)),
        ];
        for (kname, kernel) in kernels.into_iter().flatten() {
            let firmwares = [
                Some((kname.clone(), None)),
                qboot.clone().map(|q| (format!("{kname}+qboot"), Some(q))),
            ];
            for (cname, bios) in firmwares.into_iter().flatten() {
                configs.push(Config {
                    name: cname,
                    kernel: kernel.clone(),
                    initrd: img.initramfs.clone(),
                    cmdline: img.cmdline.clone(),
                    bios,
                    machine: None,
                });
            }
            // microvm brings its own qboot; as the QEMU driver launches it (args.rs), with the
            // host's TSC frequency the guest cannot calibrate under TCG.
            if let Some(khz) = microfaas::drivers::qemu::host_tsc_khz() {
                configs.push(Config {
                    name: format!("{kname}+microvm"),
                    kernel: kernel.clone(),
                    initrd: img.initramfs.clone(),
                    cmdline: img.cmdline.clone(),
                    bios: None,
                    machine: Some((
                        "microvm,pcie=on,acpi=on,pic=off".into(),
                        format!("tsc_early_khz={khz} tsc=reliable"),
                    )),
                });
            }
        }
    }
    configs.retain(|c| only.is_empty() || only.contains(&c.name));
    if configs.is_empty() {
        return Err(format!("no configuration matches {only:?}"));
    }
    Ok(configs)
}

/// Why a boot produced no sample.
enum Boot {
    /// Another process on the machine SIGKILLed our QEMU: retry, it measured nothing.
    KilledFromOutside,
    Failed(String),
}

fn boot_once(c: &Config, opts: &RunOpts) -> Result<Sample, Boot> {
    // --plain: the bare console arguments, to measure what the image's recommended ones save.
    let base = if opts.plain {
        "console=ttyS0 quiet".to_owned()
    } else {
        c.cmdline.clone()
    };
    let orchestrator = TestOrchestrator::bind().map_err(Boot::Failed)?;
    let mut spec = BootSpec::new(&c.kernel, &c.initrd, &base, orchestrator.port);
    spec.bios = c.bios.clone();
    spec.nice = opts.nice;
    spec.extra_cmdline = format!("microfaas.worker=bench {}", opts.append);
    if let Some((machine, args)) = &c.machine {
        spec.machine = Some(machine.clone());
        spec.extra_cmdline = format!("{} {args}", spec.extra_cmdline);
    }
    let mut vm = Vm::launch(&spec).map_err(Boot::Failed)?;
    let result = measure(&orchestrator, &mut vm);
    if result.is_err() {
        if vm.killed_from_outside() {
            return Err(Boot::KilledFromOutside);
        }
        eprintln!("{}", vm.post_mortem());
    }
    result.map_err(Boot::Failed)
}

fn measure(orchestrator: &TestOrchestrator, vm: &mut Vm) -> Result<Sample, String> {
    let mut session = orchestrator.accept(vm, BOOT_TIMEOUT)?;
    let (hello, hello_at) = session.handshake(TOKEN.as_bytes())?;
    let init_at = vm
        .console_marker(INIT_MARKER)
        .ok_or_else(|| format!("no {INIT_MARKER:?} on the console"))?;
    let kernel_at = hello_at
        .checked_sub(Duration::from_millis(hello.uptime_ms))
        .ok_or("guest uptime longer than the host process")?;
    let poweroff_at = Instant::now();
    session.poweroff()?;
    let status = vm
        .wait_exit(Duration::from_secs(30))
        .ok_or("QEMU did not exit after poweroff")?;
    if !status.success() {
        return Err(format!("QEMU exited with {status}"));
    }
    let secs = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64();
    Ok(Sample {
        to_kernel: secs(vm.started, kernel_at),
        kernel_to_init: secs(kernel_at, init_at),
        init_to_hello: secs(init_at, hello_at),
        total: secs(vm.started, hello_at),
        poweroff_to_exit: secs(poweroff_at, Instant::now()),
    })
}
