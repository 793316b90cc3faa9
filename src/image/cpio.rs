//! A streaming writer for the cpio "newc" format (`070701`), the only archive format the Linux
//! kernel unpacks as an initramfs. Entries are written in the order given: the kernel does not
//! create missing parent directories, so callers emit each directory before its contents.

use std::io::{self, Write};

use thiserror::Error;

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Why an entry could not be written.
#[derive(Debug, Error)]
pub enum CpioError {
    #[error("cpio entry name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("cpio entry {name:?} is {len} bytes; newc stores sizes in 32 bits")]
    TooLarge { name: String, len: usize },
    #[error("cpio permission bits {mode:#o} for {name:?} are out of range (max 0o7777)")]
    InvalidMode { name: String, mode: u32 },
    #[error("writing the cpio archive failed")]
    Io(#[from] io::Error),
}

/// Writes newc entries to `W`; call [`CpioWriter::finish`] to append the trailer.
///
/// Every entry gets a fresh inode number (no hard links) and mtime 0, so the same inputs always
/// give the same bytes.
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

struct Header {
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        // Inode 0 is avoided because some extractors treat it as "no inode".
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// A directory, e.g. `dir("dev", 0o755)`.
    pub fn dir(&mut self, name: &str, perm: u32) -> Result<(), CpioError> {
        let mode = S_IFDIR | check_perm(name, perm)?;
        self.entry(name, header(mode, 2, 0), &[])
    }

    /// A regular file with the given contents.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<(), CpioError> {
        let mode = S_IFREG | check_perm(name, perm)?;
        let size = size32(name, data.len())?;
        self.entry(name, header(mode, 1, size), data)
    }

    /// A symbolic link `name -> target`; newc stores the target as the entry's data.
    pub fn symlink(&mut self, name: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::InvalidName {
                name: name.to_owned(),
                reason: "symlink target is empty or contains NUL",
            });
        }
        let size = size32(name, target.len())?;
        self.entry(name, header(S_IFLNK | 0o777, 1, size), target.as_bytes())
    }

    /// A character device node, e.g. `/dev/console` is `char_dev("dev/console", 0o600, 5, 1)`.
    pub fn char_dev(
        &mut self,
        name: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let mode = S_IFCHR | check_perm(name, perm)?;
        let mut h = header(mode, 1, 0);
        h.rdev_major = major;
        h.rdev_minor = minor;
        self.entry(name, h, &[])
    }

    /// Appends the `TRAILER!!!` entry and returns the underlying writer (not flushed further).
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.raw_entry(TRAILER, 0, header(0, 1, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn entry(&mut self, name: &str, h: Header, data: &[u8]) -> Result<(), CpioError> {
        check_name(name)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(name, ino, h, data)
    }

    fn raw_entry(&mut self, name: &str, ino: u32, h: Header, data: &[u8]) -> Result<(), CpioError> {
        let namesize = size32(name, name.len() + 1)?;
        let fields = [
            ino,
            h.mode,
            0, // uid: root
            0, // gid: root
            h.nlink,
            0, // mtime: fixed for reproducible images
            h.filesize,
            0, // dev major
            0, // dev minor
            h.rdev_major,
            h.rdev_minor,
            namesize,
            0, // check: only used by the "crc" variant
        ];
        let mut head = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        head.extend_from_slice(MAGIC);
        for f in fields {
            head.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        head.resize(head.len() + pad4(head.len()), 0);
        self.write(&head)?;
        self.write(data)?;
        self.write(&[0; 3][..pad4(data.len())])?;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far (the archive's size once finished).
    pub fn written(&self) -> u64 {
        self.written
    }
}

fn header(mode: u32, nlink: u32, filesize: u32) -> Header {
    Header {
        mode,
        nlink,
        filesize,
        rdev_major: 0,
        rdev_minor: 0,
    }
}

/// Zero bytes needed to bring `len` up to a multiple of four.
fn pad4(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn size32(name: &str, len: usize) -> Result<u32, CpioError> {
    u32::try_from(len).map_err(|_| CpioError::TooLarge {
        name: name.to_owned(),
        len,
    })
}

fn check_perm(name: &str, perm: u32) -> Result<u32, CpioError> {
    if perm > 0o7777 {
        return Err(CpioError::InvalidMode {
            name: name.to_owned(),
            mode: perm,
        });
    }
    Ok(perm)
}

/// Names are relative to the archive root, like the kernel's own gen_init_cpio writes them;
/// `..` is refused so an image can never write outside the root it is unpacked into.
fn check_name(name: &str) -> Result<(), CpioError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.starts_with('/') {
        Some("must be relative to the archive root")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else if name == TRAILER {
        Some("reserved for the archive trailer")
    } else if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        Some("has an empty, `.` or `..` component")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(CpioError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_data_are_padded_to_four_bytes() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        // 110-byte header + "a\0" = 112 (aligned), then 3 data bytes + 1 pad.
        assert_eq!(&bytes[..6], b"070701");
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..116], b"xyz\0");
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn rejects_names_that_escape_or_are_absolute() {
        let mut w = CpioWriter::new(Vec::new());
        for bad in ["", "/init", "a/../b", "a//b", "./a", "TRAILER!!!", "a\0b"] {
            assert!(w.dir(bad, 0o755).is_err(), "{bad:?} accepted");
        }
        assert!(w.dir("dev", 0o10000).is_err());
    }
}
