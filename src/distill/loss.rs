//! Losses, all on ops with verified gradients (generic `log_softmax`, never
//! `softmax_last_dim`).

use candle_core::{Tensor, D};
use candle_nn::ops::log_softmax;

use crate::config::{AlignLoss, LossWeights};
use crate::data::ViewSet;
use crate::Result;

/// A step's loss and its weighted terms' unweighted values, as reported per step.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossParts {
    pub total: f64,
    pub align: f64,
    pub kd: f64,
    pub ce: f64,
}

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
pub fn set_cross_entropy(logits: &Tensor, y: &Tensor, set: &ViewSet, rows: &[usize], smoothing: f64) -> Result<Tensor> {
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

/// A stage's loss weights `progress` of the way through it: moving linearly from the
/// previous stage's where the stage ramps, its own otherwise.
pub fn ramped(from: LossWeights, to: LossWeights, ramp: bool, progress: f64) -> LossWeights {
    if !ramp {
        return to;
    }
    let t = progress;
    LossWeights {
        align: from.align + (to.align - from.align) * t,
        kd: from.kd + (to.kd - from.kd) * t,
        ce: from.ce + (to.ce - from.ce) * t,
    }
}

/// How a target's stage weighs its terms: proxy alignment (only against a proxy
/// teacher), softened-logit KL at `temperature`, and cross-entropy on labelled rows.
#[derive(Debug, Clone, Copy)]
pub struct TargetLoss {
    pub weights: LossWeights,
    /// `None` where the teacher has no proxy space (the `kd` baseline).
    pub align: Option<AlignLoss>,
    pub temperature: f64,
    pub smoothing: f64,
}

/// The cross-entropy part of a batch: the labelled rows' logits, their labels, and
/// which rows of `set` they are (for mixup).
pub struct Labelled<'a> {
    pub logits: &'a Tensor,
    pub labels: &'a Tensor,
    pub set: &'a ViewSet,
    pub rows: &'a [usize],
}

impl TargetLoss {
    /// The weighted sum for one batch: the target's proxy embedding `z` and `logits`,
    /// the cached teacher outputs `(z_f, logits_f)` for the same rows, and the labelled
    /// rows (`None` when the batch has none). Terms of zero weight are not computed.
    pub fn batch(
        &self,
        z: &Tensor,
        logits: &Tensor,
        teacher: Option<(&Tensor, &Tensor)>,
        labelled: Option<Labelled>,
    ) -> Result<(Tensor, LossParts)> {
        let w = self.weights;
        let mut parts = LossParts::default();
        let mut total = Tensor::zeros((), candle_core::DType::F32, z.device())?;
        if let Some((z_f, logits_f)) = teacher {
            if let (true, Some(kind)) = (w.align > 0.0, self.align) {
                let a = align(z, z_f, kind)?;
                parts.align = a.to_scalar::<f32>()? as f64;
                total = (total + (a * w.align)?)?;
            }
            if w.kd > 0.0 {
                let k = kd(logits, logits_f, self.temperature)?;
                parts.kd = k.to_scalar::<f32>()? as f64;
                total = (total + (k * w.kd)?)?;
            }
        }
        if let (true, Some(l)) = (w.ce > 0.0, labelled) {
            let c = set_cross_entropy(l.logits, l.labels, l.set, l.rows, self.smoothing)?;
            parts.ce = c.to_scalar::<f32>()? as f64;
            total = (total + (c * w.ce)?)?;
        }
        parts.total = total.to_scalar::<f32>()? as f64;
        Ok((total, parts))
    }
}
