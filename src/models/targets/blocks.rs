//! Layers shared by the target zoo, on the verified ops (`crate::ops`): every one has
//! a finite-difference gradient check in `tests/targets.rs`.

use candle_core::{Tensor, Var, D};

use crate::models::prefix::Prefix;
use crate::onnx::{Attr, ConvSpec, Graph};
use crate::ops::{
    act::Act,
    conv::{conv2d, pad4},
    conv_bn::conv_bn_train_cpu,
    conv_gemm::ConvSpec as KernelSpec,
    cpu::fast_path,
    depthwise::depthwise_conv2d_act,
    norm,
    residual_block::ConvBnParams,
};
use crate::params::Params;
use crate::Result;

pub(super) const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;
const LN_EPS: f64 = 1e-6;

/// Multiply-accumulates per image, summed while a model is built (the deployed model's
/// cost, whatever shortcut the CPU kernels take).
#[derive(Debug, Default, Clone, Copy)]
pub struct Macs(pub u64);

impl Macs {
    pub fn add(&mut self, n: usize) {
        self.0 += n as u64;
    }
}

/// Batch norm with running statistics (PyTorch semantics: unbiased running variance,
/// momentum 0.1; batch statistics while training).
pub struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm {
    pub fn new(p: &mut Params, name: impl Into<Prefix>, c: usize) -> Result<Self> {
        let name = name.into();
        Ok(BatchNorm {
            gamma: p.constant(&name.key("weight"), &[c], 1.0)?,
            beta: p.constant(&name.key("bias"), &[c], 0.0)?,
            running_mean: p.buffer(&name.key("running_mean"), &[c], 0.0)?,
            running_var: p.buffer(&name.key("running_var"), &[c], 1.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Act::Identity)
    }

    /// Batch norm followed by `act` (fused into one pass while training on the CPU).
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if !train {
            let y = norm::batch_norm_eval(
                x,
                &self.gamma,
                &self.beta,
                self.running_mean.as_tensor(),
                self.running_var.as_tensor(),
                BN_EPS,
            )?;
            return Ok(act.composed(&y)?);
        }
        let (y, mean, var) = norm::batch_norm_train_act(x, &self.gamma, &self.beta, BN_EPS, act)?;
        self.update_running(&mean, &var, x.dim(0)? * x.dim(2)? * x.dim(3)?)?;
        Ok(y)
    }

    /// Fold a training batch's statistics (biased variance over `n` values per
    /// channel) into the running ones.
    fn update_running(&self, mean: &Tensor, var: &Tensor, n: usize) -> Result<()> {
        let n = n as f64;
        let unbiased = (var.detach() * (n / (n - 1.0).max(1.0)))?;
        let rm = ((self.running_mean.as_tensor() * (1.0 - BN_MOMENTUM))? + (mean.detach() * BN_MOMENTUM)?)?;
        let rv = ((self.running_var.as_tensor() * (1.0 - BN_MOMENTUM))? + (unbiased * BN_MOMENTUM)?)?;
        self.running_mean.set(&rm)?;
        self.running_var.set(&rv)?;
        Ok(())
    }
}

impl BatchNorm {
    /// The evaluation-mode affine map `y = x·scale + shift` per channel.
    fn affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.gamma.div(&(self.running_var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let shift = (&self.beta - self.running_mean.as_tensor().mul(&scale)?)?;
        Ok((scale, shift))
    }
}

/// `act` as ONNX nodes after `x`.
pub fn emit_act(g: &mut Graph, x: &str, act: Act) -> String {
    match act {
        Act::Identity => x.to_string(),
        Act::Relu => g.node("Relu", &[x], vec![]),
        Act::Relu6 => g.clip(x, 0.0, 6.0),
    }
}

/// A K×K convolution (K odd, padding K/2 as PyTorch's `padding=K//2`), stride 1 or 2,
/// dense or depthwise, followed by batch norm.
pub struct ConvBn {
    name: Prefix,
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
    depthwise: bool,
}

/// The shape of a [`ConvBn`]'s convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub depthwise: bool,
}

impl Conv {
    pub fn dense(cin: usize, cout: usize, k: usize, stride: usize) -> Conv {
        Conv {
            cin,
            cout,
            k,
            stride,
            depthwise: false,
        }
    }

    pub fn depthwise(channels: usize, k: usize, stride: usize) -> Conv {
        Conv {
            cin: channels,
            cout: channels,
            k,
            stride,
            depthwise: true,
        }
    }
}

impl ConvBn {
    /// `side` is the input's spatial side, updated to the output's; `macs` accumulates.
    pub fn new(p: &mut Params, name: impl Into<Prefix>, conv: Conv, side: &mut usize, macs: &mut Macs) -> Result<Self> {
        let name = name.into();
        let Conv {
            cin,
            cout,
            k,
            stride,
            depthwise,
        } = conv;
        let (wshape, fan_in) = if depthwise {
            ([cout, 1, k, k], k * k)
        } else {
            ([cout, cin, k, k], cin * k * k)
        };
        *side = if stride == 2 { side.div_ceil(2) } else { *side };
        macs.add(wshape.iter().product::<usize>() * *side * *side);
        Ok(ConvBn {
            name: name.clone(),
            weight: p.kaiming_normal(&name.key("weight"), &wshape, fan_in)?,
            bn: BatchNorm::new(p, name.pp("bn"), cout)?,
            stride,
            depthwise,
        })
    }

    pub fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.weight.dim(2)?;
        Ok(if self.depthwise {
            depthwise_conv2d_act(x, &self.weight, None, self.stride, pad4(k / 2), Act::Identity)?
        } else {
            conv2d(x, &self.weight, None, self.stride, pad4(k / 2))?
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Act::Identity)
    }

    /// Convolution, batch norm, then `act`: while training on the CPU kernels, one
    /// fused node ([`conv_bn_train_cpu`]).
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        if train && !self.depthwise && fast_path(x) {
            let spec = KernelSpec {
                stride: self.stride,
                pad: pad4(self.weight.dim(2)? / 2),
            };
            let out = conv_bn_train_cpu(x, &self.weight, &self.bn.gamma, &self.bn.beta, spec, BN_EPS, act)?;
            self.bn
                .update_running(&out.mean, &out.var, out.y.dim(0)? * out.y.dim(2)? * out.y.dim(3)?)?;
            return Ok(out.y);
        }
        self.bn.forward_act(&self.conv(x)?, train, act)
    }

    /// The dense layer as the fused CPU kernels take it ([`crate::ops::residual_block`]);
    /// `None` for a depthwise one.
    pub fn fused_params(&self) -> Result<Option<ConvBnParams<'_>>> {
        if self.depthwise {
            return Ok(None);
        }
        Ok(Some(ConvBnParams {
            weight: &self.weight,
            gamma: &self.bn.gamma,
            beta: &self.bn.beta,
            spec: KernelSpec {
                stride: self.stride,
                pad: pad4(self.weight.dim(2)? / 2),
            },
        }))
    }

    /// Fold a training batch's mean and biased variance, computed by a fused kernel
    /// over `out`, this layer's output, into the running statistics.
    pub fn record_batch_stats(&self, mean: &Tensor, var: &Tensor, out: &Tensor) -> Result<()> {
        self.bn.update_running(mean, var, out.dim(0)? * out.dim(2)? * out.dim(3)?)
    }

    /// The evaluation-mode layer as one ONNX convolution, batch norm folded into its
    /// weight and bias, then `act`.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str, act: Act) -> Result<String> {
        let (scale, shift) = self.bn.affine()?;
        let w = self.weight.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let k = self.weight.dim(2)?;
        let group = if self.depthwise { self.weight.dim(0)? } else { 1 };
        let spec = ConvSpec {
            stride: self.stride,
            pad: k / 2,
            group,
        };
        let y = g.conv(&self.name.to_string(), x, &w, &shift, spec)?;
        Ok(emit_act(g, &y, act))
    }
}

