//! The small CNN target: four 3×3 conv + batch-norm (train mode) + ReLU layers with
//! 2×2 average pooling between them, global mean pooling at the end (~0.3M parameters).

use candle_core::{Tensor, Var};

use crate::ops::{conv::conv2d_im2col, norm};
use crate::params::Params;
use crate::Result;

const WIDTHS: [usize; 4] = [32, 64, 128, 192];
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

struct ConvBn {
    weight: Tensor,
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
    pool: bool,
}

pub struct SmallCnn {
    layers: Vec<ConvBn>,
}

impl SmallCnn {
    /// Registers its parameters under `prefix` (e.g. `target.backbone.`).
    pub fn new(p: &mut Params, prefix: &str, in_channels: usize) -> Result<Self> {
        let mut layers = Vec::new();
        let mut cin = in_channels;
        for (i, &cout) in WIDTHS.iter().enumerate() {
            let name = format!("{prefix}conv{i}");
            layers.push(ConvBn {
                weight: p.kaiming_normal(&format!("{name}.weight"), &[cout, cin, 3, 3], cin * 9)?,
                gamma: p.constant(&format!("{name}.bn.weight"), &[cout], 1.0)?,
                beta: p.constant(&format!("{name}.bn.bias"), &[cout], 0.0)?,
                running_mean: p.buffer(&format!("{name}.bn.running_mean"), &[cout], 0.0)?,
                running_var: p.buffer(&format!("{name}.bn.running_var"), &[cout], 1.0)?,
                pool: i + 1 < WIDTHS.len(),
            });
            cin = cout;
        }
        Ok(SmallCnn { layers })
    }

    /// Multiply-accumulates per image of side `side`.
    pub fn macs_at(&self, side: usize) -> u64 {
        let mut s = side as u64;
        let mut total = 0;
        for l in &self.layers {
            let (cout, cin) = (l.weight.dim(0).unwrap_or(0) as u64, l.weight.dim(1).unwrap_or(0) as u64);
            total += cout * cin * 9 * s * s;
            if l.pool {
                s /= 2;
            }
        }
        total
    }

    pub fn feature_dim(&self) -> usize {
        WIDTHS[WIDTHS.len() - 1]
    }

    /// Pooled features `[B, d_T]`. In training mode batch norm uses batch statistics and
    /// updates its running averages (PyTorch semantics: unbiased variance, momentum 0.1).
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            let y = conv2d_im2col(&x, &l.weight, None)?;
            let y = if train {
                let (y, mean, var) = norm::batch_norm_train(&y, &l.gamma, &l.beta, BN_EPS)?;
                let n = (y.dim(0)? * y.dim(2)? * y.dim(3)?) as f64;
                let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
                let rm = ((l.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mean.detach() * BN_MOMENTUM)?)?;
                let rv = ((l.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?;
                l.running_mean.set(&rm)?;
                l.running_var.set(&rv)?;
                y
            } else {
                norm::batch_norm_eval(&y, &l.gamma, &l.beta, l.running_mean.as_tensor(), l.running_var.as_tensor(), BN_EPS)?
            };
            x = y.relu()?;
            if l.pool {
                x = x.avg_pool2d(2)?;
            }
        }
        Ok(x.mean((2, 3))?)
    }
}
