//! `microfaasctl diff`: unified diff between stored and declared objects (kubectl diff exit codes).

use super::CmdResult;
use super::manifests::{FileArgs, desired};
use super::output::yaml;
use crate::store::{DesiredObject, Store, StoredObject};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit 0: no differences; 1: differences; 2 or more: an error.")]
pub struct Args {
    #[command(flatten)]
    files: FileArgs,
}

fn view_desired(d: &DesiredObject) -> String {
    yaml(&json!({"metadata": {"name": d.name, "labels": d.labels}, "spec": d.spec}))
}

fn view_stored(o: &StoredObject) -> String {
    yaml(&json!({"metadata": {"name": o.name, "labels": o.labels}, "spec": o.spec}))
}

pub fn run(args: Args, state_dir: &Path) -> CmdResult {
    // kubectl diff: every failure is exit 2 or more, so `1` always means "differences".
    let fail2 = |mut f: super::Failure| {
        f.code = f.code.max(2);
        f
    };
    let loaded = super::manifests::load(&args.files).map_err(fail2)?;
    crate::daemon::declare::select_declared_store(&loaded);
    let store = Store::open(state_dir).map_err(|e| fail2(e.into()))?;
    let mut changed = false;
    for res in &loaded.resources {
        let d = desired(res);
        let new = view_desired(&d);
        let old = match store.get(d.kind, &d.name).map_err(|e| fail2(e.into()))? {
            Some(o) => view_stored(&o),
            None => String::new(),
        };
        if old == new {
            continue;
        }
        changed = true;
        let reference = format!("{}/{}", d.kind.singular(), d.name);
        let diff = similar::TextDiff::from_lines(&old, &new);
        print!(
            "{}",
            diff.unified_diff().context_radius(3).header(
                &format!("live/{reference}"),
                &format!("desired/{reference}")
            )
        );
    }
    Ok(if changed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
