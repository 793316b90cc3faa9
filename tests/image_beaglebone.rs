//! `microfaasctl image build --target beaglebone` and `hack/flash-beaglebone.sh` with the real
//! artefacts and tools: the boot partition's layout (zImage magic, dtb, uEnv keys, boot.scr as
//! U-Boot's own `mkimage -l` reads it, /init a static ARM ELF of at most 2 MB), a card image
//! whose partition table and FAT contents are read back with sfdisk and mtools, and one clear
//! error each for a bad target, a missing cross toolchain and a device that must not be written.
//!
//! Artefacts: `eval "$(hack/test-artifacts.sh)"` (MICROFAAS_TEST_KERNEL_ARMV7,
//! MICROFAAS_TEST_AGENT_ARMV7). Nothing is skipped when they are missing: the tests fail.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::{ARMV7_AGENT_VAR, ARMV7_KERNEL_VAR, artifact};

const FLASH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/flash-beaglebone.sh");
const IP: &str = "192.168.1.13::192.168.1.1:255.255.255.0:bbb-3:eth0:off";

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(args)
        .output()
        .expect("run microfaasctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(o)
    );
}

/// Builds the board image into `dir/image` from the prepared zImage and ARM agent.
fn build_image(dir: &Path) -> PathBuf {
    let zimage = artifact(ARMV7_KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    let agent = artifact(ARMV7_AGENT_VAR).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("image");
    ok(&ctl(&[
        "image",
        "build",
        "--target",
        "beaglebone",
        "--kernel",
        &zimage.display().to_string(),
        "--agent",
        &agent.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--token",
        "s3cret",
        "--worker",
        "bbb-3",
        "--orchestrator",
        "192.168.1.1:9000",
        "--ip",
        IP,
    ]));
    out
}

/// The bytes of `name` inside a gzip-compressed newc cpio archive.
fn cpio_member(archive: &Path, name: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(archive).expect("open initramfs"))
        .read_to_end(&mut bytes)
        .expect("gunzip");
    let mut at = 0;
    let align = |n: usize| n.div_ceil(4) * 4;
    while at + 110 <= bytes.len() && &bytes[at..at + 6] == b"070701" {
        let field = |i: usize| {
            let s = std::str::from_utf8(&bytes[at + 6 + i * 8..at + 14 + i * 8]).expect("hex");
            usize::from_str_radix(s, 16).expect("hex field")
        };
        let (filesize, namesize) = (field(6), field(11));
        let name_at = at + 110;
        let entry = std::str::from_utf8(&bytes[name_at..name_at + namesize - 1]).expect("name");
        let data_at = align(name_at + namesize);
        if entry == name {
            return bytes[data_at..data_at + filesize].to_vec();
        }
        at = align(data_at + filesize);
    }
    panic!("{name} not in {}", archive.display());
}

