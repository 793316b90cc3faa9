//! Lays out the worker initramfs (gzip-compressed newc cpio) around the static agent:
//!
//! ```text
//! /init                       the agent, PID 1
//! /dev/console                5:1, so the kernel can open an initial console before devtmpfs
//! /proc /sys /dev /tmp        mount points
//! /lib/modules/<rel>/…/x.ko   uncompressed modules, if the kernel needs any
//! /etc/microfaas/modules      their initramfs paths, one per line, in load order
//! /etc/microfaas/token        optional, mode 0600
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::ImageError;
use super::cpio::CpioWriter;

/// Where the agent finds its module list and token inside the image.
pub const MODULES_LIST: &str = "/etc/microfaas/modules";
pub const TOKEN_FILE: &str = "/etc/microfaas/token";

/// Everything that goes into one image.
pub struct Contents<'a> {
    pub agent: &'a [u8],
    /// (absolute path inside the image, uncompressed module bytes), in load order.
    pub modules: Vec<(String, Vec<u8>)>,
    pub token: Option<&'a str>,
}

/// Writes the image to `path` atomically (a temp file next to it, renamed at the end) and
/// returns its compressed size.
pub fn write(path: &Path, contents: &Contents<'_>) -> Result<u64, ImageError> {
    let tmp = path.with_extension("tmp");
    let write_err = |source| ImageError::Write {
        path: tmp.clone(),
        source,
    };
    let file = fs::File::create(&tmp).map_err(write_err)?;
    let result = (|| {
        let gz = GzEncoder::new(BufWriter::new(file), Compression::default());
        let gz = archive(CpioWriter::new(gz), contents)?;
        let buf = gz.finish().map_err(write_err)?;
        let mut file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        pad_to_page(&mut file).map_err(write_err)?;
        Ok::<_, ImageError>(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|source| ImageError::Write {
        path: path.to_owned(),
        source,
    })?;
    let len = fs::metadata(path)
        .map_err(|source| ImageError::Read {
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok(len)
}

/// The initramfs size is padded with zeros to a whole number of pages. QEMU's PVH loader puts
/// the initrd at the very top of RAM, and on `microvm` that last page holds the ACPI tables: an
/// initrd whose size is not a page multiple overwrites part of them (the guest then finds no
/// PCI bus and no NIC). A page-multiple initrd ends exactly below that page. The kernel skips
/// zeros after an archive, so the padding is harmless everywhere else.
const PAGE: u64 = 4096;

fn pad_to_page(file: &mut fs::File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    let pad = (PAGE - len % PAGE) % PAGE;
    // Bounded by PAGE, so a plain buffer is fine.
    file.write_all(&vec![0u8; pad as usize])?;
    file.flush()
}

fn archive<W: Write>(mut cpio: CpioWriter<W>, c: &Contents<'_>) -> Result<W, ImageError> {
    let mut tree = Tree {
        cpio: &mut cpio,
        dirs: BTreeSet::new(),
    };
    for dir in ["dev", "proc", "sys"] {
        tree.dir(dir, 0o755)?;
    }
    tree.dir("tmp", 0o1777)?;
    tree.cpio.char_dev("dev/console", 0o600, 5, 1)?;
    tree.file("init", 0o755, c.agent)?;

    let mut list = String::new();
    for (path, bytes) in &c.modules {
        tree.file(relative(path), 0o644, bytes)?;
        list.push_str(path);
        list.push('\n');
    }
    tree.file(relative(MODULES_LIST), 0o644, list.as_bytes())?;
    if let Some(token) = c.token {
        tree.file(relative(TOKEN_FILE), 0o600, token.as_bytes())?;
    }
    Ok(cpio.finish()?)
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Emits each parent directory once, before the first entry inside it, since the kernel's
/// unpacker does not create missing parents.
struct Tree<'a, W: Write> {
    cpio: &'a mut CpioWriter<W>,
    dirs: BTreeSet<String>,
}

impl<W: Write> Tree<'_, W> {
    fn dir(&mut self, path: &str, perm: u32) -> Result<(), ImageError> {
        self.parents(path)?;
        if self.dirs.insert(path.to_owned()) {
            self.cpio.dir(path, perm)?;
        }
        Ok(())
    }

    fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> Result<(), ImageError> {
        self.parents(path)?;
        self.cpio.file(path, perm, data)?;
        Ok(())
    }

    fn parents(&mut self, path: &str) -> Result<(), ImageError> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            let parent = &path[..end];
            if self.dirs.insert(parent.to_owned()) {
                self.cpio.dir(parent, 0o755)?;
            }
            end += 1;
        }
        Ok(())
    }
}
