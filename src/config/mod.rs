//! The experiment file (TOML): schema, defaults, validation and `--set` overrides.
//!
//! Every key has a default, unknown keys are errors, and errors name the file, the line
//! and the key (or the `--set` override that introduced the value).

mod defaults;
pub mod inherit;
pub mod live;
mod schema;
pub mod stage_edit;
mod validate;

pub use schema::*;

use std::path::{Path, PathBuf};

use crate::{Error, Result};

impl Experiment {
    /// Parse and validate an experiment file, then apply `--set KEY=VALUE` overrides.
    /// An unreadable file (or base) is a bad argument (exit status 2), not an I/O
    /// failure of a run.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        Self::from_chain(&inherit::chain(path)?, overrides)
    }

    /// The experiment of a file and the bases it extends ([`inherit::chain`]).
    pub fn from_chain(links: &[inherit::Link], overrides: &[String]) -> Result<Self> {
        let Some(file) = links.first() else {
            return Err(Error::config("experiment", "no file"));
        };
        let origin = file.path.display().to_string();
        let mut exp = if links.len() == 1 {
            Self::parse(&file.text, &origin, overrides)?
        } else {
            let mut table = inherit::merged(links)?;
            for ov in overrides {
                apply_override(&mut table, ov)?;
            }
            let bases: Vec<String> = links[1..].iter().map(|l| l.path.display().to_string()).collect();
            let mut described = format!("{origin} (extending {})", bases.join(", which extends "));
            if !overrides.is_empty() {
                described += &format!(" with --set {}", overrides.join(" --set "));
            }
            let exp: Experiment = table
                .try_into()
                .map_err(|e: toml::de::Error| Error::config(described.clone(), e.message().to_string()))?;
            exp.validate(&described)?;
            exp
        };
        exp.source = Some(file.path.clone());
        exp.bases = links[1..].iter().map(|l| l.path.clone()).collect();
        Ok(exp)
    }

    /// Parse TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        // First pass on the text itself, so errors carry the file's line and column.
        let exp: Experiment = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string().trim_end().to_string()))?;
        if overrides.is_empty() {
            exp.validate(origin)?;
            return Ok(exp);
        }
        let mut table: toml::Table = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        for ov in overrides {
            apply_override(&mut table, ov)?;
        }
        let exp: Experiment = table.try_into().map_err(|e: toml::de::Error| {
            Error::config(
                format!("{origin} with --set {}", overrides.join(" --set ")),
                e.message().to_string(),
            )
        })?;
        exp.validate(origin)?;
        Ok(exp)
    }

    /// The experiment as TOML, exactly as it will run (written to the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }

    pub fn foundation_path(&self) -> PathBuf {
        self.resolve(&self.foundation.path)
    }

    pub fn data_path(&self) -> PathBuf {
        self.resolve(&self.data.path)
    }

    /// Relative paths are taken from the working directory when they exist there, else
    /// from the config file's directory's ancestors (so a config under
    /// `sample-data/experiments/` works from anywhere inside the repository), else from
    /// the places bundled files are installed ([`crate::resources`]).
    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p.exists() {
            return p.to_path_buf();
        }
        if let Some(src) = &self.source {
            for dir in src.ancestors().skip(1) {
                let cand = dir.join(p);
                if cand.exists() {
                    return cand;
                }
            }
        }
        crate::resources::find(p)
    }
}

/// `a.b.c=value`: value parsed as a TOML value (number, bool, array...), else a string.
fn apply_override(table: &mut toml::Table, ov: &str) -> Result<()> {
    let (key, raw) = ov
        .split_once('=')
        .ok_or_else(|| Error::config(format!("--set {ov}"), "expected KEY=VALUE, e.g. --set data.k=50"))?;
    let key = key.trim();
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(Error::config(format!("--set {ov}"), format!("`{key}` is not a dotted key path")));
    }
    let mut cur = table;
    for part in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(Error::config(format!("--set {ov}"), format!("`{part}` is not a table"))),
        };
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}
