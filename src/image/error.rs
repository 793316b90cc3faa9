//! Errors of the image builder. Each names the file or tool involved and, where one exists,
//! the step that fixes it, because they surface straight to `microfaasctl image build` users.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use super::cpio::CpioError;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read {path} (run `depmod -b ROOT VERSION` on an unpacked kernel tree)")]
    ModulesDep {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("kernel module `{module}` is neither built in nor listed in {dir}/modules.dep")]
    ModuleMissing { module: String, dir: PathBuf },
    #[error("kernel module dependency cycle: {0}")]
    ModuleCycle(String),
    #[error("`{tool}`: {detail}")]
    Tool { tool: &'static str, detail: String },
    #[error("{path} cannot be /init: {reason}")]
    NotStaticElf { path: PathBuf, reason: String },
    #[error("cannot extract vmlinux from {path}: {reason}")]
    Vmlinux { path: PathBuf, reason: String },
    #[error("{path} is not the expected kernel file: {reason}")]
    NotKernel { path: PathBuf, reason: &'static str },
    #[error(
        "invalid board {what} `{value}`: U-Boot needs one word without spaces, quotes, `;` or `$`"
    )]
    BoardIdentity { what: &'static str, value: String },
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error(transparent)]
    Cpio(#[from] CpioError),
}
