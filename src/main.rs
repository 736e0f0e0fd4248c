use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use tdmr::config::Experiment;
use tdmr::engine::run_dir::{write_text_atomic, RunDir};
use tdmr::engine::{report, Event, Session, Summary};

// candle allocates fresh buffers for every op; mimalloc makes that markedly cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The experiment `tdmr` runs when given no arguments.
const DEFAULT_EXPERIMENT: &str = "sample-data/experiments/clipart.toml";

#[derive(Parser)]
#[command(
    name = "tdmr",
    version,
    about = "Task-Driven Model Reprogramming: reprogram a frozen foundation model, distil it into a small target",
    after_help = "Exit status: 0 success; 2 bad config or arguments; 3 the run diverged; 4 the run was aborted; 1 any other error."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run an experiment headless: stage 1, stage 2 and the baselines.
    Run(RunArgs),
    /// Open the terminal workbench on an experiment (the default with no subcommand).
    Tui(TuiArgs),
    /// Images/s of the workloads that dominate a run, on the chosen device.
    Bench(BenchArgs),
    /// Show a run from its directory, live and read-only (one started elsewhere, or
    /// one whose workbench lost its terminal).
    Attach(AttachArgs),
    /// What a weight file holds: detected family and variant, parameters, input size and
    /// normalisation, feature dim, dtypes, keys (reads only the header).
    Inspect(InspectArgs),
    /// Write a run's distilled target model (ONNX or safetensors) with a JSON model card
    /// beside it.
    Export(ExportArgs),
    /// Compare runs: each method's accuracy in each run (mean ± std over seeds for
    /// `--seeds` runs), then the config keys whose values differ.
    Compare(CompareArgs),
    /// Write a run's per-epoch metrics for pandas and spreadsheets.
    ExportMetrics(ExportMetricsArgs),
    /// Draw a run's loss and accuracy pictures again (each seed's, for a `--seeds` run).
    Plot(PlotArgs),
    /// Run a grid of config overrides on the validation split, rank the points by
    /// validation accuracy, then run the best point once on the test split.
    Sweep(SweepArgs),
    /// Evaluate an exported model on a dataset: accuracy and a confusion matrix.
    Eval(EvalArgs),
    /// Classify image files (or every image under folders) with an exported model: the
    /// top classes and their probabilities.
    Predict(PredictArgs),
    /// Print a shell completion script: `tdmr completions bash > ~/.local/share/bash-completion/completions/tdmr`.
    Completions { shell: clap_complete::Shell },
}

/// The exit status scripts branch on: the first tdmr error in the chain decides.
fn exit_status(e: &anyhow::Error) -> u8 {
    let kind = e.chain().find_map(|c| c.downcast_ref::<tdmr::Error>());
    match kind {
        Some(tdmr::Error::Config { .. }) => 2,
        Some(tdmr::Error::Diverged(_)) => 3,
        Some(tdmr::Error::Aborted) => 4,
        _ => 1,
    }
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The run directory.
    run_dir: PathBuf,
    /// Where to write the model; the card goes beside it as `.json`
    /// (default: RUN_DIR/export/METHOD.onnx or .safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// safetensors (tdmr's own names, for `tdmr eval` and scripts/tdmr_targets.py) or
    /// onnx (the whole inference graph, opset 17, dynamic batch). Default: from the
    /// `--out` extension, else safetensors.
    #[arg(long, value_parser = ["safetensors", "onnx"])]
    format: Option<String>,
    /// Which trained target: tdmr (default), scratch or kd.
    #[arg(long, default_value = "tdmr")]
    method: String,
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    use tdmr::deploy::ExportFormat;
    let format = match (args.format.as_deref(), &args.out) {
        (Some("onnx"), _) => ExportFormat::Onnx,
        (Some(_), _) => ExportFormat::Safetensors,
        (None, Some(out)) => ExportFormat::of_path(out),
        (None, None) => ExportFormat::Safetensors,
    };
    if let (Some(out), Some(_)) = (&args.out, &args.format) {
        if ExportFormat::of_path(out) != format {
            return Err(tdmr::Error::config(
                "--out",
                format!(
                    "{} does not end in .{} as --format asks (tdmr predict tells formats by extension)",
                    out.display(),
                    format.extension()
                ),
            )
            .into());
        }
    }
    let out = args
        .out
        .unwrap_or_else(|| tdmr::deploy::default_export_path(&args.run_dir, &args.method, format));
    let card = tdmr::deploy::export(&args.run_dir, &args.method, &out, format)?;
    let acc = card
        .source
        .accuracy
        .map(|a| format!(", {:.2}% in the run", 100.0 * a))
        .unwrap_or_default();
    println!(
        "exported {} ({}, {} classes, {} parameters, {} MACs per {}×{} image{acc}) → {} and {}",
        card.source.method,
        card.target.arch,
        card.classes.len(),
        card.params,
        card.macs,
        card.input.image_size,
        card.input.image_size,
        out.display(),
        tdmr::deploy::card_path(&out).display()
    );
    Ok(())
}

