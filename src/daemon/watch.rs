//! Following manifest files and folders on disk (`serve --watch`): debounced notify events,
//! filtered to the paths that matter, become one "re-read the set" signal. A file is watched
//! through its folder, because editors that save by writing a temp file and renaming it over
//! the original replace the inode a watch on the file itself would follow.

use notify_debouncer_full::notify::event::{EventKind, ModifyKind};
use notify_debouncer_full::notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a change must touch to count.
#[derive(Debug, Clone)]
enum Interest {
    /// A declared file, by its absolute path.
    File(PathBuf),
    /// Manifests anywhere under a declared folder.
    Folder(PathBuf),
}

impl Interest {
    fn matches(&self, p: &Path) -> bool {
        match self {
            Interest::File(f) => p == f,
            Interest::Folder(d) => {
                p.starts_with(d)
                    && (p == d
                        || matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml")
                        )
                        // a folder of manifests moved in or out
                        || p.extension().is_none())
            }
        }
    }
}

pub struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    rx: mpsc::UnboundedReceiver<Vec<PathBuf>>,
}

impl Watcher {
    /// Watches `paths` (files and folders as given to `-f`); `debounce` is how long a burst of
    /// events must be quiet before it counts as one change.
    pub fn new(paths: &[PathBuf], debounce: Duration) -> Result<Watcher, String> {
        let mut interests = Vec::new();
        let mut roots: Vec<(PathBuf, RecursiveMode)> = Vec::new();
        for p in paths {
            if p.as_os_str() == "-" {
                return Err("--watch cannot follow stdin (`-f -`)".into());
            }
            let abs = std::fs::canonicalize(p)
                .map_err(|e| format!("cannot watch {}: {e}", p.display()))?;
            if abs.is_dir() {
                interests.push(Interest::Folder(abs.clone()));
                roots.push((abs, RecursiveMode::Recursive));
            } else {
                let parent = abs
                    .parent()
                    .map(Path::to_path_buf)
                    .ok_or_else(|| format!("cannot watch {}: no parent folder", p.display()))?;
                interests.push(Interest::File(abs));
                roots.push((parent, RecursiveMode::NonRecursive));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let handler = move |res: DebounceEventResult| match res {
            Ok(events) => {
                let hit: Vec<PathBuf> = events
                    .iter()
                    // Reading the files (our own reload among others) is not a change.
                    .filter(|e| {
                        !matches!(
                            e.kind,
                            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_))
                        )
                    })
                    .flat_map(|e| e.paths.iter())
                    .filter(|p| interests.iter().any(|i| i.matches(p)))
                    .cloned()
                    .collect();
                if !hit.is_empty() {
                    let _ = tx.send(hit);
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("file watch: {e}");
                }
            }
        };
        let mut debouncer = new_debouncer(debounce, None, handler)
            .map_err(|e| format!("cannot start the file watcher: {e}"))?;
        roots.sort();
        roots.dedup();
        for (root, mode) in roots {
            debouncer
                .watch(&root, mode)
                .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
        }
        Ok(Watcher {
            _debouncer: debouncer,
            rx,
        })
    }

    /// The next change (a burst already merged by the debouncer, and any that queued up
    /// meanwhile): the paths it touched. `None` once the watcher has stopped.
    pub async fn changed(&mut self) -> Option<Vec<PathBuf>> {
        let mut paths = self.rx.recv().await?;
        while let Ok(more) = self.rx.try_recv() {
            paths.extend(more);
        }
        paths.sort();
        paths.dedup();
        Some(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(w: &mut Watcher) -> Vec<PathBuf> {
        tokio::time::timeout(Duration::from_secs(20), w.changed())
            .await
            .expect("no change reported within 20s")
            .expect("watcher stopped")
    }

    /// A plain write, then a save by temp file + rename, both count; a stray file beside the
    /// watched one does not.
    #[tokio::test]
    async fn file_watch_sees_writes_and_rename_saves_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("m.yaml");
        std::fs::write(&f, "a: 1\n").expect("write");
        let abs = std::fs::canonicalize(&f).expect("canon");
        let mut w =
            Watcher::new(std::slice::from_ref(&f), Duration::from_millis(100)).expect("watch");
        std::fs::write(dir.path().join("other.txt"), "x").expect("write");
        std::fs::write(&f, "a: 2\n").expect("write");
        assert!(next(&mut w).await.contains(&abs));
        let tmp = dir.path().join(".m.yaml.swp");
        std::fs::write(&tmp, "a: 3\n").expect("write");
        std::fs::rename(&tmp, &f).expect("rename");
        assert!(next(&mut w).await.contains(&abs));
        // the file keeps being followed after its inode was replaced
        std::fs::write(&f, "a: 4\n").expect("write");
        assert!(next(&mut w).await.contains(&abs));
        // On a busy machine the write's close event can land in a later burst than its
        // modify event; let the write settle so only what follows is judged.
        while let Ok(Some(late)) =
            tokio::time::timeout(Duration::from_millis(500), w.changed()).await
        {
            assert_eq!(late, vec![abs.clone()], "only the watched file changed");
        }
        std::fs::write(dir.path().join("unrelated.txt"), "y").expect("write");
        // Reading the watched file (as every reload does) is not a change.
        let _ = std::fs::read_to_string(&f).expect("read");
        let reported = tokio::time::timeout(Duration::from_millis(800), w.changed()).await;
        assert!(
            reported.is_err(),
            "a stray file or a read was reported: {reported:?}"
        );
    }

    #[tokio::test]
    async fn folder_watch_is_recursive_and_sees_deletes() {
        let dir = tempfile::tempdir().expect("tmp");
        let sub = dir.path().join("rack/a");
        std::fs::create_dir_all(&sub).expect("mkdir");
        let mut w =
            Watcher::new(&[dir.path().to_path_buf()], Duration::from_millis(100)).expect("watch");
        let f = sub.join("w.yml");
        std::fs::write(&f, "a: 1\n").expect("write");
        let abs = std::fs::canonicalize(&f).expect("canon");
        assert!(next(&mut w).await.contains(&abs));
        std::fs::remove_file(&f).expect("rm");
        assert!(next(&mut w).await.contains(&abs));
    }
}
