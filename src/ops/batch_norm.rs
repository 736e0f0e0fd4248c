//! Training-mode batch norm over `[B, C, H, W]` as fused CPU ops: one pass for the batch
//! statistics, one for the output, and two for the backward pass. The composition of
//! candle ops it replaces (`norm::batch_norm_train`'s fallback) runs about ten
//! full-size elementwise ops each way, each allocating its result.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::act::Act;
use super::cpu::{cpu_fwd, init, par_uninit, slice, Input};
use super::isa;

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

/// Lanes of the per-plane sums: eight interleaved partial sums, added pairwise at the
/// end. One running sum is a chain of dependent f64 adds, bound by their latency (the
/// statistics were ~10% of a small CNN's step); eight independent chains fill a vector
/// register. The order depends only on the plane's length, never on the thread count
/// or the vector path, so every path gives the same bits.
const LANES: usize = 8;

/// `(Σ f(x).0, Σ f(x).1)` over one plane, in f64, in [`LANES`] interleaved sums.
#[inline(always)]
fn lane_sums<T: WithDType>(xs: &[T], f: impl Fn(f64) -> (f64, f64)) -> (f64, f64) {
    lane_sums2(xs, xs, |v, _| f(v))
}

/// [`lane_sums`] over two planes of one length, element by element.
#[inline(always)]
fn lane_sums2<T: WithDType>(xs: &[T], ys: &[T], f: impl Fn(f64, f64) -> (f64, f64)) -> (f64, f64) {
    let (mut a, mut b) = ([0f64; LANES], [0f64; LANES]);
    let (xc, yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        for l in 0..LANES {
            let (p, q) = f(x[l].to_f64(), y[l].to_f64());
            a[l] += p;
            b[l] += q;
        }
    }
    for (l, (x, y)) in xr.iter().zip(yr).enumerate() {
        let (p, q) = f(x.to_f64(), y.to_f64());
        a[l] += p;
        b[l] += q;
    }
    let fold = |s: [f64; LANES]| ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    (fold(a), fold(b))
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
        let sum: f64 = (0..b).map(|i| isa::run(|| lane_sums(plane(x, c, hw, i, ch), |v| (v, 0.0)).0)).sum();
        let mean = sum / n;
        let sq: f64 = (0..b)
            .map(|i| isa::run(|| lane_sums(plane(x, c, hw, i, ch), |v| ((v - mean).powi(2), 0.0)).0))
            .sum();
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
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dgamma, dbeta) = self.backward(x, gamma, res, grad, x.track_op())?;
        Ok((dx, Some(dgamma), Some(dbeta)))
    }
}

impl BatchNormTrain {
    /// The gradients of `x` (only with `want_dx`), γ and β, from the output `res` and
    /// its gradient `grad`.
    pub(crate) fn backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        res: &Tensor,
        grad: &Tensor,
        want_dx: bool,
    ) -> candle_core::Result<(Option<Tensor>, Tensor, Tensor)> {
        let grad = self.act.backward(grad, res)?.contiguous()?;
        let sums = grad.apply_op2_no_bwd(
            x,
            &GradSums {
                mean: self.mean.clone(),
                invstd: self.invstd.clone(),
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
            };
            Some(grad.apply_op3_no_bwd(x, gamma, &op)?)
        } else {
            None
        };
        Ok((dx, sum_dy_xhat, sum_dy))
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

    /// The forward pass over `x` `[B, C, HW]`'s data.
    pub(crate) fn normalize<T: WithDType>(&self, x: &[T], gamma: &[T], beta: &[T], c: usize, hw: usize) -> candle_core::Result<Vec<T>> {
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("batch_norm: {c} channels but γ has {} and β {}", gamma.len(), beta.len())
        }
        // SAFETY: the first loop writes every element of the plane.
        let y = unsafe {
            par_uninit(x.len(), hw, |p, yp| {
                let ch = p % c;
                let scale = T::from_f64(self.invstd[ch] * gamma[ch].to_f64());
                let shift = T::from_f64(beta[ch].to_f64() - self.mean[ch] * self.invstd[ch] * gamma[ch].to_f64());
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

/// `[2, C]`: Σ dy and Σ dy · x̂ per channel (the β and γ gradients).
struct GradSums {
    mean: Vec<f64>,
    invstd: Vec<f64>,
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
            let (m, is) = (self.mean[ch], self.invstd[ch]);
            let (mut sd, mut sdx) = (0.0, 0.0);
            for i in 0..b {
                let (g, v) = (plane(dy, c, hw, i, ch), plane(x, c, hw, i, ch));
                let (a, b) = isa::run(|| lane_sums2(g, v, |g, v| (g, g * (v - m) * is)));
                sd += a;
                sdx += b;
            }
            (sd, sdx)
        });
        Ok((out, Shape::from((2, c))))
    }
}

/// `dx = γ · invstd · (dy − Σdy/N − x̂ · Σ(dy·x̂)/N)`.
struct GradInput {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    sum_dy: Vec<f64>,
    sum_dy_xhat: Vec<f64>,
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
                isa::run(|| {
                    for ((d, &g), &v) in dp.iter_mut().zip(gp).zip(xp) {
                        d.write(a * g + bx * v + c0);
                    }
                });
            })
        };
        Ok((dx, Shape::from(l1.dims())))
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
