//! The small CNN target: four 3×3 conv + batch-norm (train mode) + ReLU layers with
//! 2×2 average pooling between them, global mean pooling at the end (~0.3M parameters).

use candle_core::Tensor;

use super::targets::blocks::{Conv, ConvBn, Macs};
use crate::models::prefix::Prefix;
use crate::onnx::{Attr, Graph};
use crate::ops::{act::Act, pool::avg_pool2d};
use crate::params::Params;
use crate::Result;

const WIDTHS: [usize; 4] = [32, 64, 128, 192];

pub struct SmallCnn {
    layers: Vec<ConvBn>,
    /// Multiply-accumulates per image at each conv layer, per input pixel of the image.
    macs_per_pixel: u64,
    /// The image side it is used at, where known (its cost depends on it).
    side: Option<usize>,
}

impl SmallCnn {
    /// Registers its parameters under `prefix` (e.g. `target.backbone.`).
    pub fn new(p: &mut Params, prefix: impl Into<Prefix>, in_channels: usize) -> Result<Self> {
        let prefix = &prefix.into();
        let mut layers = Vec::new();
        let mut cin = in_channels;
        let mut macs_per_pixel = 0;
        for (i, &cout) in WIDTHS.iter().enumerate() {
            // Cost at a 1×1 input, scaled by the area each layer sees (1, ¼, 1/16, …).
            let (mut side, mut macs) = (1, Macs::default());
            layers.push(ConvBn::new(
                p,
                prefix.pp(format_args!("conv{i}")),
                Conv::dense(cin, cout, 3, 1),
                &mut side,
                &mut macs,
            )?);
            macs_per_pixel += (macs.0 * 64) >> (2 * i);
            cin = cout;
        }
        Ok(SmallCnn {
            layers,
            macs_per_pixel,
            side: None,
        })
    }

    /// The same network, used at images of side `side`.
    pub fn at_side(self, side: usize) -> Self {
        SmallCnn { side: Some(side), ..self }
    }

    pub fn side(&self) -> Option<usize> {
        self.side
    }

    /// Multiply-accumulates per image of side `side` (a multiple of 8).
    pub fn macs_at(&self, side: usize) -> u64 {
        self.macs_per_pixel * (side * side) as u64 / 64
    }

    pub fn feature_dim(&self) -> usize {
        WIDTHS[WIDTHS.len() - 1]
    }

    /// Pooled features `[B, d_T]`. In training mode batch norm uses batch statistics and
    /// updates its running averages (PyTorch semantics: unbiased variance, momentum 0.1).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward_act(&x, train, Act::Relu)?;
            if i + 1 < self.layers.len() {
                x = avg_pool2d(&x, 2, 2, 0)?;
            }
        }
        Ok(x.mean((2, 3))?)
    }

    /// The evaluation-mode features as ONNX nodes after `x`.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let mut x = x.to_string();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.emit_onnx(g, &x, Act::Relu)?;
            if i + 1 < self.layers.len() {
                x = g.node(
                    "AveragePool",
                    &[&x],
                    vec![("kernel_shape", Attr::Ints(vec![2, 2])), ("strides", Attr::Ints(vec![2, 2]))],
                );
            }
        }
        Ok(g.global_mean(&x))
    }
}
