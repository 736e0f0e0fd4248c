//! `tdmr tui` (and `tdmr` alone): the workbench, or the headless runner without a
//! terminal.

use std::path::PathBuf;

use super::*;

/// The experiment `tdmr` runs when given no arguments.
const DEFAULT_EXPERIMENT: &str = "sample-data/experiments/clipart.toml";

#[derive(clap::Args)]
pub(crate) struct TuiArgs {
    /// Experiment file (TOML); edits to it are applied while the run goes [default:
    /// sample-data/experiments/clipart.toml; with --resume, the run directory's config.toml].
    pub(crate) config: Option<PathBuf>,
    /// Continue the run in this directory from its last good checkpoint (the `u` key
    /// does the same for the workbench's last run).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["start", "out"])]
    pub(crate) resume: Option<PathBuf>,
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long)]
    pub(crate) theme: Option<String>,
    /// The run directory itself (default: runs/<name>-<timestamp>).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Override a config key by its dotted path (repeatable); kept across reloads.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub(crate) set: Vec<String>,
    /// Start training at once instead of waiting for `s`.
    #[arg(long)]
    pub(crate) start: bool,
    /// cpu, cuda, cuda:N or auto (overrides `device` in the file).
    #[arg(long)]
    pub(crate) device: Option<String>,
}

/// `--device D` is `--set device=D`, so it survives the workbench's reloads too.
pub(crate) fn with_device(mut set: Vec<String>, device: Option<String>) -> Vec<String> {
    if let Some(d) = device {
        set.push(format!("device=\"{d}\""));
    }
    set
}

/// The workbench's options shared by `tui` and `attach`.
pub(crate) fn workbench_options(out: Option<PathBuf>, theme: Option<String>) -> tdmr::tui::Options {
    tdmr::tui::Options {
        out,
        themes_dir: themes_dir(),
        theme,
        no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    }
}

/// `themes/` of the working directory, else of the first place bundled files are
/// installed that has it.
pub(crate) fn themes_dir() -> PathBuf {
    tdmr::resources::find(std::path::Path::new("themes"))
}

/// The default experiment file, found like every bundled file.
pub(crate) fn default_experiment() -> PathBuf {
    tdmr::resources::find(std::path::Path::new(DEFAULT_EXPERIMENT))
}

pub(crate) fn tui(args: TuiArgs) -> anyhow::Result<()> {
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
