//! `tdmr run`: an experiment headless, one seed or several (`--seeds`, with the
//! mean ± std table), fresh or resumed, printed as readable lines or JSON.

use std::path::PathBuf;

use tdmr::config::Experiment;
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

pub(crate) fn pct(x: f64) -> String {
    format!("{:5.1}%", 100.0 * x)
}

pub(crate) fn print_event(e: &Event, json: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(e) {
            println!("{s}");
        }
        return;
    }
    match e {
        Event::RunStarted {
            name,
            seed,
            run_dir,
            methods,
            device,
        } => println!("run {name} seed {seed} on {device} → {run_dir}  (methods: {})", methods.join(", ")),
        Event::FoundationLoaded {
            path,
            variant,
            params,
            feature_dim,
        } => println!(
            "foundation {variant} from {path}: {:.2}M values, features {feature_dim}",
            *params as f64 / 1e6
        ),
        Event::StageStarted {
            method,
            stage,
            epochs,
            steps_per_epoch,
            trainable_params,
        } => println!("[{method}/{stage}] {epochs} epochs × {steps_per_epoch} steps, {trainable_params} trainable parameters"),
        Event::Epoch {
            method,
            stage,
            epoch,
            epochs,
            loss,
            lr,
            train_acc,
            test_acc,
            images_per_s,
            gpu_memory_mib,
        } => {
            let test = test_acc.map(pct).unwrap_or_else(|| "   -  ".into());
            let gpu = gpu_memory_mib.map(|m| format!(" GPU {:.1} GiB", m / 1024.0)).unwrap_or_default();
            println!(
                "[{method}/{stage}] epoch {epoch:>3}/{epochs:<3} loss {:.4} (align {:.4} kd {:.4} ce {:.4}) lr {lr:.2e} train {} test {test} {images_per_s:7.1} img/s{gpu}",
                loss.total, loss.align, loss.kd, loss.ce, pct(*train_acc)
            );
        }
        Event::StageSkipped { method, stage, epoch } => println!("[{method}/{stage}] skipped at epoch {epoch}"),
        Event::CacheBuilt { .. } | Event::DataLoaded { .. } | Event::TargetBuilt { .. } => {
            println!("{}", e.describe().unwrap_or_default())
        }
        Event::MethodDone {
            method,
            test_acc,
            trainable_params,
            wall_s,
            foundation_forwards,
        } => {
            println!(
                "== {method}: test {} ({trainable_params} trainable params, {wall_s:.1}s, {foundation_forwards} foundation batches)",
                pct(*test_acc)
            )
        }
        Event::Paused => println!("paused"),
        Event::Resumed => println!("resumed"),
        Event::ConfigApplied { changes } => println!("config applied: {}", changes.join("; ")),
        Event::Log { message } => println!("{message}"),
        Event::Done { wall_s, .. } => println!("done in {:.1} min", wall_s / 60.0),
        // A failure is printed once, by main, when the run returns its error.
        Event::RunResumed {
            checkpoint,
            position,
            changes,
        } => {
            match checkpoint {
                Some(c) => println!("resumed from {c} at {position}"),
                None => println!("no checkpoint to resume from: starting over in the same directory"),
            }
            if !changes.is_empty() {
                println!("taken on resuming: {}", changes.join("; "));
            }
        }
        Event::Diverged { message, checkpoint } => {
            eprintln!(
                "diverged: {message} (last good checkpoint: {})",
                checkpoint.as_deref().unwrap_or("none yet")
            )
        }
        Event::CheckpointFailed { message, last_good, .. } => eprintln!(
            "warning: checkpoint not written: {message}; the last good one is {}; training goes on",
            last_good.as_deref().unwrap_or("none yet")
        ),
        Event::Step { .. } | Event::Checkpoint { .. } | Event::Failed { .. } => {}
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
