//! What a user takes away: `tdmr export` writes a run's distilled target (backbone,
//! projector where its head reads the proxy space, head) as safetensors or as an ONNX
//! graph, with a JSON model card beside it; `tdmr eval` rebuilds the model from the
//! safetensors and its card and evaluates it on a dataset, with a confusion matrix;
//! `tdmr predict` classifies image files with either export.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{Experiment, ProjectorKind};
use crate::data::{self, Digits, ImageFolder, SplitRecord, ViewSet};
use crate::engine::run_dir::{write_atomic, write_text_atomic};
use crate::models::targets::{head_macs, Backbone, TargetSpec};
use crate::onnx;
use crate::params::Params;
use crate::reprogram::{Head, Projector};
use crate::{Error, Result};

pub const FORMAT: &str = "tdmr-model-1";
const EVAL_BATCH: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorSpec {
    pub kind: ProjectorKind,
    pub proxy_dim: usize,
    /// The projector's output is L2-normalised before the head.
    pub normalize: bool,
}

/// How the model expects its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    pub image_size: usize,
    pub channels: usize,
    /// Pixel values: RGB scaled to [0, 1], then `(x - mean) / std` per channel.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// How images were resized: shorter side to `stored_side` (aspect kept), then the
    /// whole image to `image_size` square, both with a triangle (bilinear) filter.
    pub stored_side: usize,
    /// The preprocessing in words, exactly enough for another runtime to repeat it.
    #[serde(default)]
    pub preprocessing: String,
}

/// The resize training, evaluation and `tdmr predict` apply, stated for other runtimes
/// (`scripts/check-onnx.py` implements it in NumPy).
pub fn preprocessing_text(stored_side: usize, side: usize) -> String {
    format!(
        "Decode to 8-bit RGB (alpha dropped, no compositing). Resize with the `image` \
         crate's Triangle filter (image::imageops::resize): the shorter side to \
         {stored_side} pixels, the longer side to round(longer * {stored_side} / shorter), \
         unless the shorter side is already {stored_side}; then the whole image, no crop, \
         to {side}x{side}. Each resize (skipped when the size already matches) resamples \
         vertically first into float32 without rounding, then horizontally, rounding half \
         away from zero and clamping to [0, 255]; the triangle kernel is 1 - |x| with its \
         support widened by the downscale ratio, sampled at (i + 0.5) * ratio - 0.5. \
         Divide by 255 to get [0, 1], channels first (NCHW). Normalisation, if any, is \
         inside the model."
    )
}

/// What `tdmr export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Safetensors,
    Onnx,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Safetensors => "safetensors",
            ExportFormat::Onnx => "onnx",
        }
    }

    /// The format a model file's extension names (`.onnx`; anything else is safetensors).
    pub fn of_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("onnx") => ExportFormat::Onnx,
            _ => ExportFormat::Safetensors,
        }
    }
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub run: String,
    pub method: String,
    pub checkpoint: String,
    /// The run's final accuracy of this method, and on which split.
    pub accuracy: Option<f64>,
    pub evaluated_on: String,
    pub data_kind: String,
}

/// The JSON sidecar of an exported model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub target: TargetSpec,
    pub classes: Vec<String>,
    pub input: InputSpec,
    pub projector: Option<ProjectorSpec>,
    /// The head multiplies its input by this (a cosine-classifier scale).
    pub head_scale: f64,
    pub params: usize,
    pub macs: u64,
    pub source: Provenance,
}

/// The sidecar path of an exported model: `model.safetensors` → `model.json`.
pub fn card_path(model: &Path) -> PathBuf {
    model.with_extension("json")
}

/// The exported network: backbone → (projector) → head.
pub struct Deployable {
    pub params: Params,
    backbone: Backbone,
    projector: Option<Projector>,
    head: Head,
    /// The card's input normalisation, `[1, 3, 1, 1]` each.
    mean: Tensor,
    std: Tensor,
}

