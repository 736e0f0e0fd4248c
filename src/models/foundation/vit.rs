//! Vision transformers as published, read by their own key names: timm
//! `vit_*_patch16_224`, Hugging Face `google/vit-*` (`ViTModel` and
//! `ViTForImageClassification`), `facebook/dinov2-*` and the vision tower of
//! `openai/clip-vit-*`, plus timm's hybrid R+ViT (a ResNet stem before the patch
//! embedding). One implementation on the project's verified ops: candle-transformers'
//! ViT and CLIP use `softmax_last_dim` and the fused layer norm, which give no
//! gradient to the input (README "Exact gradients"), and the prompt is trained through this.
//! Heads are `dim / 64` (every published ViT). Position embeddings are resampled
//! bilinearly when the input grid differs from the checkpoint's.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::Tensor;

use super::layers::{dense, group_norm, layer_norm, max_pool, patchify, quick_gelu, tokens_to_map};
use crate::models::targets::blocks::softmax_last;
use crate::models::Normalization;
use crate::ops::conv::{conv2d, same_padding};
use crate::ops::resize_bilinear;
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Timm,
    /// timm's R+ViT hybrid: a ResNetV2 stem (weight-standardised conv, group norm,
    /// max-pool) under the patch embedding.
    TimmHybrid,
    HfVit,
    Dinov2,
    Clip,
}

pub const CLIP_NORM: Normalization = Normalization {
    mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
    std: [0.268_629_54, 0.261_302_6, 0.275_777_1],
};
pub const HALF_NORM: Normalization = Normalization {
    mean: [0.5, 0.5, 0.5],
    std: [0.5, 0.5, 0.5],
};

struct Block {
    ln1: (Tensor, Tensor),
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    proj: (Tensor, Tensor),
    ln2: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
    ls1: Option<Tensor>,
    ls2: Option<Tensor>,
}

struct HybridStem {
    conv: Tensor,
    norm: (Tensor, Tensor),
}

pub struct Vit {
    pub layout: Layout,
    pub variant: String,
    stem: Option<HybridStem>,
    patch: usize,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls: Tensor,
    /// `[1, 1 + g², D]` at the checkpoint's grid `g`.
    pos: Tensor,
    grid: usize,
    pre_norm: Option<(Tensor, Tensor)>,
    blocks: Vec<Block>,
    norm: (Tensor, Tensor),
    heads: usize,
    eps: f64,
    pub dim: usize,
    pub classes: usize,
    pub native_input: usize,
    pub normalization: Normalization,
    /// Position embeddings resampled per grid side, computed once each.
    resampled: Mutex<HashMap<(usize, usize), Tensor>>,
}

mod load;
mod names;

impl Vit {
    /// Position embeddings for a `gh × gw` grid (the checkpoint's, or resampled).
    fn pos_for(&self, gh: usize, gw: usize) -> Result<Tensor> {
        if gh == self.grid && gw == self.grid {
            return Ok(self.pos.clone());
        }
        if let Some(p) = self.resampled.lock().ok().and_then(|m| m.get(&(gh, gw)).cloned()) {
            return Ok(p);
        }
        let cls = self.pos.narrow(1, 0, 1)?;
        let grid = tokens_to_map(&self.pos.narrow(1, 1, self.grid * self.grid)?, self.grid, self.grid)?;
        let grid = resize_bilinear(&grid, gh, gw)?;
        let tokens = grid.permute((0, 2, 3, 1))?.reshape((1, gh * gw, self.dim))?;
        let p = Tensor::cat(&[&cls, &tokens], 1)?.detach();
        if let Ok(mut m) = self.resampled.lock() {
            m.insert((gh, gw), p.clone());
        }
        Ok(p)
    }

    fn stem(&self, x: &Tensor) -> Result<Tensor> {
        let Some(s) = &self.stem else { return Ok(x.clone()) };
        let (_, _, h, w) = x.dims4()?;
        // TF "SAME" padding for the 7×7 stride-2 conv and the 3×3 stride-2 max-pool.
        let (t, b) = same_padding(h, 7, 2);
        let (l, r) = same_padding(w, 7, 2);
        let y = conv2d(x, &s.conv, None, 2, [t, b, l, r])?;
        let y = group_norm(&y, 32.min(y.dim(1)?), &s.norm.0, &s.norm.1, 1e-5)?.relu()?;
        let (_, _, h2, _) = y.dims4()?;
        let (lo, hi) = same_padding(h2, 3, 2);
        max_pool(&y, 3, 2, lo, hi)
    }

    fn block(&self, b: &Block, x: &Tensor) -> Result<Tensor> {
        let (bsz, n, d) = x.dims3()?;
        let (heads, hd) = (self.heads, d / self.heads);
        let h = layer_norm(x, &b.ln1.0, &b.ln1.1, self.eps)?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((bsz, n, heads, hd))?
                .permute((0, 2, 1, 3))?
                .contiguous()?
                .reshape((bsz * heads, n, hd))
        };
        let q = split(dense(&h, &b.q.0, Some(&b.q.1))?)?;
        let k = split(dense(&h, &b.k.0, Some(&b.k.1))?)?;
        let v = split(dense(&h, &b.v.0, Some(&b.v.1))?)?;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?;
        let a = softmax_last(&scores)?.matmul(&v)?;
        let a = a
            .reshape((bsz, heads, n, hd))?
            .permute((0, 2, 1, 3))?
            .contiguous()?
            .reshape((bsz, n, d))?;
        let mut a = dense(&a, &b.proj.0, Some(&b.proj.1))?;
        if let Some(g) = &b.ls1 {
            a = a.broadcast_mul(g)?;
        }
        let x = (x + a)?;
        let h = layer_norm(&x, &b.ln2.0, &b.ln2.1, self.eps)?;
        let h = dense(&h, &b.fc1.0, Some(&b.fc1.1))?;
        let h = if self.layout == Layout::Clip {
            quick_gelu(&h)?
        } else {
            h.gelu_erf()?
        };
        let mut m = dense(&h, &b.fc2.0, Some(&b.fc2.1))?;
        if let Some(g) = &b.ls2 {
            m = m.broadcast_mul(g)?;
        }
        Ok((x + m)?)
    }

    /// Pooled features `[B, D]`: the final-normed class token.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.stem(x)?;
        let (tokens, gh, gw) = patchify(&x, &self.patch_w, self.patch_b.as_ref(), self.patch)?;
        if gh == 0 || gw == 0 {
            return Err(Error::Data(format!(
                "input {:?} is smaller than one {}-pixel patch",
                x.dims(),
                self.patch
            )));
        }
        let b = tokens.dim(0)?;
        let cls = self.cls.broadcast_as((b, 1, self.dim))?;
        let mut h = Tensor::cat(&[&cls, &tokens], 1)?.broadcast_add(&self.pos_for(gh, gw)?)?;
        if let Some((w, bias)) = &self.pre_norm {
            h = layer_norm(&h, w, bias, self.eps)?;
        }
        for blk in &self.blocks {
            h = self.block(blk, &h)?;
        }
        let cls = h.narrow(1, 0, 1)?.squeeze(1)?;
        layer_norm(&cls, &self.norm.0, &self.norm.1, self.eps)
    }

    pub fn depth(&self) -> usize {
        self.blocks.len()
    }
}
