//! `microfaasctl image build`: writes a bzImage and an initramfs with the static agent as
//! /init, for VM workers, or (`--target beaglebone`) a BeagleBone Black boot partition.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use clap::{Args, Subcommand};
use miette::{Context, IntoDiagnostic, miette};

use crate::image::beaglebone::{self, BoardOptions, Identity};
use crate::image::{self, BuildOptions, KernelSource};

#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a kernel + initramfs pair for QEMU workers.
    Build(BuildArgs),
}

/// What the image boots on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// x86_64 QEMU workers: bzImage (+ vmlinux) and initramfs.
    Vm,
    /// BeagleBone Black boards: zImage, am335x-boneblack.dtb, initramfs, uEnv.txt and boot.scr
    /// (then hack/flash-beaglebone.sh writes a card per board).
    Beaglebone,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[arg(long, value_enum, default_value = "vm")]
    pub target: Target,
    /// vm: `debian-cloud` (Debian's linux-image-*-cloud-amd64, downloaded with apt-get, the
    /// default) or the path of a bzImage with virtio-net built in (hack/build-kernel.sh).
    /// beaglebone: the zImage of `hack/build-kernel.sh armv7` (built when omitted).
    #[arg(long, value_name = "debian-cloud|PATH")]
    pub kernel: Option<KernelArg>,
    /// beaglebone: the board's device tree [default: am335x-boneblack.dtb next to the zImage].
    #[arg(long, value_name = "PATH")]
    pub dtb: Option<PathBuf>,
    /// Static agent binary for /init; built when omitted (vm: cargo, musl target; beaglebone:
    /// hack/build-agent-armv7.sh with Debian's ARM toolchain).
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// beaglebone: the worker name written to uEnv.txt (the flash script sets it per card).
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
    /// beaglebone: the orchestrator's agent endpoint HOST:PORT, numeric.
    #[arg(long, value_name = "HOST:PORT")]
    pub orchestrator: Option<String>,
    /// beaglebone: the kernel `ip=` value, CLIENT::GATEWAY:NETMASK:HOSTNAME:eth0:off.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// Output directory for the kernel, `initramfs.cpio.gz` (and the U-Boot files).
    #[arg(long, default_value = "image", value_name = "DIR")]
    pub out: PathBuf,
    /// Cluster token to bake into the image (/etc/microfaas/token, mode 0600).
    #[arg(long, env = "MICROFAAS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Download cache [default: $MICROFAAS_CACHE or ~/.cache/microfaas].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Also write `vmlinux` (uncompressed) for PVH direct boot with `qemu -kernel vmlinux`,
    /// which skips in-guest decompression (about 1 s under TCG for Debian's kernel).
    #[arg(long)]
    pub pvh: bool,
}

#[derive(Debug, Clone)]
pub struct KernelArg(pub KernelSource);

impl FromStr for KernelArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty kernel".into()),
            "debian-cloud" => Ok(Self(KernelSource::DebianCloud)),
            path => Ok(Self(KernelSource::Path(path.into()))),
        }
    }
}

pub fn run(args: ImageArgs) -> miette::Result<()> {
    match args.command {
        ImageCommand::Build(b) => build(b),
    }
}

fn build(args: BuildArgs) -> miette::Result<()> {
    if args.target == Target::Beaglebone {
        return build_beaglebone(args);
    }
    for (flag, given) in [
        ("--dtb", args.dtb.is_some()),
        ("--worker", args.worker.is_some()),
        ("--orchestrator", args.orchestrator.is_some()),
        ("--ip", args.ip.is_some()),
    ] {
        if given {
            return Err(miette!("{flag} is for --target beaglebone"));
        }
    }
    let kernel = args.kernel.map_or(KernelSource::DebianCloud, |k| k.0);
    if let KernelSource::Path(p) = &kernel
        && !p.is_file()
    {
        return Err(miette!(
            help = "pass --kernel debian-cloud, or build one with hack/build-kernel.sh",
            "kernel {} is not a file",
            p.display()
        ));
    }
    let agent = match args.agent {
        Some(p) => p,
        None => build_agent()?,
    };
    let opts = BuildOptions {
        kernel,
        agent,
        out_dir: args.out,
        token: args.token,
        cache_dir: args.cache_dir,
        pvh: args.pvh,
    };
    let out = image::build_with_progress(&opts, &mut |msg| eprintln!("==> {msg}"))
        .into_diagnostic()
        .wrap_err("image build failed")?;
    println!("kernel:    {}", out.bzimage.display());
    if let Some(v) = &out.vmlinux {
        println!("vmlinux:   {} (PVH)", v.display());
    }
    println!(
        "initramfs: {} ({} KiB)",
        out.initramfs.display(),
        out.initramfs_size.div_ceil(1024)
    );
    println!("cmdline:   {}", out.cmdline);
    if out.modules.is_empty() {
        println!("modules:   none (kernel has what it needs built in)");
    } else {
        println!("modules:   {}", out.modules.join(" "));
    }
    Ok(())
}

