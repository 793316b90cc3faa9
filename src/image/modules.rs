//! Resolves which kernel modules a worker needs, from a kernel's `modules.dep`, in load order.
//!
//! PID 1 loads modules itself with `finit_module` (there is no modprobe in the image), so the
//! image must carry every dependency and list them dependencies-first.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::ImageError;

/// What a VM worker needs: the virtio NIC on the PCI bus, plus the ACPI power button and evdev
/// so a QMP `system_powerdown` reaches the agent as `KEY_POWER`.
pub const WORKER_MODULES: &[&str] = &["virtio_net", "virtio_pci", "button", "evdev"];

/// One module to put into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical module name (`-` folded to `_`), e.g. `virtio_net`.
    pub name: String,
    /// Path relative to the modules directory as `modules.dep` spells it, e.g.
    /// `kernel/drivers/net/virtio_net.ko` (possibly with `.xz`/`.zst`/`.gz`).
    pub rel_path: String,
}

impl Module {
    /// The file on disk, inside `modules_dir`.
    pub fn source(&self, modules_dir: &Path) -> PathBuf {
        modules_dir.join(&self.rel_path)
    }

    /// The path relative to the modules directory once decompressed (`….ko`).
    pub fn uncompressed_rel_path(&self) -> &str {
        let (stem, _) = split_compression(&self.rel_path);
        stem
    }
}

/// The transitive dependency closure of `wanted` in `modules_dir` (a `lib/modules/<version>`
/// directory), ordered so each module comes after everything it depends on.
///
/// A wanted module listed in `modules.builtin` is skipped: that kernel has it built in.
/// A wanted module that is neither built in nor in `modules.dep` is an error, because the
/// worker would boot without a NIC or power button and only time out much later.
pub fn resolve(modules_dir: &Path, wanted: &[&str]) -> Result<Vec<Module>, ImageError> {
    let dep_path = modules_dir.join("modules.dep");
    let dep_text = fs::read_to_string(&dep_path).map_err(|source| ImageError::ModulesDep {
        path: dep_path.clone(),
        source,
    })?;
    let deps = parse_modules_dep(&dep_text);
    let builtin = read_builtin(modules_dir)?;

    let mut order = Vec::new();
    let mut placed = HashSet::new();
    for want in wanted {
        let want = canonical(want);
        if builtin.contains(&want) {
            continue;
        }
        let Some(rel) = deps.by_name.get(&want) else {
            return Err(ImageError::ModuleMissing {
                module: want,
                dir: modules_dir.to_owned(),
            });
        };
        visit(&deps, rel, &mut placed, &mut Vec::new(), &mut order)?;
    }
    Ok(order
        .into_iter()
        .map(|rel| Module {
            name: module_name(&rel),
            rel_path: rel,
        })
        .collect())
}

struct DepGraph {
    /// module path -> the paths it depends on, as listed.
    edges: HashMap<String, Vec<String>>,
    /// canonical module name -> module path.
    by_name: HashMap<String, String>,
}

fn parse_modules_dep(text: &str) -> DepGraph {
    let mut edges = HashMap::new();
    let mut by_name = HashMap::new();
    for line in text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let module = module.trim();
        if module.is_empty() {
            continue;
        }
        let list = rest.split_whitespace().map(str::to_owned).collect();
        by_name.insert(module_name(module), module.to_owned());
        edges.insert(module.to_owned(), list);
    }
    DepGraph { edges, by_name }
}

/// Depth-first, dependencies before dependants. modules.dep lists a module's dependencies
/// with the ones loaded last first (what modprobe walks backwards), so visiting them in
/// reverse reproduces modprobe's order.
fn visit(
    graph: &DepGraph,
    module: &str,
    placed: &mut HashSet<String>,
    stack: &mut Vec<String>,
    order: &mut Vec<String>,
) -> Result<(), ImageError> {
    if placed.contains(module) {
        return Ok(());
    }
    if stack.iter().any(|m| m == module) {
        let mut cycle: Vec<String> = stack.iter().map(|m| module_name(m)).collect();
        cycle.push(module_name(module));
        return Err(ImageError::ModuleCycle(cycle.join(" -> ")));
    }
    stack.push(module.to_owned());
    if let Some(list) = graph.edges.get(module) {
        for dep in list.iter().rev() {
            visit(graph, dep, placed, stack, order)?;
        }
    }
    stack.pop();
    placed.insert(module.to_owned());
    order.push(module.to_owned());
    Ok(())
}

fn read_builtin(modules_dir: &Path) -> Result<HashSet<String>, ImageError> {
    let path = modules_dir.join("modules.builtin");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(text.lines().map(module_name).collect()),
        // Older or hand-made trees may lack it; then nothing counts as built in.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
        Err(source) => Err(ImageError::ModulesDep { path, source }),
    }
}

/// `kernel/drivers/net/virtio_net.ko.xz` -> `virtio_net`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let (stem, _) = split_compression(file);
    canonical(stem.strip_suffix(".ko").unwrap_or(stem))
}

/// The kernel treats `-` and `_` in module names as the same character.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Compression a module file carries, by suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Zstd,
    Gzip,
}

/// Splits `x.ko.xz` into (`x.ko`, Xz).
pub fn split_compression(path: &str) -> (&str, Compression) {
    for (suffix, kind) in [
        (".xz", Compression::Xz),
        (".zst", Compression::Zstd),
        (".gz", Compression::Gzip),
    ] {
        if let Some(stem) = path.strip_suffix(suffix) {
            return (stem, kind);
        }
    }
    (path, Compression::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical_and_stripped() {
        assert_eq!(
            module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(module_name("kernel/x/snd-hda.ko.zst"), "snd_hda");
        assert_eq!(module_name("kernel/drivers/acpi/button.ko.xz"), "button");
    }

    #[test]
    fn dependency_order_follows_modprobe() {
        let graph = parse_modules_dep("a.ko: c.ko b.ko\nb.ko: c.ko\nc.ko:\nd.ko: c.ko\n");
        let mut order = Vec::new();
        let mut placed = HashSet::new();
        for m in ["a.ko", "d.ko"] {
            visit(&graph, m, &mut placed, &mut Vec::new(), &mut order).unwrap();
        }
        assert_eq!(order, ["c.ko", "b.ko", "a.ko", "d.ko"]);
    }

    #[test]
    fn cycles_are_reported_not_looped() {
        let graph = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n");
        let err = visit(
            &graph,
            "a.ko",
            &mut HashSet::new(),
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert!(matches!(err, Err(ImageError::ModuleCycle(_))));
    }
}
