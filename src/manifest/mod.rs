//! Manifests: the resource types, reading YAML with positions, validation and JSON Schemas.
//!
//! Only [`pins`] is built without the `controller` feature: the GPIO driver resolves header pins
//! through it in its static test program too.

#[cfg(feature = "controller")]
pub mod diag;
#[cfg(feature = "controller")]
pub mod expand;
#[cfg(feature = "controller")]
pub mod load;
#[cfg(feature = "controller")]
pub mod module;
#[cfg(feature = "controller")]
pub mod node;
pub mod pins;
#[cfg(feature = "controller")]
pub mod quantity;
#[cfg(feature = "controller")]
pub mod resource;
#[cfg(feature = "controller")]
pub mod schema;
#[cfg(feature = "controller")]
pub mod tapaddr;
#[cfg(feature = "controller")]
pub mod types;
#[cfg(feature = "controller")]
pub mod validate;

#[cfg(feature = "controller")]
pub use diag::{Diagnostic, Severity};
#[cfg(feature = "controller")]
pub use load::{Loaded, Source};
#[cfg(feature = "controller")]
pub use resource::{Kind, Resource, Spec};

#[cfg(feature = "controller")]
use std::path::PathBuf;

/// Reads, expands and validates everything named by `-f` arguments. The result holds every
/// resource that parsed and every diagnostic, sorted by file and position.
#[cfg(feature = "controller")]
pub fn load_and_validate(paths: &[PathBuf], opts: validate::Options) -> Loaded {
    let mut loaded = load::load_paths(paths);
    resolve_relative_paths(&mut loaded);
    expand::expand_all(&mut loaded.resources);
    let more = validate::validate(&loaded.resources, opts);
    loaded.diagnostics.extend(more);
    loaded.diagnostics.sort_by(|a, b| {
        (a.file.as_ref(), a.pos, a.severity).cmp(&(b.file.as_ref(), b.pos, b.severity))
    });
    loaded
}

/// Expands and validates one manifest given as text (named `name` in diagnostics), as
/// [`load_and_validate`] does for files, without resolving relative paths (there is no file
/// they would be relative to). For tools and tests that hold the text already.
#[cfg(feature = "controller")]
pub fn validate_text(name: &str, text: String, opts: validate::Options) -> Loaded {
    let mut loaded = Loaded::default();
    loaded.add_source(load::Source {
        name: std::sync::Arc::from(name),
        path: None,
        text,
    });
    expand::expand_all(&mut loaded.resources);
    let more = validate::validate(&loaded.resources, opts);
    loaded.diagnostics.extend(more);
    loaded
}

/// Relative VM kernel and initrd paths, services' password files, etcd TLS files and Function
/// modules are relative to the manifest that names them, so a repository of manifests works
/// from any current directory. They are stored absolute.
#[cfg(feature = "controller")]
fn resolve_relative_paths(loaded: &mut Loaded) {
    for res in &mut loaded.resources {
        let base = loaded
            .sources
            .iter()
            .find(|s| s.name == res.origin.file)
            .and_then(|s| s.path.as_ref())
            .and_then(|p| p.parent().map(|p| p.to_path_buf()));
        if let (Spec::Cluster(c), Some(base)) = (&mut res.spec, &base) {
            let tls = c.store.as_mut().and_then(|s| s.etcd.tls.as_mut());
            let tls_files = tls.into_iter().flat_map(|t| {
                std::iter::once(&mut t.ca)
                    .chain(&mut t.cert)
                    .chain(&mut t.key)
            });
            let password_files = c
                .services
                .values_mut()
                .filter_map(|svc| svc.password_file.as_mut());
            for p in password_files.chain(tls_files) {
                if !p.is_empty() && std::path::Path::new(p).is_relative() {
                    *p = base.join(&*p).display().to_string();
                }
            }
        }
        if let (Spec::Function(f), Some(base)) = (&mut res.spec, &base)
            && let Some(m) = f.module.as_mut()
            && !m.is_empty()
            && std::path::Path::new(m).is_relative()
        {
            *m = base.join(&*m).display().to_string();
        }
        let vm = match &mut res.spec {
            Spec::Worker(w) => w.vm.as_mut(),
            Spec::WorkerSet(s) => s.template.spec.vm.as_mut(),
            _ => None,
        };
        let (Some(vm), Some(base)) = (vm, base) else {
            continue;
        };
        for p in std::iter::once(&mut vm.kernel).chain(vm.initrd.as_mut()) {
            if !p.is_empty() && std::path::Path::new(p).is_relative() {
                *p = base.join(&*p).display().to_string();
            }
        }
    }
}
