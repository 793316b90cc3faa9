//! The cpio "newc" writer and the initramfs layout, checked with GNU cpio and gzip (packages
//! `cpio` and `gzip`, installed by hack/install-deps.sh) rather than by re-reading the archive
//! with our own code.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use microfaas::image::cpio::CpioWriter;
use microfaas::image::{BuildOptions, KernelSource, build};

/// Runs `cpio` with `args` in `dir`, feeding it `archive`; returns stdout, panics naming stderr.
fn cpio(dir: &Path, args: &[&str], archive: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("cpio")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run `cpio`: run hack/install-deps.sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(archive)
        .expect("feed cpio");
    let out = child.wait_with_output().expect("wait for cpio");
    assert!(
        out.status.success(),
        "cpio {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 listing")
}

fn sample_archive() -> Vec<u8> {
    let mut w = CpioWriter::new(Vec::new());
    w.dir("dev", 0o755).unwrap();
    w.char_dev("dev/console", 0o600, 5, 1).unwrap();
    w.dir("etc", 0o755).unwrap();
    // Every data length modulo 4, and names of every length modulo 4, exercise the padding.
    for len in 0..9 {
        let name = format!("etc/f{}", "x".repeat(len));
        let data: Vec<u8> = (0..len as u8).map(|b| b'a' + b).collect();
        w.file(&name, 0o640, &data).unwrap();
    }
    w.file("etc/big", 0o600, &vec![0xA5; 70_001]).unwrap();
    w.symlink("etc/link", "fxxx").unwrap();
    w.dir("tmp", 0o1777).unwrap();
    w.file("init", 0o755, b"#!/bin/true\n").unwrap();
    w.finish().unwrap()
}

#[test]
fn gnu_cpio_lists_every_entry_in_order_with_modes_and_device_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let listing = cpio(dir.path(), &["-t", "-v", "--quiet"], &sample_archive());
    let lines: Vec<&str> = listing.lines().collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    let mut expected = vec!["dev", "dev/console", "etc"];
    let files: Vec<String> = (0..9).map(|n| format!("etc/f{}", "x".repeat(n))).collect();
    expected.extend(files.iter().map(String::as_str));
    expected.extend(["etc/big", "fxxx", "tmp", "init"]);
    // `cpio -tv` prints a symlink as "etc/link -> fxxx", so its last word is the target.
    assert_eq!(names, expected, "listing:\n{listing}");

    let console = lines[1];
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(
        console.contains("5,") && console.contains(" 1 "),
        "{console}"
    );
    assert!(lines[0].starts_with("drwxr-xr-x"), "{}", lines[0]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("etc/link -> fxxx")),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("drwxrwxrwt") && l.ends_with(" tmp"))
    );
}

