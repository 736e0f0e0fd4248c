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
            arch: exp.target.arch.clone(),
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

/// What `tdmr eval` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
    pub classes: Vec<String>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Evaluation {
    /// Accuracy, per-class recall and the confusion matrix as text.
    pub fn report(&self) -> String {
        let mut s = format!(
            "accuracy {:.2}% ({} of {} images)\n\nconfusion matrix (rows: true class, columns: predicted)\n",
            100.0 * self.accuracy,
            self.correct,
            self.total
        );
        let width = self.classes.iter().map(|c| c.chars().count()).max().unwrap_or(1).clamp(5, 16);
        s.push_str(&format!("{:>width$} ", ""));
        for i in 0..self.classes.len() {
            s.push_str(&format!("{i:>5}"));
        }
        s.push_str("  recall\n");
        for (i, row) in self.confusion.iter().enumerate() {
            let name: String = self.classes[i].chars().take(width).collect();
            s.push_str(&format!("{name:>width$} "));
            for v in row {
                s.push_str(&format!("{v:>5}"));
            }
            let n: usize = row.iter().sum();
            let recall = if n > 0 {
                format!("{:5.1}%", 100.0 * row[i] as f64 / n as f64)
            } else {
                "   -".into()
            };
            s.push_str(&format!("  {recall}  ({i})\n"));
        }
        s
    }
}

/// Options of `tdmr eval`.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Evaluate only the `test` images of this `split.json` (a run's), in its order.
    pub split: Option<PathBuf>,
    pub memory_budget_mb: u64,
}

fn is_digits(data: &Path) -> bool {
    data.is_file() || data.join("digits.csv.gz").is_file() || data.join("digits.csv").is_file()
}

/// An exported model and its card, on the CPU.
pub fn load(model_path: &Path) -> Result<(ModelCard, Deployable)> {
    let card_file = card_path(model_path);
    let card: ModelCard = read_json(&card_file, "tdmr model card")?;
    if card.format != FORMAT {
        return Err(Error::File {
            path: card_file,
            msg: format!("format `{}`, expected `{FORMAT}`", card.format),
        });
    }
    let model = Deployable::build(&card, &Device::Cpu)?;
    model.params.load(model_path)?;
    Ok((card, model))
}

/// One image's most probable classes, most probable first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub path: String,
    pub top: Vec<ClassProbability>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassProbability {
    pub class: String,
    pub probability: f64,
}

/// Image files under `inputs`: a file as given (it must be an image), a folder's image
/// files at any depth, sorted, hidden entries left out.
pub fn image_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for p in data::image_folder::sorted_dir(dir)? {
            if p.is_dir() {
                walk(&p, out)?;
            } else if data::image_folder::is_image_file(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out)?;
        } else if input.exists() {
            out.push(input.clone());
        } else {
            return Err(Error::File {
                path: input.clone(),
                msg: "no such image or folder".into(),
            });
        }
    }
    Ok(out)
}

/// A loaded export of either format, as `tdmr predict` runs it.
enum Classifier {
    Native(Box<Deployable>),
    Onnx(onnx::runtime::OnnxClassifier),
}

impl Classifier {
    /// Softmax probabilities of `n` images of `[3, side, side]`.
    fn probabilities(&self, pixels: Vec<f32>, n: usize, side: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            Classifier::Native(model) => {
                let x = Tensor::from_vec(pixels, (n, 3, side, side), &Device::Cpu)?;
                Ok(candle_nn::ops::softmax(&model.logits(&x)?, candle_core::D::Minus1)?.to_vec2()?)
            }
            Classifier::Onnx(model) => Ok(model.run(&pixels, n)?.probabilities),
        }
    }
}

/// The card of an export: beside it as `.json`, or for ONNX inside its metadata.
fn load_classifier(model_path: &Path) -> Result<(ModelCard, Classifier)> {
    if ExportFormat::of_path(model_path) == ExportFormat::Safetensors {
        let (card, model) = load(model_path)?;
        return Ok((card, Classifier::Native(Box::new(model))));
    }
    let model = onnx::runtime::OnnxClassifier::load(model_path)?;
    let card: ModelCard = match model.property(onnx::CARD_KEY) {
        Some(text) => serde_json::from_str(text).map_err(|e| Error::File {
            path: model_path.into(),
            msg: format!("metadata `{}` is not a tdmr model card: {e}", onnx::CARD_KEY),
        })?,
        None => read_json(&card_path(model_path), "tdmr model card")?,
    };
    Ok((card, Classifier::Onnx(model)))
}

