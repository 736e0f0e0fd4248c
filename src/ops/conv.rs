//! Convolutions: the CPU kernels of [`super::conv_gemm`] where they apply, else (CUDA,
//! bf16, or the benchmark's before column) compositions of verified candle ops.

use candle_core::{Module, Tensor};

use super::act::Act;
use super::conv_gemm::{conv2d_cpu, ConvSpec};
use super::cpu::{add_channel_bias, bias_or_zeros, fast_path};

/// `x` `[B, C, H, W]` convolved with `w` `[O, C, K, K]` at `stride`, zero padding
/// `[top, bottom, left, right]`, plus an optional bias.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    conv2d_act(x, w, b, stride, pad, Act::Identity)
}

/// [`conv2d`] followed by `act`, fused into one pass on the CPU kernels.
pub fn conv2d_act(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: [usize; 4], act: Act) -> candle_core::Result<Tensor> {
    if fast_path(x) {
        return conv2d_cpu(x, w, &bias_or_zeros(b, w)?, ConvSpec { stride, pad }, act);
    }
    act.composed(&conv2d_composed(x, w, b, stride, pad)?)
}

fn conv2d_composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: [usize; 4]) -> candle_core::Result<Tensor> {
    let [top, bottom, left, right] = pad;
    let xp = x.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, left, right)?;
    let y = if stride <= 2 {
        conv_valid_taps(&xp, w, stride)?
    } else {
        xp.conv2d(w, 0, stride, 1, 1)?
    };
    add_channel_bias(y, b)
}

/// The same padding on all four sides.
pub fn pad4(p: usize) -> [usize; 4] {
    [p; 4]
}

/// TensorFlow "SAME" padding split for one spatial dimension (more on the bottom/right),
/// as the EfficientNet-Lite checkpoints were trained with.
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = size.div_ceil(stride);
    let total = ((out - 1) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// Dense convolution with TF "SAME" padding.
pub fn conv2d_same_tf(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    conv2d_same_tf_act(x, w, None, stride, Act::Identity)
}

/// [`conv2d_same_tf`] plus a bias and an activation, fused on the CPU.
pub fn conv2d_same_tf_act(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, act: Act) -> candle_core::Result<Tensor> {
    conv2d_act(x, w, b, stride, same_pad4(x, w.dim(2)?, stride)?, act)
}

/// TF "SAME" padding `[top, bottom, left, right]` of `x` `[B, C, H, W]` for a kernel.
pub fn same_pad4(x: &Tensor, kernel: usize, stride: usize) -> candle_core::Result<[usize; 4]> {
    let (_, _, h, w) = x.dims4()?;
    let (top, bottom) = same_padding(h, kernel, stride);
    let (left, right) = same_padding(w, kernel, stride);
    Ok([top, bottom, left, right])
}

/// 1×1 convolution: `w` is `[Cout, Cin]` (or `[Cout, Cin, 1, 1]`).
pub fn pointwise_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    pointwise_conv_act(x, w, bias, Act::Identity)
}

/// [`pointwise_conv`] followed by `act`, fused on the CPU.
pub fn pointwise_conv_act(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, act: Act) -> candle_core::Result<Tensor> {
    if fast_path(x) {
        let w4 = w.reshape((w.dim(0)?, (), 1, 1))?;
        return conv2d_act(x, &w4, bias, 1, [0; 4], act);
    }
    act.composed(&pointwise_matmul(x, w, bias)?)
}

/// 1×1 convolution as one batched matmul (candle's matmul backward is a GEMM; its
/// conv2d input gradient is a naive loop).
fn pointwise_matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (b, c, h, wd) = x.dims4()?;
    let w2 = w.flatten_from(1)?;
    let y = w2.broadcast_left(b)?.matmul(&x.reshape((b, c, h * wd))?)?;
    add_channel_bias(y.reshape((b, w2.dim(0)?, h, wd))?, bias)
}

/// K×K (K odd), stride 1, "same" zero padding (PyTorch's `padding=K//2`).
pub fn conv2d_im2col(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (_, cin, k, k2) = w.dims4()?;
    if cin != c || k != k2 || k % 2 == 0 {
        candle_core::bail!("conv2d_im2col: x {:?} vs w {:?}", x.dims(), w.dims())
    }
    conv2d(x, w, bias, 1, pad4(k / 2))
}

/// Every other row and column (positions 0, 2, 4, …) of `[B, C, H, W]`, from reshapes
/// and narrows so autograd differentiates it exactly.
pub fn subsample2(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let x = x.pad_with_zeros(2, 0, h % 2)?.pad_with_zeros(3, 0, w % 2)?;
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    x.reshape((b, c, h2, 2, w2, 2))?
        .narrow(3, 0, 1)?
        .narrow(5, 0, 1)?
        .reshape((b, c, h2, w2))
}

/// Valid (unpadded) convolution at stride 1 or 2 from K² shifted views and one matmul
/// (a strided one is the stride-1 result sampled at even positions): the composition
/// that runs where the CPU kernels do not.
fn conv_valid_taps(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (bsz, c, h, wd) = x.dims4()?;
    let (o, ci, k, k2) = w.dims4()?;
    if ci != c || k != k2 || h < k || wd < k {
        candle_core::bail!("conv: x {:?} vs w {:?}", x.dims(), w.dims())
    }
    let (ho, wo) = (h - k + 1, wd - k + 1);
    let y = if k == 1 {
        pointwise_matmul(x, w, None)?
    } else {
        let mut taps = Vec::with_capacity(k * k);
        for ky in 0..k {
            for kx in 0..k {
                taps.push(x.narrow(2, ky, ho)?.narrow(3, kx, wo)?);
            }
        }
        let cols = Tensor::cat(&taps, 1)?.reshape((bsz, k * k * c, ho * wo))?;
        let wm = w.permute((0, 2, 3, 1))?.reshape((o, k * k * c))?;
        wm.broadcast_left(bsz)?.matmul(&cols)?.reshape((bsz, o, ho, wo))?
    };
    if stride == 2 {
        subsample2(&y)
    } else {
        Ok(y)
    }
}

/// A plain linear layer `y = x Wᵀ + b` on `[B, D]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    candle_nn::Linear::new(w.clone(), b.cloned()).forward(x)
}
