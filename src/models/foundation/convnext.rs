//! ConvNeXt as timm (`convnext_{tiny..large}`) and Hugging Face
//! (`facebook/convnext-*-224`) publish it: a 4×4 patchify stem, four stages of
//! depthwise-7×7 / layer-norm / MLP blocks with layer scale, 2×2 patchify downsampling,
//! global average pooling and a final layer norm. Read by either layout's own key
//! names; built on verified ops (the fused layer norm gives no gradient).

use candle_core::Tensor;

use super::layers::{dense, layer_norm, layer_norm_2d, patchify, tokens_to_map};
use crate::models::prefix::Prefix;
use crate::models::weights::StrictWeights;
use crate::ops::{act::Act, depthwise::depthwise_conv2d_act};
use crate::{Error, Result};

const EPS: f64 = 1e-6;

/// Key names of the two published layouts.
#[derive(Debug, Clone)]
pub enum Layout {
    Timm,
    /// Hugging Face, with its prefix (`convnext.` for the classification model, or none).
    Hf(Prefix),
}

impl Layout {
    /// The layout the file uses.
    pub fn of(w: &StrictWeights) -> Self {
        for p in [Prefix::new("convnext"), Prefix::root()] {
            if w.contains(&p.pp("embeddings.patch_embeddings").key("weight")) {
                return Layout::Hf(p);
            }
        }
        Layout::Timm
    }

    fn stem(&self) -> (Prefix, Prefix) {
        match self {
            Layout::Timm => ("stem.0".into(), "stem.1".into()),
            Layout::Hf(p) => (p.pp("embeddings.patch_embeddings"), p.pp("embeddings.layernorm")),
        }
    }

    fn stage(&self, s: usize) -> Prefix {
        match self {
            Layout::Timm => Prefix::new("stages").pp(s),
            Layout::Hf(p) => p.pp("encoder.stages").pp(s),
        }
    }

    fn down(&self, s: usize) -> (Prefix, Prefix) {
        let down = match self {
            Layout::Timm => self.stage(s).pp("downsample"),
            Layout::Hf(_) => self.stage(s).pp("downsampling_layer"),
        };
        (down.pp(0), down.pp(1))
    }

    fn blocks(&self, s: usize) -> Prefix {
        match self {
            Layout::Timm => self.stage(s).pp("blocks"),
            Layout::Hf(_) => self.stage(s).pp("layers"),
        }
    }

    /// `dw`, `norm`, `fc1`, `fc2` modules and the layer-scale tensor's name of a block.
    fn block(&self, at: &Prefix) -> ([Prefix; 4], String) {
        match self {
            Layout::Timm => (
                [at.pp("conv_dw"), at.pp("norm"), at.pp("mlp.fc1"), at.pp("mlp.fc2")],
                at.key("gamma"),
            ),
            Layout::Hf(_) => (
                [at.pp("dwconv"), at.pp("layernorm"), at.pp("pwconv1"), at.pp("pwconv2")],
                at.key("layer_scale_parameter"),
            ),
        }
    }

    /// The final layer norm, its epsilon, and the classifier's prefix.
    fn head(&self) -> (Prefix, f64, Prefix) {
        match self {
            Layout::Timm => ("head.norm".into(), EPS, "head.fc".into()),
            Layout::Hf(p) => (p.pp("layernorm"), 1e-12, "classifier".into()),
        }
    }
}

struct Block {
    dw: (Tensor, Tensor),
    norm: (Tensor, Tensor),
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
    gamma: Tensor,
}

struct Stage {
    /// Layer norm then a 2×2 stride-2 convolution (absent in the first stage).
    down: Option<((Tensor, Tensor), (Tensor, Tensor))>,
    blocks: Vec<Block>,
}

pub struct ConvNext {
    stem: (Tensor, Tensor),
    stem_norm: (Tensor, Tensor),
    stages: Vec<Stage>,
    head_norm: (Tensor, Tensor),
    head_eps: f64,
    pub feature_dim: usize,
    pub classes: usize,
    pub variant: String,
}

/// The published size a ConvNeXt's stem width and third-stage depth identify.
pub fn size_name(stem_dim: usize, stage3_depth: usize) -> &'static str {
    match (stem_dim, stage3_depth) {
        (96, 9) => "tiny",
        (96, _) => "small",
        (128, _) => "base",
        (192, _) => "large",
        _ => "custom",
    }
}

