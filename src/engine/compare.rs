//! Reading finished runs back for people: `tdmr compare` (methods × runs, and the config
//! keys that differ) and `tdmr export-metrics --csv` (one row per epoch).
//!
//! A run directory is either one run (`config.toml`, `metrics.jsonl`, `summary.json`) or
//! a `--seeds` run (`summary.json` with means and standard deviations, and one `seed-N/`
//! run per seed).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::run_dir::seed_of;
use crate::{Error, Result};

/// One method's result in one run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    /// Fraction correct (the mean over seeds in a `--seeds` run).
    pub acc: f64,
    /// The sample standard deviation over seeds, with their count.
    pub std: Option<(f64, usize)>,
}

/// What `tdmr compare` reads of a run directory.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub dir: PathBuf,
    pub scores: BTreeMap<String, Score>,
    /// The experiment as dotted keys (from the run's, or its first seed's, config.toml).
    pub config: BTreeMap<String, String>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// The single runs inside `dir`: itself, or its `seed-N/` sub-runs in seed order.
pub fn single_runs(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.join("metrics.jsonl").is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut seeds: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("metrics.jsonl").is_file())
        .filter_map(|p| {
            let n = seed_of(p.file_name()?.to_str()?)?;
            Some((n, p))
        })
        .collect();
    seeds.sort();
    if seeds.is_empty() {
        return Err(Error::File {
            path: dir.into(),
            msg: "not a tdmr run directory (no metrics.jsonl, no seed-N/ runs)".into(),
        });
    }
    Ok(seeds.into_iter().map(|(_, p)| p).collect())
}

pub fn load(dir: &Path) -> Result<RunResult> {
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value = serde_json::from_str(&read(&summary_path)?).map_err(|e| Error::File {
        path: summary_path.clone(),
        msg: format!("not a run summary: {e}"),
    })?;
    let obj = summary.as_object().ok_or_else(|| Error::File {
        path: summary_path.clone(),
        msg: "not a run summary (expected an object of methods)".into(),
    })?;
    let mut scores = BTreeMap::new();
    for (method, v) in obj {
        let acc = v["test_acc"].as_f64().ok_or_else(|| Error::File {
            path: summary_path.clone(),
            msg: format!("`{method}` has no test_acc"),
        })?;
        let n = v["test_acc_per_seed"].as_array().map_or(0, Vec::len);
        let std = v["test_acc_std"].as_f64().map(|s| (s, n));
        scores.insert(method.clone(), Score { acc, std });
    }
    let singles = single_runs(dir)?;
    let first = singles[0].clone();
    let config_path = first.join("config.toml");
    let table: toml::Table = toml::from_str(&read(&config_path)?).map_err(|e| Error::File {
        path: config_path.clone(),
        msg: format!("not a TOML experiment: {e}"),
    })?;
    let mut config = BTreeMap::new();
    crate::config::live::flatten("", &toml::Value::Table(table), &mut config);
    // A `--seeds` run's seed is the list of its sub-runs' seeds.
    if first != dir {
        let seeds: Vec<String> = singles
            .iter()
            .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("seed-").map(String::from))
            .collect();
        config.insert("seed".into(), seeds.join(", "));
    }
    Ok(RunResult {
        dir: dir.to_path_buf(),
        scores,
        config,
    })
}

/// The config keys whose values are not the same in every run, with each run's value
/// (`None`: the key is absent there).
pub fn differing_keys(runs: &[RunResult]) -> Vec<(String, Vec<Option<String>>)> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.config.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let values: Vec<Option<String>> = runs.iter().map(|r| r.config.get(k).cloned()).collect();
            (values.iter().any(|v| v != &values[0])).then(|| (k.clone(), values))
        })
        .collect()
}

fn cell(s: Option<&Score>) -> String {
    match s {
        None => "–".into(),
        Some(Score { acc, std: Some((sd, n)) }) => format!("{:.2} ± {:.2} (n={n})", 100.0 * acc, 100.0 * sd),
        Some(Score { acc, std: None }) => format!("{:.2}", 100.0 * acc),
    }
}

/// Rows of a table, as aligned plain text or as Markdown.
fn render(header: &[String], rows: &[Vec<String>], markdown: bool) -> String {
    let cols = header.len();
    let mut width = vec![0usize; cols];
    for r in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |r: &[String]| -> String {
        let padded: Vec<String> = r
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        if markdown {
            format!("| {} |", padded.join(" | "))
        } else {
            padded.join("  ").trim_end().to_string()
        }
    };
    let mut out = vec![line(header)];
    if markdown {
        let rule: Vec<String> = width
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if i == 0 {
                    "-".repeat(*w)
                } else {
                    format!("{}:", "-".repeat(w.saturating_sub(1)))
                }
            })
            .collect();
        out.push(format!("| {} |", rule.join(" | ")));
    } else {
        out.push(width.iter().map(|w| "─".repeat(*w)).collect::<Vec<_>>().join("  "));
    }
    out.extend(rows.iter().map(|r| line(r)));
    out.join("\n") + "\n"
}

