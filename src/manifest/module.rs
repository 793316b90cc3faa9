//! A user function's module file as the controller sees it: read with a size bound, digested,
//! checked against the Function's pinned `sha256` and parsed as WebAssembly (or, for `exec`,
//! recognised as ELF). Validation reports
//! these as manifest errors; dispatch reads the file again when it ships the module, so an edit
//! after `apply` is caught by the pin rather than run unnoticed.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::protocol::MAX_MODULE;

/// A module file that passed every check.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub bytes: Vec<u8>,
    /// Lower-case hex sha256 of `bytes`.
    pub sha256: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModuleFileError {
    #[error("module `{0}` does not exist or is not a file")]
    Missing(String),
    #[error("module `{path}` cannot be read: {reason}")]
    Read { path: String, reason: String },
    #[error("module `{path}` is {size} bytes, more than the {MAX_MODULE} an invocation can carry")]
    TooLarge { path: String, size: u64 },
    #[error("module `{path}` has sha256 {actual}, not the pinned {expected}")]
    ShaMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("`{0}` is not a sha256: 64 hex digits expected")]
    BadPin(String),
    #[error("module `{path}` is not a valid WebAssembly module: {reason}")]
    Invalid { path: String, reason: String },
    #[error("module `{0}` is not an ELF executable")]
    NotElf(String),
}

/// What a module file must be: a WebAssembly module (`wasm`) or a static ELF executable
/// (`exec`, whose machine only the worker can judge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wasm,
    Elf,
}

/// Whether `s` is 64 hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads and checks the module at `path` against an optional pinned digest.
pub fn read(
    path: &str,
    pinned: Option<&str>,
    format: Format,
) -> Result<ModuleFile, ModuleFileError> {
    let read_err = |e: std::io::Error| ModuleFileError::Read {
        path: path.to_string(),
        reason: e.to_string(),
    };
    if !Path::new(path).is_file() {
        return Err(ModuleFileError::Missing(path.to_string()));
    }
    let size = std::fs::metadata(Path::new(path)).map_err(read_err)?.len();
    if size > MAX_MODULE as u64 {
        return Err(ModuleFileError::TooLarge {
            path: path.to_string(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    if bytes.len() > MAX_MODULE {
        return Err(ModuleFileError::TooLarge {
            path: path.to_string(),
            size: bytes.len() as u64,
        });
    }
    let sha256 = crate::functions::hex(&Sha256::digest(&bytes));
    if let Some(pin) = pinned {
        if !is_sha256(pin) {
            return Err(ModuleFileError::BadPin(pin.to_string()));
        }
        if !pin.eq_ignore_ascii_case(&sha256) {
            return Err(ModuleFileError::ShaMismatch {
                path: path.to_string(),
                expected: pin.to_ascii_lowercase(),
                actual: sha256,
            });
        }
    }
    match format {
        Format::Wasm => {
            wasmi::Module::new(&wasmi::Engine::default(), &bytes).map_err(|e| {
                ModuleFileError::Invalid {
                    path: path.to_string(),
                    reason: e.to_string(),
                }
            })?;
        }
        Format::Elf if !bytes.starts_with(b"\x7fELF") => {
            return Err(ModuleFileError::NotElf(path.to_string()));
        }
        Format::Elf => {}
    }
    Ok(ModuleFile { bytes, sha256 })
}