#[test]
fn beaglebone_image_layout() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = build_image(dir.path());

    let zimage = std::fs::read(out.join("zImage")).expect("zImage");
    assert_eq!(
        u32::from_le_bytes(zimage[0x24..0x28].try_into().expect("4 bytes")),
        0x016F_2818,
        "ARM zImage magic"
    );
    let dtb = std::fs::read(out.join("am335x-boneblack.dtb")).expect("dtb present");
    assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
    assert!(
        dtb.windows(b"ti,am335x-bone-black".len())
            .any(|w| w == b"ti,am335x-bone-black"),
        "the BeagleBone Black's device tree"
    );

    let uenv = std::fs::read_to_string(out.join("uEnv.txt")).expect("uEnv.txt");
    let values = microfaas::image::beaglebone::uenv_values(&uenv);
    let get = |k: &str| {
        values
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("uEnv.txt lacks {k}:\n{uenv}"))
    };
    assert_eq!(get("microfaas_worker"), "bbb-3");
    assert_eq!(get("microfaas_orchestrator"), "192.168.1.1:9000");
    assert_eq!(get("microfaas_ip"), IP);
    assert!(get("mf_boot").contains("bootz"));

    // boot.scr as U-Boot's own tool reads it: a valid ARM script image with our commands.
    let listed = Command::new("mkimage")
        .arg("-l")
        .arg(out.join("boot.scr"))
        .output()
        .expect("mkimage (u-boot-tools; hack/install-deps.sh installs it)");
    ok(&listed);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("ARM Linux Script"), "{listed}");
    let scr = std::fs::read(out.join("boot.scr")).expect("boot.scr");
    assert!(
        String::from_utf8_lossy(&scr).contains("env import -t ${scriptaddr} ${filesize}"),
        "boot.scr imports uEnv.txt"
    );

    // /init: a static 32-bit ARM executable within the 2 MB budget; the token is baked in.
    let init = cpio_member(&out.join("initramfs.cpio.gz"), "init");
    assert_eq!(&init[..4], b"\x7fELF");
    assert_eq!(init[4], 1, "32-bit");
    assert_eq!(u16::from_le_bytes([init[18], init[19]]), 40, "EM_ARM");
    assert!(init.len() <= 2 * 1024 * 1024, "{} bytes", init.len());
    let readelf = Command::new("readelf")
        .args(["-lW"])
        .arg(artifact(ARMV7_AGENT_VAR).unwrap_or_else(|e| panic!("{e}")))
        .output()
        .expect("readelf");
    let program_headers = String::from_utf8_lossy(&readelf.stdout);
    assert!(program_headers.contains("LOAD"), "{program_headers}");
    assert!(
        !program_headers.contains("INTERP"),
        "static: {program_headers}"
    );
    assert_eq!(
        cpio_member(&out.join("initramfs.cpio.gz"), "etc/microfaas/token"),
        b"s3cret"
    );
}

#[test]
fn bad_target_and_missing_toolchain_are_one_clear_error_each() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("o").display().to_string();
    let bad = ctl(&["image", "build", "--target", "raspberrypi", "--out", &out]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("raspberrypi"), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("beaglebone"), "{}", stderr(&bad));

    // No --agent: the ARM agent is built, and without the cross toolchain that fails saying so.
    let zimage = artifact(ARMV7_KERNEL_VAR).unwrap_or_else(|e| panic!("{e}"));
    let missing = Command::new(env!("CARGO_BIN_EXE_microfaasctl"))
        .args(["image", "build", "--target", "beaglebone", "--kernel"])
        .arg(&zimage)
        .args(["--out", &out])
        .env("MICROFAAS_ARMV7_RUSTC", dir.path().join("no-such-rustc"))
        .output()
        .expect("run");
    assert!(!missing.status.success());
    let err = stderr(&missing);
    assert!(err.contains("missing cross toolchain"), "{err}");
    assert!(err.contains("hack/install-deps.sh"), "{err}");
    assert!(!Path::new(&out).exists(), "nothing written on error");
}

fn flash(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(FLASH)
        .args(args)
        .output()
        .expect("run flash-beaglebone.sh")
}

