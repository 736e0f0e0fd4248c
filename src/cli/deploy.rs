//! `tdmr export`, `tdmr eval` and `tdmr predict`: the distilled target outside tdmr.

use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct ExportArgs {
    /// The run directory.
    pub(crate) run_dir: PathBuf,
    /// Where to write the model; the card goes beside it as `.json`
    /// (default: RUN_DIR/export/METHOD.onnx or .safetensors).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// safetensors (tdmr's own names, for `tdmr eval` and scripts/tdmr_targets.py) or
    /// onnx (the whole inference graph, opset 17, dynamic batch). Default: from the
    /// `--out` extension, else safetensors.
    #[arg(long, value_parser = ["safetensors", "onnx"])]
    pub(crate) format: Option<String>,
    /// Which trained target: tdmr (default), scratch or kd.
    #[arg(long, default_value = "tdmr")]
    pub(crate) method: String,
}

pub(crate) fn export(args: ExportArgs) -> anyhow::Result<()> {
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
pub(crate) struct EvalArgs {
    /// An exported model (`tdmr export`); its `.json` card must sit beside it.
    pub(crate) model: PathBuf,
    /// The data: an ImageFolder (one sub-folder per class) or the digits.
    pub(crate) data: PathBuf,
    /// Evaluate only the test images of a run's `split.json`, as the run did.
    #[arg(long)]
    pub(crate) split: Option<PathBuf>,
    /// Decoded images kept in memory, in MiB (the rest are decoded when used).
    #[arg(long, default_value_t = 1024)]
    pub(crate) memory_budget_mb: u64,
    /// Print the evaluation as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also draw the confusion matrix as a heatmap: PATH.png and PATH.svg.
    #[arg(long, value_name = "PATH")]
    pub(crate) plot: Option<PathBuf>,
}

pub(crate) fn eval(args: EvalArgs) -> anyhow::Result<()> {
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
pub(crate) struct PredictArgs {
    /// An exported model (`tdmr export`): a .safetensors file with its .json card beside
    /// it, or an .onnx file (run with tract).
    pub(crate) model: PathBuf,
    /// Image files or folders of images.
    #[arg(required = true)]
    pub(crate) images: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 3)]
    pub(crate) top: usize,
    /// Print the predictions as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn predict(args: PredictArgs) -> anyhow::Result<()> {
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
