//! Hot reload: watch the directories holding the config and theme files (editors save by
//! writing a temp file and renaming it over the original, which a watch on the file
//! itself would miss), debounce, and report which file changed. The event loop also
//! re-reads both files every couple of seconds, for file systems that send no events
//! (NFS, some containers): content comparison makes the two paths agree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc::UnboundedSender;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    Config,
    Theme,
}

pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Watch the `config` files (the experiment and the bases it extends) and `theme`; an
/// error (with the reason) when the platform refuses, in which case polling alone keeps
/// reloads working.
pub fn watch(config: &[PathBuf], theme: Option<&Path>, tx: UnboundedSender<Changed>) -> Result<Watcher, String> {
    let files: Vec<(PathBuf, Changed)> = config
        .iter()
        .map(|c| (canonical(c), Changed::Config))
        .chain(theme.map(|t| (canonical(t), Changed::Theme)))
        .collect();
    let names: Vec<(PathBuf, Changed)> = files.clone();
    let mut debouncer = new_debouncer(Duration::from_millis(150), None, move |res: DebounceEventResult| {
        let Ok(events) = res else { return };
        for ev in events {
            for p in &ev.paths {
                // Match on the parent's canonical path and the file name: the file itself
                // may not exist at this instant (mid-rename).
                let here = p.parent().map(canonical).zip(p.file_name());
                for (f, what) in &names {
                    if here
                        .as_ref()
                        .is_some_and(|(dir, name)| Some(dir.as_path()) == f.parent() && Some(*name) == f.file_name())
                    {
                        let _ = tx.send(*what);
                    }
                }
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let mut dirs: Vec<PathBuf> = files.iter().filter_map(|(f, _)| f.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    for d in dirs {
        debouncer
            .watch(&d, RecursiveMode::NonRecursive)
            .map_err(|e| format!("{}: {e}", d.display()))?;
    }
    Ok(Watcher { _debouncer: debouncer })
}