/// Layer norm over the last dimension, composed from ops with correct gradients (the
/// fused candle op gives none: README "Exact gradients").
pub struct LayerNorm {
    name: Prefix,
    gamma: Tensor,
    beta: Tensor,
}

impl LayerNorm {
    pub fn new(p: &mut Params, name: impl Into<Prefix>, d: usize) -> Result<Self> {
        let name = name.into();
        Ok(LayerNorm {
            name: name.clone(),
            gamma: p.constant(&name.key("weight"), &[d], 1.0)?,
            beta: p.constant(&name.key("bias"), &[d], 0.0)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = centered.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
        Ok(xhat.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)?)
    }

    /// ONNX LayerNormalization over the last axis.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        let gamma = g.tensor(&self.name.key("weight"), &self.gamma)?;
        let beta = g.tensor(&self.name.key("bias"), &self.beta)?;
        Ok(g.node(
            "LayerNormalization",
            &[x, &gamma, &beta],
            vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(LN_EPS as f32))],
        ))
    }
}

/// Softmax over the last dimension from exp/sum (candle's `softmax_last_dim` has no
/// backward). The max is subtracted for range only, so it carries no gradient.
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// A linear layer on `[..., D_in]` (PyTorch default initialisation).
pub struct Dense {
    name: Prefix,
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    pub fn new(p: &mut Params, name: impl Into<Prefix>, din: usize, dout: usize) -> Result<Self> {
        let name = name.into();
        Ok(Dense {
            name: name.clone(),
            weight: p.uniform(&name.key("weight"), &[dout, din], din)?,
            bias: p.uniform(&name.key("bias"), &[dout], din)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        g.linear(&self.name.to_string(), x, &self.weight, &self.bias)
    }
}
