//! Training-mode batch norm over `[B, C, H, W]` as fused CPU ops: one pass for the batch
//! statistics, one for the output, and two for the backward pass. The composition of
//! candle ops it replaces (`norm::batch_norm_train`'s fallback) runs about ten
//! full-size elementwise ops each way, each allocating its result.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::act::Act;
use super::cpu::{cpu_fwd, init, par_uninit, slice, Input};
use super::isa;
use super::lane_sums::{self, Gate, Sum};

fn dims(l: &Layout, op: &str) -> candle_core::Result<(usize, usize, usize)> {
    match l.dims() {
        &[b, c, h, w] => Ok((b, c, h * w)),
        other => candle_core::bail!("{op}: expected [B,C,H,W], got {other:?}"),
    }
}

/// Per channel, over batch and space: `f(channel) -> (a, b)` computed from the planes of
/// that channel, as two f64 rows `[2, C]`.
fn per_channel<T: WithDType>(c: usize, f: impl Fn(usize) -> (f64, f64) + Sync + Send) -> Vec<T> {
    let pairs: Vec<(f64, f64)> = (0..c).into_par_iter().map(f).collect();
    let mut out = vec![T::zero(); 2 * c];
    for (ch, (a, b)) in pairs.into_iter().enumerate() {
        out[ch] = T::from_f64(a);
        out[c + ch] = T::from_f64(b);
    }
    out
}

/// Channel planes of `x` `[B, C, HW]`: the `b`-th image's plane of channel `ch`.
fn plane<T>(x: &[T], c: usize, hw: usize, b: usize, ch: usize) -> &[T] {
    &x[(b * c + ch) * hw..(b * c + ch + 1) * hw]
}

/// `[2, C]`: the batch mean and biased variance of each channel (f64 accumulation).
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "batch-norm-stats"
    }

    cpu_fwd!("batch_norm"; s, l);
}

impl ChannelStats {
    fn fwd<T: WithDType>(&self, (s, l): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, c, hw) = dims(l, "batch_norm")?;
        let x = slice::<T>(s, l, "batch_norm")?;
        Ok((channel_stats(x, b, c, hw), Shape::from((2, c))))
    }
}

/// [`ChannelStats`] over `x` `[B, C, HW]`'s data: `[2, C]`, means then variances.
pub(crate) fn channel_stats<T: WithDType>(x: &[T], b: usize, c: usize, hw: usize) -> Vec<T> {
    let n = (b * hw) as f64;
    per_channel::<T>(c, |ch| {
        let sum: f64 = (0..b).map(|i| lane_sums::sum(plane(x, c, hw, i, ch), Sum::Plain)).sum();
        let mean = sum / n;
        let sq: f64 = (0..b).map(|i| lane_sums::sum(plane(x, c, hw, i, ch), Sum::Squares { mean })).sum();
        (mean, sq / n)
    })
}

/// `y = act((x − mean) · invstd · γ + β)` with the batch's statistics fixed in the op.
#[derive(Clone)]
pub(crate) struct BatchNormTrain {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    act: Act,
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    cpu_fwd!("batch_norm"; s1, l1, s2, l2, s3, l3);

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgamma, dbeta) = self.backward(x, gamma, beta, grad, x.track_op())?;
        Ok((dx, Some(dgamma), Some(dbeta)))
    }
}

impl BatchNormTrain {
    /// The gradients of `x` (only with `want_dx`), γ and β, from the gradient `grad` of
    /// the output. The activation's gate is judged again from `x` inside both passes
    /// (see [`Gates`]): the output is not read, and the gated gradient is never written.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        grad: &Tensor,
        want_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let grad = grad.contiguous()?;
        let gate = Gates::new(self, gamma, beta)?;
        let sums = grad.apply_op2_no_bwd(
            x,
            &GradSums {
                mean: self.mean.clone(),
                invstd: self.invstd.clone(),
                gate: gate.clone(),
            },
        )?;
        let (sum_dy, sum_dy_xhat) = (sums.get(0)?, sums.get(1)?);
        let dx = if want_dx {
            let s = sums.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            let op = GradInput {
                mean: self.mean.clone(),
                invstd: self.invstd.clone(),
                sum_dy: s[0].clone(),
                sum_dy_xhat: s[1].clone(),
                gate,
            };
            Some(grad.apply_op3_no_bwd(x, gamma, &op)?)
        } else {
            None
        };
        Ok((dx, sum_dy_xhat, sum_dy))
    }
}

