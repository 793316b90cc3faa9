//! Extracts the uncompressed kernel ELF from an x86 bzImage, for PVH direct boot.
//!
//! QEMU boots an ELF `vmlinux` that carries a PVH entry note straight into 32-bit protected
//! mode: no real-mode setup code and, above all, no in-guest decompression, which under TCG
//! costs about a second for Debian's 14 MB LZ4 kernel. The bzImage's setup header says where
//! the compressed payload is (boot protocol 2.08+: `payload_offset`, `payload_length`).

use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::{ImageError, tool};

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point QEMU looks for.
const PVH_NOTE: u32 = 18;

pub fn extract(path: &Path, bzimage: &[u8]) -> Result<Vec<u8>, ImageError> {
    let fail = |reason: String| ImageError::Vmlinux {
        path: path.to_owned(),
        reason,
    };
    let payload = payload(bzimage).map_err(|r| fail(r.into()))?;
    let elf = decompress(path, payload)?;
    if !has_pvh_note(&elf) {
        return Err(fail(
            "the kernel has no PVH entry note (build it with CONFIG_PVH=y)".into(),
        ));
    }
    Ok(elf)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The compressed payload inside the bzImage.
fn payload(b: &[u8]) -> Result<&[u8], &'static str> {
    if b.get(0x202..0x206) != Some(b"HdrS") {
        return Err("not a bzImage (no HdrS setup header)");
    }
    if u16_at(b, 0x206).ok_or("truncated header")? < 0x208 {
        return Err("boot protocol older than 2.08 has no payload fields");
    }
    // setup_sects == 0 means 4, for compatibility with ancient images.
    let setup_sects = match b[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let protected_mode = (setup_sects + 1) * 512;
    let offset = u32_at(b, 0x248).ok_or("truncated header")? as usize;
    let length = u32_at(b, 0x24c).ok_or("truncated header")? as usize;
    let start = protected_mode
        .checked_add(offset)
        .ok_or("payload offset overflows")?;
    b.get(start..start.saturating_add(length))
        .ok_or("payload lies outside the file")
}

fn decompress(path: &Path, payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    let tool_for = |magic: &[u8]| -> Option<&'static str> {
        [
            (&b"\x02\x21\x4c\x18"[..], "lz4"),
            (&b"\xfd7zXZ\x00"[..], "xz"),
            (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
        ]
        .into_iter()
        .find(|(m, _)| magic.starts_with(m))
        .map(|(_, t)| t)
    };
    if payload.starts_with(b"\x7fELF") {
        return Ok(payload.to_vec());
    }
    if payload.starts_with(b"\x1f\x8b") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|source| ImageError::Read {
                path: path.to_owned(),
                source,
            })?;
        return Ok(out);
    }
    let Some(t) = tool_for(payload) else {
        return Err(ImageError::Vmlinux {
            path: path.to_owned(),
            reason: "unknown payload compression (not gzip, lz4, xz or zstd)".into(),
        });
    };
    // The kernel build appends the uncompressed size (le32) to lz4/xz/zstd payloads; the
    // tools reject it as trailing garbage, and it tells us what size to expect.
    let (body, size) = payload.split_at(payload.len().saturating_sub(4));
    let expected = u32_at(size, 0).unwrap_or(0) as usize;
    let out = tool::run_with_input(t, Command::new(t).args(["-d", "-c", "-q"]), body);
    let out = out.map_err(|e| {
        tool::hint(
            e,
            "hack/install-deps.sh installs lz4; xz-utils/zstd for others",
        )
    })?;
    if out.len() != expected {
        return Err(ImageError::Vmlinux {
            path: path.to_owned(),
            reason: format!(
                "payload decompressed to {} bytes, the image says {expected}",
                out.len()
            ),
        });
    }
    Ok(out)
}

/// Whether the ELF has a PT_NOTE with a Xen note of type PHYS32_ENTRY.
fn has_pvh_note(elf: &[u8]) -> bool {
    notes(elf).is_some_and(|mut it| it.any(|(name, kind)| name == b"Xen" && kind == PVH_NOTE))
}

fn notes(elf: &[u8]) -> Option<impl Iterator<Item = (&[u8], u32)>> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 {
        return None;
    }
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(32..40)?.try_into().ok()?)).ok()?;
    let phentsize = usize::from(u16_at(elf, 54)?);
    let phnum = usize::from(u16_at(elf, 56)?);
    let mut found = Vec::new();
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(elf, ph)? != 4 {
            continue; // not PT_NOTE
        }
        let off = usize::try_from(u64::from_le_bytes(
            elf.get(ph + 8..ph + 16)?.try_into().ok()?,
        ))
        .ok()?;
        let size = usize::try_from(u64::from_le_bytes(
            elf.get(ph + 32..ph + 40)?.try_into().ok()?,
        ))
        .ok()?;
        let mut at = off;
        let end = off.checked_add(size)?;
        while at + 12 <= end {
            let namesz = u32_at(elf, at)? as usize;
            let descsz = u32_at(elf, at + 4)? as usize;
            let kind = u32_at(elf, at + 8)?;
            let name = elf.get(at + 12..at + 12 + namesz)?;
            let name = name.strip_suffix(b"\0").unwrap_or(name);
            found.push((name, kind));
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
    }
    Some(found.into_iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_bzimage() {
        assert!(payload(b"hello").is_err());
        let mut fake = vec![0u8; 0x300];
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        fake[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
        assert!(
            payload(&fake).is_err(),
            "protocol 2.07 has no payload fields"
        );
    }
}