#[test]
fn card_image_for_dd_and_refused_devices() {
    let dir = tempfile::tempdir().expect("tmp");
    let image = build_image(dir.path());
    let image_s = image.display().to_string();
    let card = dir.path().join("bbb-5.img");
    let card_s = card.display().to_string();
    ok(&flash(&[
        "--image",
        &image_s,
        "--out",
        &card_s,
        "--worker",
        "bbb-5",
        "--ip",
        "192.168.1.15::192.168.1.1:255.255.255.0:bbb-5:eth0:off",
    ]));

    // One bootable FAT32 (LBA) partition from 1 MiB.
    let table = Command::new("sfdisk")
        .args(["-J", &card_s])
        .output()
        .expect("sfdisk");
    ok(&table);
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).expect("sfdisk json");
    let parts = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions");
    assert_eq!(parts.len(), 1, "{table}");
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);

    // Its files, read with mtools at the partition's offset; only uEnv.txt is per board.
    let fat = format!("{card_s}@@1M");
    let listing = Command::new("mdir")
        .args(["-b", "-i", &fat, "::"])
        .output()
        .expect("mdir");
    ok(&listing);
    let listing = String::from_utf8_lossy(&listing.stdout).to_lowercase();
    for f in [
        "mlo",
        "u-boot.img",
        "zimage",
        "am335x-boneblack.dtb",
        "initramfs.cpio.gz",
        "boot.scr",
        "uenv.txt",
    ] {
        assert!(
            listing.contains(&format!("::/{f}")),
            "{f} missing:\n{listing}"
        );
    }
    let uenv = Command::new("mtype")
        .args(["-i", &fat, "::uEnv.txt"])
        .output()
        .expect("mtype");
    ok(&uenv);
    let uenv = String::from_utf8_lossy(&uenv.stdout);
    assert!(uenv.contains("\nmicrofaas_worker=bbb-5\n"), "{uenv}");
    assert!(
        uenv.contains("microfaas_orchestrator=192.168.1.1:9000"),
        "kept: {uenv}"
    );
    assert!(uenv.contains("bbb-5:eth0:off"), "{uenv}");
    let zimage_on_card = Command::new("mtype")
        .args(["-i", &fat, "::zImage"])
        .output()
        .expect("mtype");
    assert_eq!(
        zimage_on_card.stdout,
        std::fs::read(image.join("zImage")).expect("zImage"),
        "the zImage proven under QEMU is the one on the card"
    );

    // Refusals, each naming its reason, before anything is written.
    let not_block = flash(&["--image", &image_s, "--device", &card_s, "--yes"]);
    assert!(!not_block.status.success());
    assert!(
        stderr(&not_block).contains("is not a block device"),
        "{}",
        stderr(&not_block)
    );
    let root = Command::new("findmnt")
        .args(["-nro", "SOURCE", "/"])
        .output()
        .expect("findmnt");
    let root = String::from_utf8_lossy(&root.stdout).trim().to_owned();
    if Path::new(&root).exists() {
        let sys = flash(&["--image", &image_s, "--device", &root, "--yes"]);
        assert!(!sys.status.success(), "wrote the system disk?!");
        let err = stderr(&sys);
        assert!(
            err.contains("is mounted") || err.contains("system disk"),
            "{err}"
        );
    }
}

/// A loop device over a temp file, detached (and unmounted) on drop whatever happened.
struct Loop {
    dev: String,
    mount: Option<PathBuf>,
}

impl Loop {
    fn new(backing: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .expect("losetup (util-linux)");
        ok(&out);
        Loop {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            mount: None,
        }
    }

    fn unmount(&mut self) {
        if let Some(m) = self.mount.take() {
            ok(&Command::new("umount").arg(&m).output().expect("umount"));
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(m) = self.mount.take() {
            let _ = Command::new("umount").arg(&m).output();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).output();
    }
}

/// A real block device (a loop device of our own): refused while a filesystem on it is
/// mounted, written once unmounted, and what it then holds is a card with our files.
#[test]
fn a_mounted_device_is_refused_and_an_unmounted_one_is_written() {
    let dir = tempfile::tempdir().expect("tmp");
    let image = build_image(dir.path());
    let image_s = image.display().to_string();
    let backing = dir.path().join("sd.img");
    std::fs::write(&backing, vec![0u8; 80 << 20]).expect("backing file");
    ok(&Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&backing)
        .output()
        .expect("mkfs.ext4"));
    let mut dev = Loop::new(&backing);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    ok(&Command::new("mount")
        .arg(&dev.dev)
        .arg(&mnt)
        .output()
        .expect("mount"));
    dev.mount = Some(mnt.clone());

    let refused = flash(&["--image", &image_s, "--device", &dev.dev, "--yes"]);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("is mounted"), "{err}");
    assert!(err.contains("unmount it first"), "{err}");
    let head = std::fs::read(&backing).expect("backing");
    assert_eq!(
        &head[510..512],
        &[0, 0],
        "no partition table written while mounted"
    );

    dev.unmount();
    ok(&flash(&[
        "--image", &image_s, "--device", &dev.dev, "--worker", "bbb-7", "--yes",
    ]));
    let table = Command::new("sfdisk")
        .args(["-J"])
        .arg(&backing)
        .output()
        .expect("sfdisk");
    ok(&table);
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).expect("json");
    assert_eq!(
        table["partitiontable"]["partitions"][0]["type"], "c",
        "{table}"
    );
    let uenv = Command::new("mtype")
        .args(["-i", &format!("{}@@1M", backing.display()), "::uEnv.txt"])
        .output()
        .expect("mtype");
    ok(&uenv);
    assert!(String::from_utf8_lossy(&uenv.stdout).contains("microfaas_worker=bbb-7"));
}

