use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod cli;
use cli::*;

// candle allocates fresh buffers for every op; mimalloc makes that markedly cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    // Keep freed pages instead of handing them back to the kernel: every training step
    // allocates the same large activations again, and re-faulting zeroed pages cost
    // ~40% of CPU time in a profile.
    unsafe { libmimalloc_sys::mi_option_set(tdmr::bench::MI_OPTION_PURGE_DELAY, -1) };
    let cli = Cli::parse();
    if let Err(e) = tdmr::ops::gemm_kernels::choose_from_env() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
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
