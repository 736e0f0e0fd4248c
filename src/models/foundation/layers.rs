//! Frozen-network layers for the foundation families, on ops whose input gradients are
//! exact (the prompt is trained through them): convolutions as im2col GEMMs (strided
//! ones sampled at even positions), non-overlapping patch convolutions as one GEMM,
//! max-pooling as a maximum over shifted views, and layer/group norm composed from
//! elementwise ops (candle's fused layer norm and `softmax_last_dim` give no gradient;
//! its max-pool has no correct backward: DESIGN.md §5).

use candle_core::{Tensor, D};

use crate::ops::conv::{conv_valid, subsample2};
use crate::Result;

/// PyTorch `Conv2d(k, stride, padding=pad)`.
pub fn conv_torch(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
    let x = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    Ok(conv_valid(&x, w, b, stride)?)
}

/// A convolution whose kernel equals its stride (`p`), as one GEMM over patches:
/// `[B, C, H, W]` → `[B, (H/p)·(W/p), O]` (rows and columns past a whole patch are
/// dropped, as PyTorch does).
pub fn patchify(x: &Tensor, w: &Tensor, b: Option<&Tensor>, p: usize) -> Result<(Tensor, usize, usize)> {
    let (bsz, c, h, wd) = x.dims4()?;
    let (gh, gw) = (h / p, wd / p);
    let x = x.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
    let patches = x
        .reshape((bsz, c, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((bsz, gh * gw, c * p * p))?;
    let y = patches.broadcast_matmul(&w.flatten_from(1)?.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    Ok((y, gh, gw))
}

/// `[B, N, D]` tokens of an `gh × gw` grid back to a `[B, D, gh, gw]` map.
pub fn tokens_to_map(t: &Tensor, gh: usize, gw: usize) -> Result<Tensor> {
    let (b, _, d) = t.dims3()?;
    Ok(t.reshape((b, gh, gw, d))?.permute((0, 3, 1, 2))?.contiguous()?)
}

/// Max-pooling `k × k`, stride 1 or 2, zero padding `pad` (callers pass post-ReLU
/// inputs, where zero padding gives PyTorch's result). The maximum over shifted views
/// sends the gradient to the maximum (split on exact ties).
pub fn max_pool(x: &Tensor, k: usize, stride: usize, pad_lo: usize, pad_hi: usize) -> Result<Tensor> {
    let x = x.pad_with_zeros(2, pad_lo, pad_hi)?.pad_with_zeros(3, pad_lo, pad_hi)?;
    let (_, _, h, w) = x.dims4()?;
    let (ho, wo) = (h - k + 1, w - k + 1);
    let mut m = x.narrow(2, 0, ho)?.narrow(3, 0, wo)?;
    for ky in 0..k {
        for kx in 0..k {
            if ky + kx > 0 {
                m = m.maximum(&x.narrow(2, ky, ho)?.narrow(3, kx, wo)?)?;
            }
        }
    }
    Ok(if stride == 2 { subsample2(&m)? } else { m })
}

/// Layer norm over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(xhat.broadcast_mul(w)?.broadcast_add(b)?)
}

/// Layer norm over the channels of `[B, C, H, W]` (ConvNeXt's `LayerNorm2d`).
pub fn layer_norm_2d(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let y = layer_norm(&x.permute((0, 2, 3, 1))?, w, b, eps)?;
    Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
}

/// Group norm of `[B, C, H, W]` in `groups` groups, per-channel affine.
pub fn group_norm(x: &Tensor, groups: usize, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let (bsz, c, h, wd) = x.dims4()?;
    let g = x.reshape((bsz, groups, (c / groups) * h * wd))?;
    let mean = g.mean_keepdim(D::Minus1)?;
    let centered = g.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centered.broadcast_div(&(var + eps)?.sqrt()?)?.reshape((bsz, c, h, wd))?;
    Ok(xhat
        .broadcast_mul(&w.reshape((1, c, 1, 1))?)?
        .broadcast_add(&b.reshape((1, c, 1, 1))?)?)
}

/// `x W^T + b` on `[..., D_in]`.
pub fn dense(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.broadcast_matmul(&w.t()?)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// CLIP's activation: `x · σ(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    // σ composed from exp: candle-nn's fused sigmoid is not on the verified list.
    let sig = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
    Ok((x * sig)?)
}
