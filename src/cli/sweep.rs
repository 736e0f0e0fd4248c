//! `tdmr sweep`: a grid of overrides on the validation split, then the best point once
//! on test.

use std::path::PathBuf;

use tdmr::config::Experiment;
use tdmr::engine::run_dir::{seed_dir, write_text_atomic, RunDir};
use tdmr::engine::Summary;

use super::*;

#[derive(clap::Args)]
pub(crate) struct SweepArgs {
    /// Experiment file (TOML).
    pub(crate) config: PathBuf,
    /// One axis of the grid: KEY=V1,V2,… (repeatable; the points are every combination).
    #[arg(long, value_name = "KEY=V1,V2", required = true)]
    pub(crate) grid: Vec<String>,
    /// Seeds, comma-separated: every point runs each (default: the file's seed).
    #[arg(long, value_delimiter = ',')]
    pub(crate) seeds: Vec<u64>,
    /// The method whose validation accuracy ranks the points.
    #[arg(long, default_value = "tdmr")]
    pub(crate) rank_by: String,
    /// The sweep's directory (default: runs/<name>-sweep-<timestamp>). Run again with
    /// the same --out to continue: finished sub-runs are kept, interrupted ones resume.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Fixed overrides applied to every point (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
}

/// A sub-run of a sweep: kept when finished, resumed when interrupted, else started.
pub(crate) fn sweep_run(exp: Experiment, dir: PathBuf) -> anyhow::Result<Summary> {
    let summary = dir.join("summary.json");
    if let Ok(text) = std::fs::read_to_string(&summary) {
        if let Ok(s) = serde_json::from_str::<Summary>(&text) {
            println!("kept {} (finished)", dir.display());
            return Ok(s);
        }
    }
    if dir.join("metrics.jsonl").is_file() && dir.join("checkpoints").is_dir() {
        return resume_one(&dir, exp, false);
    }
    run_one(exp, Some(dir), false)
}

pub(crate) fn sweep(args: SweepArgs) -> anyhow::Result<()> {
    use tdmr::engine::{sweep, sweep_status};
    let axes = args.grid.iter().map(|g| sweep::parse_axis(g)).collect::<tdmr::Result<Vec<_>>>()?;
    let base = Experiment::load(&args.config, &args.set)?;
    let seeds = if args.seeds.is_empty() {
        vec![base.seed]
    } else {
        args.seeds.clone()
    };
    let with = |extra: &[String]| -> tdmr::Result<Experiment> {
        let all: Vec<String> = args.set.iter().chain(extra).cloned().collect();
        Experiment::load(&args.config, &all)
    };
    let points = sweep::points(&axes);
    // Every point must be a valid experiment before anything runs.
    let on_validation = points
        .iter()
        .map(|p| with(&[p.overrides.clone(), vec!["data.eval_on=validation".to_string()]].concat()))
        .collect::<tdmr::Result<Vec<_>>>()?;
    let root = match &args.out {
        Some(o) => o.clone(),
        None => RunDir::create(None, &format!("{}-sweep", base.name))?.root,
    };
    std::fs::create_dir_all(&root).map_err(|e| tdmr::Error::io(&root, e))?;
    let manifest = sweep_status::Manifest {
        rank_by: args.rank_by.clone(),
        seeds: seeds.clone(),
        points: points
            .iter()
            .enumerate()
            .map(|(i, p)| sweep_status::ManifestPoint {
                name: p.dir_name(i),
                overrides: p.overrides.clone(),
            })
            .collect(),
    };
    write_text_atomic(&root.join(sweep_status::MANIFEST), &serde_json::to_string_pretty(&manifest)?)?;
    let mut results = Vec::new();
    for (i, (p, point_exp)) in points.iter().zip(&on_validation).enumerate() {
        let name = p.dir_name(i);
        let mut per_method: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
        for &seed in &seeds {
            let mut exp = point_exp.clone();
            exp.seed = seed;
            println!("sweep point {name}, seed {seed} (validation split)");
            let summary = sweep_run(exp, seed_dir(&root.join(&name), seed))?;
            for (m, r) in summary {
                per_method.entry(m).or_default().push(r.test_acc);
            }
        }
        results.push(sweep::PointResult {
            name,
            overrides: p.overrides.clone(),
            validation: per_method,
        });
    }
    let order = sweep::rank(&results, &args.rank_by)?;
    let best = &results[order[0]];
    let mut best_test = Vec::new();
    for &seed in &seeds {
        let mut exp = with(&best.overrides)?;
        exp.seed = seed;
        println!("best point {} on the test split, seed {seed}", best.name);
        let summary = sweep_run(exp, seed_dir(&root.join(sweep_status::BEST_ON_TEST), seed))?;
        let acc = summary
            .get(&args.rank_by)
            .map(|r| r.test_acc)
            .ok_or_else(|| anyhow::anyhow!("the best point's test run has no `{}`", args.rank_by))?;
        best_test.push(acc);
    }
    let text = sweep::report(&results, &order, &args.rank_by, &best_test);
    write_text_atomic(&root.join("sweep.md"), &text)?;
    println!("{text}");
    println!("report: {}", root.join("sweep.md").display());
    Ok(())
}
