//! Normalisations composed from ops whose gradients are correct (the fused candle
//! `layer_norm`/`rms_norm` give none: README "Exact gradients").

use candle_core::{Tensor, D};

use super::act::Act;
use super::batch_norm::batch_norm_train_cpu;
use super::cpu::fast_path;

/// Batch norm in training mode over `[B, C, H, W]`: returns the output and the batch
/// mean and (biased) variance per channel, for the running statistics.
pub fn batch_norm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_act(x, gamma, beta, eps, Act::Identity)
}

/// [`batch_norm_train`] followed by `act`, fused into the normalisation pass on the CPU.
pub fn batch_norm_train_act(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    if fast_path(x) {
        return batch_norm_train_cpu(x, gamma, beta, eps, act);
    }
    let (y, mean, var) = batch_norm_train_composed(x, gamma, beta, eps)?;
    Ok((act.composed(&y)?, mean, var))
}

fn batch_norm_train_composed(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let xhat = centered.broadcast_div(&(var.clone() + eps)?.sqrt()?)?;
    let y = xhat
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    Ok((y, mean.flatten_all()?, var.flatten_all()?))
}

/// Batch norm in evaluation mode (running statistics).
pub fn batch_norm_eval(x: &Tensor, gamma: &Tensor, beta: &Tensor, mean: &Tensor, var: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let (scale, shift) = fold_batch_norm(gamma, beta, mean, var, eps)?;
    x.broadcast_mul(&scale.reshape((1, (), 1, 1))?)?
        .broadcast_add(&shift.reshape((1, (), 1, 1))?)
}

/// `(scale, shift)` such that eval-mode batch norm is `x * scale + shift`.
pub fn fold_batch_norm(gamma: &Tensor, beta: &Tensor, mean: &Tensor, var: &Tensor, eps: f64) -> candle_core::Result<(Tensor, Tensor)> {
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let shift = beta.sub(&mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// Row-wise L2 normalisation of `[B, D]`.
pub fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = (x.sqr()?.sum_keepdim(D::Minus1)? + 1e-12)?.sqrt()?;
    x.broadcast_div(&norm)
}
