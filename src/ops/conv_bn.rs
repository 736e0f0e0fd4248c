//! A convolution and its training-mode batch norm (and activation) as one autograd
//! node on the CPU kernels. As two nodes, candle's backward hands the convolution's
//! output gradient over through its gradient store: a zero-filled tensor the size of
//! the layer's activation plus an add into it, on every layer. Here the batch norm's
//! backward feeds the convolution's directly. The same kernels run in the same order,
//! so the values are the ones the two nodes give.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Device, Layout, Shape, Tensor, WithDType};

use super::act::Act;
use super::batch_norm::{channel_stats, BatchNormTrain};
use super::conv_gemm::{convolution_grads, convolve, ConvSpec};
use super::cpu::{cpu_fwd, slice, Input};

/// The output of [`conv_bn_train_cpu`]: `y`, and the batch mean and biased variance per
/// channel (`[C]` each, no gradient) for the running statistics.
pub struct ConvBnOut {
    pub y: Tensor,
    pub mean: Tensor,
    pub var: Tensor,
}

/// What the forward pass leaves for the backward: the convolution's output (the batch
/// norm's input), the batch norm as applied, and its statistics `[2, C]`.
struct Saved {
    conv: Tensor,
    bn: BatchNormTrain,
    stats: Tensor,
}

struct ConvBnTrain {
    spec: ConvSpec,
    eps: f64,
    act: Act,
    saved: Arc<Mutex<Option<Saved>>>,
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "conv-bn-train"
    }

    cpu_fwd!("conv_bn"; s1, l1, s2, l2, s3, l3);

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        gamma_beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (conv, bn) = {
            let saved = self.saved.lock().expect("conv_bn: saved state poisoned");
            let s = saved
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("conv_bn: backward before forward".into()))?;
            (s.conv.clone(), s.bn.clone())
        };
        let layer = Layer {
            conv: &conv,
            bn: &bn,
            spec: self.spec,
        };
        let (gamma, beta) = (gamma_beta.get(0)?, gamma_beta.get(1)?);
        let (gx, gw, dgamma, dbeta) = layer.backward((x, x.track_op()), (w, w.track_op()), (&gamma, &beta), grad)?;
        let gamma_beta_grad = if gamma_beta.track_op() {
            Some(Tensor::stack(&[dgamma, dbeta], 0)?)
        } else {
            None
        };
        Ok((gx, gw, gamma_beta_grad))
    }
}

impl ConvBnTrain {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>, (s3, l3): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (x, w, gb) = (
            slice::<T>(s1, l1, "conv_bn")?,
            slice::<T>(s2, l2, "conv_bn")?,
            slice::<T>(s3, l3, "conv_bn")?,
        );
        let out = layer_forward((l1.dims(), x), (l2.dims(), w), self.spec, gb, self.eps, self.act)?;
        let o = out.dims[1];
        if l3.dims() != [2, o] {
            candle_core::bail!("conv_bn: γ and β {:?} for {o} output channels (want [2, {o}])", l3.dims())
        }
        let dims = out.dims.to_vec();
        let saved = Saved {
            conv: Tensor::from_vec(out.conv, dims.as_slice(), &Device::Cpu)?,
            bn: out.bn,
            stats: Tensor::from_vec(out.stats, (2, o), &Device::Cpu)?,
        };
        *self.saved.lock().expect("conv_bn: saved state poisoned") = Some(saved);
        Ok((out.y, Shape::from(dims)))
    }
}

/// One convolution and its training-mode batch norm (and activation), forward: what
/// [`layer_forward`] gives.
pub(super) struct LayerOut<T> {
    /// The convolution's output, the batch norm's input.
    pub conv: Vec<T>,
    pub bn: BatchNormTrain,
    /// `[2, O]`: the batch mean and biased variance per channel.
    pub stats: Vec<T>,
    pub y: Vec<T>,
    pub dims: [usize; 4],
}

/// `act(batch_norm(x ⊛ w))` over contiguous data, with `gb` γ then β (`2·O`); also the
/// state its backward needs. This node and the fused residual block both run it.
pub(super) fn layer_forward<T: WithDType>(
    (xs, x): (&[usize], &[T]),
    (ws, w): (&[usize], &[T]),
    spec: ConvSpec,
    gb: &[T],
    eps: f64,
    act: Act,
) -> candle_core::Result<LayerOut<T>> {
    let (conv, dims) = convolve(xs, ws, spec, x, w)?;
    let [b, o, ho, wo] = dims;
    if gb.len() != 2 * o {
        candle_core::bail!("conv_bn: {} values for γ and β of {o} output channels", gb.len())
    }
    let stats = channel_stats(&conv, b, o, ho * wo);
    let f64s = |v: &[T]| v.iter().map(|t| t.to_f64()).collect::<Vec<f64>>();
    let bn = BatchNormTrain::new(&f64s(&stats[..o]), &f64s(&stats[o..]), eps, act);
    let y = bn.normalize(&conv, &gb[..o], &gb[o..], o, ho * wo)?;
    Ok(LayerOut { conv, bn, stats, y, dims })
}

/// What a convolution + batch norm layer's backward reads: the convolution's output as
/// saved, the batch norm as applied, and the convolution's stride and padding.
pub(super) struct Layer<'a> {
    pub conv: &'a Tensor,
    pub bn: &'a BatchNormTrain,
    pub spec: ConvSpec,
}

/// `(dx, dw, dγ, dβ)`; `dx` and `dw` as the caller wants them.
pub(super) type LayerGrads = (Option<Tensor>, Option<Tensor>, Tensor, Tensor);

impl Layer<'_> {
    /// The gradients of the layer's input `x` (where `want_x`), weight `w` (where
    /// `want_w`), γ and β from the gradient `grad` of its output. The wants are the
    /// caller's: a fused op's inner tensors track nothing themselves.
    pub fn backward(
        &self,
        (x, want_x): (&Tensor, bool),
        (w, want_w): (&Tensor, bool),
        (gamma, beta): (&Tensor, &Tensor),
        grad: &Tensor,
    ) -> candle_core::Result<LayerGrads> {
        let (dconv, dgamma, dbeta) = self.bn.backward(self.conv, gamma, beta, grad, want_x || want_w)?;
        let (dx, dw) = match dconv {
            Some(d) => convolution_grads(x, w, self.spec, &d, want_x, want_w)?,
            None => (None, None),
        };
        Ok((dx, dw, dgamma, dbeta))
    }
}

/// `act(batch_norm(x ⊛ w))` in training mode (batch statistics), with γ and β, as one
/// node: `x` `[B, C, H, W]` and `w` `[O, C, KH, KW]` on the CPU, f32 or f64.
pub fn conv_bn_train_cpu(
    x: &Tensor,
    w: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    spec: ConvSpec,
    eps: f64,
    act: Act,
) -> candle_core::Result<ConvBnOut> {
    let saved = Arc::new(Mutex::new(None));
    let op = ConvBnTrain {
        spec,
        eps,
        act,
        saved: saved.clone(),
    };
    let gamma_beta = Tensor::stack(&[gamma, beta], 0)?;
    let y = x.contiguous()?.apply_op3(&w.contiguous()?, &gamma_beta, op)?;
    let stats = saved
        .lock()
        .expect("conv_bn: saved state poisoned")
        .as_ref()
        .map(|s| s.stats.clone())
        .ok_or_else(|| candle_core::Error::Msg("conv_bn: the forward pass left no statistics".into()))?;
    Ok(ConvBnOut {
        y,
        mean: stats.get(0)?,
        var: stats.get(1)?,
    })
}
