//! ResNets as timm and torchvision publish them (`resnet18`, `resnet34`: basic blocks;
//! `resnet50`, `resnet101`, `resnet152`: bottlenecks), read by their own key names.
//! candle-transformers' ResNet is not used: its stem max-pool has no correct backward,
//! and the prompt is trained through the stem. Batch norm is folded at load.

use candle_core::Tensor;

use super::layers::{conv_torch, max_pool};
use crate::models::prefix::Prefix;
use crate::models::weights::StrictWeights;
use crate::ops::act::Act;
use crate::ops::residual::add_act;
use crate::{Error, Result};

/// A convolution with its batch norm folded into a per-channel scale and shift.
struct ConvBn {
    w: Tensor,
    scale: Tensor,
    shift: Tensor,
    stride: usize,
    pad: usize,
}

impl ConvBn {
    fn load(w: &mut StrictWeights, conv: &Prefix, bn: &Prefix, cin: usize, stride: usize) -> Result<Self> {
        let name = conv.key("weight");
        let weight = w.take_any(&name)?;
        let d = weight.dims().to_vec();
        if d.len() != 4 || d[1] != cin || d[2] != d[3] {
            return Err(Error::Tensor {
                path: w.path().into(),
                tensor: name,
                msg: format!("expected [C, {cin}, K, K], found {d:?}"),
            });
        }
        let c = d[0];
        let (scale, shift) = w.take_batch_norm(bn, c, 1e-5)?;
        Ok(ConvBn {
            w: weight,
            scale,
            shift,
            stride,
            pad: d[2] / 2,
        })
    }

    fn out(&self) -> usize {
        self.w.dim(0).unwrap_or(0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = conv_torch(x, &self.w, None, self.stride, self.pad)?;
        Ok(y.broadcast_mul(&self.scale.reshape((1, (), 1, 1))?)?
            .broadcast_add(&self.shift.reshape((1, (), 1, 1))?)?)
    }
}

struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

pub struct ResNet {
    stem: ConvBn,
    blocks: Vec<Block>,
    pub feature_dim: usize,
    pub classes: usize,
    pub variant: String,
}

impl ResNet {
    pub fn load(w: &mut StrictWeights) -> Result<Self> {
        let stem = ConvBn::load(w, &"conv1".into(), &"bn1".into(), 3, 2)?;
        let bottleneck = w.contains("layer1.0.conv3.weight");
        let mut cin = stem.out();
        let mut blocks = Vec::new();
        let mut depths = Vec::new();
        for layer in 1..=4 {
            let prefix = Prefix::new(&format!("layer{layer}"));
            let n = w.count_indexed(&prefix.dotted());
            if n == 0 {
                return Err(Error::Tensor {
                    path: w.path().into(),
                    tensor: prefix.pp(0).pp("conv1").key("weight"),
                    msg: "missing from the file (a ResNet has layer1 to layer4)".into(),
                });
            }
            depths.push(n);
            for b in 0..n {
                let p = prefix.pp(b);
                let stride = if layer > 1 && b == 0 { 2 } else { 1 };
                let mut convs = Vec::new();
                if bottleneck {
                    convs.push(ConvBn::load(w, &p.pp("conv1"), &p.pp("bn1"), cin, 1)?);
                    let mid = convs[0].out();
                    convs.push(ConvBn::load(w, &p.pp("conv2"), &p.pp("bn2"), mid, stride)?);
                    convs.push(ConvBn::load(w, &p.pp("conv3"), &p.pp("bn3"), mid, 1)?);
                } else {
                    convs.push(ConvBn::load(w, &p.pp("conv1"), &p.pp("bn1"), cin, stride)?);
                    let mid = convs[0].out();
                    convs.push(ConvBn::load(w, &p.pp("conv2"), &p.pp("bn2"), mid, 1)?);
                }
                let cout = convs.last().map_or(0, |c| c.out());
                let downsample = if w.contains(&p.pp("downsample.0").key("weight")) {
                    Some(ConvBn::load(w, &p.pp("downsample.0"), &p.pp("downsample.1"), cin, stride)?)
                } else {
                    None
                };
                if downsample.is_none() && (cin != cout || stride != 1) {
                    return Err(Error::Tensor {
                        path: w.path().into(),
                        tensor: p.pp("downsample.0").key("weight"),
                        msg: format!("missing: the block goes from {cin} to {cout} channels at stride {stride}"),
                    });
                }
                blocks.push(Block { convs, downsample });
                cin = cout;
            }
        }
        let classes = w.shape_of("fc.weight").and_then(|s| s.first().copied()).unwrap_or(0);
        w.ignore(|k| k.starts_with("fc."));
        let depth: usize = depths.iter().sum::<usize>() * if bottleneck { 3 } else { 2 } + 2;
        Ok(ResNet {
            stem,
            blocks,
            feature_dim: cin,
            classes,
            variant: format!("resnet{depth}"),
        })
    }

    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        let mut x = max_pool(&x, 3, 2, 1, 1)?;
        for b in &self.blocks {
            let mut y = x.clone();
            for (i, c) in b.convs.iter().enumerate() {
                y = c.forward(&y)?;
                if i + 1 < b.convs.len() {
                    y = y.relu()?;
                }
            }
            let skip = match &b.downsample {
                Some(d) => d.forward(&x)?,
                None => x.clone(),
            };
            x = add_act(&y, &skip, Act::Relu)?;
        }
        Ok(x.mean((2, 3))?)
    }
}