impl Deployable {
    /// A freshly initialised model with the card's architecture, under the exported
    /// names (`backbone.`, `projector.`, `head.`).
    pub fn build(card: &ModelCard, device: &Device) -> Result<Self> {
        let mut params = Params::new(device, 0);
        let backbone = Backbone::new(&mut params, "backbone.", &card.target)?;
        let d_t = backbone.feature_dim();
        let projector = match &card.projector {
            Some(p) => Some(Projector::new(&mut params, "projector.", p.kind, d_t, p.proxy_dim, p.normalize)?),
            None => None,
        };
        let head_in = card.projector.as_ref().map_or(d_t, |p| p.proxy_dim);
        let head = Head::new(&mut params, "head.", head_in, card.classes.len(), card.head_scale)?;
        let channel = |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), device);
        Ok(Deployable {
            params,
            backbone,
            projector,
            head,
            mean: channel(card.input.mean)?,
            std: channel(card.input.std)?,
        })
    }

    pub fn macs(&self, card: &ModelCard) -> u64 {
        let proxy = card.projector.as_ref().map(|p| p.proxy_dim);
        self.backbone.macs() + head_macs(self.backbone.feature_dim(), proxy, card.classes.len())
    }

    /// `(x - mean) / std` with the card's per-channel input normalisation.
    fn normalised(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?)
    }

    /// Re-estimate the batch-norm running statistics on `x` (pixels in [0, 1]) with
    /// `passes` training-mode forward passes: BN recalibration after the weights changed.
    pub fn recalibrate_batch_norm(&self, x: &Tensor, passes: usize) -> Result<()> {
        let x = self.normalised(x)?;
        for _ in 0..passes {
            self.backbone.features(&x, true)?;
        }
        Ok(())
    }

    /// Logits of pixels in [0, 1], in evaluation mode (batch norm on running statistics).
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.normalised(x)?;
        let f = self.backbone.features(&x, false)?;
        let z = match &self.projector {
            Some(p) => p.forward(&f)?,
            None => f,
        };
        self.head.forward(&z)
    }

    /// The whole inference graph as an ONNX model: `pixels` `[batch, 3, S, S]` in [0, 1],
    /// normalised inside, batch norm folded; outputs `logits` and `probabilities`; the
    /// class names, input side and card in the metadata.
    pub fn to_onnx(&self, card: &ModelCard) -> Result<Vec<u8>> {
        let mut g = onnx::Graph::new();
        let mean: Vec<f32> = card.input.mean.to_vec();
        let std: Vec<f32> = card.input.std.to_vec();
        let mean = g.floats("input_mean", &[1, 3, 1, 1], &mean);
        let std = g.floats("input_std", &[1, 3, 1, 1], &std);
        let x = g.binary("Sub", onnx::INPUT, &mean);
        let x = g.binary("Div", &x, &std);
        let f = self.backbone.emit_onnx(&mut g, &x)?;
        let z = match &self.projector {
            Some(p) => p.emit_onnx(&mut g, &f)?,
            None => f,
        };
        let logits = self.head.emit_onnx(&mut g, &z)?;
        g.node_into("Identity", &[&logits], vec![], onnx::LOGITS);
        g.node_into("Softmax", &[onnx::LOGITS], vec![("axis", onnx::Attr::Int(1))], onnx::PROBABILITIES);
        let metadata = vec![
            (
                onnx::CLASSES_KEY.to_string(),
                serde_json::to_string(&card.classes).unwrap_or_default(),
            ),
            (onnx::IMAGE_SIZE_KEY.to_string(), card.input.image_size.to_string()),
            (onnx::CARD_KEY.to_string(), serde_json::to_string(card).unwrap_or_default()),
        ];
        Ok(onnx::encode(&g.into_model(card.input.image_size, card.classes.len(), metadata)))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::File {
        path: path.into(),
        msg: format!("not a {what}: {e}"),
    })
}

/// The last final checkpoint `method` wrote, from the run's `metrics.jsonl`.
fn final_checkpoint(run: &Path, method: &str) -> Result<PathBuf> {
    let metrics = run.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).map_err(|e| Error::io(&metrics, e))?;
    let last = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "checkpoint" && v["method"] == method)
        .filter_map(|v| v["path"].as_str().map(PathBuf::from))
        .next_back();
    let path = last.ok_or_else(|| Error::File {
        path: metrics.clone(),
        msg: format!("no final checkpoint of `{method}`: did that method finish in this run?"),
    })?;
    // Recorded paths are as the run saw them; the file sits in this run's checkpoints/.
    let local = run.join("checkpoints").join(path.file_name().unwrap_or_default());
    Ok(if local.is_file() { local } else { path })
}

