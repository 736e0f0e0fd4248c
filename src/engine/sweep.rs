//! `tdmr sweep`: a grid of config overrides, each point run on the validation split
//! (every seed a sub-run of its own), ranked by validation accuracy alone; only the
//! best point is then run once on the test split.

use std::collections::BTreeMap;

use super::report::mean_std;
use crate::{Error, Result};

/// One `--grid KEY=V1,V2,…`.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

pub fn parse_axis(text: &str) -> Result<Axis> {
    let bad = |msg: &str| Error::config("--grid", format!("`{text}`: {msg} (expected KEY=V1,V2,…)"));
    let (key, values) = text.split_once('=').ok_or_else(|| bad("no `=`"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(bad("no key"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(bad("an empty value"));
    }
    Ok(Axis {
        key: key.to_string(),
        values,
    })
}

/// One point of the grid: its `--set` overrides, in axis order.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub overrides: Vec<String>,
}

impl Point {
    /// A folder name for the point: `p2-stage1.lr=1e-3`.
    pub fn dir_name(&self, index: usize) -> String {
        let parts: Vec<String> = self
            .overrides
            .iter()
            .map(|o| {
                o.chars()
                    .map(|c| if c.is_ascii_alphanumeric() || "=.-_+".contains(c) { c } else { '_' })
                    .collect()
            })
            .collect();
        format!("p{index}-{}", parts.join("-"))
    }
}

/// The cartesian product of the axes, the first axis varying slowest.
pub fn points(axes: &[Axis]) -> Vec<Point> {
    let mut out = vec![Point { overrides: Vec::new() }];
    for axis in axes {
        out = out
            .into_iter()
            .flat_map(|p| {
                axis.values.iter().map(move |v| {
                    let mut o = p.overrides.clone();
                    o.push(format!("{}={v}", axis.key));
                    Point { overrides: o }
                })
            })
            .collect();
    }
    out
}

/// What a point's runs gave: validation accuracy of each method, one value per seed.
#[derive(Debug, Clone, PartialEq)]
pub struct PointResult {
    pub name: String,
    pub overrides: Vec<String>,
    pub validation: BTreeMap<String, Vec<f64>>,
}

/// Indices of `results` from best to worst by `method`'s mean validation accuracy (ties
/// keep grid order). There is no test figure in a [`PointResult`] to read.
pub fn rank(results: &[PointResult], method: &str) -> Result<Vec<usize>> {
    let mean = |r: &PointResult| -> Result<f64> {
        let accs = r.validation.get(method).ok_or_else(|| {
            Error::config(
                "--rank-by",
                format!(
                    "point {} has no `{method}` (methods: {:?})",
                    r.name,
                    r.validation.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        Ok(mean_std(accs).0)
    };
    let means = results.iter().map(mean).collect::<Result<Vec<f64>>>()?;
    let mut order: Vec<usize> = (0..results.len()).collect();
    order.sort_by(|&a, &b| means[b].total_cmp(&means[a]).then(a.cmp(&b)));
    Ok(order)
}

/// The sweep's report: the ranking by validation, then the best point's test figure,
/// labelled as the one time the test split was used.
pub fn report(results: &[PointResult], order: &[usize], method: &str, best_test: &[f64]) -> String {
    let mut out = format!(
        "# Sweep, ranked by `{method}` accuracy on the validation split\n\n| rank | point | overrides | {method} validation % |\n|---:|---|---|---:|\n"
    );
    for (rank, &i) in order.iter().enumerate() {
        let r = &results[i];
        let (m, s) = mean_std(&r.validation[method]);
        let n = r.validation[method].len();
        let acc = if n > 1 {
            format!("{:.2} ± {:.2} (n={n})", 100.0 * m, 100.0 * s)
        } else {
            format!("{:.2}", 100.0 * m)
        };
        out += &format!("| {} | {} | `{}` | {acc} |\n", rank + 1, r.name, r.overrides.join(" "));
    }
    if let Some(&best) = order.first() {
        let (m, s) = mean_std(best_test);
        out += &format!(
            "\nBest point by validation: {}. Its `{method}` test accuracy, the only use of the test split in this sweep: {:.2}%{}.\n",
            results[best].name,
            100.0 * m,
            if best_test.len() > 1 {
                format!(" ± {:.2} (n={})", 100.0 * s, best_test.len())
            } else {
                String::new()
            }
        );
    }
    out
}