impl ConvNext {
    pub fn load(w: &mut StrictWeights) -> Result<Self> {
        let layout = Layout::of(w);
        let (stem_conv, stem_ln) = layout.stem();
        let stem_name = stem_conv.key("weight");
        let stem_w = w.take_any(&stem_name)?;
        if stem_w.rank() != 4 || stem_w.dim(1)? != 3 || stem_w.dim(2)? != 4 || stem_w.dim(3)? != 4 {
            return Err(Error::Tensor {
                path: w.path().into(),
                tensor: stem_name,
                msg: format!("expected [C, 3, 4, 4], found {:?}", stem_w.dims()),
            });
        }
        let mut c = stem_w.dim(0)?;
        let stem = (stem_w, w.take(&stem_conv.key("bias"), &[c])?);
        let stem_norm = w.take_affine(&stem_ln, &[c], &[c])?;
        let mut stages = Vec::new();
        let (mut dims, mut depths) = (Vec::new(), Vec::new());
        for s in 0..4 {
            let down = if s > 0 {
                let (ln_name, conv_name) = layout.down(s);
                let ln = w.take_affine(&ln_name, &[c], &[c])?;
                let conv_w = w.take_any(&conv_name.key("weight"))?;
                let out = conv_w.dim(0)?;
                if conv_w.dims() != [out, c, 2, 2] {
                    return Err(Error::Tensor {
                        path: w.path().into(),
                        tensor: conv_name.key("weight"),
                        msg: format!("expected [C, {c}, 2, 2], found {:?}", conv_w.dims()),
                    });
                }
                let conv = (conv_w, w.take(&conv_name.key("bias"), &[out])?);
                c = out;
                Some((ln, conv))
            } else {
                None
            };
            let prefix = layout.blocks(s);
            let n = w.count_indexed(&prefix.dotted());
            if n == 0 {
                return Err(Error::Tensor {
                    path: w.path().into(),
                    tensor: layout.block(&prefix.pp(0)).0[0].key("weight"),
                    msg: "missing from the file (a ConvNeXt has four stages of blocks)".into(),
                });
            }
            let mut blocks = Vec::new();
            for b in 0..n {
                let ([dw, norm, fc1, fc2], gamma) = layout.block(&prefix.pp(b));
                blocks.push(Block {
                    dw: w.take_affine(&dw, &[c, 1, 7, 7], &[c])?,
                    norm: w.take_affine(&norm, &[c], &[c])?,
                    fc1: w.take_affine(&fc1, &[4 * c, c], &[4 * c])?,
                    fc2: w.take_affine(&fc2, &[c, 4 * c], &[c])?,
                    gamma: w.take(&gamma, &[c])?,
                });
            }
            dims.push(c);
            depths.push(n);
            stages.push(Stage { down, blocks });
        }
        let (head_ln, head_eps, classifier) = layout.head();
        let head_norm = w.take_affine(&head_ln, &[c], &[c])?;
        let classes = w.shape_of(&classifier.key("weight")).and_then(|s| s.first().copied()).unwrap_or(0);
        let classifier = classifier.dotted();
        w.ignore(|k| k.starts_with(&classifier));
        Ok(ConvNext {
            stem,
            stem_norm,
            stages,
            head_norm,
            head_eps,
            feature_dim: c,
            classes,
            variant: format!("convnext-{}", size_name(dims[0], depths[2])),
        })
    }

    fn block(b: &Block, x: &Tensor) -> Result<Tensor> {
        let y = depthwise_conv2d_act(x, &b.dw.0, Some(&b.dw.1), 1, [3; 4], Act::Identity)?;
        let y = y.permute((0, 2, 3, 1))?;
        let y = layer_norm(&y, &b.norm.0, &b.norm.1, EPS)?;
        let y = dense(&dense(&y, &b.fc1.0, Some(&b.fc1.1))?.gelu_erf()?, &b.fc2.0, Some(&b.fc2.1))?;
        let y = y.broadcast_mul(&b.gamma)?.permute((0, 3, 1, 2))?;
        Ok((x + y)?)
    }

    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let (t, gh, gw) = patchify(x, &self.stem.0, Some(&self.stem.1), 4)?;
        let mut x = layer_norm_2d(&tokens_to_map(&t, gh, gw)?, &self.stem_norm.0, &self.stem_norm.1, EPS)?;
        for s in &self.stages {
            if let Some((ln, conv)) = &s.down {
                let y = layer_norm_2d(&x, &ln.0, &ln.1, EPS)?;
                let (t, gh, gw) = patchify(&y, &conv.0, Some(&conv.1), 2)?;
                x = tokens_to_map(&t, gh, gw)?;
            }
            for b in &s.blocks {
                x = Self::block(b, &x)?;
            }
        }
        let pooled = x.mean((2, 3))?;
        layer_norm(&pooled, &self.head_norm.0, &self.head_norm.1, self.head_eps)
    }
}
