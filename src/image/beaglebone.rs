//! The BeagleBone Black worker image: the files of the microSD card's FAT boot partition.
//!
//! ```text
//! zImage                 ARMv7 multi-platform kernel (hack/build-kernel.sh armv7), all built in
//! am335x-boneblack.dtb   the board's device tree, from the same kernel tree
//! initramfs.cpio.gz      the same layout as the x86 image, the ARM agent as /init
//! uEnv.txt               U-Boot: this board's identity and the boot command
//! boot.scr               for U-Boot's distro boot (Debian's u-boot-omap 2023.01 and other
//!                        U-Boots that no longer read uEnv.txt themselves): imports uEnv.txt
//!                        and runs its boot command
//! ```
//!
//! One image serves the whole rack: a board's name, orchestrator and address are `microfaas_*`
//! variables in uEnv.txt, which U-Boot turns into the kernel command line the agent reads
//! (`microfaas.worker=`, `microfaas.orchestrator=`, `ip=`). `hack/flash-beaglebone.sh` rewrites
//! them per card, so nothing is rebuilt per board.

use std::fs;
use std::path::{Path, PathBuf};

use super::elf::{self, ElfArch};
use super::{ImageError, copy_atomic, initramfs};

/// The device tree U-Boot hands to the kernel, next to the zImage in the kernel build output.
pub const DTB: &str = "am335x-boneblack.dtb";
pub const UENV: &str = "uEnv.txt";
pub const BOOT_SCR: &str = "boot.scr";
/// The ARM Linux zImage header: this magic at byte 0x24 (arch/arm/boot/compressed/head.S).
const ZIMAGE_MAGIC: u32 = 0x016F_2818;
const ZIMAGE_MAGIC_AT: usize = 0x24;

/// What a board is told at boot; written into uEnv.txt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The Worker's name in the manifests.
    pub worker: String,
    /// HOST:PORT of the orchestrator's agent endpoint (numeric: the agent has no resolver).
    pub orchestrator: String,
    /// The kernel's `ip=` value: `CLIENT::GATEWAY:NETMASK:HOSTNAME:eth0:off`, or `off`.
    pub ip: String,
}

