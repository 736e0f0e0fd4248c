//! `tdmr attach`: a run directory or a sweep, live and read-only.

use std::path::PathBuf;

use super::*;

#[derive(clap::Args)]
pub(crate) struct AttachArgs {
    /// A run directory (holds config.toml and metrics.jsonl), or a sweep's directory
    /// (`tdmr sweep --out`): its points, live, each sub-run opened with enter.
    pub(crate) run_dir: PathBuf,
    /// Colour theme: dark, light, high-contrast, or a path to a theme file.
    #[arg(long)]
    pub(crate) theme: Option<String>,
}

pub(crate) fn attach(args: AttachArgs) -> anyhow::Result<()> {
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
