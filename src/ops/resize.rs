//! Bilinear resize as two matrix products `R_h · x · R_wᵀ`: exact, differentiable
//! (candle's `upsample_bilinear2d` has no backward) and fast.

use candle_core::{Device, Tensor};

/// The `[out, in]` interpolation matrix of PyTorch's bilinear resize with
/// `align_corners = false` (antialias off).
pub fn bilinear_matrix(input: usize, output: usize) -> Vec<f32> {
    let mut m = vec![0f32; output * input];
    let scale = input as f64 / output as f64;
    for o in 0..output {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let frac = (src - i0 as f64) as f32;
        m[o * input + i0] += 1.0 - frac;
        m[o * input + i1] += frac;
    }
    m
}

fn matrix(input: usize, output: usize, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::from_vec(bilinear_matrix(input, output), (output, input), device)
}

/// Resize `[B, C, H, W]` to `[B, C, oh, ow]`.
pub fn resize_bilinear(x: &Tensor, oh: usize, ow: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if (h, w) == (oh, ow) {
        return Ok(x.clone());
    }
    let rh = matrix(h, oh, x.device())?.to_dtype(x.dtype())?;
    let rw_t = matrix(w, ow, x.device())?.to_dtype(x.dtype())?.t()?;
    let planes = x.reshape((b * c, h, w))?;
    let y = rh.broadcast_left(b * c)?.matmul(&planes)?;
    let y = y.broadcast_matmul(&rw_t)?;
    y.reshape((b, c, oh, ow))
}
