//! Shared by the commands that read `-f`: load, validate and print diagnostics.

use super::Failure;
pub use crate::daemon::declare::desired;
use crate::manifest::{self, Loaded, validate};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// Manifest file, folder (recursive *.yaml, *.yml) or `-` for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Do not check that files named in manifests (VM kernels, initrds) exist.
    #[arg(long)]
    pub no_fs_checks: bool,
}

/// Loads and validates; prints every diagnostic (with the offending line) to stderr. Fails with
/// exit 1 when there is any error, so callers only ever see a valid set.
pub fn load(args: &FileArgs) -> Result<Loaded, Failure> {
    let loaded = manifest::load_and_validate(
        &args.files,
        validate::Options {
            fs_checks: !args.no_fs_checks,
        },
    );
    print_diagnostics(&loaded);
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        eprintln!(
            "{errors} error{} found; nothing was changed",
            if errors == 1 { "" } else { "s" }
        );
        return Err(Failure::silent(1));
    }
    Ok(loaded)
}

pub fn print_diagnostics(loaded: &Loaded) {
    for d in &loaded.diagnostics {
        eprintln!("{}\n", d.render(loaded.source_text(&d.file)));
    }
}
