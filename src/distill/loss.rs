//! Losses, all on ops with verified gradients (generic `log_softmax`, never
//! `softmax_last_dim`).

use candle_core::{Tensor, D};
use candle_nn::ops::log_softmax;

use crate::config::AlignLoss;
use crate::Result;

/// Cross-entropy with optional label smoothing, mean over the batch.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?.mean_all()?;
    smoothed(nll, &logp, smoothing)
}

/// `nll` with label smoothing: `(1 − s)·nll + s·mean(−log p)` over the classes.
fn smoothed(nll: Tensor, logp: &Tensor, smoothing: f64) -> Result<Tensor> {
    if smoothing <= 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    Ok(((nll * (1.0 - smoothing))? + (uniform * smoothing)?)?)
}

/// Mixup cross-entropy: `λ·CE(y_a) + (1 − λ)·CE(y_b)` per row, mean over the batch,
/// with label smoothing as [`cross_entropy`]. `lambda` holds one weight per row.
pub fn mixup_cross_entropy(logits: &Tensor, y_a: &Tensor, y_b: &Tensor, lambda: &Tensor, smoothing: f64) -> Result<Tensor> {
    let logp = log_softmax(logits, D::Minus1)?;
    let pick = |y: &Tensor| -> Result<Tensor> { Ok(logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?) };
    let mixed = ((pick(y_a)? * lambda)? + (pick(y_b)? * lambda.affine(-1.0, 1.0)?)?)?;
    smoothed(mixed.neg()?.mean_all()?, &logp, smoothing)
}

/// Cross-entropy of `logits` for rows `rows` of `set`, whose labels are `y`: mixup
/// cross-entropy where the batch holds mixed views, the plain one otherwise.
pub fn set_cross_entropy(logits: &Tensor, y: &Tensor, set: &crate::data::ViewSet, rows: &[usize], smoothing: f64) -> Result<Tensor> {
    match set.mixing(rows)? {
        None => cross_entropy(logits, y, smoothing),
        Some((y_b, lambda)) => mixup_cross_entropy(logits, y, &y_b, &lambda, smoothing),
    }
}

/// Hinton distillation: `T² · KL(softmax(t/T) ‖ softmax(s/T))`, mean over the batch.
pub fn kd(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_q = log_softmax(&(student / temperature)?, D::Minus1)?;
    let log_p = log_softmax(&(teacher.detach() / temperature)?, D::Minus1)?;
    let kl = log_p.exp()?.mul(&(log_p - log_q)?)?.sum(D::Minus1)?.mean_all()?;
    Ok((kl * (temperature * temperature))?)
}

/// Proxy-space alignment `A(z_T, z_F)`: 1 − cosine similarity, or mean squared error.
pub fn align(student: &Tensor, teacher: &Tensor, kind: AlignLoss) -> Result<Tensor> {
    let teacher = teacher.detach();
    match kind {
        AlignLoss::Mse => Ok((student - teacher)?.sqr()?.sum(D::Minus1)?.mean_all()?),
        AlignLoss::Cosine => {
            let dot = (student * &teacher)?.sum(D::Minus1)?;
            let ns = (student.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
            let nt = (teacher.sqr()?.sum(D::Minus1)? + 1e-12)?.sqrt()?;
            Ok((1.0 - dot.div(&(ns * nt)?)?.mean_all()?)?)
        }
    }
}

/// Number of rows whose arg-max matches the label.
pub fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(D::Minus1)?;
    Ok(pred.eq(labels)?.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()? as usize)
}
