//! Reading a ViT checkpoint by parts: the embeddings (with timm's hybrid stem), the
//! blocks, the final norm and the tensors left out. Every name comes from [`Names`],
//! so these steps are the same for every layout.

use std::collections::HashMap;
use std::sync::Mutex;

use candle_core::Tensor;

use super::names::{Attention, BlockNames, LayerScale, Names};
use super::{Block, HybridStem, Layout, Vit, CLIP_NORM, HALF_NORM};
use crate::models::prefix::Prefix;
use crate::models::weights::StrictWeights;
use crate::{Error, Result};

/// The embedding tensors and the sizes they fix.
struct Embeddings {
    stem: Option<HybridStem>,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    cls: Tensor,
    /// `[1, 1 + g², D]` at the checkpoint's grid `g`.
    pos: Tensor,
    grid: usize,
    patch: usize,
    dim: usize,
}

fn bad(w: &StrictWeights, tensor: String, msg: String) -> Error {
    Error::Tensor {
        path: w.path().to_path_buf(),
        tensor,
        msg,
    }
}

impl Vit {
    pub fn load(w: &mut StrictWeights, layout: Layout) -> Result<Self> {
        let names = Names::of(w, layout);
        let e = embeddings(w, &names)?;
        let dim = e.dim;
        let pre_norm = match names.pre_norm() {
            Some(at) => Some(w.take_affine(&at, &[dim], &[dim])?),
            None => None,
        };
        let blocks = blocks(w, &names, dim)?;
        let norm = w.take_affine(&names.final_norm(), &[dim], &[dim])?;
        let classes = ["head.weight", "classifier.weight"]
            .iter()
            .find_map(|k| w.shape_of(k).and_then(|s| s.first().copied()))
            .unwrap_or(0);
        w.ignore(|k| names.is_unused(k));
        let (eps, normalization) = match layout {
            Layout::Timm | Layout::TimmHybrid => (1e-6, HALF_NORM),
            Layout::HfVit => (1e-12, HALF_NORM),
            Layout::Dinov2 => (1e-6, crate::models::IMAGENET),
            Layout::Clip => (1e-5, CLIP_NORM),
        };
        let stem_stride = if e.stem.is_some() { 4 } else { 1 };
        let native_input = e.grid * e.patch * stem_stride;
        Ok(Vit {
            layout,
            variant: variant(layout, dim, e.patch, native_input),
            stem: e.stem,
            patch: e.patch,
            patch_w: e.patch_w,
            patch_b: e.patch_b,
            cls: e.cls,
            pos: e.pos,
            grid: e.grid,
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
}

/// The published name of a layout at a width, patch and input size
/// (`vit-base-patch16-224`, `vit-hybrid-small-r-p16-224`).
fn variant(layout: Layout, dim: usize, patch: usize, native_input: usize) -> String {
    let family = match layout {
        Layout::Timm | Layout::HfVit => "vit",
        Layout::TimmHybrid => "vit-hybrid",
        Layout::Dinov2 => "dinov2",
        Layout::Clip => "clip-vit",
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
    match layout {
        Layout::TimmHybrid => format!("{family}-{size}-r-p{patch}-{native_input}"),
        _ => format!("{family}-{size}-patch{patch}-{native_input}"),
    }
}

fn embeddings(w: &mut StrictWeights, names: &Names) -> Result<Embeddings> {
    let layout = names.layout;
    let e = names.embeddings();
    let patch_name = e.patch.key("weight");
    let patch_w = w.take_any(&patch_name)?;
    if patch_w.rank() != 4 || patch_w.dim(2)? != patch_w.dim(3)? {
        return Err(bad(w, patch_name, format!("expected [D, C, P, P], found {:?}", patch_w.dims())));
    }
    let (dim, in_ch, patch) = (patch_w.dim(0)?, patch_w.dim(1)?, patch_w.dim(2)?);
    let patch_b = match layout {
        Layout::Clip => None,
        _ => Some(w.take(&e.patch.key("bias"), &[dim])?),
    };
    let stem = if layout == Layout::TimmHybrid {
        Some(hybrid_stem(w, &names.hybrid_stem(w), in_ch)?)
    } else {
        if in_ch != 3 {
            return Err(bad(w, patch_name, format!("expected 3 input channels, found {in_ch}")));
        }
        None
    };
    let cls = match layout {
        Layout::Clip => w.take(&e.cls, &[dim])?.reshape((1, 1, dim))?,
        _ => w.take(&e.cls, &[1, 1, dim])?,
    };
    let pos = w.take_any(&e.pos)?;
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
        return Err(bad(w, e.pos, format!("expected [1, 1 + g², {dim}], found {:?}", pos.dims())));
    }
    if let Some(mask) = names.mask_token() {
        w.take(&mask, &[1, dim])?;
    }
    Ok(Embeddings {
        stem,
        patch_w,
        patch_b,
        cls,
        pos,
        grid,
        patch,
        dim,
    })
}

/// The ResNetV2 stem's 7×7 convolution (output width `width`) and group norm.
fn hybrid_stem(w: &mut StrictWeights, at: &Prefix, width: usize) -> Result<HybridStem> {
    let conv_name = at.pp("conv").key("weight");
    let conv = w.take_any(&conv_name)?;
    let c = conv.dim(0)?;
    if conv.dims() != [c, 3, 7, 7] || c != width {
        return Err(bad(w, conv_name, format!("expected [{width}, 3, 7, 7], found {:?}", conv.dims())));
    }
    // StdConv2dSame: the weight standardised per output channel (eps 1e-8).
    let mean = conv.mean_keepdim(1)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centered = conv.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(1)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let conv = centered.broadcast_div(&(var + 1e-8)?.sqrt()?)?;
    let norm = w.take_affine(&at.pp("norm"), &[c], &[c])?;
    Ok(HybridStem { conv, norm })
}

fn blocks(w: &mut StrictWeights, names: &Names, dim: usize) -> Result<Vec<Block>> {
    let depth = w.count_indexed(&names.blocks().dotted());
    if depth == 0 {
        return Err(bad(w, names.blocks().pp(0).key("*"), "no transformer blocks in the file".into()));
    }
    (0..depth).map(|i| block(w, &names.block(i), dim)).collect()
}

fn block(w: &mut StrictWeights, n: &BlockNames, dim: usize) -> Result<Block> {
    let d1 = [dim];
    let (q, k, v) = match &n.attention {
        Attention::Fused(qkv) => {
            let (qkv_w, qkv_b) = w.take_affine(qkv, &[3 * dim, dim], &[3 * dim])?;
            let part = |j: usize| -> Result<(Tensor, Tensor)> { Ok((qkv_w.narrow(0, j * dim, dim)?, qkv_b.narrow(0, j * dim, dim)?)) };
            (part(0)?, part(1)?, part(2)?)
        }
        Attention::Split([q, k, v]) => (
            w.take_affine(q, &[dim, dim], &d1)?,
            w.take_affine(k, &[dim, dim], &d1)?,
            w.take_affine(v, &[dim, dim], &d1)?,
        ),
    };
    let proj = w.take_affine(&n.out, &[dim, dim], &d1)?;
    let ln1 = w.take_affine(&n.norm1, &d1, &d1)?;
    let ln2 = w.take_affine(&n.norm2, &d1, &d1)?;
    let fc1_w = w.take_any(&n.fc1.key("weight"))?;
    let (ls1, ls2) = match &n.layer_scale {
        LayerScale::Absent => (None, None),
        LayerScale::IfPresent([a, b]) => {
            let mut maybe = |key: &str| -> Result<Option<Tensor>> {
                if w.contains(key) {
                    Ok(Some(w.take(key, &d1)?))
                } else {
                    Ok(None)
                }
            };
            (maybe(a)?, maybe(b)?)
        }
        LayerScale::Required([a, b]) => (Some(w.take(a, &d1)?), Some(w.take(b, &d1)?)),
    };
    if fc1_w.rank() != 2 || fc1_w.dim(1)? != dim {
        return Err(bad(
            w,
            n.fc1.key("weight"),
            format!("expected [H, {dim}], found {:?}", fc1_w.dims()),
        ));
    }
    let hidden = fc1_w.dim(0)?;
    let fc1 = (fc1_w, w.take(&n.fc1.key("bias"), &[hidden])?);
    let fc2 = w.take_affine(&n.fc2, &[dim, hidden], &d1)?;
    Ok(Block {
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
    })
}