#[derive(clap::Args)]
struct EvalArgs {
    /// An exported model (`tdmr export`); its `.json` card must sit beside it.
    model: PathBuf,
    /// The data: an ImageFolder (one sub-folder per class) or the digits.
    data: PathBuf,
    /// Evaluate only the test images of a run's `split.json`, as the run did.
    #[arg(long)]
    split: Option<PathBuf>,
    /// Decoded images kept in memory, in MiB (the rest are decoded when used).
    #[arg(long, default_value_t = 1024)]
    memory_budget_mb: u64,
    /// Print the evaluation as JSON.
    #[arg(long)]
    json: bool,
    /// Also draw the confusion matrix as a heatmap: PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
}

fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let opts = tdmr::deploy::EvalOptions {
        split: args.split,
        memory_budget_mb: args.memory_budget_mb,
    };
    let e = tdmr::deploy::evaluate(&args.model, &args.data, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", e.report());
    }
    if let Some(stem) = args.plot {
        let title = format!(
            "{}: accuracy {:.2}% ({} of {})",
            args.model.display(),
            100.0 * e.accuracy,
            e.correct,
            e.total
        );
        for f in tdmr::engine::plots::confusion_plot(&e.classes, &e.confusion, &title, &stem)? {
            eprintln!("plot: {}", f.display());
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct CompareArgs {
    /// Two or more run directories (single or `--seeds` runs).
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    /// Print Markdown tables (for a README or a paper).
    #[arg(long)]
    md: bool,
    /// Also draw the accuracies as a grouped bar chart: PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
}

fn compare(args: CompareArgs) -> anyhow::Result<()> {
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
struct ExportMetricsArgs {
    /// The run directory (a `--seeds` run gives every seed's rows, with a `run` column).
    run_dir: PathBuf,
    /// CSV: one row per epoch per method and stage (losses, lr, train and evaluation
    /// accuracy, the latter empty where the epoch was not evaluated).
    #[arg(long, required = true)]
    csv: bool,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn export_metrics(args: ExportMetricsArgs) -> anyhow::Result<()> {
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
struct PlotArgs {
    /// The run directory; the pictures are written into it (and into each `seed-N/`).
    run_dir: PathBuf,
}

fn plot(args: PlotArgs) -> anyhow::Result<()> {
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

#[derive(clap::Args)]
struct SweepArgs {
    /// Experiment file (TOML).
    config: PathBuf,
    /// One axis of the grid: KEY=V1,V2,… (repeatable; the points are every combination).
    #[arg(long, value_name = "KEY=V1,V2", required = true)]
    grid: Vec<String>,
    /// Seeds, comma-separated: every point runs each (default: the file's seed).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// The method whose validation accuracy ranks the points.
    #[arg(long, default_value = "tdmr")]
    rank_by: String,
    /// The sweep's directory (default: runs/<name>-sweep-<timestamp>). Run again with
    /// the same --out to continue: finished sub-runs are kept, interrupted ones resume.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Fixed overrides applied to every point (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// A sub-run of a sweep: kept when finished, resumed when interrupted, else started.
fn sweep_run(exp: Experiment, dir: PathBuf) -> anyhow::Result<Summary> {
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

fn sweep(args: SweepArgs) -> anyhow::Result<()> {
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
            let summary = sweep_run(exp, root.join(&name).join(format!("seed-{seed}")))?;
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
        let summary = sweep_run(exp, root.join(sweep_status::BEST_ON_TEST).join(format!("seed-{seed}")))?;
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

#[derive(clap::Args)]
struct PredictArgs {
    /// An exported model (`tdmr export`): a .safetensors file with its .json card beside
    /// it, or an .onnx file (run with tract).
    model: PathBuf,
    /// Image files or folders of images.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Print the predictions as JSON.
    #[arg(long)]
    json: bool,
}

fn predict(args: PredictArgs) -> anyhow::Result<()> {
    let files = tdmr::deploy::image_files(&args.images)?;
    if files.is_empty() {
        anyhow::bail!("no image files (png, jpeg, bmp, webp) under {:?}", args.images);
    }
    let predictions = tdmr::deploy::predict(&args.model, &files, args.top)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&predictions)?);
        return Ok(());
    }
    for p in predictions {
        let top: Vec<String> = p.top.iter().map(|c| format!("{} {:.1}%", c.class, 100.0 * c.probability)).collect();
        println!("{}: {}", p.path, top.join(", "));
    }
    Ok(())
}

#[derive(clap::Args)]
struct AttachArgs {
    /// A run directory (holds config.toml and metrics.jsonl), or a sweep's directory
    /// (`tdmr sweep --out`): its points, live, each sub-run opened with enter.
    run_dir: PathBuf,
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long)]
    theme: Option<String>,
}

fn attach(args: AttachArgs) -> anyhow::Result<()> {
    if let Some(why) = tdmr::tui::not_a_terminal() {
        anyhow::bail!(
            "{why}: `tdmr attach` needs a terminal (read {}/metrics.jsonl, or a sweep's sweep.md, instead)",
            args.run_dir.display()
        );
    }
    let options = workbench_options(None, args.theme);
    if !args.run_dir.join("metrics.jsonl").is_file() && tdmr::engine::sweep_status::is_sweep(&args.run_dir) {
        return tdmr::tui::attach_sweep(args.run_dir, options);
    }
    tdmr::tui::attach(args.run_dir, options)
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A .safetensors checkpoint.
    weights: PathBuf,
    /// List every tensor: name, dtype, shape.
    #[arg(long)]
    keys: bool,
    /// Print the inspection as JSON.
    #[arg(long)]
    json: bool,
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let i = tdmr::models::inspect::inspect(&args.weights)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    print!("{}", i.report());
    if args.keys {
        for t in &i.tensors {
            println!("{:<60} {:<5} {:?}", t.name, t.dtype, t.shape);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Foundation precision for its workloads: f32, or bf16 (CUDA).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// The foundation checkpoint to time.
    #[arg(long, default_value = "sample-data/foundation/efficientnet-lite0.safetensors")]
    weights: PathBuf,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds to time each workload after its warm-up.
    #[arg(long, default_value_t = 3.0)]
    budget: f64,
    /// Skip the "before" column (the same workloads on the composed candle ops).
    #[arg(long)]
    no_before: bool,
    /// Time only the workloads whose names contain this text (e.g. `ResNet`).
    #[arg(long)]
    only: Option<String>,
    /// Time every workload in this process instead of one process each (their peak
    /// memory figures then include what earlier workloads left behind).
    #[arg(long)]
    in_process: bool,
    /// Run tdmr's own kernels on no wider a vector path than this: scalar, avx2 or
    /// avx512 (default: the widest this CPU has), to compare the paths.
    #[arg(long)]
    isa: Option<tdmr::ops::isa::Isa>,
    /// Time only the workload at this index (what each child process is asked for).
    #[arg(long, hide = true)]
    workload: Option<usize>,
}

fn bench(mut args: BenchArgs) -> anyhow::Result<()> {
    args.weights = tdmr::resources::find(&args.weights);
    let (device, why) = tdmr::engine::session::select_device(&args.device)?;
    if let Some(why) = why {
        eprintln!("{why}");
    }
    let dtype = match args.precision.as_str() {
        "f32" => candle_core::DType::F32,
        "bf16" if !device.is_cpu() => candle_core::DType::BF16,
        "bf16" => anyhow::bail!("--precision bf16 is for CUDA; the CPU computes in f32"),
        other => anyhow::bail!("--precision {other}: expected f32 or bf16"),
    };
    let name = if device.is_cpu() { "cpu" } else { "cuda" };
    if let Some(isa) = args.isa {
        let detected = tdmr::ops::isa::Isa::detected();
        if isa > detected {
            eprintln!("--isa {isa}: this CPU's widest path is {detected}; using {detected}");
        }
        tdmr::ops::isa::limit(Some(isa));
    }
    let figures = if args.in_process || args.workload.is_some() {
        let opts = tdmr::bench::Options {
            budget_s: args.budget,
            before: !args.no_before,
            only: args.only.clone(),
            workload: args.workload,
        };
        tdmr::bench::run(&device, &args.weights, dtype, opts)?
    } else {
        bench_each_in_its_own_process(&args)?
    };
    let machine = tdmr::bench::Machine::here();
    if args.json {
        println!("{}", serde_json::json!({ "device": name, "machine": machine, "figures": figures }));
    } else {
        println!("{machine}");
        print!("{}", tdmr::bench::table(name, &figures));
    }
    Ok(())
}

/// `tdmr bench` once per workload, each in a fresh process, so every peak-memory figure
/// is that workload's alone (memory freed by the allocator is not handed back at once).
fn bench_each_in_its_own_process(args: &BenchArgs) -> anyhow::Result<Vec<tdmr::bench::Figure>> {
    let exe = std::env::current_exe()?;
    let mut figures = Vec::new();
    for i in 0..tdmr::bench::WORKLOADS {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "--json", "--device", &args.device, "--precision", &args.precision])
            .arg("--weights")
            .arg(&args.weights)
            .args(["--budget", &args.budget.to_string(), "--workload", &i.to_string()]);
        if args.no_before {
            cmd.arg("--no-before");
        }
        if let Some(only) = &args.only {
            cmd.args(["--only", only]);
        }
        if let Some(isa) = args.isa {
            cmd.args(["--isa", isa.name()]);
        }
        let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            anyhow::bail!("bench workload {i} failed ({})", out.status);
        }
        let last = text.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last).map_err(|e| anyhow::anyhow!("bench workload {i}: {e}: {last}"))?;
        figures.extend(serde_json::from_value::<Vec<tdmr::bench::Figure>>(v["figures"].clone())?);
    }
    Ok(figures)
}

#[derive(clap::Args)]
struct TuiArgs {
    /// Experiment file (TOML); edits to it are applied while the run goes [default:
    /// sample-data/experiments/clipart.toml; with --resume, the run directory's config.toml].
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last good checkpoint (the `u` key
    /// does the same for the workbench's last run).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["start", "out"])]
    resume: Option<PathBuf>,
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long)]
    theme: Option<String>,
    /// The run directory itself (default: runs/<name>-<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a config key by its dotted path (repeatable); kept across reloads.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Start training at once instead of waiting for `s`.
    #[arg(long)]
    start: bool,
    /// cpu, cuda, cuda:N or auto (overrides `device` in the file).
    #[arg(long)]
    device: Option<String>,
}

/// `--device D` is `--set device=D`, so it survives the workbench's reloads too.
fn with_device(mut set: Vec<String>, device: Option<String>) -> Vec<String> {
    if let Some(d) = device {
        set.push(format!("device=\"{d}\""));
    }
    set
}

/// The workbench's options shared by `tui` and `attach`.
fn workbench_options(out: Option<PathBuf>, theme: Option<String>) -> tdmr::tui::Options {
    tdmr::tui::Options {
        out,
        themes_dir: themes_dir(),
        theme,
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    }
}

/// `themes/` of the working directory, else of the first place bundled files are
/// installed that has it.
fn themes_dir() -> PathBuf {
    tdmr::resources::find(std::path::Path::new("themes"))
}

/// The default experiment file, found like every bundled file.
fn default_experiment() -> PathBuf {
    tdmr::resources::find(std::path::Path::new(DEFAULT_EXPERIMENT))
}

fn tui(args: TuiArgs) -> anyhow::Result<()> {
    if let Some(why) = tdmr::tui::not_a_terminal() {
        eprintln!("tdmr: {why}, so no workbench: running the experiment headless (`tdmr run` does this directly)");
        return run(RunArgs {
            config: args.config,
            resume: args.resume,
            seed: None,
            seeds: Vec::new(),
            out: args.out,
            set: args.set,
            json: false,
            device: args.device,
        });
    }
    let config = match (&args.config, &args.resume) {
        (Some(c), _) => c.clone(),
        (None, Some(dir)) => dir.join("config.toml"),
        (None, None) => default_experiment(),
    };
    let begin = match (args.resume, args.start) {
        (Some(dir), _) => tdmr::tui::Begin::Resume(dir),
        (None, true) => tdmr::tui::Begin::Start,
        (None, false) => tdmr::tui::Begin::Idle,
    };
    tdmr::tui::run(
        config,
        with_device(args.set, args.device),
        workbench_options(args.out, args.theme),
        begin,
    )
}

#[derive(clap::Args)]
struct RunArgs {
    /// Experiment file (TOML) [default: sample-data/experiments/clipart.toml; with
    /// --resume, the run directory's config.toml].
    config: Option<PathBuf>,
    /// Continue the run in this directory from its last good checkpoint. A config given
    /// beside it (or an edited config.toml in it) may change what a running session
    /// could: learning rates, loss weights, the temperature, stages not yet started,
    /// checkpointing, the device.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["seed", "seeds", "out"])]
    resume: Option<PathBuf>,
    /// Seed (overrides `seed` in the file).
    #[arg(long)]
    seed: Option<u64>,
    /// Several seeds, comma-separated: one sub-run each and a mean ± std report.
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Vec<u64>,
    /// The run directory itself (default: runs/<name>-<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override a config key by its dotted path, e.g. --set data.k=50 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print every event as a JSON line instead of the readable progress lines.
    #[arg(long)]
    json: bool,
    /// cpu, cuda, cuda:N or auto (overrides `device` in the file).
    #[arg(long)]
    device: Option<String>,
}

fn pct(x: f64) -> String {
    format!("{:5.1}%", 100.0 * x)
}

fn print_event(e: &Event, json: bool) {
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

fn run_one(exp: Experiment, out: Option<PathBuf>, json: bool) -> anyhow::Result<Summary> {
    let run = RunDir::create(out.as_deref(), &exp.name)?;
    follow_session(Session::spawn(exp, run), json)
}

/// Continue the run in `dir` from its last good checkpoint, as `new` allows.
fn resume_one(dir: &std::path::Path, new: Experiment, json: bool) -> anyhow::Result<Summary> {
    let (exp, run, resume) = tdmr::engine::prepare_resume(dir, Some(new))?;
    let launch = tdmr::engine::Launch {
        resume: Some(resume),
        attended: false,
    };
    follow_session(Session::launch(exp, run, launch), json)
}

fn follow_session(session: Session, json: bool) -> anyhow::Result<Summary> {
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

fn run(args: RunArgs) -> anyhow::Result<()> {
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
        per_seed.push((seed, run_one(e, Some(root.join(format!("seed-{seed}"))), args.json)?));
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

fn main() -> ExitCode {
    // Keep freed pages instead of handing them back to the kernel: every training step
    // allocates the same large activations again, and re-faulting zeroed pages cost
    // ~40% of CPU time in a profile.
    unsafe { libmimalloc_sys::mi_option_set(tdmr::bench::MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Run(args)) => run(args),
        Some(Cmd::Tui(args)) => tui(args),
        Some(Cmd::Bench(args)) => bench(args),
        Some(Cmd::Inspect(args)) => inspect(args),
        Some(Cmd::Attach(args)) => attach(args),
        Some(Cmd::Export(args)) => export(args),
        Some(Cmd::Compare(args)) => compare(args),
        Some(Cmd::ExportMetrics(args)) => export_metrics(args),
        Some(Cmd::Plot(args)) => plot(args),
        Some(Cmd::Sweep(args)) => sweep(args),
        Some(Cmd::Eval(args)) => eval(args),
        Some(Cmd::Predict(args)) => predict(args),
        Some(Cmd::Completions { shell }) => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "tdmr", &mut std::io::stdout());
            Ok(())
        }
        None => tui(TuiArgs {
            config: Some(default_experiment()),
            resume: None,
            theme: None,
            out: None,
            set: Vec::new(),
            start: true,
            device: None,
        })
        .context(format!("running the default experiment ({})", default_experiment().display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}
