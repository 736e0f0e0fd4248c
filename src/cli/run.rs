//! `tdmr run`: an experiment headless, one seed or several (`--seeds`, with the
//! mean ± std table), fresh or resumed, printed as readable lines or JSON.

use std::path::PathBuf;

use tdmr::config::Experiment;
use tdmr::engine::describe::{Described, Level};
use tdmr::engine::run_dir::{seed_dir, write_text_atomic, RunDir};
use tdmr::engine::{report, Event, Session, Summary};

use super::*;

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// Experiment file (TOML) [default: sample-data/experiments/clipart.toml; with
    /// --resume, the run directory's config.toml].
    pub(crate) config: Option<PathBuf>,
    /// Continue the run in this directory from its last good checkpoint. A config given
    /// beside it (or an edited config.toml in it) may change what a running session
    /// could: learning rates, loss weights, the temperature, stages not yet started,
    /// checkpointing, the device.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["seed", "seeds", "out"])]
    pub(crate) resume: Option<PathBuf>,
    /// Seed (overrides `seed` in the file).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Several seeds, comma-separated: one sub-run each and a mean ± std report.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    pub(crate) seeds: Vec<u64>,
    /// The run directory itself (default: runs/<name>-<timestamp>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Override a config key by its dotted path, e.g. --set data.k=50 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Print every event as a JSON line instead of the readable progress lines.
    #[arg(long)]
    pub(crate) json: bool,
    /// cpu, cuda, cuda:N or auto (overrides `device` in the file).
    #[arg(long)]
    pub(crate) device: Option<String>,
}

pub(crate) fn print_event(e: &Event, json: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(e) {
            println!("{s}");
        }
        return;
    }
    // A failure is printed once, by main, when the run returns its error.
    if matches!(e, Event::Failed { .. }) {
        return;
    }
    if let Some(Described { level, text }) = e.describe() {
        match level {
            Level::Info => println!("{text}"),
            Level::Warn => eprintln!("warning: {text}"),
            Level::Error => eprintln!("{text}"),
        }
    }
}

pub(crate) fn run_one(exp: Experiment, out: Option<PathBuf>, json: bool) -> anyhow::Result<Summary> {
    let run = RunDir::create(out.as_deref(), &exp.name)?;
    follow_session(Session::spawn(exp, run), json)
}

/// Continue the run in `dir` from its last good checkpoint, as `new` allows.
pub(crate) fn resume_one(dir: &std::path::Path, new: Experiment, json: bool) -> anyhow::Result<Summary> {
    let (exp, run, resume) = tdmr::engine::prepare_resume(dir, Some(new))?;
    let launch = tdmr::engine::Launch {
        resume: Some(resume),
        attended: false,
    };
    follow_session(Session::launch(exp, run, launch), json)
}

pub(crate) fn follow_session(session: Session, json: bool) -> anyhow::Result<Summary> {
    use std::io::IsTerminal;
    let mut bar = tdmr::progress::StageBar::new(!json && std::io::stdout().is_terminal());
    for event in session.events.iter() {
        bar.suspend(|| print_event(&event, json));
        bar.update(&event);
    }
    bar.finish();
    let summary = session.handle.join().map_err(|_| anyhow::anyhow!("the engine thread panicked"))??;
    if !json {
        println!("report: {}", session.run_dir.join("report.md").display());
        if let Some(m) = tdmr::bench::peak_rss_mib() {
            println!("peak resident memory: {m:.0} MiB");
        }
    }
    Ok(summary)
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<()> {
    let set = with_device(args.set, args.device);
    if let Some(dir) = args.resume {
        let path = args.config.unwrap_or_else(|| dir.join("config.toml"));
        resume_one(&dir, Experiment::load(&path, &set)?, args.json)?;
        return Ok(());
    }
    let config = args.config.unwrap_or_else(default_experiment);
    let mut exp = Experiment::load(&config, &set)?;
    if let Some(seed) = args.seed {
        exp.seed = seed;
    }
    if args.seeds.len() <= 1 {
        if let Some(&seed) = args.seeds.first() {
            exp.seed = seed;
        }
        run_one(exp, args.out, args.json)?;
        return Ok(());
    }
    let root = RunDir::create(args.out.as_deref(), &exp.name)?.root;
    let mut per_seed = Vec::new();
    for &seed in &args.seeds {
        let mut e = exp.clone();
        e.seed = seed;
        per_seed.push((seed, run_one(e, Some(seed_dir(&root, seed)), args.json)?));
    }
    let table = report::multi_seed(
        &format!("{} (k = {})", exp.name, exp.data.k),
        &per_seed,
        exp.data.eval_on.describe(),
    );
    let pictures = report::seed_bars(&root, &per_seed, exp.data.eval_on.describe());
    write_text_atomic(&root.join("report.md"), &format!("{table}{pictures}"))?;
    write_text_atomic(
        &root.join("summary.json"),
        &serde_json::to_string_pretty(&report::aggregate(&per_seed))?,
    )?;
    println!("{table}");
    println!("report: {}", root.join("report.md").display());
    Ok(())
}
