//! Fetches Debian's current `linux-image-*-cloud-amd64` kernel with the ordinary apt client
//! (`apt-get download` + `dpkg -x`, no root needed) and unpacks it into a cache directory.
//!
//! The package carries no `modules.dep` (its postinst runs depmod on install), so it is
//! generated here with `depmod -b`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;
use super::tool::{hint, run};

/// The meta-package whose dependency names the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An unpacked Debian kernel.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// e.g. `linux-image-6.1.0-57-cloud-amd64`.
    pub package: String,
    /// e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `…/lib/modules/<release>`, with `modules.dep`.
    pub modules_dir: PathBuf,
}

/// The package name of the current cloud kernel, from the local apt lists (no network).
pub fn current_package() -> Result<String, ImageError> {
    let out = run(
        "apt-cache",
        Command::new("apt-cache").args(["depends", META_PACKAGE]),
    )?;
    parse_depends(&String::from_utf8_lossy(&out)).ok_or_else(|| ImageError::Tool {
        tool: "apt-cache",
        detail: format!(
            "`apt-cache depends {META_PACKAGE}` names no linux-image-*-cloud-amd64 package \
             (run `apt-get update`?)"
        ),
    })
}

fn parse_depends(out: &str) -> Option<String> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64") && !p.contains('<'))
        .map(str::to_owned)
}

/// Returns the cached unpacked kernel for `package`, downloading and unpacking it first if the
/// cache does not hold it. `cache_dir` is the microfaas cache root.
pub fn fetch(
    cache_dir: &Path,
    package: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<DebianKernel, ImageError> {
    let base = cache_dir.join("debian");
    let dir = base.join(package);
    if let Ok(kernel) = locate(&dir, package) {
        return Ok(kernel);
    }
    fs::create_dir_all(&base).map_err(|source| ImageError::Write {
        path: base.clone(),
        source,
    })?;
    // Unpack next to the final place and rename at the end, so an interrupted fetch never
    // leaves a tree that looks complete.
    let staging = TempDir::new(&base)?;
    progress(&format!("downloading {package} with apt-get"));
    run(
        "apt-get",
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(&staging.0),
    )
    .map_err(|e| hint(e, "is the network up and `apt-get update` done?"))?;
    let deb = find_deb(&staging.0, package)?;
    progress(&format!("unpacking {}", file_name(&deb)));
    let root = staging.0.join("root");
    run("dpkg", Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
    fs::remove_file(&deb).map_err(|source| ImageError::Write { path: deb, source })?;

    let release = release_of(&root)?;
    ensure_modules_dep(&root, &release, progress)?;

    if dir.exists() {
        // Another fetch (a parallel test, a second CLI run) finished first: use its tree.
        if let Ok(kernel) = locate(&dir, package) {
            return Ok(kernel);
        }
        // A tree someone damaged by hand; rename-into-place never leaves one behind.
        fs::remove_dir_all(&dir).map_err(|source| ImageError::Write {
            path: dir.clone(),
            source,
        })?;
    }
    if let Err(source) = fs::rename(&staging.0, &dir) {
        return locate(&dir, package).map_err(|_| ImageError::Write {
            path: dir.clone(),
            source,
        });
    }
    staging.keep();
    locate(&dir, package)
}

/// Finds vmlinuz and a modules tree with modules.dep in an unpacked package directory.
fn locate(dir: &Path, package: &str) -> Result<DebianKernel, ImageError> {
    let root = dir.join("root");
    let release = release_of(&root)?;
    let modules_dir = modules_dir(&root, &release);
    if !modules_dir.join("modules.dep").is_file() {
        return Err(ImageError::ModulesDep {
            path: modules_dir.join("modules.dep"),
            source: std::io::ErrorKind::NotFound.into(),
        });
    }
    Ok(DebianKernel {
        package: package.to_owned(),
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        modules_dir,
        release,
    })
}

fn release_of(root: &Path) -> Result<String, ImageError> {
    let boot = root.join("boot");
    let entries = fs::read_dir(&boot).map_err(|source| ImageError::Read {
        path: boot.clone(),
        source,
    })?;
    for entry in entries.flatten() {
        if let Some(release) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("vmlinuz-"))
        {
            return Ok(release.to_owned());
        }
    }
    Err(ImageError::Read {
        path: boot.join("vmlinuz-*"),
        source: std::io::ErrorKind::NotFound.into(),
    })
}

/// Debian 12 ships modules under `lib/modules`; merged-/usr packages use `usr/lib/modules`.
fn modules_dir(root: &Path, release: &str) -> PathBuf {
    let classic = root.join("lib/modules").join(release);
    if classic.is_dir() {
        return classic;
    }
    root.join("usr/lib/modules").join(release)
}

fn ensure_modules_dep(
    root: &Path,
    release: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let dir = modules_dir(root, release);
    if dir.join("modules.dep").is_file() {
        return Ok(());
    }
    // depmod -b only looks under BASE/lib/modules.
    if !root.join("lib").exists() && root.join("usr/lib/modules").is_dir() {
        let link = root.join("lib");
        std::os::unix::fs::symlink("usr/lib", &link)
            .map_err(|source| ImageError::Write { path: link, source })?;
    }
    progress(&format!("running depmod for {release}"));
    run(
        "depmod",
        Command::new("depmod").arg("-b").arg(root).arg(release),
    )
    .map_err(|e| hint(e, "depmod comes with the kmod package"))?;
    Ok(())
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, ImageError> {
    let entries = fs::read_dir(dir).map_err(|source| ImageError::Read {
        path: dir.to_owned(),
        source,
    })?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = file_name(p);
            name.starts_with(&format!("{package}_")) && name.ends_with(".deb")
        })
        .ok_or_else(|| ImageError::Tool {
            tool: "apt-get",
            detail: format!(
                "`apt-get download {package}` produced no .deb in {}",
                dir.display()
            ),
        })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A staging directory removed on drop unless kept.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<Self, ImageError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|source| ImageError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }

    fn keep(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(parse_depends("linux-image-cloud-amd64\n"), None);
    }
}