/// Where the activation after the batch norm lets the gradient through, per channel,
/// judged from the batch norm's input `x`: at `x · scale + shift`, the value the forward
/// pass gave the activation (the same [`BatchNormTrain::affine`], the same two
/// operations in `T`), so exactly where it lets it through at the output. Both backward
/// passes read `x` anyway; gating there saves the pass that wrote the gated gradient,
/// and the read of the output.
#[derive(Clone)]
struct Gates {
    act: Act,
    scale: Vec<f64>,
    shift: Vec<f64>,
}

impl Gates {
    fn new(bn: &BatchNormTrain, gamma: &Tensor, beta: &Tensor) -> candle_core::Result<Self> {
        let f64s = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec1::<f64>();
        let (gamma, beta) = (f64s(gamma)?, f64s(beta)?);
        let (scale, shift) = gamma
            .iter()
            .zip(&beta)
            .enumerate()
            .map(|(ch, (&g, &b))| bn.affine::<f64>(ch, g, b))
            .unzip();
        Ok(Gates { act: bn.act, scale, shift })
    }

    /// Channel `ch`'s gate, its scale and shift in `T`.
    fn at<T: WithDType>(&self, ch: usize) -> Gate<T> {
        Gate {
            act: self.act,
            scale: T::from_f64(self.scale[ch]),
            shift: T::from_f64(self.shift[ch]),
        }
    }
}

impl BatchNormTrain {
    /// The op for a batch's per-channel mean and biased variance.
    pub(crate) fn new(mean: &[f64], var: &[f64], eps: f64, act: Act) -> Self {
        BatchNormTrain {
            mean: mean.to_vec(),
            invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
            act,
        }
    }

    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>, (s3, l3): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (_, c, hw) = dims(l1, "batch_norm")?;
        let (x, gamma, beta) = (
            slice::<T>(s1, l1, "batch_norm")?,
            slice::<T>(s2, l2, "batch_norm")?,
            slice::<T>(s3, l3, "batch_norm")?,
        );
        Ok((self.normalize(x, gamma, beta, c, hw)?, Shape::from(l1.dims())))
    }

    /// Channel `ch`'s `x ↦ x · scale + shift` (before the activation) for its `γ` and
    /// `β`: one function for the forward pass and the backward's [`Gate`], so the two
    /// see the same values.
    fn affine<T: WithDType>(&self, ch: usize, gamma: f64, beta: f64) -> (T, T) {
        let (m, is) = (self.mean[ch], self.invstd[ch]);
        (T::from_f64(is * gamma), T::from_f64(beta - m * is * gamma))
    }

    /// The forward pass over `x` `[B, C, HW]`'s data.
    pub(crate) fn normalize<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T], c: usize, hw: usize) -> candle_core::Result<Vec<T>> {
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch_norm: {c} channels but γ has {} and β {}", gamma.len(), beta.len())
        }
        // SAFETY: the first loop writes every element of the plane.
        let y = unsafe {
            par_uninit(x.len(), hw, |p, yp| {
                let ch = p % c;
                let (scale, shift) = self.affine::<T>(ch, gamma[ch].to_f64(), beta[ch].to_f64());
                let xp = &x[p * hw..p * hw + yp.len()];
                isa::run(|| {
                    for (o, &v) in yp.iter_mut().zip(xp) {
                        o.write(v * scale);
                    }
                });
                self.act.apply_row(init(yp), shift);
            })
        };
        Ok(y)
    }
}

/// `[2, C]`: Σ dy and Σ dy · x̂ per channel (the β and γ gradients), `dy` the gradient
/// through the [`Gates`].
struct GradSums {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    gate: Gates,
}

impl CustomOp2 for GradSums {
    fn name(&self) -> &'static str {
        "batch-norm-grad-sums"
    }

    cpu_fwd!("batch_norm grad"; s1, l1, s2, l2);
}

