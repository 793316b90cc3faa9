//! The modules.dep resolver and the Debian cloud kernel fetcher, on the real
//! `linux-image-*-cloud-amd64` package: downloaded once with `apt-get download` into the
//! microfaas cache (`$MICROFAAS_CACHE`, default `~/.cache/microfaas`; needs the network and
//! `apt-get update` the first time) and checked against kmod's own `modprobe --show-depends`.
//! Needs apt, dpkg and kmod (hack/install-deps.sh).

use std::fs;
use std::path::Path;
use std::process::Command;

use microfaas::image::debian::{self, DebianKernel};
use microfaas::image::modules::{self, WORKER_MODULES};
use microfaas::image::{BuildOptions, KernelSource, build, default_cache_dir};

fn debian_kernel() -> DebianKernel {
    let package = debian::current_package()
        .unwrap_or_else(|e| panic!("no Debian cloud kernel package: {e} (run `apt-get update`)"));
    debian::fetch(&default_cache_dir(), &package, &mut |msg| {
        eprintln!("{msg}")
    })
    .unwrap_or_else(|e| panic!("fetching {package}: {e}"))
}

/// kmod's answer: the module files modprobe would insmod for `name`, in order.
fn modprobe_order(k: &DebianKernel, name: &str) -> Vec<String> {
    // modprobe -d wants the directory that holds lib/modules/.
    let root = k
        .modules_dir
        .ancestors()
        .nth(3)
        .expect("modules dir is ROOT/lib/modules/RELEASE");
    let out = Command::new("modprobe")
        .args(["--show-depends", "--ignore-install", "-d"])
        .arg(root)
        .args(["-S", &k.release, name])
        .output()
        .expect("cannot run `modprobe`: run hack/install-deps.sh (kmod)");
    assert!(
        out.status.success(),
        "modprobe --show-depends {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|p| {
            let p = p.trim();
            let rel = Path::new(p)
                .strip_prefix(&k.modules_dir)
                .unwrap_or_else(|_| panic!("{p} outside {}", k.modules_dir.display()));
            rel.to_string_lossy().into_owned()
        })
        .collect()
}

#[test]
fn worker_modules_match_modprobe_load_order() {
    let k = debian_kernel();
    let resolved = modules::resolve(&k.modules_dir, WORKER_MODULES).expect("resolve");

    // The union of modprobe's per-module orders, first occurrence kept, is what loading each
    // wanted module in turn with modprobe would do.
    let mut expected: Vec<String> = Vec::new();
    for want in WORKER_MODULES {
        for m in modprobe_order(&k, want) {
            if !expected.contains(&m) {
                expected.push(m);
            }
        }
    }
    let got: Vec<String> = resolved.iter().map(|m| m.rel_path.clone()).collect();
    assert_eq!(got, expected);

    let names: Vec<&str> = resolved.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "virtio_ring",
            "virtio",
            "failover",
            "net_failover",
            "virtio_net",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
            "virtio_pci",
            "button",
            "evdev"
        ],
        "environment.md's measured order"
    );
}

#[test]
fn builtin_modules_are_skipped_and_unknown_ones_are_errors() {
    let k = debian_kernel();
    // Debian builds the i8042 keyboard controller in (modules.builtin).
    let builtin = fs::read_to_string(k.modules_dir.join("modules.builtin")).unwrap();
    assert!(
        builtin.contains("/i8042.ko"),
        "precondition: i8042 is built in"
    );
    assert!(
        modules::resolve(&k.modules_dir, &["i8042"])
            .unwrap()
            .is_empty()
    );
    let err = modules::resolve(&k.modules_dir, &["no_such_module"]).unwrap_err();
    assert!(err.to_string().contains("no_such_module"), "{err}");
}

/// binutils' readelf, not our parser, must see an x86-64 executable with the PVH entry note
/// (Xen note type 0x12, XEN_ELFNOTE_PHYS32_ENTRY).
fn check_vmlinux(path: &Path) {
    let out = Command::new("readelf")
        .args(["-h", "-n"])
        .arg(path)
        .output()
        .expect("cannot run readelf (binutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "readelf failed on {}", path.display());
    assert!(text.contains("EXEC (Executable file)"), "{text}");
    assert!(text.contains("X86-64"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("Xen") && l.contains("0x00000012")),
        "no PVH note in:\n{text}"
    );
}

#[test]
fn debian_image_carries_the_modules_and_their_list() {
    let k = debian_kernel();
    let agent = std::env::var_os("MICROFAAS_TEST_AGENT").unwrap_or_else(|| {
        panic!("MICROFAAS_TEST_AGENT is not set: run `eval \"$(hack/test-artifacts.sh)\"` first")
    });
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BuildOptions::new(
        KernelSource::DebianCloud,
        agent.into(),
        dir.path().join("out"),
    );
    opts.cache_dir = Some(default_cache_dir());
    opts.pvh = true;
    let out = build(&opts).expect("build");
    assert_eq!(out.kernel_release.as_deref(), Some(k.release.as_str()));
    assert_eq!(
        fs::read(&out.bzimage).unwrap(),
        fs::read(&k.vmlinuz).unwrap()
    );
    check_vmlinux(out.vmlinux.as_deref().expect("pvh asked for vmlinux"));

    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -i -d --quiet -f dev/console",
            out.initramfs.display()
        ))
        .current_dir(&x)
        .status()
        .expect("cannot run sh/gzip/cpio");
    assert!(status.success());
    let list = fs::read_to_string(x.join("etc/microfaas/modules")).unwrap();
    let paths: Vec<&str> = list.lines().collect();
    assert_eq!(paths.len(), out.modules.len());
    for (path, name) in paths.iter().zip(&out.modules) {
        let rel = path
            .strip_prefix(&format!("/lib/modules/{}/", k.release))
            .unwrap_or_else(|| panic!("{path} not under /lib/modules/{}", k.release));
        assert!(rel.ends_with(&format!("/{name}.ko")), "{path} vs {name}");
        assert_eq!(
            fs::read(x.join(path.trim_start_matches('/'))).unwrap(),
            fs::read(k.modules_dir.join(rel)).unwrap(),
            "{path} differs from the package's file"
        );
    }
}
