//! `extends = "base.toml"`: an experiment file that starts from another one. The base
//! path is relative to the file that names it; chains may be any depth, never circular.
//! Tables merge key by key (the child wins); every other value, arrays included (so a
//! child's `[[distill.stages]]` replaces the base's whole schedule), replaces.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub const KEY: &str = "extends";
const MAX_DEPTH: usize = 16;

/// One file of a chain, as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub path: PathBuf,
    pub text: String,
}

/// The files `path` is built from: itself first, then its base, its base's base, ….
pub fn chain(path: &Path) -> Result<Vec<Link>> {
    let mut links: Vec<Link> = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(p) = next.take() {
        let seen = |l: &Link| same_file(&l.path, &p);
        if links.iter().any(seen) {
            let names: Vec<String> = links.iter().map(|l| l.path.display().to_string()).collect();
            return Err(Error::config(
                p.display().to_string(),
                format!("`extends` goes round in a circle: {} → {}", names.join(" → "), p.display()),
            ));
        }
        if links.len() == MAX_DEPTH {
            return Err(Error::config(
                path.display().to_string(),
                format!("`extends` chain deeper than {MAX_DEPTH} files"),
            ));
        }
        let text = std::fs::read_to_string(&p).map_err(|e| {
            let named_by = links.last().map(|l| format!(" (the base `extends` names in {})", l.path.display()));
            Error::config(
                p.display().to_string(),
                format!("cannot read it{}: {e}", named_by.unwrap_or_default()),
            )
        })?;
        next = base_of(&text, &p)?;
        links.push(Link { path: p, text });
    }
    Ok(links)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The base `text` (the content of `path`) names, resolved against `path`'s directory.
/// Text that is not TOML names none: parsing it again reports the error with its line.
fn base_of(text: &str, path: &Path) -> Result<Option<PathBuf>> {
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return Ok(None);
    };
    match table.get(KEY) {
        None => Ok(None),
        Some(toml::Value::String(s)) => {
            let base = Path::new(s);
            let dir = path.parent().unwrap_or(Path::new(""));
            Ok(Some(if base.is_absolute() { base.to_path_buf() } else { dir.join(base) }))
        }
        Some(other) => Err(Error::config(
            path.display().to_string(),
            format!("`extends` must be a file name (a string), not {}", other.type_str()),
        )),
    }
}

fn parse(text: &str, path: &Path) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| Error::config(path.display().to_string(), e.to_string().trim_end().to_string()))
}

/// `child` laid over `base`: tables merge recursively, anything else replaces.
pub fn merge(base: &mut toml::Table, child: toml::Table) {
    for (k, v) in child {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(c)) => merge(b, c),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The merged table of a chain (as [`chain`] returns it), `extends` removed.
pub fn merged(links: &[Link]) -> Result<toml::Table> {
    let mut table = toml::Table::new();
    for link in links.iter().rev() {
        let mut t = parse(&link.text, &link.path)?;
        t.remove(KEY);
        merge(&mut table, t);
    }
    Ok(table)
}