fn build_beaglebone(args: BuildArgs) -> miette::Result<()> {
    if args.pvh {
        return Err(miette!("--pvh is for --target vm (x86 PVH boot)"));
    }
    let zimage = match args.kernel.map(|k| k.0) {
        Some(KernelSource::Path(p)) => {
            if !p.is_file() {
                return Err(miette!(
                    help = "build one with hack/build-kernel.sh armv7",
                    "kernel {} is not a file",
                    p.display()
                ));
            }
            p
        }
        Some(KernelSource::DebianCloud) => {
            return Err(miette!(
                help =
                    "omit --kernel to build one, or pass the zImage of hack/build-kernel.sh armv7",
                "debian-cloud is an x86 kernel; a BeagleBone needs the ARMv7 zImage"
            ));
        }
        None => PathBuf::from(run_hack("build-kernel.sh", &["armv7"])?),
    };
    let dtb = args
        .dtb
        .unwrap_or_else(|| zimage.with_file_name(beaglebone::DTB));
    let agent = match args.agent {
        Some(p) => p,
        None => PathBuf::from(run_hack("build-agent-armv7.sh", &[])?),
    };
    let defaults = Identity::default();
    let opts = BoardOptions {
        zimage,
        dtb,
        agent,
        out_dir: args.out,
        token: args.token,
        identity: Identity {
            worker: args.worker.unwrap_or(defaults.worker),
            orchestrator: args.orchestrator.unwrap_or(defaults.orchestrator),
            ip: args.ip.unwrap_or(defaults.ip),
        },
    };
    let out = beaglebone::build(&opts)
        .into_diagnostic()
        .wrap_err("image build failed")?;
    println!("kernel:    {}", out.zimage.display());
    println!("dtb:       {}", out.dtb.display());
    println!(
        "initramfs: {} ({} KiB)",
        out.initramfs.display(),
        out.initramfs_size.div_ceil(1024)
    );
    println!("uEnv:      {}", out.uenv.display());
    println!(
        "flash:     hack/flash-beaglebone.sh --image {} --device /dev/sdX --worker NAME ...",
        opts.out_dir.display()
    );
    Ok(())
}

/// Runs one of the source tree's hack/ scripts, which print the path they built on stdout
/// (progress and errors go to our stderr).
fn run_hack(script: &str, args: &[&str]) -> miette::Result<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hack")
        .join(script);
    if !path.is_file() {
        return Err(miette!(
            help = "pass --kernel and --agent explicitly",
            "no source tree with {} to build from",
            path.display()
        ));
    }
    eprintln!("==> {}", path.display());
    let out = Command::new(&path)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .into_diagnostic()
        .wrap_err_with(|| format!("could not run {}", path.display()))?;
    if !out.status.success() {
        return Err(miette!(
            "{script} failed ({}); its error is above",
            out.status
        ));
    }
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if printed.is_empty() {
        return Err(miette!("{script} printed no path"));
    }
    Ok(printed)
}

/// Builds the static agent from the source tree this binary was built from.
fn build_agent() -> miette::Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    if !manifest.is_file() {
        return Err(miette!(
            help = "pass --agent PATH (a static x86_64-unknown-linux-musl microfaas-agent)",
            "no source tree at {} to build the agent from",
            manifest.display()
        ));
    }
    eprintln!("==> building microfaas-agent (cargo, x86_64-unknown-linux-musl, release)");
    let out = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--no-default-features",
            "--features",
            "agent",
        ])
        .args([
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            "microfaas-agent",
        ])
        .args([
            "--message-format=json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .into_diagnostic()
        .wrap_err("could not run cargo; pass --agent PATH instead")?;
    if !out.status.success() {
        return Err(miette!(
            help = "`rustup target add x86_64-unknown-linux-musl`, or pass --agent PATH",
            "building the agent failed ({})",
            out.status
        ));
    }
    agent_executable(&out.stdout).ok_or_else(|| miette!("cargo reported no microfaas-agent binary"))
}

/// Picks the agent's path out of cargo's JSON messages, which name it wherever the target
/// directory is.
fn agent_executable(stdout: &[u8]) -> Option<PathBuf> {
    stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "microfaas-agent")
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_argument() {
        assert!(matches!(
            "debian-cloud".parse::<KernelArg>().unwrap().0,
            KernelSource::DebianCloud
        ));
        assert_eq!(
            "/k/bzImage".parse::<KernelArg>().unwrap().0,
            KernelSource::Path("/k/bzImage".into())
        );
    }

    #[test]
    fn finds_the_agent_in_cargo_messages() {
        let msgs = br#"{"reason":"compiler-artifact","target":{"name":"libc"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"microfaas-agent"},"executable":"/t/microfaas-agent"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            agent_executable(msgs),
            Some(PathBuf::from("/t/microfaas-agent"))
        );
    }
}
