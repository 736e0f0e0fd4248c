//! Frozen-network layers for the foundation families, on ops whose input gradients are
//! exact (the prompt is trained through them): convolutions and pooling from
//! `crate::ops`, non-overlapping patch convolutions as one GEMM, and layer/group norm
//! composed from elementwise ops (candle's fused layer norm and `softmax_last_dim` give
//! no gradient; its max-pool has no correct backward: README "Exact gradients").

use candle_core::{Tensor, D};

use crate::ops::conv::{conv2d, pad4};
use crate::ops::pool::{pool2d, PoolKind, PoolSpec};
use crate::Result;

/// PyTorch `Conv2d(k, stride, padding=pad)`.
pub fn conv_torch(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, pad: usize) -> Result<Tensor> {
    Ok(conv2d(x, w, b, stride, pad4(pad))?)
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

/// Max-pooling `k × k` at `stride`, padding `pad_lo` before and `pad_hi` after each
/// spatial dimension (padding never wins, as in PyTorch).
pub fn max_pool(x: &Tensor, k: usize, stride: usize, pad_lo: usize, pad_hi: usize) -> Result<Tensor> {
    let spec = PoolSpec {
        kind: PoolKind::Max,
        k,
        stride,
        pad: [pad_lo, pad_hi, pad_lo, pad_hi],
    };
    Ok(pool2d(x, spec)?)
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