impl Default for Identity {
    /// Placeholders the flash script replaces; a board booted with them says who it is not.
    fn default() -> Self {
        Identity {
            worker: "bbb-unset".into(),
            orchestrator: "192.168.1.1:9000".into(),
            ip: "off".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct BoardOptions {
    /// The zImage; `am335x-boneblack.dtb` is taken from `dtb`.
    pub zimage: PathBuf,
    pub dtb: PathBuf,
    /// A static 32-bit ARM agent (hack/build-agent-armv7.sh).
    pub agent: PathBuf,
    pub out_dir: PathBuf,
    /// Baked into the initramfs as /etc/microfaas/token when set.
    pub token: Option<String>,
    pub identity: Identity,
}

#[derive(Debug, Clone)]
pub struct BoardOutput {
    pub zimage: PathBuf,
    pub dtb: PathBuf,
    pub initramfs: PathBuf,
    pub uenv: PathBuf,
    pub boot_scr: PathBuf,
    pub initramfs_size: u64,
}

pub fn build(opts: &BoardOptions) -> Result<BoardOutput, ImageError> {
    if let Some(token) = &opts.token {
        super::check_token(token)?;
    }
    for (what, value) in [
        ("worker", &opts.identity.worker),
        ("orchestrator", &opts.identity.orchestrator),
        ("ip", &opts.identity.ip),
    ] {
        check_env_value(what, value)?;
    }
    let agent = read(&opts.agent)?;
    elf::check_static(&opts.agent, &agent, ElfArch::Arm)?;
    check_zimage(&opts.zimage, &read(&opts.zimage)?)?;
    check_dtb(&opts.dtb, &read(&opts.dtb)?)?;

    fs::create_dir_all(&opts.out_dir).map_err(|source| ImageError::Write {
        path: opts.out_dir.clone(),
        source,
    })?;
    let zimage = opts.out_dir.join("zImage");
    copy_atomic(&opts.zimage, &zimage)?;
    let dtb = opts.out_dir.join(DTB);
    copy_atomic(&opts.dtb, &dtb)?;
    let initramfs = opts.out_dir.join("initramfs.cpio.gz");
    let initramfs_size = initramfs::write(
        &initramfs,
        &initramfs::Contents {
            agent: &agent,
            modules: Vec::new(),
            token: opts.token.as_deref(),
        },
    )?;
    let uenv = opts.out_dir.join(UENV);
    fs::write(&uenv, uenv_txt(&opts.identity)).map_err(|source| ImageError::Write {
        path: uenv.clone(),
        source,
    })?;
    let boot_scr = opts.out_dir.join(BOOT_SCR);
    fs::write(&boot_scr, script_image("microfaas boot", BOOT_CMD)).map_err(|source| {
        ImageError::Write {
            path: boot_scr.clone(),
            source,
        }
    })?;
    Ok(BoardOutput {
        zimage,
        dtb,
        initramfs,
        uenv,
        boot_scr,
        initramfs_size,
    })
}

/// U-Boot's environment is `name=value` lines and its boot command splits on spaces and `;`:
/// identity values must be single plain words.
fn check_env_value(what: &'static str, value: &str) -> Result<(), ImageError> {
    let bad = value.is_empty()
        || value.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, ';' | '$' | '"' | '\'' | '\\')
        });
    if bad {
        return Err(ImageError::BoardIdentity {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The U-Boot environment of a board. BeagleBone U-Boot (am335x_evm) imports uEnv.txt from the
/// first partition and runs `uenvcmd`; `${...}` is expanded when that command runs, so the
/// identity lines can be rewritten alone.
pub fn uenv_txt(id: &Identity) -> String {
    format!(
        "\
# microfaas BeagleBone Black worker, read by U-Boot from the card's first (FAT) partition.
# One image serves the rack: the microfaas_* lines are this board's identity, written at flash
# time (hack/flash-beaglebone.sh --worker NAME --orchestrator HOST:PORT --ip ...).
microfaas_worker={worker}
microfaas_orchestrator={orchestrator}
# The kernel's ip=: CLIENT::GATEWAY:NETMASK:HOSTNAME:eth0:off (the agent sets it; no DHCP).
microfaas_ip={ip}
# Token reference: /etc/microfaas/token inside initramfs.cpio.gz (image build --token); a
# value here overrides it for this board (it then sits in plain text on the card).
microfaas_token=
# Where the files are: the card's first partition (boot.scr replaces these with the device
# U-Boot found it on, e.g. the eMMC).
mf_devtype=mmc
mf_part=0:1
mf_kernel_addr=0x82000000
mf_fdt_addr=0x88000000
mf_rd_addr=0x88080000
mf_load=load ${{mf_devtype}} ${{mf_part}} ${{mf_kernel_addr}} zImage; load ${{mf_devtype}} ${{mf_part}} ${{mf_fdt_addr}} {DTB}; load ${{mf_devtype}} ${{mf_part}} ${{mf_rd_addr}} initramfs.cpio.gz; setenv mf_rd_size ${{filesize}}
mf_args=setenv bootargs console=${{mf_console}} quiet panic=-1 microfaas.worker=${{microfaas_worker}} microfaas.orchestrator=${{microfaas_orchestrator}} ip=${{microfaas_ip}}; if test -n \"${{microfaas_token}}\"; then setenv bootargs ${{bootargs}} microfaas.token=${{microfaas_token}}; fi
mf_console=ttyS0,115200n8
mf_boot=bootz ${{mf_kernel_addr}} ${{mf_rd_addr}}:${{mf_rd_size}} ${{mf_fdt_addr}}
uenvcmd=run mf_load; run mf_args; run mf_boot
",
        worker = id.worker,
        orchestrator = id.orchestrator,
        ip = id.ip,
    )
}

/// boot.scr's source: distro boot sets devtype/devnum/distro_bootpart/scriptaddr.
pub const BOOT_CMD: &str = "\
# microfaas: run by U-Boot's distro boot; this board's settings are in uEnv.txt.
load ${devtype} ${devnum}:${distro_bootpart} ${scriptaddr} uEnv.txt
env import -t ${scriptaddr} ${filesize}
setenv mf_devtype ${devtype}
setenv mf_part ${devnum}:${distro_bootpart}
run uenvcmd
";

/// U-Boot's legacy image header around a script (what `mkimage -A arm -O linux -T script -C
/// none -d boot.cmd boot.scr` writes): big-endian fields, CRC-32 of header and data, and a
/// script payload of `[len, 0]` followed by the text. The timestamp is 0 so that builds are
/// reproducible.
pub fn script_image(name: &str, script: &str) -> Vec<u8> {
    const MAGIC: u32 = 0x2705_1956;
    const OS_LINUX: u8 = 5;
    const ARCH_ARM: u8 = 2;
    const TYPE_SCRIPT: u8 = 6;
    const COMP_NONE: u8 = 0;
    let text = script.as_bytes();
    let mut data = Vec::with_capacity(8 + text.len());
    // A script is bounded by what we write here, far below 4 GiB.
    data.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text);
    let mut header = Vec::with_capacity(64);
    header.extend_from_slice(&MAGIC.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // header CRC, filled in below
    header.extend_from_slice(&0u32.to_be_bytes()); // time
    header.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // load address
    header.extend_from_slice(&0u32.to_be_bytes()); // entry point
    header.extend_from_slice(&crc32(&data).to_be_bytes());
    header.extend_from_slice(&[OS_LINUX, ARCH_ARM, TYPE_SCRIPT, COMP_NONE]);
    let mut name_field = [0u8; 32];
    let n = name.len().min(31);
    name_field[..n].copy_from_slice(&name.as_bytes()[..n]);
    header.extend_from_slice(&name_field);
    let hcrc = crc32(&header);
    header[4..8].copy_from_slice(&hcrc.to_be_bytes());
    header.extend_from_slice(&data);
    header
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// The `microfaas_*` values of a uEnv.txt, for checks and tests.
pub fn uenv_values(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn check_zimage(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let magic = bytes
        .get(ZIMAGE_MAGIC_AT..ZIMAGE_MAGIC_AT + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if magic != Some(ZIMAGE_MAGIC) {
        return Err(ImageError::NotKernel {
            path: path.to_owned(),
            reason: "no ARM zImage magic at 0x24 (build one with hack/build-kernel.sh armv7)",
        });
    }
    Ok(())
}

/// A flattened device tree starts with 0xd00dfeed, big-endian.
pub fn check_dtb(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    if bytes.get(..4) != Some(&[0xd0, 0x0d, 0xfe, 0xed][..]) {
        return Err(ImageError::NotKernel {
            path: path.to_owned(),
            reason: "not a flattened device tree (no 0xd00dfeed magic)",
        });
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uenv_carries_identity_and_boots_all_three_files() {
        let id = Identity {
            worker: "bbb-3".into(),
            orchestrator: "192.168.1.1:9000".into(),
            ip: "192.168.1.13::192.168.1.1:255.255.255.0:bbb-3:eth0:off".into(),
        };
        let text = uenv_txt(&id);
        let v = uenv_values(&text);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.as_str());
        assert_eq!(get("microfaas_worker"), Some("bbb-3"));
        assert_eq!(get("microfaas_orchestrator"), Some("192.168.1.1:9000"));
        assert_eq!(get("microfaas_ip"), Some(id.ip.as_str()));
        let load = get("mf_load").unwrap_or_default();
        for f in ["zImage", DTB, "initramfs.cpio.gz"] {
            assert!(load.contains(f), "{load}");
        }
        let args = get("mf_args").unwrap_or_default();
        assert!(
            args.contains("microfaas.worker=${microfaas_worker}"),
            "{args}"
        );
        assert!(get("mf_boot").is_some_and(|c| c.contains("bootz")));
        assert!(get("uenvcmd").is_some_and(|c| c.contains("run mf_boot")));
    }

    #[test]
    fn identity_values_must_be_plain_words() {
        assert!(check_env_value("worker", "bbb-3").is_ok());
        for bad in ["", "a b", "a;reset", "${x}", "a\nb"] {
            assert!(check_env_value("worker", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zimage_and_dtb_magic() {
        let p = Path::new("k");
        let mut z = vec![0u8; 0x40];
        assert!(check_zimage(p, &z).is_err());
        z[0x24..0x28].copy_from_slice(&ZIMAGE_MAGIC.to_le_bytes());
        assert!(check_zimage(p, &z).is_ok());
        assert!(check_dtb(p, &[0xd0, 0x0d, 0xfe, 0xed, 0]).is_ok());
        assert!(check_dtb(p, b"\x7fELF").is_err());
    }
}
