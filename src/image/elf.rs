//! Checks that a binary can run as /init of an initramfs for a given architecture: an ELF
//! executable of that machine and word size, with no program interpreter. A dynamically
//! linked or foreign /init makes the kernel panic with "No working init found", long after
//! the image was built (on a BeagleBone, after a trip to the rack).

use std::path::Path;

use super::ImageError;

const PT_INTERP: u32 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;

/// The architectures an agent image is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfArch {
    X86_64,
    /// 32-bit ARM (the BeagleBone's Cortex-A8, and QEMU `-M virt` armv7 guests).
    Arm,
}

impl ElfArch {
    fn machine(self) -> u16 {
        match self {
            ElfArch::X86_64 => EM_X86_64,
            ElfArch::Arm => EM_ARM,
        }
    }
    fn is_64(self) -> bool {
        self == ElfArch::X86_64
    }
    fn name(self) -> &'static str {
        match self {
            ElfArch::X86_64 => "x86_64",
            ElfArch::Arm => "32-bit ARM",
        }
    }
    fn how_to_build(self) -> &'static str {
        match self {
            ElfArch::X86_64 => "build with --target x86_64-unknown-linux-musl",
            ElfArch::Arm => "build it with hack/build-agent-armv7.sh",
        }
    }
}

pub fn check_static_x86_64(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    check_static(path, bytes, ElfArch::X86_64)
}

pub fn check_static(path: &Path, bytes: &[u8], arch: ElfArch) -> Result<(), ImageError> {
    let fail = |reason: &str| ImageError::NotStaticElf {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 52 || &bytes[..4] != b"\x7fELF" {
        return Err(fail("not an ELF file"));
    }
    let class = if arch.is_64() { 2 } else { 1 };
    if bytes[4] != class || bytes[5] != 1 {
        let want = if arch.is_64() { 64 } else { 32 };
        return Err(fail(&format!(
            "not a {want}-bit little-endian ELF ({})",
            arch.how_to_build()
        )));
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != arch.machine() {
        return Err(fail(&format!(
            "built for ELF machine {machine}, not {} ({})",
            arch.name(),
            arch.how_to_build()
        )));
    }
    // e_phoff, e_phentsize and e_phnum sit at different offsets in 32- and 64-bit headers.
    let (phoff, at) = if arch.is_64() {
        (read_u64(bytes, 32), 54)
    } else {
        (read_u32(bytes, 28).map(u64::from), 42)
    };
    let phoff = phoff.ok_or_else(|| fail("truncated ELF header"))?;
    let half = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let phentsize = half(at).ok_or_else(|| fail("truncated ELF header"))?;
    let phnum = half(at + 2).ok_or_else(|| fail("truncated ELF header"))?;
    for i in 0..phnum {
        let off = phoff
            .checked_add(
                i.checked_mul(phentsize)
                    .ok_or_else(|| fail("bad program headers"))?,
            )
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| fail("bad program headers"))?;
        let p_type = read_u32(bytes, off).ok_or_else(|| fail("truncated program headers"))?;
        if p_type == PT_INTERP {
            return Err(fail(&format!(
                "it is dynamically linked ({})",
                arch.how_to_build()
            )));
        }
    }
    Ok(())
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_dynamic_binaries() {
        let p = Path::new("x");
        assert!(check_static_x86_64(p, b"#!/bin/sh\n").is_err());
        // The test binary itself is dynamically linked against glibc.
        let me = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&me).unwrap();
        let err = check_static_x86_64(&me, &bytes).unwrap_err().to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        // ... and an x86_64 binary is no ARM /init.
        let err = check_static(&me, &bytes, ElfArch::Arm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a 32-bit"), "{err}");
    }

    /// A minimal 32-bit ARM ELF header with one program header of type `p_type`.
    fn arm_elf(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 52 + 32];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        b[5] = 1;
        b[18..20].copy_from_slice(&EM_ARM.to_le_bytes());
        b[28..32].copy_from_slice(&52u32.to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
        b[52..56].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    #[test]
    fn arm_static_and_dynamic() {
        let p = Path::new("agent");
        assert!(check_static(p, &arm_elf(1), ElfArch::Arm).is_ok());
        let err = check_static(p, &arm_elf(PT_INTERP), ElfArch::Arm)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dynamically linked"), "{err}");
        let err = check_static(p, &arm_elf(1), ElfArch::X86_64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a 64-bit"), "{err}");
    }
}