/// The card's boot path with a real U-Boot: Debian's U-Boot for QEMU's ARM virt board
/// (u-boot-qemu) runs distro boot on the card image, finds boot.scr, which imports uEnv.txt,
/// loads zImage, dtb and initramfs from the FAT partition and boots; the agent comes up with
/// the name and orchestrator written at flash time and dials it. Only what differs between
/// the virt board and a BeagleBone is changed in uEnv.txt: the console (PL011) and the device
/// tree (QEMU's own, which U-Boot holds at ${fdtcontroladdr}).
#[test]
fn card_boots_through_u_boot_and_the_agent_dials_with_its_flashed_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let built = build_image(dir.path());
    let image = dir.path().join("virt-image");
    std::fs::create_dir(&image).expect("mkdir");
    for e in std::fs::read_dir(&built).expect("image dir").flatten() {
        std::fs::copy(e.path(), image.join(e.file_name())).expect("copy");
    }
    let uenv = std::fs::read_to_string(image.join("uEnv.txt")).expect("uEnv");
    let uenv = uenv
        .replace("mf_console=ttyS0,115200n8", "mf_console=ttyAMA0")
        .replace("${mf_fdt_addr}\n", "${fdtcontroladdr}\n");
    assert!(uenv.contains("${fdtcontroladdr}"), "{uenv}");
    std::fs::write(image.join("uEnv.txt"), uenv).expect("write uEnv");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let card = dir.path().join("card.img");
    flash_for_virt(&image, &card, "bbb-uboot", port, &[]);

    let (hello, log) = boot_card(dir.path(), &card, listener);
    assert!(
        hello.contains("bbb-uboot"),
        "hello {hello:?}\nconsole:\n{log}"
    );
    assert!(log.contains("Found U-Boot script /boot.scr"), "{log}");
}

/// A file from the card's FAT partition (mtools at the partition's 1 MiB offset).
fn card_file(card: &Path, name: &str) -> Vec<u8> {
    let o = Command::new("mtype")
        .args([
            "-i",
            &format!("{}@@1M", card.display()),
            &format!("::{name}"),
        ])
        .output()
        .expect("mtype (mtools)");
    ok(&o);
    o.stdout
}

