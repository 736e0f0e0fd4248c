//! `tdmr compare`, `tdmr export-metrics` and `tdmr plot`: finished runs read back.

use std::path::PathBuf;

use tdmr::config::Experiment;
use tdmr::engine::run_dir::write_text_atomic;

#[derive(clap::Args)]
pub(crate) struct CompareArgs {
    /// Two or more run directories (single or `--seeds` runs).
    #[arg(required = true, num_args = 2..)]
    pub(crate) runs: Vec<PathBuf>,
    /// Print Markdown tables (for a README or a paper).
    #[arg(long)]
    pub(crate) md: bool,
    /// Also draw the accuracies as a grouped bar chart: PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    pub(crate) plot: Option<PathBuf>,
}

pub(crate) fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|r| tdmr::engine::compare::load(r))
        .collect::<tdmr::Result<Vec<_>>>()?;
    print!("{}", tdmr::engine::compare::report(&runs, args.md));
    if let Some(stem) = args.plot {
        for f in tdmr::engine::compare::plot(&runs, &stem)? {
            println!("plot: {}", f.display());
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct ExportMetricsArgs {
    /// The run directory (a `--seeds` run gives every seed's rows, with a `run` column).
    pub(crate) run_dir: PathBuf,
    /// CSV: one row per epoch per method and stage (losses, lr, train and evaluation
    /// accuracy, the latter empty where the epoch was not evaluated).
    #[arg(long, required = true)]
    pub(crate) csv: bool,
    /// Write to this file instead of standard output.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

pub(crate) fn export_metrics(args: ExportMetricsArgs) -> anyhow::Result<()> {
    let text = tdmr::engine::compare::metrics_csv(&args.run_dir)?;
    match args.out {
        Some(out) => {
            write_text_atomic(&out, &text)?;
            eprintln!("{} rows → {}", text.lines().count().saturating_sub(1), out.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct PlotArgs {
    /// The run directory; the pictures are written into it (and into each `seed-N/`).
    pub(crate) run_dir: PathBuf,
}

pub(crate) fn plot(args: PlotArgs) -> anyhow::Result<()> {
    for run in tdmr::engine::compare::single_runs(&args.run_dir)? {
        // What the dashed curves were measured on, as the run's own config says.
        let eval_set = Experiment::load(&run.join("config.toml"), &[])
            .map(|e| e.data.eval_on.describe())
            .unwrap_or("the evaluation split");
        for f in tdmr::engine::plots::run_plots(&run, eval_set)? {
            println!("plot: {}", f.display());
        }
    }
    Ok(())
}
