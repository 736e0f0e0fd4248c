//! `tdmr eval` and `tdmr predict`: an exported model (safetensors with its card, or
//! ONNX through tract) on a dataset or on image files.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::*;

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
