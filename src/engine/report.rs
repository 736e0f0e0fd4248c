//! `report.md` and `summary.json`: the comparison table, for one seed or many.

use std::collections::BTreeMap;

use super::events::{MethodResult, Summary};

/// Methods in the order the table shows them.
pub const ORDER: [&str; 9] = [
    "scratch",
    "linear-probe",
    "vp",
    "kd",
    "tdmr-teacher",
    "tdmr",
    "kd-tdmr-teacher",
    "kd-transfer",
    "tdmr-transfer",
];

fn describe(method: &str) -> &'static str {
    match method {
        "scratch" => "target trained from scratch (CE)",
        "linear-probe" => "frozen foundation features + linear head",
        "vp" => "visual prompt + linear head on the foundation (stage 1 without proxy)",
        "kd" => "target distilled from the linear-probe teacher (Hinton KD)",
        "tdmr-teacher" => "stage 1: reprogrammed foundation (prompt + proxy projector + head)",
        "tdmr" => "stage 2: target reprogrammed by progressive distillation",
        "kd-tdmr-teacher" => "target distilled from the stage-1 teacher's logits (Hinton KD, no proxy space)",
        "kd-transfer" => "kd, also on the unlabelled transfer set",
        "tdmr-transfer" => "tdmr, stage 2 also on the unlabelled transfer set",
        _ => "",
    }
}

fn ordered(summary: &Summary) -> Vec<(&str, &MethodResult)> {
    let mut rows: Vec<(&str, &MethodResult)> = ORDER.iter().filter_map(|m| summary.get(*m).map(|r| (*m, r))).collect();
    rows.extend(
        summary
            .iter()
            .filter(|(k, _)| !ORDER.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v)),
    );
    rows
}

/// `eval_set` names what `test_acc` was measured on (see `EvalOn::describe`).
pub fn single_seed(title: &str, seed: u64, summary: &Summary, eval_set: &str) -> String {
    let mut s = format!("# {title}\n\nSeed {seed}. Accuracy on {eval_set}.\n\n");
    s += "| method | test accuracy | trainable params | wall time (s) | what it is |\n|---|---:|---:|---:|---|\n";
    for (m, r) in ordered(summary) {
        s += &format!(
            "| {m} | {:.2}% | {} | {:.1} | {} |\n",
            100.0 * r.test_acc,
            r.trainable_params,
            r.wall_s,
            describe(m)
        );
    }
    s
}

/// Mean and (sample) standard deviation.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// Aggregate per-seed summaries: `{method: {test_acc_mean, test_acc_std, seeds, ...}}`.
pub fn aggregate(per_seed: &[(u64, Summary)]) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let methods: Vec<String> = per_seed.first().map(|(_, s)| s.keys().cloned().collect()).unwrap_or_default();
    for m in methods {
        let accs: Vec<f64> = per_seed.iter().filter_map(|(_, s)| s.get(&m).map(|r| r.test_acc)).collect();
        let walls: Vec<f64> = per_seed.iter().filter_map(|(_, s)| s.get(&m).map(|r| r.wall_s)).collect();
        let params = per_seed
            .iter()
            .find_map(|(_, s)| s.get(&m).map(|r| r.trainable_params))
            .unwrap_or(0);
        let (mean, std) = mean_std(&accs);
        out.insert(
            m,
            serde_json::json!({
                "test_acc": mean, "test_acc_std": std, "test_acc_per_seed": accs,
                "trainable_params": params, "wall_s": mean_std(&walls).0,
                "seeds": per_seed.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            }),
        );
    }
    out
}

pub fn multi_seed(title: &str, per_seed: &[(u64, Summary)], eval_set: &str) -> String {
    let seeds: Vec<String> = per_seed.iter().map(|(s, _)| s.to_string()).collect();
    let mut s = format!(
        "# {title}\n\nSeeds {}: mean ± sample std of accuracy on {eval_set}.\n\n",
        seeds.join(", ")
    );
    s += "| method | test accuracy | per seed | trainable params | mean wall time (s) | what it is |\n|---|---:|---|---:|---:|---|\n";
    let Some((_, first)) = per_seed.first() else { return s };
    for (m, r) in ordered(first) {
        let accs: Vec<f64> = per_seed.iter().filter_map(|(_, s)| s.get(m).map(|r| r.test_acc)).collect();
        let walls: Vec<f64> = per_seed.iter().filter_map(|(_, s)| s.get(m).map(|r| r.wall_s)).collect();
        let (mean, std) = mean_std(&accs);
        let each: Vec<String> = accs.iter().map(|a| format!("{:.1}", 100.0 * a)).collect();
        s += &format!(
            "| {m} | {:.2} ± {:.2}% | {} | {} | {:.1} | {} |\n",
            100.0 * mean,
            100.0 * std,
            each.join(" / "),
            r.trainable_params,
            mean_std(&walls).0,
            describe(m)
        );
    }
    s
}

/// `accuracy.png|svg` of a `--seeds` run: each method's mean with ± one standard
/// deviation; returns the report's link to it.
pub fn seed_bars(root: &std::path::Path, per_seed: &[(u64, Summary)], eval_set: &str) -> String {
    let Some((_, first)) = per_seed.first() else { return String::new() };
    let groups: Vec<super::plots::Bars> = ordered(first)
        .into_iter()
        .map(|(m, _)| {
            let accs: Vec<f64> = per_seed.iter().filter_map(|(_, s)| s.get(m).map(|r| 100.0 * r.test_acc)).collect();
            super::plots::Bars {
                method: m.to_string(),
                values: vec![Some(mean_std(&accs))],
            }
        })
        .collect();
    let title = format!("Accuracy on {eval_set}, mean ± std over {} seeds", per_seed.len());
    match super::plots::bar_chart(&title, "accuracy (%)", &["mean".into()], &groups, &root.join("accuracy")) {
        Ok(_) => "\n![Accuracy per method, mean ± std over seeds](accuracy.png)\n\nVector version: [accuracy.svg](accuracy.svg). Each seed's curves are in its own `seed-N/` directory.\n".into(),
        Err(e) => format!("\nThe accuracy chart could not be drawn: {e}\n"),
    }
}
