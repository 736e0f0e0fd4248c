//! Where the bundled files (`sample-data/`, `themes/`) are found, so that an installed
//! binary started in any directory runs the default experiment.
//!
//! A relative path is looked up, in order, under the working directory, `$TDMR_HOME`,
//! the executable's directory and its `../share/tdmr`, the XDG data directory
//! (`$XDG_DATA_HOME/tdmr`, else `~/.local/share/tdmr`), and last the source tree the
//! binary was built from (what `cargo install --path .` leaves behind).

use std::path::{Path, PathBuf};

/// The directories searched for bundled files after the working directory, in order.
pub fn roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(home) = std::env::var_os("TDMR_HOME").filter(|v| !v.is_empty()) {
        roots.push(home.into());
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        roots.push(dir.join("../share/tdmr"));
        roots.push(dir);
    }
    match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        Some(data) => roots.push(PathBuf::from(data).join("tdmr")),
        None => {
            if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                roots.push(PathBuf::from(home).join(".local/share/tdmr"));
            }
        }
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots
}

/// `rel` under the first root that has it; `rel` itself when none does (so the error
/// that follows names the path the user gave).
pub fn find(rel: &Path) -> PathBuf {
    if rel.is_absolute() || rel.exists() {
        return rel.to_path_buf();
    }
    roots()
        .into_iter()
        .map(|root| root.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| rel.to_path_buf())
}
