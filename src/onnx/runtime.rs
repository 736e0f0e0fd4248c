//! Running an exported ONNX file with tract (pure Rust, CPU): what `tdmr predict`
//! uses for `.onnx` models, and what the export checks compare against.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::{LOGITS, PROBABILITIES};
use crate::{Error, Result};

/// An ONNX classifier, optimised once for its symbolic batch dimension.
pub struct OnnxClassifier {
    plan: Arc<TypedRunnableModel>,
    pub side: usize,
    pub metadata: Vec<(String, String)>,
}

/// The logits and softmax probabilities of one batch, row per image.
pub struct Outputs {
    pub logits: Vec<Vec<f32>>,
    pub probabilities: Vec<Vec<f32>>,
}

fn tract_err(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.into(),
        msg: format!("{what}: {e:#}"),
    }
}

impl OnnxClassifier {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let metadata = super::metadata(&bytes, path)?;
        let side = metadata
            .iter()
            .find(|(k, _)| k == super::IMAGE_SIZE_KEY)
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| Error::File {
                path: path.into(),
                msg: format!("no `{}` metadata: not a model `tdmr export` wrote", super::IMAGE_SIZE_KEY),
            })?;
        let model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| tract_err(path, "tract cannot read this ONNX model", e))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| tract_err(path, "tract cannot plan this ONNX model", e))?;
        Ok(OnnxClassifier { plan, side, metadata })
    }

    /// The metadata property `key`, if the exporter wrote it.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Run on `pixels`, `batch` images of `[3, side, side]` RGB in [0, 1].
    pub fn run(&self, pixels: &[f32], batch: usize) -> Result<Outputs> {
        let s = self.side;
        let x = tract_ndarray::Array4::from_shape_vec((batch, 3, s, s), pixels.to_vec())
            .map_err(|e| Error::Onnx(format!("input of {batch} images at {s}×{s}: {e}")))?;
        let out = self
            .plan
            .run(tvec!(x.into_tensor().into()))
            .map_err(|e| Error::Onnx(format!("tract run: {e:#}")))?;
        let rows = |i: usize, name: &str| -> Result<Vec<Vec<f32>>> {
            let t = out.get(i).ok_or_else(|| Error::Onnx(format!("no output `{name}`")))?;
            let view = t
                .to_plain_array_view::<f32>()
                .map_err(|e| Error::Onnx(format!("output `{name}`: {e:#}")))?;
            let view = view
                .into_dimensionality::<tract_ndarray::Ix2>()
                .map_err(|e| Error::Onnx(format!("output `{name}` is not [N, classes]: {e}")))?;
            Ok(view.outer_iter().map(|r| r.to_vec()).collect())
        };
        Ok(Outputs {
            logits: rows(0, LOGITS)?,
            probabilities: rows(1, PROBABILITIES)?,
        })
    }
}