/// `tdmr compare`: accuracy (%) of every method in every run, then the keys that differ.
pub fn report(runs: &[RunResult], markdown: bool) -> String {
    let names: Vec<String> = runs.iter().map(|r| r.dir.display().to_string()).collect();
    let mut methods: Vec<&String> = Vec::new();
    for r in runs {
        for m in r.scores.keys() {
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
    }
    let header: Vec<String> = std::iter::once("method (accuracy %)".to_string())
        .chain(names.iter().cloned())
        .collect();
    let rows: Vec<Vec<String>> = methods
        .iter()
        .map(|m| {
            std::iter::once(m.to_string())
                .chain(runs.iter().map(|r| cell(r.scores.get(*m))))
                .collect()
        })
        .collect();
    let mut out = render(&header, &rows, markdown);
    let diff = differing_keys(runs);
    out.push('\n');
    if diff.is_empty() {
        out.push_str("The runs' configurations are the same (apart from seeds).\n");
        return out;
    }
    let header: Vec<String> = std::iter::once("config key".to_string()).chain(names).collect();
    let rows: Vec<Vec<String>> = diff
        .into_iter()
        .map(|(k, vs)| {
            std::iter::once(k)
                .chain(vs.into_iter().map(|v| v.unwrap_or_else(|| "(absent)".into())))
                .collect()
        })
        .collect();
    out.push_str(&render(&header, &rows, markdown));
    out
}

/// `tdmr export-metrics --csv`: every `epoch` event of `dir` (of each seed's run in a
/// `--seeds` run), one row each.
pub fn metrics_csv(dir: &Path) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = [
        "run",
        "method",
        "stage",
        "epoch",
        "epochs",
        "loss",
        "loss_align",
        "loss_kd",
        "loss_ce",
        "lr",
        "train_acc",
        "eval_acc",
        "images_per_s",
    ];
    let csv_err = |e: csv::Error| Error::Data(format!("writing CSV: {e}"));
    w.write_record(header).map_err(csv_err)?;
    for run in single_runs(dir)? {
        let name = if run == dir {
            String::new()
        } else {
            run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
        };
        let path = run.join("metrics.jsonl");
        for (i, line) in read(&path)?.lines().enumerate() {
            // A line cut short by a crash is the run's last; metrics after it do not exist.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["event"] != "epoch" {
                continue;
            }
            let num = |x: &serde_json::Value| x.as_f64().map(|f| f.to_string()).unwrap_or_default();
            let text = |x: &serde_json::Value| {
                x.as_str().map(String::from).ok_or_else(|| Error::File {
                    path: path.clone(),
                    msg: format!("line {}: an epoch event without method or stage", i + 1),
                })
            };
            let record = [
                name.clone(),
                text(&v["method"])?,
                text(&v["stage"])?,
                num(&v["epoch"]),
                num(&v["epochs"]),
                num(&v["loss"]["total"]),
                num(&v["loss"]["align"]),
                num(&v["loss"]["kd"]),
                num(&v["loss"]["ce"]),
                num(&v["lr"]),
                num(&v["train_acc"]),
                num(&v["test_acc"]),
                num(&v["images_per_s"]),
            ];
            w.write_record(&record).map_err(csv_err)?;
        }
    }
    let bytes = w.into_inner().map_err(|e| Error::Data(format!("writing CSV: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `tdmr compare --plot`: every method's accuracy (percent), one bar per run, with
/// ± one standard deviation where the run has seeds.
pub fn plot(runs: &[RunResult], stem: &Path) -> Result<Vec<PathBuf>> {
    let mut methods: Vec<String> = super::report::ORDER
        .iter()
        .filter(|m| runs.iter().any(|r| r.scores.contains_key(**m)))
        .map(|m| m.to_string())
        .collect();
    for r in runs {
        for m in r.scores.keys() {
            if !methods.contains(m) {
                methods.push(m.clone());
            }
        }
    }
    let groups: Vec<super::plots::Bars> = methods
        .iter()
        .map(|m| super::plots::Bars {
            method: m.clone(),
            values: runs
                .iter()
                .map(|r| r.scores.get(m).map(|s| (100.0 * s.acc, 100.0 * s.std.map_or(0.0, |(d, _)| d))))
                .collect(),
        })
        .collect();
    let names: Vec<String> = runs.iter().map(|r| r.dir.display().to_string()).collect();
    super::plots::bar_chart(
        "Accuracy per method and run (± std over seeds)",
        "accuracy (%)",
        &names,
        &groups,
        stem,
    )
}
