//! EfficientNet-Lite (no squeeze-excite, ReLU6, TF "SAME" padding) on verified ops,
//! loading the `_conv_stem` / `_blocks.N.*` / `_conv_head` / `_fc` key layout of the
//! bundled ImageNet checkpoint strictly.
//!
//! The network is frozen: weights are plain tensors (never `Var`s), batch norm is folded
//! into the convolutions from the running statistics at load time, so nothing can update
//! it and no weight gradient is ever computed.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{Device, Tensor};

use super::prefix::Prefix;
use super::weights::StrictWeights;
use crate::ops::{
    self,
    act::Act,
    conv::{conv2d_same_tf_act, pointwise_conv_act, same_pad4},
    depthwise::depthwise_conv2d_act,
};
use crate::{Error, Result};

/// TF's EfficientNet batch-norm epsilon.
const BN_EPS: f64 = 1e-3;

struct Block {
    expand: Option<(Tensor, Tensor)>,
    depthwise: Tensor,
    dw_shift: Tensor,
    kernel: usize,
    stride: usize,
    project: (Tensor, Tensor),
    residual: bool,
}

pub struct EfficientNetLite {
    stem: Tensor,
    stem_shift: Tensor,
    blocks: Vec<Block>,
    head: (Tensor, Tensor),
    classifier: (Tensor, Tensor),
    params: usize,
    variant: String,
    forwards: AtomicUsize,
}

/// A 1×1 conv with its batch norm folded in: (weight [Cout, Cin], bias [Cout]).
fn take_pointwise(w: &mut StrictWeights, conv: &Prefix, bn: &Prefix, cin: usize) -> Result<(Tensor, Tensor)> {
    let name = conv.key("weight");
    let weight = w.take_any(&name)?;
    let dims = weight.dims().to_vec();
    if dims.len() != 4 || dims[1] != cin || dims[2] != 1 || dims[3] != 1 {
        return Err(Error::Tensor {
            path: w.path().into(),
            tensor: name,
            msg: format!("expected shape [_, {cin}, 1, 1], found {dims:?}"),
        });
    }
    let (scale, shift) = w.take_batch_norm(bn, dims[0], BN_EPS)?;
    let folded = weight.flatten_from(1)?.broadcast_mul(&scale.unsqueeze(1)?)?;
    Ok((folded, shift))
}

impl EfficientNetLite {
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let mut w = StrictWeights::open(path, device)?;
        let total = w.float_elements();
        let stem = w.take_any("_conv_stem.weight")?;
        if stem.rank() != 4 || stem.dims()[1..] != [3, 3, 3] {
            return Err(Error::Tensor {
                path: path.into(),
                tensor: "_conv_stem.weight".into(),
                msg: format!("expected shape [_, 3, 3, 3], found {:?}", stem.dims()),
            });
        }
        let stem_ch = stem.dim(0)?;
        let (scale, stem_shift) = w.take_batch_norm(&"_bn0".into(), stem_ch, BN_EPS)?;
        let stem = stem.broadcast_mul(&scale.reshape((stem_ch, 1, 1, 1))?)?;

