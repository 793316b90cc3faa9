//! Checks that a binary can run as /init of an x86_64 initramfs: a 64-bit little-endian
//! x86_64 ELF executable with no program interpreter. A dynamically linked /init makes the
//! kernel panic with "No working init found", long after the image was built.

use std::path::Path;

use super::ImageError;

const PT_INTERP: u32 = 3;
const EM_X86_64: u16 = 62;

pub fn check_static_x86_64(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let fail = |reason: &str| ImageError::NotStaticElf {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(fail("not an ELF file"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(fail("not a 64-bit little-endian ELF"));
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != EM_X86_64 {
        return Err(fail(&format!(
            "built for ELF machine {machine}, not x86_64 (build with --target x86_64-unknown-linux-musl)"
        )));
    }
    let phoff = read_u64(bytes, 32).ok_or_else(|| fail("truncated ELF header"))?;
    let phentsize = u64::from(u16::from_le_bytes([bytes[54], bytes[55]]));
    let phnum = u64::from(u16::from_le_bytes([bytes[56], bytes[57]]));
    for i in 0..phnum {
        let off = phoff
            .checked_add(
                i.checked_mul(phentsize)
                    .ok_or_else(|| fail("bad program headers"))?,
            )
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| fail("bad program headers"))?;
        let p_type = bytes
            .get(off..off + 4)
            .ok_or_else(|| fail("truncated program headers"))?;
        if u32::from_le_bytes([p_type[0], p_type[1], p_type[2], p_type[3]]) == PT_INTERP {
            return Err(fail(
                "it is dynamically linked (build with --target x86_64-unknown-linux-musl)",
            ));
        }
    }
    Ok(())
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
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
    }
}
