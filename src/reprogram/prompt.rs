//! `R_in`: place the image (resized to `inner`) in the middle of a `canvas`-sized
//! frame, add a learnable prompt `δ` where the mask is 1, then apply the foundation
//! model's normalisation.

use candle_core::{DType, Device, Tensor};

use crate::config::PromptKind;
use crate::models::prefix::Prefix;
use crate::models::Normalization;
use crate::params::Params;
use crate::{Error, Result};

/// Bound of the `full` prompt's additive perturbation (pixels in [0, 1]).
pub const FULL_PROMPT_BOUND: f64 = 0.1;

pub struct Prompt {
    kind: PromptKind,
    delta: Option<Tensor>,
    mask: Tensor,
    canvas: usize,
    inner: usize,
    norm: Normalization,
}

impl Prompt {
    /// `pad` is the border width of a `padding` prompt. Parameters go under `prefix`.
    pub fn new(
        p: &mut Params,
        prefix: impl Into<Prefix>,
        kind: PromptKind,
        canvas: usize,
        inner: usize,
        pad: usize,
        norm: Normalization,
    ) -> Result<Self> {
        if inner > canvas || !(canvas - inner).is_multiple_of(2) {
            return Err(Error::config(
                "foundation.inner_size",
                format!("inner_size {inner} must be ≤ image_size {canvas} and differ from it by an even number"),
            ));
        }
        if kind == PromptKind::Padding && 2 * pad > canvas {
            return Err(Error::config(
                "reprogram.pad",
                format!("a padding prompt {pad} pixels wide does not fit a {canvas}×{canvas} canvas (needs 2·pad ≤ image_size)"),
            ));
        }
        let device = p.device().clone();
        let mask = match kind {
            PromptKind::Padding => border_mask(canvas, pad, &device)?,
            PromptKind::Full => Tensor::ones((1, canvas, canvas), DType::F32, &device)?,
            PromptKind::None => Tensor::zeros((1, canvas, canvas), DType::F32, &device)?,
        };
        let delta = match kind {
            PromptKind::None => None,
            _ => Some(p.constant(&prefix.into().key("delta"), &[3, canvas, canvas], 0.0)?),
        };
        Ok(Prompt {
            kind,
            delta,
            mask,
            canvas,
            inner,
            norm,
        })
    }

    pub fn inner(&self) -> usize {
        self.inner
    }

    /// `x`: `[B, 3, inner, inner]` in [0, 1] → normalised `[B, 3, canvas, canvas]`.
    /// With `train = false` the prompt is detached, so no graph is kept during evaluation.
    pub fn apply(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let border = (self.canvas - self.inner) / 2;
        let mut x = x.pad_with_zeros(2, border, border)?.pad_with_zeros(3, border, border)?;
        if let Some(delta) = &self.delta {
            let delta = if train { delta.clone() } else { delta.detach() };
            let delta = match self.kind {
                PromptKind::Full => (delta.tanh()? * FULL_PROMPT_BOUND)?,
                _ => delta,
            };
            x = x.broadcast_add(&delta.broadcast_mul(&self.mask)?.unsqueeze(0)?)?;
        }
        Ok(self.norm.apply(&x)?)
    }
}

fn border_mask(size: usize, pad: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            if y < pad || x < pad || y >= size - pad || x >= size - pad {
                m[y * size + x] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(m, (1, size, size), device)?)
}
