//! Storing a declared set of manifests, the one way `apply` (in-process or against a daemon)
//! and `serve` do it: every object created, configured or unchanged in one transaction; objects
//! applied earlier from the same paths and no longer declared are marked for deletion with
//! `prune` (the engine tears them down, then removes them) and only reported without it.

use crate::manifest::{Kind, Loaded, Resource};
use crate::store::{ApplyOutcome, DesiredObject, Store};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

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

/// The identity of "this set of -f paths", like kubectl's ApplySet: pruning only removes
/// objects last applied from the same set.
/// Picks the store a Cluster in `loaded` declares (`spec.store`), unless the command chose
/// one; to be called before the store is opened.
pub fn select_declared_store(loaded: &Loaded) {
    let declared = loaded.resources.iter().find_map(|r| match &r.spec {
        crate::manifest::resource::Spec::Cluster(c) => c.store.as_ref(),
        _ => None,
    });
    if let Some(s) = declared {
        let want = crate::store::EtcdLocation {
            endpoints: s.etcd.endpoints.clone(),
            prefix: s.etcd.prefix.trim_matches('/').to_string(),
            tls: s
                .etcd
                .tls
                .as_ref()
                .map(crate::manifest::types::EtcdTlsSpec::files),
        };
        if let Some(used) = crate::store::select_declared(want.clone())
            && *used != want
        {
            tracing::info!(
                declared = %want.url(),
                used = %used.url(),
                "the command's --store overrides Cluster.spec.store"
            );
        }
    }
}

pub fn applyset(files: &[PathBuf]) -> (String, Vec<String>) {
    let mut paths: Vec<String> = files
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
    let digest = Sha256::digest(paths.join("\n").as_bytes());
    let id: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    (id, paths)
}

/// What storing a declared set did.
#[derive(Debug, Default)]
pub struct Declared {
    /// Declared objects (created / configured / unchanged) and, with prune, the ones marked
    /// for deletion (`Pruned`).
    pub outcomes: Vec<(Kind, String, ApplyOutcome)>,
    /// Applied from these paths before, absent now, and left alone (no prune).
    pub undeclared: Vec<(Kind, String)>,
}

impl Declared {
    /// What the engine must look at: everything declared and everything being deleted.
    pub fn keys(&self) -> Vec<(Kind, String)> {
        self.outcomes
            .iter()
            .map(|(k, n, _)| (*k, n.clone()))
            .collect()
    }
}

/// Stores `loaded` (valid: callers check diagnostics first) as the set of `files`.
pub fn declare(
    store: &mut Store,
    loaded: &Loaded,
    files: &[PathBuf],
    prune: bool,
    dry_run: bool,
) -> crate::store::Result<Declared> {
    let objects: Vec<DesiredObject> = loaded.resources.iter().map(desired).collect();
    let (id, paths) = applyset(files);
    let set = Some((id.as_str(), paths.as_slice()));
    // Which objects of this set are gone from the files: a rolled-back pruning apply says.
    let stale: Vec<(Kind, String)> = store
        .apply(&objects, set, true, true)?
        .into_iter()
        .filter(|(_, _, o)| *o == ApplyOutcome::Pruned)
        .map(|(k, n, _)| (k, n))
        .collect();
    let mut declared = Declared {
        outcomes: store.apply(&objects, set, false, dry_run)?,
        undeclared: Vec::new(),
    };
    if !prune {
        declared.undeclared = stale;
        return Ok(declared);
    }
    for (kind, name) in stale {
        if !dry_run {
            store.request_deletion(kind, &name)?;
        }
        declared.outcomes.push((kind, name, ApplyOutcome::Pruned));
    }
    Ok(declared)
}

/// Marks objects for deletion, a WorkerSet's workers with it; returns what was marked.
pub fn request_deletion(
    store: &mut Store,
    targets: &[(Kind, String)],
) -> crate::store::Result<Vec<(Kind, String)>> {
    let mut marked = Vec::new();
    for (kind, name) in targets {
        store.request_deletion(*kind, name)?;
        if *kind == Kind::WorkerSet {
            for w in store.list(Some(Kind::Worker))? {
                if w.owner.as_deref() == Some(name.as_str()) {
                    store.request_deletion(Kind::Worker, &w.name)?;
                    marked.push((Kind::Worker, w.name));
                }
            }
        }
        marked.push((*kind, name.clone()));
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FN: &str = "apiVersion: microfaas.dev/v1alpha1\nkind: Function\nmetadata: {name: f}\nspec: {runtime: exec, command: [\"true\"]}\n";
    const SET: &str = "apiVersion: microfaas.dev/v1alpha1\nkind: WorkerSet\nmetadata: {name: vms}\nspec:\n  replicas: 2\n  template:\n    spec: {vm: {kernel: /k}}\n";

    fn load(dir: &std::path::Path) -> Loaded {
        let l = crate::manifest::load_and_validate(
            &[dir.to_path_buf()],
            crate::manifest::validate::Options { fs_checks: false },
        );
        assert!(
            l.diagnostics.iter().all(|d| !d.is_error()),
            "{:?}",
            l.diagnostics
        );
        l
    }

    /// Without prune a document gone from the files is only reported; with prune it (and a
    /// WorkerSet's workers) is marked for the engine to finalize, not deleted outright.
    #[test]
    fn undeclared_objects_are_reported_or_marked() {
        let state = tempfile::tempdir().expect("tmp");
        let dir = tempfile::tempdir().expect("tmp");
        let files = vec![dir.path().to_path_buf()];
        std::fs::write(dir.path().join("f.yaml"), FN).expect("write");
        std::fs::write(dir.path().join("set.yaml"), SET).expect("write");
        let mut store = Store::open(state.path()).expect("open");
        let first = declare(&mut store, &load(dir.path()), &files, false, false).expect("d");
        assert_eq!(first.outcomes.len(), 4);
        assert!(first.undeclared.is_empty());

        std::fs::remove_file(dir.path().join("set.yaml")).expect("rm");
        let kept = declare(&mut store, &load(dir.path()), &files, false, false).expect("d");
        let gone: Vec<String> = kept.undeclared.iter().map(|(_, n)| n.clone()).collect();
        assert_eq!(gone, ["vms-0", "vms-1", "vms"]);
        assert!(!store.deletion_requested(Kind::WorkerSet, "vms").expect("q"));

        let pruned = declare(&mut store, &load(dir.path()), &files, true, false).expect("d");
        assert!(pruned.undeclared.is_empty());
        assert_eq!(
            pruned
                .outcomes
                .iter()
                .filter(|(_, _, o)| *o == ApplyOutcome::Pruned)
                .count(),
            3
        );
        for (k, n) in [
            (Kind::WorkerSet, "vms"),
            (Kind::Worker, "vms-0"),
            (Kind::Worker, "vms-1"),
        ] {
            assert!(
                store.get(k, n).expect("get").is_some(),
                "{n} deleted before teardown"
            );
            assert!(store.deletion_requested(k, n).expect("q"), "{n} not marked");
        }
        assert!(!store.deletion_requested(Kind::Function, "f").expect("q"));
    }
}
