//! ConvNeXt as timm publishes it (`convnext_{atto..large}`): a 4×4 patchify stem,
//! four stages of depthwise-7×7 / layer-norm / MLP blocks with layer scale, 2×2
//! patchify downsampling, global average pooling and the head's layer norm. Read by its
//! own key names; built on verified ops (the fused layer norm gives no gradient).

use candle_core::Tensor;

use super::layers::{dense, layer_norm, layer_norm_2d, patchify, tokens_to_map};
use crate::models::weights::StrictWeights;
use crate::ops::depthwise_conv2d;
use crate::{Error, Result};

const EPS: f64 = 1e-6;

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
    pub feature_dim: usize,
    pub classes: usize,
    pub variant: String,
}

fn pair(w: &mut StrictWeights, name: &str, sw: &[usize], sb: &[usize]) -> Result<(Tensor, Tensor)> {
    Ok((w.take(&format!("{name}.weight"), sw)?, w.take(&format!("{name}.bias"), sb)?))
}

impl ConvNext {
    pub fn load(w: &mut StrictWeights) -> Result<Self> {
        let stem_w = w.take_any("stem.0.weight")?;
        if stem_w.rank() != 4 || stem_w.dim(1)? != 3 || stem_w.dim(2)? != 4 || stem_w.dim(3)? != 4 {
            return Err(Error::Tensor {
                path: w.path().into(),
                tensor: "stem.0.weight".into(),
                msg: format!("expected [C, 3, 4, 4], found {:?}", stem_w.dims()),
            });
        }
        let mut c = stem_w.dim(0)?;
        let stem = (stem_w, w.take("stem.0.bias", &[c])?);
        let stem_norm = pair(w, "stem.1", &[c], &[c])?;
        let mut stages = Vec::new();
        let (mut dims, mut depths) = (Vec::new(), Vec::new());
        for s in 0..4 {
            let down = if s > 0 {
                let ln = pair(w, &format!("stages.{s}.downsample.0"), &[c], &[c])?;
                let conv_w = w.take_any(&format!("stages.{s}.downsample.1.weight"))?;
                let out = conv_w.dim(0)?;
                if conv_w.dims() != [out, c, 2, 2] {
                    return Err(Error::Tensor {
                        path: w.path().into(),
                        tensor: format!("stages.{s}.downsample.1.weight"),
                        msg: format!("expected [C, {c}, 2, 2], found {:?}", conv_w.dims()),
                    });
                }
                let conv = (conv_w, w.take(&format!("stages.{s}.downsample.1.bias"), &[out])?);
                c = out;
                Some((ln, conv))
            } else {
                None
            };
            let prefix = format!("stages.{s}.blocks.");
            let n = w
                .names()
                .filter_map(|k| k.strip_prefix(&prefix)?.split('.').next()?.parse::<usize>().ok())
                .max()
                .map_or(0, |m| m + 1);
            if n == 0 {
                return Err(Error::Tensor {
                    path: w.path().into(),
                    tensor: format!("{prefix}0.conv_dw.weight"),
                    msg: "missing from the file (a ConvNeXt has four stages of blocks)".into(),
                });
            }
            let mut blocks = Vec::new();
            for b in 0..n {
                let p = format!("{prefix}{b}");
                let dw = pair(w, &format!("{p}.conv_dw"), &[c, 1, 7, 7], &[c])?;
                let norm = pair(w, &format!("{p}.norm"), &[c], &[c])?;
                let fc1 = pair(w, &format!("{p}.mlp.fc1"), &[4 * c, c], &[4 * c])?;
                let fc2 = pair(w, &format!("{p}.mlp.fc2"), &[c, 4 * c], &[c])?;
                let gamma = w.take(&format!("{p}.gamma"), &[c])?;
                blocks.push(Block { dw, norm, fc1, fc2, gamma });
            }
            dims.push(c);
            depths.push(n);
            stages.push(Stage { down, blocks });
        }
        let head_norm = pair(w, "head.norm", &[c], &[c])?;
        let classes = w.shape_of("head.fc.weight").and_then(|s| s.first().copied()).unwrap_or(0);
        w.ignore(|k| k.starts_with("head.fc."));
        let size = match (dims[0], depths[2]) {
            (40, _) => "atto",
            (48, _) => "femto",
            (64, _) => "pico",
            (80, _) => "nano",
            (96, 9) => "tiny",
            (96, _) => "small",
            (128, _) => "base",
            (192, _) => "large",
            _ => "custom",
        };
        Ok(ConvNext {
            stem,
            stem_norm,
            stages,
            head_norm,
            feature_dim: c,
            classes,
            variant: format!("convnext-{size}"),
        })
    }

    fn block(b: &Block, x: &Tensor) -> Result<Tensor> {
        let xp = x.pad_with_zeros(2, 3, 3)?.pad_with_zeros(3, 3, 3)?;
        let y = depthwise_conv2d(&xp, &b.dw.0, 1)?.broadcast_add(&b.dw.1.reshape((1, (), 1, 1))?)?;
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
        layer_norm(&pooled, &self.head_norm.0, &self.head_norm.1, EPS)
    }
}
