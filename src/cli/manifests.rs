//! Shared by the commands that read `-f`: load, validate, print diagnostics, and turn resources
//! into what the store keeps.

use super::Failure;
use crate::manifest::{self, Loaded, Resource, validate};
use crate::store::DesiredObject;
use sha2::{Digest, Sha256};
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

pub fn desired(res: &Resource) -> DesiredObject {
    DesiredObject {
        kind: res.kind(),
        name: res.name().to_string(),
        labels: res.metadata.labels.clone(),
        annotations: res.metadata.annotations.clone(),
        spec: res.spec.to_json(),
        owner: res.owner.clone(),
        source: Some(format!(
            "{}:{}:{}",
            res.origin.file, res.origin.pos.line, res.origin.pos.col
        )),
    }
}

/// The identity of "this set of -f paths", like kubectl's ApplySet: `--prune` only removes
/// objects last applied from the same set.
pub fn applyset(loaded: &Loaded, args: &FileArgs) -> (String, Vec<String>) {
    let mut paths: Vec<String> = args
        .files
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                "-".to_string()
            } else {
                std::fs::canonicalize(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
                    .to_string()
            }
        })
        .collect();
    paths.sort();
    paths.dedup();
    let _ = loaded;
    let digest = Sha256::digest(paths.join("\n").as_bytes());
    let id: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    (id, paths)
}