/// The entries of U-Boot's built-in default environment inside an SPL binary: the
/// NUL-separated `name=value` strings from `bootcmd=` to the empty one that ends them.
fn builtin_env(mlo: &[u8]) -> (usize, Vec<String>) {
    let at = mlo
        .windows(8)
        .position(|w| w == b"bootcmd=")
        .expect("a built-in environment in MLO");
    let entries = mlo[at..]
        .split(|b| *b == 0)
        .take_while(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    (at, entries)
}

fn fdtget(file: &Path, prop: &str, ty: &str) -> String {
    let o = Command::new("fdtget")
        .args(["-t", ty])
        .arg(file)
        .args(["/chosen", prop])
        .output()
        .expect("fdtget (device-tree-compiler)");
    ok(&o);
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `--falcon`: the card carries `uImage` (the zImage in a legacy kernel header at the AM335x
/// load address), `args` (the board's device tree with its command line in /chosen and the
/// initramfs 1 MiB in, where linux,initrd-start/-end point once SPL has read `args` to
/// 0x80F80000) and Debian's MLO with `boot_os=yes` in place of `bootdelay=2` in its built-in
/// environment, every other byte the same. The U-Boot path stays on the card as the fallback.
#[test]
fn falcon_card_has_uimage_args_and_an_mlo_that_boots_the_os() {
    let dir = tempfile::tempdir().expect("tmp");
    let image = build_image(dir.path());
    let image_s = image.display().to_string();
    let card = dir.path().join("falcon.img");
    let card_s = card.display().to_string();
    let base = [
        "--image", &image_s, "--out", &card_s, "--worker", "bbb-7", "--ip", IP, "--falcon",
    ];
    let bad = flash(&[&base[..], &["--falcon-addrs", "0x80008000"]].concat());
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("--falcon-addrs '0x80008000'"),
        "{}",
        stderr(&bad)
    );
    assert!(!card.exists(), "nothing written on error");
    ok(&flash(&base));

    let zimage = std::fs::read(image.join("zImage")).expect("zImage");
    let uimage = card_file(&card, "uImage");
    let uimage_file = dir.path().join("uImage");
    std::fs::write(&uimage_file, &uimage).expect("write uImage");
    let listing = Command::new("mkimage")
        .arg("-l")
        .arg(&uimage_file)
        .output()
        .expect("mkimage");
    ok(&listing);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("ARM Linux Kernel Image"), "{listing}");
    assert!(listing.contains("Load Address: 80008000"), "{listing}");
    assert!(listing.contains("Entry Point:  80008000"), "{listing}");
    assert_eq!(
        &uimage[64..],
        &zimage[..],
        "uImage carries the zImage unchanged"
    );

    let args_file = dir.path().join("args");
    let args = card_file(&card, "args");
    std::fs::write(&args_file, &args).expect("write args");
    let bootargs = fdtget(&args_file, "bootargs", "s");
    for want in [
        "console=ttyS0,115200n8",
        "microfaas.worker=bbb-7",
        "microfaas.orchestrator=192.168.1.1:9000",
        &format!("ip={IP}"),
    ] {
        assert!(bootargs.contains(want), "{want} not in {bootargs}");
    }
    let rd = std::fs::read(image.join("initramfs.cpio.gz")).expect("initramfs");
    let start = u64::from_str_radix(&fdtget(&args_file, "linux,initrd-start", "x"), 16)
        .expect("initrd-start");
    let end = u64::from_str_radix(&fdtget(&args_file, "linux,initrd-end", "x"), 16).expect("end");
    assert_eq!(start, 0x80F8_0000 + (1 << 20));
    assert_eq!(end - start, rd.len() as u64);
    assert_eq!(
        &args[1 << 20..],
        &rd[..],
        "the initramfs sits 1 MiB into args"
    );

    let stock = std::fs::read(
        std::env::var_os("MICROFAAS_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/microfaas")
            })
            .join("u-boot-omap/MLO"),
    )
    .expect("Debian's MLO, cached by the flash script");
    let mlo = card_file(&card, "MLO");
    assert_eq!(mlo.len(), stock.len());
    let (at, stock_env) = builtin_env(&stock);
    let (at2, env) = builtin_env(&mlo);
    assert_eq!(at, at2);
    assert!(
        stock_env.iter().any(|e| e == "bootdelay=2"),
        "{stock_env:?}"
    );
    assert!(!stock_env.iter().any(|e| e.starts_with("boot_os=")));
    let expected: Vec<String> = stock_env
        .iter()
        .map(|e| {
            if e == "bootdelay=2" {
                "boot_os=yes".to_owned()
            } else {
                e.clone()
            }
        })
        .collect();
    assert_eq!(env, expected, "only bootdelay becomes boot_os");
    let differ = mlo.iter().zip(&stock).filter(|(a, b)| a != b).count();
    assert!(differ <= "boot_os=yes".len(), "{differ} bytes changed");
    // The U-Boot path stays for a 'c' on the console or a failed falcon load.
    for f in ["u-boot.img", "boot.scr", "uEnv.txt", "zImage"] {
        assert!(!card_file(&card, f).is_empty(), "{f}");
    }
}