/// `tdmr predict`: the `top` most probable classes of each image, with the resize of
/// training and evaluation (see [`data::image_folder::file_input`]). `model_path` is a
/// `.safetensors` export with its card, or an `.onnx` export run through tract.
pub fn predict(model_path: &Path, images: &[PathBuf], top: usize) -> Result<Vec<Prediction>> {
    let (card, model) = load_classifier(model_path)?;
    let side = card.input.image_size;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(EVAL_BATCH) {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * side * side);
        for path in chunk {
            pixels.extend(data::image_folder::file_input(path, card.input.stored_side, side)?);
        }
        let probs = model.probabilities(pixels, chunk.len(), side)?;
        for (path, p) in chunk.iter().zip(probs) {
            let mut order: Vec<usize> = (0..p.len()).collect();
            // Ties keep the lower class index first, as argmax does.
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            out.push(Prediction {
                path: path.display().to_string(),
                top: order
                    .into_iter()
                    .take(top.max(1))
                    .map(|c| ClassProbability {
                        class: card.classes[c].clone(),
                        probability: p[c] as f64,
                    })
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// `tdmr eval`: load `model` (and its card) and evaluate it on `data_path`.
pub fn evaluate(model_path: &Path, data_path: &Path, opts: &EvalOptions) -> Result<Evaluation> {
    let (card, model) = load(model_path)?;
    let device = Device::Cpu;
    let split: Option<SplitRecord> = match &opts.split {
        Some(p) => Some(read_json(p, "split record (a run's split.json)")?),
        None => None,
    };
    let views = if is_digits(data_path) {
        let digits = Digits::load(data_path)?;
        let rows: Vec<usize> = match &split {
            Some(s) => s
                .test
                .iter()
                .map(|n| {
                    n.parse::<usize>()
                        .ok()
                        .filter(|&i| i < digits.labels.len())
                        .ok_or_else(|| Error::File {
                            path: opts.split.clone().unwrap_or_default(),
                            msg: format!("test image `{n}` is not a row of {}", data_path.display()),
                        })
                })
                .collect::<Result<_>>()?,
            None => digits.split(1)?.test,
        };
        ViewSet::plain(&digits, &rows, &device)?
    } else {
        let store = ImageFolder::load(
            data_path,
            data::image_folder::LoadOptions {
                stored_side: card.input.stored_side,
                memory_budget_bytes: (opts.memory_budget_mb as usize).saturating_mul(1 << 20),
                workers: 0,
            },
        )?;
        if store.classes != card.classes {
            return Err(Error::File {
                path: data_path.into(),
                msg: format!(
                    "classes {:?} differ from the model's {:?} (from {})",
                    store.classes,
                    card.classes,
                    card_path(model_path).display()
                ),
            });
        }
        for s in &store.skipped {
            eprintln!("skipped {}: {}", s.path, s.reason);
        }
        let rows: Vec<usize> = match &split {
            Some(s) => {
                let index: HashMap<String, usize> = (0..store.len()).map(|i| (store.name(i), i)).collect();
                s.test
                    .iter()
                    .map(|n| {
                        index.get(n).copied().ok_or_else(|| Error::File {
                            path: data_path.into(),
                            msg: format!("test image `{n}` of the split is not here"),
                        })
                    })
                    .collect::<Result<_>>()?
            }
            None => (0..store.len()).collect(),
        };
        let store = std::sync::Arc::new(store);
        let pool = std::sync::Arc::new(data::image_folder::pool(0)?);
        let whole = data::Augment {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            flip: false,
        };
        ViewSet::folder(&store, &rows, 1, whole, 0, &pool, &device)?
    };
    let n = card.classes.len();
    let mut confusion = vec![vec![0usize; n]; n];
    let rows: Vec<usize> = (0..views.len()).collect();
    for chunk in rows.chunks(EVAL_BATCH) {
        let logits = model.logits(&views.batch(chunk, card.input.image_size)?)?;
        let predicted: Vec<u32> = logits.argmax(candle_core::D::Minus1)?.to_vec1()?;
        let labels: Vec<u32> = views.label_tensor(chunk)?.to_vec1()?;
        for (p, y) in predicted.iter().zip(&labels) {
            if (*y as usize) < n && (*p as usize) < n {
                confusion[*y as usize][*p as usize] += 1;
            }
        }
    }
    let correct: usize = (0..n).map(|i| confusion[i][i]).sum();
    let total = views.len();
    Ok(Evaluation {
        accuracy: if total > 0 { correct as f64 / total as f64 } else { 0.0 },
        correct,
        total,
        classes: card.classes.clone(),
        confusion,
    })
}