impl GradSums {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, c, hw) = dims(l1, "batch_norm grad")?;
        let (dy, x) = (slice::<T>(s1, l1, "batch_norm grad")?, slice::<T>(s2, l2, "batch_norm grad")?);
        let out = per_channel::<T>(c, |ch| {
            let (m, is, gate) = (self.mean[ch], self.invstd[ch], self.gate.at::<T>(ch));
            (0..b).fold((0.0, 0.0), |(sd, sdx), i| {
                let (a, b) = lane_sums::grad_sums(plane(dy, c, hw, i, ch), plane(x, c, hw, i, ch), gate, (m, is));
                (sd + a, sdx + b)
            })
        });
        Ok((out, Shape::from((2, c))))
    }
}

/// `dx = γ · invstd · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N)`, `dy` the gradient through the
/// [`Gates`].
struct GradInput {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    sum_dy: Vec<f64>,
    sum_dy_xhat: Vec<f64>,
    gate: Gates,
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "batch-norm-grad-input"
    }

    cpu_fwd!("batch_norm grad"; s1, l1, s2, l2, s3, l3);
}

impl GradInput {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>, (s3, l3): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (b, c, hw) = dims(l1, "batch_norm grad")?;
        let (dy, x, gamma) = (
            slice::<T>(s1, l1, "batch_norm grad")?,
            slice::<T>(s2, l2, "batch_norm grad")?,
            slice::<T>(s3, l3, "batch_norm grad")?,
        );
        let n = (b * hw) as f64;
        // SAFETY: the loop writes every element of the plane.
        let dx = unsafe {
            par_uninit(dy.len(), hw, |p, dp| {
                let ch = p % c;
                let (m, is) = (self.mean[ch], self.invstd[ch]);
                let k = gamma[ch].to_f64() * is;
                let (md, mdx) = (self.sum_dy[ch] / n, self.sum_dy_xhat[ch] / n);
                // dx = a·dy + b·x + c0, per channel.
                let a = T::from_f64(k);
                let bx = T::from_f64(-k * mdx * is);
                let c0 = T::from_f64(k * (mdx * is * m - md));
                let (gp, xp) = (&dy[p * hw..(p + 1) * hw], &x[p * hw..(p + 1) * hw]);
                let (abc, gate) = ((a, bx, c0), self.gate.at::<T>(ch));
                // An inlined closure, so that its loops are compiled inside `isa::run`'s
                // vector-path functions (one called from all three paths is otherwise
                // compiled once, for the baseline), matched on the activation inside so
                // that each loop is compiled for one.
                isa::run(
                    #[inline(always)]
                    || match self.gate.act {
                        Act::Identity => GradInput::plane::<T, { Act::Identity.code() }>(dp, (gp, xp), abc, gate),
                        Act::Relu => GradInput::plane::<T, { Act::Relu.code() }>(dp, (gp, xp), abc, gate),
                        Act::Relu6 => GradInput::plane::<T, { Act::Relu6.code() }>(dp, (gp, xp), abc, gate),
                    },
                )
            })
        };
        Ok((dx, Shape::from(l1.dims())))
    }
}

impl GradInput {
    /// One plane's `dx = a · dy + b · x + c`, compiled for the activation whose
    /// [`Act::code`] is `ACT`.
    #[inline(always)]
    fn plane<T: WithDType, const ACT: u8>(dx: &mut [MaybeUninit<T>], (g, x): (&[T], &[T]), (a, b, c): (T, T, T), gate: Gate<T>) {
        let gate = Gate { act: Act::of(ACT), ..gate };
        for ((d, &g), &v) in dx.iter_mut().zip(g).zip(x) {
            d.write(a * gate.apply(g, v) + b * v + c);
        }
    }
}

/// Training-mode batch norm on the CPU kernels, followed by `act`: the output and the
/// batch mean and biased variance per channel (`[C]` each, no gradient).
pub fn batch_norm_train_cpu(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    act: Act,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let x = x.contiguous()?;
    let stats = x.apply_op1_no_bwd(&ChannelStats)?;
    let rows = stats.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let op = BatchNormTrain::new(&rows[0], &rows[1], eps, act);
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}