        let mut blocks = Vec::new();
        let mut cin = stem_ch;
        let mut stage = 0usize;
        let mut prev_out = None;
        let mut i = 0;
        let blocks_at = Prefix::new("_blocks");
        while w.contains(&blocks_at.pp(i).pp("_depthwise_conv").key("weight")) {
            let p = blocks_at.pp(i);
            let expand = if w.contains(&p.pp("_expand_conv").key("weight")) {
                Some(take_pointwise(&mut w, &p.pp("_expand_conv"), &p.pp("_bn0"), cin)?)
            } else {
                None
            };
            let mid = match &expand {
                Some((e, _)) => e.dim(0)?,
                None => cin,
            };
            let dw_name = p.pp("_depthwise_conv").key("weight");
            let dw = w.take_any(&dw_name)?;
            let d = dw.dims().to_vec();
            if d.len() != 4 || d[0] != mid || d[1] != 1 || d[2] != d[3] {
                return Err(Error::Tensor {
                    path: path.into(),
                    tensor: dw_name,
                    msg: format!("expected shape [{mid}, 1, K, K], found {d:?}"),
                });
            }
            let (dw_scale, dw_shift) = w.take_batch_norm(&p.pp("_bn1"), mid, BN_EPS)?;
            let depthwise = dw.broadcast_mul(&dw_scale.reshape((mid, 1, 1, 1))?)?;
            let project = take_pointwise(&mut w, &p.pp("_project_conv"), &p.pp("_bn2"), mid)?;
            let cout = project.0.dim(0)?;
            // A new stage starts where the output width changes; EfficientNet's stages
            // 2, 3, 4 and 6 (1-based) open with stride 2.
            if prev_out.is_some_and(|o| o != cout) {
                stage += 1;
            }
            let stride = if prev_out != Some(cout) && matches!(stage, 1 | 2 | 3 | 5) {
                2
            } else {
                1
            };
            prev_out = Some(cout);
            blocks.push(Block {
                expand,
                depthwise,
                dw_shift,
                kernel: d[2],
                stride,
                project,
                residual: stride == 1 && cin == cout,
            });
            cin = cout;
            i += 1;
        }
        if blocks.is_empty() {
            return Err(Error::Tensor {
                path: path.into(),
                tensor: "_blocks.0._depthwise_conv.weight".into(),
                msg: "missing from the file (not an EfficientNet-Lite checkpoint?)".into(),
            });
        }
        let head = take_pointwise(&mut w, &"_conv_head".into(), &"_bn1".into(), cin)?;
        let feat = head.0.dim(0)?;
        let fc_w = w.take_any("_fc.weight")?;
        if fc_w.rank() != 2 || fc_w.dim(1)? != feat {
            return Err(Error::Tensor {
                path: path.into(),
                tensor: "_fc.weight".into(),
                msg: format!("expected shape [_, {feat}], found {:?}", fc_w.dims()),
            });
        }
        let fc_b = w.take("_fc.bias", &[fc_w.dim(0)?])?;
        w.finish()?;
        let variant = match blocks.len() {
            16 => "efficientnet-lite0",
            20 => "efficientnet-lite1",
            23 => "efficientnet-lite2",
            26 => "efficientnet-lite3",
            32 => "efficientnet-lite4",
            _ => "efficientnet-lite",
        };
        Ok(EfficientNetLite {
            stem,
            stem_shift,
            blocks,
            head,
            classifier: (fc_w, fc_b),
            params: total,
            variant: variant.into(),
            forwards: AtomicUsize::new(0),
        })
    }

    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Parameters in the checkpoint (batch-norm statistics included, counters excluded).
    pub fn param_count(&self) -> usize {
        self.params
    }

    pub fn feature_dim(&self) -> usize {
        self.head.1.dim(0).unwrap_or(0)
    }

    /// How many batches went through [`Self::features`]: stage 2 must not add to it.
    pub fn forward_calls(&self) -> usize {
        self.forwards.load(Ordering::Relaxed)
    }

    /// Pooled features `[B, d_F]` of a normalised `[B, 3, H, W]` input, in the input's
    /// dtype: a bf16 network takes f32 in and gives f32 back (gradients flow through the
    /// casts), so only the frozen network's arithmetic is in bf16.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        self.forwards.fetch_add(1, Ordering::Relaxed);
        let io = x.dtype();
        let x = x.to_dtype(self.stem.dtype())?;
        let mut x = conv2d_same_tf_act(&x, &self.stem, Some(&self.stem_shift), 2, Act::Relu6)?;
        for b in &self.blocks {
            let input = x.clone();
            if let Some((w, bias)) = &b.expand {
                x = pointwise_conv_act(&x, w, Some(bias), Act::Relu6)?;
            }
            let pad = same_pad4(&x, b.kernel, b.stride)?;
            x = depthwise_conv2d_act(&x, &b.depthwise, Some(&b.dw_shift), b.stride, pad, Act::Relu6)?;
            x = ops::pointwise_conv(&x, &b.project.0, Some(&b.project.1))?;
            if b.residual {
                x = (x + input)?;
            }
        }
        x = pointwise_conv_act(&x, &self.head.0, Some(&self.head.1), Act::Relu6)?;
        Ok(x.to_dtype(io)?.mean((2, 3))?)
    }

    /// ImageNet logits from pooled features (the checkpoint's own classifier).
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        Ok(ops::conv::linear(features, &self.classifier.0, Some(&self.classifier.1))?)
    }

    /// The same network with every tensor replaced by `f(tensor, is_weight, name)`;
    /// `is_weight` is false for the folded batch-norm shifts and biases.
    fn map_tensors(&self, variant: String, mut f: impl FnMut(&Tensor, bool, &str) -> Result<Tensor>) -> Result<Self> {
        let mut blocks = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            blocks.push(Block {
                expand: match &b.expand {
                    Some((w, bias)) => Some((f(w, true, &format!("e{i}"))?, f(bias, false, "")?)),
                    None => None,
                },
                depthwise: f(&b.depthwise, true, &format!("d{i}"))?,
                dw_shift: f(&b.dw_shift, false, "")?,
                kernel: b.kernel,
                stride: b.stride,
                project: (f(&b.project.0, true, &format!("p{i}"))?, f(&b.project.1, false, "")?),
                residual: b.residual,
            });
        }
        Ok(EfficientNetLite {
            stem: f(&self.stem, true, "stem")?,
            stem_shift: f(&self.stem_shift, false, "")?,
            blocks,
            head: (f(&self.head.0, true, "head")?, f(&self.head.1, false, "")?),
            classifier: (f(&self.classifier.0, true, "fc")?, f(&self.classifier.1, false, "")?),
            params: self.params,
            variant,
            forwards: AtomicUsize::new(0),
        })
    }

    /// The same network with every weight cast to `dtype` (f64 for gradient checks).
    pub fn to_dtype(&self, dtype: candle_core::DType) -> Result<Self> {
        self.map_tensors(self.variant.clone(), |t, _, _| Ok(t.to_dtype(dtype)?))
    }

    /// A copy with the same architecture but weights re-drawn at random (He-normal,
    /// batch norm reset): the "untrained" control for the pretrained-ness test.
    pub fn randomized(&self, seed: u64) -> Result<Self> {
        let mut p = crate::params::Params::new(self.stem.device(), seed);
        self.map_tensors(format!("{} (random init)", self.variant), |t, is_weight, name| {
            if !is_weight {
                return Ok(t.zeros_like()?);
            }
            let fan_in: usize = t.dims()[1..].iter().product();
            Ok(p.kaiming_normal(name, t.dims(), fan_in.max(1))?.detach())
        })
    }
}
