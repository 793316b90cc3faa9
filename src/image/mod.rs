//! VM image builder: a kernel (Debian's cloud kernel or a given bzImage) plus an initramfs with
//! the static agent as /init and exactly the modules that kernel needs for virtio-net and the
//! ACPI power button; and the BeagleBone Black boot partition ([`beaglebone`]).

pub mod beaglebone;
pub mod cmdline;
pub mod cpio;
pub mod debian;
mod decompress;
mod elf;
mod error;
pub mod initramfs;
pub mod modules;
mod tool;
mod vmlinux;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::ImageError;

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The current `linux-image-*-cloud-amd64` from the local apt sources; virtio-net and the
    /// ACPI button are modules there.
    DebianCloud,
    /// A bzImage on disk (e.g. from hack/build-kernel.sh) with everything built in: no modules.
    Path(PathBuf),
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub kernel: KernelSource,
    /// The static agent binary that becomes /init.
    pub agent: PathBuf,
    /// Receives `bzImage` and `initramfs.cpio.gz`; created if missing.
    pub out_dir: PathBuf,
    /// Baked into the image as /etc/microfaas/token when set.
    pub token: Option<String>,
    /// Download cache; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Also write `vmlinux`, the uncompressed kernel ELF, for PVH direct boot
    /// (`qemu -kernel vmlinux`): no in-guest decompression. Needs a CONFIG_PVH=y kernel.
    pub pvh: bool,
}

impl BuildOptions {
    /// Options with no token, the default cache and no PVH kernel.
    pub fn new(kernel: KernelSource, agent: PathBuf, out_dir: PathBuf) -> Self {
        BuildOptions {
            kernel,
            agent,
            out_dir,
            token: None,
            cache_dir: None,
            pvh: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub bzimage: PathBuf,
    /// The uncompressed kernel for PVH boot, when [`BuildOptions::pvh`] asked for it.
    pub vmlinux: Option<PathBuf>,
    pub initramfs: PathBuf,
    /// Module names in load order; empty for a kernel with everything built in.
    pub modules: Vec<String>,
    /// The kernel release (`uname -r`) when known, e.g. `6.1.0-57-cloud-amd64`.
    pub kernel_release: Option<String>,
    /// Compressed initramfs size in bytes.
    pub initramfs_size: u64,
    /// Kernel arguments recommended for this image (also written to `cmdline` in the out
    /// dir); a VM adds its `microfaas.*` arguments after them.
    pub cmdline: String,
}

/// `$MICROFAAS_CACHE`, else `$HOME/.cache/microfaas` (the same place hack/build-kernel.sh uses).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MICROFAAS_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/microfaas")
}

pub fn build(opts: &BuildOptions) -> Result<BuildOutput, ImageError> {
    build_with_progress(opts, &mut |_| {})
}

/// Like [`build`], reporting slow steps (download, unpack) through `progress`.
pub fn build_with_progress(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<BuildOutput, ImageError> {
    if let Some(token) = &opts.token {
        check_token(token)?;
    }
    let agent = fs::read(&opts.agent).map_err(|source| ImageError::Read {
        path: opts.agent.clone(),
        source,
    })?;
    elf::check_static_x86_64(&opts.agent, &agent)?;

    let (kernel, modules_dir, release) = match &opts.kernel {
        KernelSource::Path(p) => (p.clone(), None, None),
        KernelSource::DebianCloud => {
            let cache = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
            let package = debian::current_package()?;
            let k = debian::fetch(&cache, &package, progress)?;
            (k.vmlinuz, Some(k.modules_dir), Some(k.release))
        }
    };

    let mut names = Vec::new();
    let mut module_files = Vec::new();
    if let (Some(dir), Some(release)) = (&modules_dir, &release) {
        for m in modules::resolve(dir, modules::WORKER_MODULES)? {
            let bytes = decompress::read_module(&m.source(dir))?;
            let image_path = format!("/lib/modules/{release}/{}", m.uncompressed_rel_path());
            module_files.push((image_path, bytes));
            names.push(m.name);
        }
    }

    fs::create_dir_all(&opts.out_dir).map_err(|source| ImageError::Write {
        path: opts.out_dir.clone(),
        source,
    })?;
    let bzimage = opts.out_dir.join("bzImage");
    copy_atomic(&kernel, &bzimage)?;
    let vmlinux = if opts.pvh {
        progress("extracting vmlinux for PVH boot");
        Some(write_vmlinux(&bzimage, &opts.out_dir.join("vmlinux"))?)
    } else {
        // A vmlinux left by an earlier --pvh build would no longer match the bzImage.
        remove_if_present(&opts.out_dir.join("vmlinux"))?;
        None
    };

    let initramfs = opts.out_dir.join("initramfs.cpio.gz");
    progress(&format!("writing {}", initramfs.display()));
    let initramfs_size = initramfs::write(
        &initramfs,
        &initramfs::Contents {
            agent: &agent,
            modules: module_files,
            token: opts.token.as_deref(),
        },
    )?;
    let cmdline = cmdline::recommended(matches!(opts.kernel, KernelSource::DebianCloud));
    let cmdline_file = opts.out_dir.join("cmdline");
    fs::write(&cmdline_file, format!("{cmdline}\n")).map_err(|source| ImageError::Write {
        path: cmdline_file,
        source,
    })?;
    Ok(BuildOutput {
        cmdline,
        bzimage,
        vmlinux,
        initramfs,
        modules: names,
        kernel_release: release,
        initramfs_size,
    })
}

/// The token also travels on the kernel command line (`microfaas.token=`), where whitespace
/// would split it.
fn check_token(token: &str) -> Result<(), ImageError> {
    if token.is_empty() {
        return Err(ImageError::InvalidToken("empty"));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ImageError::InvalidToken(
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ImageError::Write {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_vmlinux(bzimage: &Path, to: &Path) -> Result<PathBuf, ImageError> {
    let bytes = fs::read(bzimage).map_err(|source| ImageError::Read {
        path: bzimage.to_owned(),
        source,
    })?;
    let elf = vmlinux::extract(bzimage, &bytes)?;
    let tmp = to.with_extension("tmp");
    fs::write(&tmp, elf)
        .and_then(|()| fs::rename(&tmp, to))
        .map_err(|source| ImageError::Write {
            path: to.to_owned(),
            source,
        })?;
    Ok(to.to_owned())
}

fn copy_atomic(from: &Path, to: &Path) -> Result<(), ImageError> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(from), fs::canonicalize(to))
        && a == b
    {
        return Ok(());
    }
    let tmp = to.with_extension("tmp");
    fs::copy(from, &tmp).map_err(|source| ImageError::Read {
        path: from.to_owned(),
        source,
    })?;
    fs::rename(&tmp, to).map_err(|source| ImageError::Write {
        path: to.to_owned(),
        source,
    })
}