#[test]
fn gnu_cpio_extracts_identical_contents() {
    let dir = tempfile::tempdir().unwrap();
    // Device nodes need CAP_MKNOD; their numbers are checked through the listing above.
    cpio(
        dir.path(),
        &[
            "-i",
            "-d",
            "--quiet",
            "--no-absolute-filenames",
            "-f",
            "dev/console",
        ],
        &sample_archive(),
    );
    let root = dir.path();
    for len in 0..9u8 {
        let path = root.join(format!("etc/f{}", "x".repeat(len as usize)));
        let expected: Vec<u8> = (0..len).map(|b| b'a' + b).collect();
        assert_eq!(fs::read(&path).unwrap(), expected, "{}", path.display());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    }
    assert_eq!(fs::read(root.join("etc/big")).unwrap(), vec![0xA5; 70_001]);
    assert_eq!(
        fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("fxxx")
    );
    assert_eq!(fs::read(root.join("etc/link")).unwrap(), b"abc");
    assert_eq!(fs::read(root.join("init")).unwrap(), b"#!/bin/true\n");
    assert_eq!(
        fs::metadata(root.join("init"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
}

#[test]
fn trailer_ends_the_archive_and_it_is_four_byte_aligned() {
    let bytes = sample_archive();
    assert_eq!(bytes.len() % 4, 0);
    let tail = String::from_utf8_lossy(&bytes[bytes.len() - 128..]).into_owned();
    assert!(tail.contains("TRAILER!!!"), "{tail:?}");
    // GNU cpio reports the block count only when it parsed up to the trailer.
    let out = Command::new("cpio")
        .args(["-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(&bytes)?;
            c.wait_with_output()
        })
        .expect("cannot run `cpio`: run hack/install-deps.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("blocks"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("premature") && !stderr.contains("junk"),
        "{stderr}"
    );
}

/// A minimal static x86_64 ELF header (no program headers, so no interpreter): enough for the
/// builder's /init check, which is all this layout test needs from the agent.
fn fake_static_elf() -> Vec<u8> {
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little-endian
    e[6] = 1;
    e[16] = 2; // ET_EXEC
    e[18] = 62; // EM_X86_64
    e[52] = 64; // e_ehsize
    e[54] = 56; // e_phentsize
    e
}

#[test]
fn initramfs_for_a_builtin_kernel_has_no_modules_and_a_private_token() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    fs::write(&agent, fake_static_elf()).unwrap();
    let kernel = dir.path().join("my-bzImage");
    fs::write(&kernel, b"not really a kernel").unwrap();
    let mut opts = BuildOptions::new(KernelSource::Path(kernel), agent, dir.path().join("out"));
    opts.token = Some("s3cret".into());
    opts.cache_dir = Some(dir.path().join("cache"));
    let out = build(&opts).unwrap();
    assert!(out.modules.is_empty());
    assert_eq!(fs::read(&out.bzimage).unwrap(), b"not really a kernel");
    assert_eq!(out.cmdline, "console=ttyS0 quiet");
    assert_eq!(
        fs::read_to_string(dir.path().join("out/cmdline")).unwrap(),
        "console=ttyS0 quiet\n"
    );

    // A page multiple, so QEMU's PVH loader on microvm cannot overlap the ACPI tables with it.
    let size = fs::metadata(&out.initramfs).unwrap().len();
    assert_eq!(size % 4096, 0, "initramfs size {size}");
    assert_eq!(out.initramfs_size, size);

    let gz = Command::new("gzip")
        .arg("-dc")
        .arg(&out.initramfs)
        .output()
        .expect("cannot run `gzip`");
    assert!(
        gz.status.success(),
        "gzip -t failed: not a valid gzip stream"
    );
    let listing = cpio(dir.path(), &["-t", "-v", "--quiet"], &gz.stdout);
    let entry = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} missing from\n{listing}"))
            .to_owned()
    };
    assert!(entry("init").starts_with("-rwxr-xr-x"));
    assert!(entry("dev/console").starts_with("crw-------"));
    for d in ["proc", "sys", "dev", "etc", "etc/microfaas"] {
        assert!(entry(d).starts_with('d'), "{d}");
    }
    assert!(entry("etc/microfaas/token").starts_with("-rw-------"));
    assert!(!listing.contains("lib/modules"), "{listing}");

    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    cpio(
        &x,
        &["-i", "-d", "--quiet", "-f", "dev/console"],
        &gz.stdout,
    );
    assert_eq!(fs::read(x.join("etc/microfaas/token")).unwrap(), b"s3cret");
    assert_eq!(fs::read(x.join("etc/microfaas/modules")).unwrap(), b"");
    assert_eq!(fs::read(x.join("init")).unwrap(), fake_static_elf());
}

#[test]
fn a_dynamically_linked_agent_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = build(&BuildOptions::new(
        KernelSource::Path("/nonexistent".into()),
        "/bin/true".into(),
        dir.path().to_owned(),
    ))
    .unwrap_err();
    assert!(err.to_string().contains("dynamically linked"), "{err}");
}
