//! Editing the experiment file itself from the workbench (the distillation schedule,
//! and one value at a time when the running stage is steered), keeping the user's
//! comments and layout (toml_edit): the file stays the one source of truth, and the
//! hot-reload path applies the edit like any other save.

use toml_edit::{ArrayOfTables, DocumentMut, Item};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageOp {
    /// Insert a copy of stage `i` after it (named `<name>-2`, `-3`, ...).
    Duplicate(usize),
    Remove(usize),
    /// Swap stages `i` and `i + 1`.
    SwapWithNext(usize),
}

fn stages<'a>(doc: &'a mut DocumentMut, origin: &str) -> Result<&'a mut ArrayOfTables> {
    doc.get_mut("distill")
        .and_then(|d| d.get_mut("stages"))
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| Error::config(origin, "distill.stages: no [[distill.stages]] tables to edit in this file"))
}

/// Apply `op` to the `[[distill.stages]]` of a TOML document's text.
pub fn edit(text: &str, origin: &str, op: StageOp) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::config(origin, e.to_string()))?;
    let arr = stages(&mut doc, origin)?;
    let n = arr.len();
    let check = |i: usize| {
        if i < n {
            Ok(())
        } else {
            Err(Error::config(
                origin,
                format!("distill.stages: no stage {} (the file has {n})", i + 1),
            ))
        }
    };
    let mut tables: Vec<toml_edit::Table> = arr.iter().cloned().collect();
    match op {
        StageOp::Duplicate(i) => {
            check(i)?;
            let mut copy = tables[i].clone();
            let base = copy.get("name").and_then(|v| v.as_str()).unwrap_or("stage").to_string();
            let taken: Vec<String> = tables
                .iter()
                .filter_map(|t| t.get("name").and_then(|v| v.as_str()).map(String::from))
                .collect();
            let name = (2..).map(|k| format!("{base}-{k}")).find(|c| !taken.contains(c)).unwrap_or(base);
            copy.insert("name", toml_edit::value(name));
            copy.decor_mut().clear();
            tables.insert(i + 1, copy);
        }
        StageOp::Remove(i) => {
            check(i)?;
            tables.remove(i);
        }
        StageOp::SwapWithNext(i) => {
            check(i + 1)?;
            tables.swap(i, i + 1);
        }
    }
    // toml_edit renders tables by their recorded document position, not by array
    // order: hand the old positions out again in the new order.
    let mut positions: Vec<Option<isize>> = arr.iter().map(|t| t.position()).collect();
    positions.sort();
    arr.clear();
    for (k, mut t) in tables.into_iter().enumerate() {
        t.set_position(positions.get(k).or(positions.last()).copied().flatten());
        arr.push(t);
    }
    Ok(doc.to_string())
}

/// Where a steered value lives in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// `table.key` (`stage1.lr`, `baselines.linear_probe_lr`), written even where the
    /// file had left it to a default or a base.
    Key(&'static str, &'static str),
    /// `field` of the `i`-th `[[distill.stages]]` table.
    Stage(usize, &'static str),
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Setting::Key(table, key) => write!(f, "{table}.{key}"),
            Setting::Stage(i, field) => write!(f, "distill.stages[{i}].{field}"),
        }
    }
}

/// Set `at` to `value` in a TOML document's text, keeping everything else as it was.
pub fn set(text: &str, origin: &str, at: &Setting, value: toml_edit::Value) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::config(origin, e.to_string()))?;
    match at {
        Setting::Key(table, key) => {
            let t = doc
                .entry(table)
                .or_insert_with(|| Item::Table(toml_edit::Table::new()))
                .as_table_like_mut()
                .ok_or_else(|| Error::config(origin, format!("`{table}` is not a table")))?;
            set_keeping_decor(t, key, value);
        }
        Setting::Stage(i, field) => {
            let arr = stages(&mut doc, origin)?;
            let n = arr.len();
            let t = arr
                .get_mut(*i)
                .ok_or_else(|| Error::config(origin, format!("distill.stages: no stage {} (the file has {n})", i + 1)))?;
            set_keeping_decor(t, field, value);
        }
    }
    Ok(doc.to_string())
}

/// Replace a value, keeping the comment and spacing around the old one.
fn set_keeping_decor(t: &mut dyn toml_edit::TableLike, key: &str, mut value: toml_edit::Value) {
    if let Some(old) = t.get(key).and_then(Item::as_value) {
        *value.decor_mut() = old.decor().clone();
    }
    t.insert(key, Item::Value(value));
}

/// 1-based line of the `i`-th `[[distill.stages]]` header, for `$EDITOR +LINE`.
pub fn stage_line(text: &str, i: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[distill.stages]]"))
        .nth(i)
        .map(|(n, _)| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# my run\n[distill]\ntemperature = 4.0\n\n# first\n[[distill.stages]]\nname = \"align\"\nepochs = 2\n\n[[distill.stages]]\nname = \"task\" # last\nepochs = 3\n";

    fn names(text: &str) -> Vec<String> {
        let e = crate::config::Experiment::parse(text, "t.toml", &[]).unwrap();
        e.distill.stages.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn edits_keep_comments_and_parse() {
        let dup = edit(FILE, "t.toml", StageOp::Duplicate(0)).unwrap();
        assert_eq!(names(&dup), ["align", "align-2", "task"]);
        assert!(
            dup.contains("# my run") && dup.contains("# first") && dup.contains("# last"),
            "{dup}"
        );
        let swapped = edit(FILE, "t.toml", StageOp::SwapWithNext(0)).unwrap();
        assert_eq!(names(&swapped), ["task", "align"]);
        // Edits compose: the copy moves like any other stage.
        let moved = edit(&dup, "t.toml", StageOp::SwapWithNext(0)).unwrap();
        assert_eq!(names(&moved), ["align-2", "align", "task"]);
        let moved = edit(&moved, "t.toml", StageOp::SwapWithNext(1)).unwrap();
        assert_eq!(names(&moved), ["align-2", "task", "align"]);
        let removed = edit(FILE, "t.toml", StageOp::Remove(1)).unwrap();
        assert_eq!(names(&removed), ["align"]);
        let e = edit(FILE, "t.toml", StageOp::SwapWithNext(1)).unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("no stage 3"), "{e}");
        assert_eq!(stage_line(FILE, 1), Some(10));
    }

    #[test]
    fn a_set_value_keeps_comments_and_adds_a_missing_table() {
        let longer = set(FILE, "t.toml", &Setting::Stage(1, "epochs"), 5.into()).unwrap();
        let e = crate::config::Experiment::parse(&longer, "t.toml", &[]).unwrap();
        assert_eq!((e.distill.stages[0].epochs, e.distill.stages[1].epochs), (2, 5));
        assert!(longer.contains("# first") && longer.contains("name = \"task\" # last"), "{longer}");
        let lr = set(FILE, "t.toml", &Setting::Key("stage1", "lr"), 0.25.into()).unwrap();
        let e = crate::config::Experiment::parse(&lr, "t.toml", &[]).unwrap();
        assert_eq!(e.stage1.lr, 0.25);
        assert!(lr.starts_with("# my run\n[distill]"), "{lr}");
        let e = set(FILE, "t.toml", &Setting::Stage(2, "lr"), 0.1.into()).unwrap_err().to_string();
        assert!(e.contains("no stage 3"), "{e}");
    }
}
