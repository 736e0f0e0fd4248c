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
use crate::models::weights::StrictWeights;
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

mod names;
use names::Names;

fn pair(w: &mut StrictWeights, name: &str, shape_w: &[usize], shape_b: &[usize]) -> Result<(Tensor, Tensor)> {
    Ok((
        w.take(&format!("{name}.weight"), shape_w)?,
        w.take(&format!("{name}.bias"), shape_b)?,
    ))
}

/// The HF prefix in use (`vit.`, `dinov2.` or none) for a key that must exist.
fn hf_prefix(w: &StrictWeights, key: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .find(|p| w.contains(&format!("{p}{key}")))
        .map_or(String::new(), |p| p.to_string())
}

impl Vit {
    pub fn load(w: &mut StrictWeights, layout: Layout) -> Result<Self> {
        let prefix = match layout {
            Layout::Timm | Layout::TimmHybrid => String::new(),
            Layout::HfVit => hf_prefix(w, "embeddings.cls_token", &["vit.", ""]),
            Layout::Dinov2 => hf_prefix(w, "embeddings.cls_token", &["dinov2.", ""]),
            Layout::Clip => "vision_model.".into(),
        };
        // transformers 5 saves new names; the published checkpoints have the old ones.
        let v5 = [
            format!("{prefix}layers.0.attention.q_proj.weight"),
            format!("{prefix}encoder.layer.0.attention.q_proj.weight"),
        ]
        .iter()
        .any(|k| w.contains(k));
        let names = Names {
            prefix: prefix.clone(),
            layout,
            v5,
        };
        let p = &prefix;
        let (cls_name, pos_name, patch_name) = match layout {
            Layout::Timm | Layout::TimmHybrid => ("cls_token".to_string(), "pos_embed".to_string(), "patch_embed.proj".to_string()),
            Layout::HfVit | Layout::Dinov2 => (
                format!("{p}embeddings.cls_token"),
                format!("{p}embeddings.position_embeddings"),
                format!("{p}embeddings.patch_embeddings.projection"),
            ),
            Layout::Clip => (
                format!("{p}embeddings.class_embedding"),
                format!("{p}embeddings.position_embedding.weight"),
                format!("{p}embeddings.patch_embedding"),
            ),
        };
        let patch_w = w.take_any(&format!("{patch_name}.weight"))?;
        let origin = w.path().to_path_buf();
        let bad = |tensor: String, msg: String| Error::Tensor {
            path: origin.clone(),
            tensor,
            msg,
        };
        if patch_w.rank() != 4 || patch_w.dim(2)? != patch_w.dim(3)? {
            return Err(bad(
                format!("{patch_name}.weight"),
                format!("expected [D, C, P, P], found {:?}", patch_w.dims()),
            ));
        }
        let (dim, in_ch, patch) = (patch_w.dim(0)?, patch_w.dim(1)?, patch_w.dim(2)?);
        let patch_b = match layout {
            Layout::Clip => None,
            _ => Some(w.take(&format!("{patch_name}.bias"), &[dim])?),
        };
        let stem = if layout == Layout::TimmHybrid {
            // timm builds a stem-only ResNetV2 as a bare `conv, norm, pool` sequence.
            let sp = if w.contains("patch_embed.backbone.stem.conv.weight") {
                "patch_embed.backbone.stem."
            } else {
                "patch_embed.backbone."
            };
            let conv_name = format!("{sp}conv.weight");
            let conv = w.take_any(&conv_name)?;
            let c = conv.dim(0)?;
            if conv.dims() != [c, 3, 7, 7] || c != in_ch {
                return Err(bad(conv_name, format!("expected [{in_ch}, 3, 7, 7], found {:?}", conv.dims())));
            }
            // StdConv2dSame: the weight standardised per output channel (eps 1e-8).
            let mean = conv.mean_keepdim(1)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let centered = conv.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(1)?.mean_keepdim(2)?.mean_keepdim(3)?;
            let conv = centered.broadcast_div(&(var + 1e-8)?.sqrt()?)?;
            let norm = pair(w, &format!("{sp}norm"), &[c], &[c])?;
            Some(HybridStem { conv, norm })
        } else {
            if in_ch != 3 {
                return Err(bad(
                    format!("{patch_name}.weight"),
                    format!("expected 3 input channels, found {in_ch}"),
                ));
            }
            None
        };
        let cls = match layout {
            Layout::Clip => w.take(&cls_name, &[dim])?.reshape((1, 1, dim))?,
            _ => w.take(&cls_name, &[1, 1, dim])?,
        };
        let pos = w.take_any(&pos_name)?;
        let pos = if layout == Layout::Clip && pos.rank() == 2 {
            pos.unsqueeze(0)?
        } else {
            pos
        };
        let tokens = if pos.rank() == 3 && pos.dim(0)? == 1 && pos.dim(2)? == dim {
            pos.dim(1)?
        } else {
            0
        };
        let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
        if tokens < 2 || grid * grid + 1 != tokens {
            return Err(bad(pos_name, format!("expected [1, 1 + g², {dim}], found {:?}", pos.dims())));
        }
        if layout == Layout::Dinov2 {
            w.take(&format!("{p}embeddings.mask_token"), &[1, dim])?;
        }
        if layout == Layout::Clip {
            w.ignore(|k| k == "vision_model.embeddings.position_ids");
        }
        let pre_norm = match layout {
            Layout::Clip => Some(pair(w, &format!("{p}pre_layrnorm"), &[dim], &[dim])?),
            _ => None,
        };
        let depth = w.count_indexed(&names.blocks());
        if depth == 0 {
            return Err(bad(names.block(0, "*"), "no transformer blocks in the file".into()));
        }
        let mut blocks = Vec::with_capacity(depth);
        let d1 = [dim];
        for i in 0..depth {
            let n = |part: &str| names.block(i, part);
            let (q, k, v, proj, ln1, ln2, fc1, fc2, ls1, ls2);
            match layout {
                Layout::Timm | Layout::TimmHybrid => {
                    let (qkv_w, qkv_b) = pair(w, &n("attn.qkv"), &[3 * dim, dim], &[3 * dim])?;
                    let part = |t: &Tensor, j: usize| t.narrow(0, j * dim, dim);
                    q = (part(&qkv_w, 0)?, part(&qkv_b, 0)?);
                    k = (part(&qkv_w, 1)?, part(&qkv_b, 1)?);
                    v = (part(&qkv_w, 2)?, part(&qkv_b, 2)?);
                    proj = pair(w, &n("attn.proj"), &[dim, dim], &d1)?;
                    ln1 = pair(w, &n("norm1"), &d1, &d1)?;
                    ln2 = pair(w, &n("norm2"), &d1, &d1)?;
                    fc1 = w.take_any(&n("mlp.fc1.weight"))?;
                    fc2 = n("mlp.fc2");
                    ls1 = if w.contains(&n("ls1.gamma")) {
                        Some(w.take(&n("ls1.gamma"), &d1)?)
                    } else {
                        None
                    };
                    ls2 = if w.contains(&n("ls2.gamma")) {
                        Some(w.take(&n("ls2.gamma"), &d1)?)
                    } else {
                        None
                    };
                }
                Layout::HfVit | Layout::Dinov2 => {
                    let [qn, kn, vn, on] = names.hf_attention();
                    q = pair(w, &n(qn), &[dim, dim], &d1)?;
                    k = pair(w, &n(kn), &[dim, dim], &d1)?;
                    v = pair(w, &n(vn), &[dim, dim], &d1)?;
                    proj = pair(w, &n(on), &[dim, dim], &d1)?;
                    if layout == Layout::HfVit {
                        ln1 = pair(w, &n("layernorm_before"), &d1, &d1)?;
                        ln2 = pair(w, &n("layernorm_after"), &d1, &d1)?;
                        let fc1_name = if v5 { "mlp.fc1.weight" } else { "intermediate.dense.weight" };
                        fc1 = w.take_any(&n(fc1_name))?;
                        fc2 = n(if v5 { "mlp.fc2" } else { "output.dense" });
                        (ls1, ls2) = (None, None);
                    } else {
                        ln1 = pair(w, &n("norm1"), &d1, &d1)?;
                        ln2 = pair(w, &n("norm2"), &d1, &d1)?;
                        fc1 = w.take_any(&n("mlp.fc1.weight"))?;
                        fc2 = n("mlp.fc2");
                        ls1 = Some(w.take(&n("layer_scale1.lambda1"), &d1)?);
                        ls2 = Some(w.take(&n("layer_scale2.lambda1"), &d1)?);
                    }
                }
                Layout::Clip => {
                    q = pair(w, &n("self_attn.q_proj"), &[dim, dim], &d1)?;
                    k = pair(w, &n("self_attn.k_proj"), &[dim, dim], &d1)?;
                    v = pair(w, &n("self_attn.v_proj"), &[dim, dim], &d1)?;
                    proj = pair(w, &n("self_attn.out_proj"), &[dim, dim], &d1)?;
                    ln1 = pair(w, &n("layer_norm1"), &d1, &d1)?;
                    ln2 = pair(w, &n("layer_norm2"), &d1, &d1)?;
                    fc1 = w.take_any(&n("mlp.fc1.weight"))?;
                    fc2 = n("mlp.fc2");
                    (ls1, ls2) = (None, None);
                }
            }
            let fc1_name = match layout {
                Layout::HfVit if !v5 => n("intermediate.dense"),
                _ => n("mlp.fc1"),
            };
            if fc1.rank() != 2 || fc1.dim(1)? != dim {
                return Err(bad(
                    format!("{fc1_name}.weight"),
                    format!("expected [H, {dim}], found {:?}", fc1.dims()),
                ));
            }
            let hidden = fc1.dim(0)?;
            let fc1 = (fc1, w.take(&format!("{fc1_name}.bias"), &[hidden])?);
            let fc2 = pair(w, &fc2, &[dim, hidden], &d1)?;
            blocks.push(Block {
                ln1,
                q,
                k,
                v,
                proj,
                ln2,
                fc1,
                fc2,
                ls1,
                ls2,
            });
        }
        let norm_name = match layout {
            Layout::Timm | Layout::TimmHybrid => "norm".to_string(),
            Layout::HfVit | Layout::Dinov2 => format!("{p}layernorm"),
            Layout::Clip => format!("{p}post_layernorm"),
        };
        let norm = pair(w, &norm_name, &d1, &d1)?;
        // Classifier heads, poolers and CLIP's text tower are not part of the features.
        let classes = ["head.weight", "classifier.weight"]
            .iter()
            .find_map(|k| w.shape_of(k).and_then(|s| s.first().copied()))
            .unwrap_or(0);
        let pooler = format!("{p}pooler.");
        w.ignore(|k| {
            k.starts_with("head.")
                || k.starts_with("classifier.")
                || k.starts_with(&pooler)
                || k.starts_with("text_model.")
                || k.starts_with("visual_projection.")
                || k.starts_with("text_projection.")
                || k == "logit_scale"
        });
        let (eps, normalization, variant_family) = match layout {
            Layout::Timm => (1e-6, HALF_NORM, "vit"),
            Layout::TimmHybrid => (1e-6, HALF_NORM, "vit-hybrid"),
            Layout::HfVit => (1e-12, HALF_NORM, "vit"),
            Layout::Dinov2 => (1e-6, crate::models::IMAGENET, "dinov2"),
            Layout::Clip => (1e-5, CLIP_NORM, "clip-vit"),
        };
        let size = match dim {
            192 => "tiny",
            384 => "small",
            768 => "base",
            1024 => "large",
            1280 => "huge",
            1536 => "giant",
            _ => "custom",
        };
        let stem_stride = if stem.is_some() { 4 } else { 1 };
        let native_input = grid * patch * stem_stride;
        let variant = match layout {
            Layout::TimmHybrid => format!("{variant_family}-{size}-r-p{patch}-{native_input}"),
            _ => format!("{variant_family}-{size}-patch{patch}-{native_input}"),
        };
        Ok(Vit {
            layout,
            variant,
            stem,
            patch,
            patch_w,
            patch_b,
            cls,
            pos,
            grid,
            pre_norm,
            blocks,
            norm,
            heads: (dim / 64).max(1),
            eps,
            dim,
            classes,
            native_input,
            normalization,
            resampled: Mutex::new(HashMap::new()),
        })
    }

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
