//! Reads a kernel module file into memory uncompressed.
//!
//! The agent loads modules with `finit_module`, and a kernel only decompresses modules itself
//! when built with MODULE_DECOMPRESS, so the image always carries plain `.ko` files. Debian 12's
//! kernels ship them uncompressed; `.xz` and `.zst` (other distributions, newer Debian) go
//! through the `xz` / `zstd` tools rather than adding two codec crates for a rare path.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::modules::{Compression, split_compression};
use super::{ImageError, tool};

pub fn read_module(path: &Path) -> Result<Vec<u8>, ImageError> {
    let (_, compression) = split_compression(path.to_str().unwrap_or_default());
    let read_err = |source| ImageError::Read {
        path: path.to_owned(),
        source,
    };
    match compression {
        Compression::None => fs::read(path).map_err(read_err),
        Compression::Gzip => {
            let file = fs::File::open(path).map_err(read_err)?;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(file)
                .read_to_end(&mut out)
                .map_err(read_err)?;
            Ok(out)
        }
        Compression::Xz => run_tool("xz", path),
        Compression::Zstd => run_tool("zstd", path),
    }
}

fn run_tool(tool: &'static str, path: &Path) -> Result<Vec<u8>, ImageError> {
    tool::run(tool, Command::new(tool).args(["-d", "-c", "-q"]).arg(path)).map_err(|e| {
        tool::hint(
            e,
            &format!("decompressing {}; install xz-utils / zstd", path.display()),
        )
    })
}