/// What SPL does in falcon mode, done by U-Boot on QEMU's ARM virt board (no emulator has an
/// AM335x): load `uImage` and `args` from the card and jump to the kernel with `args` as its
/// device tree, untouched (`fdt_high` keeps it in place, no bootargs or initrd from U-Boot).
/// The kernel finds its command line and initramfs only through `args`; the agent dials with
/// the name written at flash time. The card is flashed for virt: its device tree (dumped by
/// QEMU), its console and addresses inside its RAM.
#[test]
fn falcon_args_boot_the_kernel_with_initramfs_and_identity() {
    let dir = tempfile::tempdir().expect("tmp");
    let image = build_image(dir.path());
    let virt_dtb = dir.path().join("virt.dtb");
    ok(&Command::new("qemu-system-arm")
        .arg("-M")
        .arg(format!("virt,dumpdtb={}", virt_dtb.display()))
        .args(["-m", VIRT_MEM, "-nodefaults", "-display", "none"])
        .output()
        .expect("qemu-system-arm"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let card = dir.path().join("falcon-virt.img");
    flash_for_virt(
        &image,
        &card,
        "bbb-falcon",
        port,
        &[
            "--falcon",
            "--falcon-addrs",
            "0x40008000,0x48000000",
            "--dtb",
            &virt_dtb.display().to_string(),
            "--console",
            "ttyAMA0",
        ],
    );
    // In place of boot.scr, SPL's falcon steps.
    let spl = dir.path().join("spl.cmd");
    std::fs::write(
        &spl,
        "load ${devtype} ${devnum}:${distro_bootpart} 0x42000000 uImage\n\
         load ${devtype} ${devnum}:${distro_bootpart} 0x48000000 args\n\
         setenv bootargs\n\
         setenv fdt_high 0xffffffff\n\
         bootm 0x42000000 - 0x48000000\n",
    )
    .expect("write");
    let scr = dir.path().join("boot.scr");
    ok(&Command::new("mkimage")
        .args([
            "-A", "arm", "-O", "linux", "-T", "script", "-C", "none", "-d",
        ])
        .arg(&spl)
        .arg(&scr)
        .output()
        .expect("mkimage"));
    ok(&Command::new("mcopy")
        .args(["-o", "-i", &format!("{}@@1M", card.display())])
        .arg(&scr)
        .arg("::boot.scr")
        .output()
        .expect("mcopy"));

    let (hello, log) = boot_card(dir.path(), &card, listener);
    assert!(
        hello.contains("bbb-falcon"),
        "hello {hello:?}\nconsole:\n{log}"
    );
    assert!(log.contains("Booting kernel from Legacy Image"), "{log}");
}

/// Flashes `card` from `image` for QEMU's virt board: worker `name` at 10.0.2.15 dials
/// 10.0.2.100:PORT, which [`boot_card`] forwards to the test's listener; `extra` flags follow.
fn flash_for_virt(image: &Path, card: &Path, name: &str, port: u16, extra: &[&str]) {
    let image = image.display().to_string();
    let card = card.display().to_string();
    let orchestrator = format!("10.0.2.100:{port}");
    let ip = format!("10.0.2.15::10.0.2.2:255.255.255.0:{name}:eth0:off");
    let base = [
        "--image",
        &image,
        "--out",
        &card,
        "--worker",
        name,
        "--orchestrator",
        &orchestrator,
        "--ip",
        &ip,
    ];
    ok(&flash(&[&base[..], extra].concat()));
}

/// QEMU's ARM virt board with Debian's U-Boot (distro boot) on `card`; the guest's
/// 10.0.2.100:PORT reaches `listener`. Returns the agent's first line and the console.
fn boot_card(dir: &Path, card: &Path, listener: std::net::TcpListener) -> (String, String) {
    let port = listener.local_addr().expect("addr").port();
    let console = dir.join("console.log");
    let qemu = Command::new("qemu-system-arm")
        .args(["-M", "virt", "-accel", "tcg", "-m", VIRT_MEM, "-nodefaults"])
        .args(["-display", "none", "-no-reboot"])
        .args(["-bios", "/usr/lib/u-boot/qemu_arm/u-boot.bin"])
        .arg("-drive")
        .arg(format!("if=none,id=sd,format=raw,file={}", card.display()))
        .args(["-device", "virtio-blk-device,drive=sd"])
        .arg("-netdev")
        .arg(format!(
            "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.100:{port}-tcp:127.0.0.1:{port}"
        ))
        .args(["-device", "virtio-net-device,netdev=net0"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .spawn()
        .expect("qemu-system-arm (hack/install-deps.sh installs it and u-boot-qemu)");
    let _qemu = Kill(qemu);

    // QEMU opens the forwarded connection at start; the guest's bytes arrive on it.
    let (mut conn, _) = listener.accept().expect("accept");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(300)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.contains(&b'\n') {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let log = std::fs::read_to_string(&console).unwrap_or_default();
    (String::from_utf8_lossy(&got).into_owned(), log)
}

/// The memory of the virt board in the U-Boot tests (the falcon test's device tree is dumped
/// for the same machine).
const VIRT_MEM: &str = "1280M";

/// Kills and reaps the QEMU this test started, whatever happened.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