/// Where `tdmr export` writes when no `--out` is given: `RUN/export/METHOD.EXT`.
pub fn default_export_path(run: &Path, method: &str, format: ExportFormat) -> PathBuf {
    run.join("export").join(format!("{method}.{}", format.extension()))
}

/// `tdmr export`: write `method`'s final target from `run` to `out` in `format`, and its
/// card beside it.
pub fn export(run: &Path, method: &str, out: &Path, format: ExportFormat) -> Result<ModelCard> {
    let exp = Experiment::load(&run.join("config.toml"), &[])?;
    let record: SplitRecord = read_json(&run.join("split.json"), "split record")?;
    let distilled = match method {
        "tdmr" | "tdmr-transfer" => true,
        "scratch" | "kd" | "kd-tdmr-teacher" | "kd-transfer" => false,
        other => {
            return Err(Error::config(
                "--method",
                format!("`{other}` trains no target model (tdmr, tdmr-transfer, scratch, kd, kd-tdmr-teacher or kd-transfer do)"),
            ))
        }
    };
    let ckpt = final_checkpoint(run, method)?;
    let r = &exp.reprogram;
    let summary: Option<crate::engine::Summary> = read_json(&run.join("summary.json"), "summary").ok();
    let mut card = ModelCard {
        format: FORMAT.into(),
        target: TargetSpec {
            arch: exp.target.arch,
            width: exp.target.width,
            image_size: exp.target.image_size,
            in_channels: 3,
        },
        classes: record.classes.clone(),
        input: InputSpec {
            image_size: exp.target.image_size,
            channels: 3,
            mean: [0.0; 3],
            std: [1.0; 3],
            stored_side: data::stored_side(&exp),
            preprocessing: preprocessing_text(data::stored_side(&exp), exp.target.image_size),
        },
        projector: distilled.then_some(ProjectorSpec {
            kind: r.projector,
            proxy_dim: r.proxy_dim,
            normalize: r.normalize,
        }),
        head_scale: if distilled { r.head_scale() } else { 1.0 },
        params: 0,
        macs: 0,
        source: Provenance {
            run: run.display().to_string(),
            method: method.into(),
            checkpoint: ckpt.display().to_string(),
            accuracy: summary.and_then(|s| s.get(method).map(|m| m.test_acc)),
            evaluated_on: exp.data.eval_on.describe().into(),
            data_kind: record.kind.clone(),
        },
    };
    let model = Deployable::build(&card, &Device::Cpu)?;
    let saved = candle_core::safetensors::load(&ckpt, &Device::Cpu).map_err(|e| Error::File {
        path: ckpt.clone(),
        msg: format!("not a readable checkpoint: {e}"),
    })?;
    let mut renamed: HashMap<String, Tensor> = saved
        .iter()
        .filter_map(|(k, t)| k.strip_prefix("target.").map(|rest| (rest.to_string(), t.clone())))
        .collect();
    if distilled && !renamed.contains_key("head.weight") {
        // `distill.head = "frozen"`: the target used the teacher's head as it was.
        let teacher = run.join("checkpoints").join("tdmr-teacher.safetensors");
        let t = candle_core::safetensors::load(&teacher, &Device::Cpu).map_err(|e| Error::File {
            path: teacher.clone(),
            msg: format!("the frozen head lives here, but it is not readable: {e}"),
        })?;
        for (k, v) in t {
            if let Some(rest) = k.strip_prefix("teacher.head.") {
                renamed.insert(format!("head.{rest}"), v);
            }
        }
    }
    model.params.restore(&renamed, &ckpt)?;
    card.params = model.params.count(&[String::new()]);
    card.macs = model.macs(&card);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    match format {
        ExportFormat::Safetensors => model.params.save(out)?,
        ExportFormat::Onnx => {
            let bytes = model.to_onnx(&card)?;
            write_atomic(out, |tmp| std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e)))?;
        }
    }
    write_text_atomic(&card_path(out), &serde_json::to_string_pretty(&card).unwrap_or_default())?;
    Ok(card)
}

mod predict;
pub use predict::*;
