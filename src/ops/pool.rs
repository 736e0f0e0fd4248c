//! Max and average pooling over `[B, C, H, W]` for any kernel, stride and padding, with
//! backward passes that are right (candle 0.11's max-pool backward spreads 1/4 to the
//! maximum, and neither pool has a backward when kernel ≠ stride: README "Exact gradients").
//!
//! Semantics are PyTorch's (`ceil_mode=False`): max-pool padding never wins (−∞), the
//! gradient goes to the first maximum of each window; average pooling divides by K²
//! (`count_include_pad=True`).

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu::{cpu_fwd, fast_path, slice, Input};
use super::isa;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Kernel `k × k`, `stride`, zero padding `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSpec {
    pub kind: PoolKind,
    pub k: usize,
    pub stride: usize,
    pub pad: [usize; 4],
}

#[derive(Clone, Copy, Debug)]
struct Geometry {
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

impl PoolSpec {
    fn geometry(&self, dims: &[usize]) -> candle_core::Result<(usize, Geometry)> {
        let &[b, c, h, w] = dims else {
            candle_core::bail!("pool: expected [B,C,H,W], got {dims:?}")
        };
        let [t, bo, l, r] = self.pad;
        if self.k == 0 || self.stride == 0 || h + t + bo < self.k || w + l + r < self.k || t >= self.k || l >= self.k {
            candle_core::bail!("pool: {self:?} does not fit an input of {dims:?}")
        }
        let ho = (h + t + bo - self.k) / self.stride + 1;
        let wo = (w + l + r - self.k) / self.stride + 1;
        Ok((b * c, Geometry { h, w, ho, wo }))
    }

    /// The input rows (or columns) of output row `o` inside the image: `lo..hi`.
    fn window(&self, o: usize, pad_lo: usize, size: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(pad_lo);
        let hi = (start + self.k).saturating_sub(pad_lo).min(size);
        (lo, hi)
    }

    /// Visit each output pixel of one plane with its window `(y0..y1, x0..x1)`.
    fn each_window(&self, g: &Geometry, mut f: impl FnMut(usize, (usize, usize), (usize, usize))) {
        for oy in 0..g.ho {
            let ys = self.window(oy, self.pad[0], g.h);
            for ox in 0..g.wo {
                f(oy * g.wo + ox, ys, self.window(ox, self.pad[2], g.w));
            }
        }
    }

    /// A max-pool of 2×2 windows at stride 2 without padding (most CNNs' only pooling):
    /// it takes [`max_pairs`], with no per-window bounds.
    fn is_max_2x2(&self) -> bool {
        self.kind == PoolKind::Max && self.k == 2 && self.stride == 2 && self.pad == [0; 4]
    }

    /// The flat index of the first maximum of a window (`None` if it is all padding).
    fn argmax<T: WithDType>(xp: &[T], w: usize, (y0, y1): (usize, usize), (x0, x1): (usize, usize)) -> Option<usize> {
        let mut best: Option<(usize, T)> = None;
        for y in y0..y1 {
            for x in x0..x1 {
                let v = xp[y * w + x];
                if best.is_none_or(|(_, b)| v > b) {
                    best = Some((y * w + x, v));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    fn fwd<T: WithDType>(&self, (s, l): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (planes, g) = self.geometry(l.dims())?;
        let x = slice::<T>(s, l, "pool")?;
        let area = T::from_f64((self.k * self.k) as f64);
        let mut y = vec![T::zero(); planes * g.ho * g.wo];
        y.par_chunks_mut(g.ho * g.wo).enumerate().for_each(|(plane, yp)| {
            isa::run(|| {
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                if self.is_max_2x2() {
                    max_pairs(xp, &g, |o, i| yp[o] = xp[i]);
                    return;
                }
                self.each_window(&g, |o, ys, xs| {
                    yp[o] = match self.kind {
                        PoolKind::Max => Self::argmax(xp, g.w, ys, xs).map_or(T::zero(), |i| xp[i]),
                        PoolKind::Avg => {
                            let mut acc = T::zero();
                            for y in ys.0..ys.1 {
                                for v in &xp[y * g.w + xs.0..y * g.w + xs.1] {
                                    acc += *v;
                                }
                            }
                            acc / area
                        }
                    };
                });
            })
        });
        let d = l.dims();
        Ok((y, Shape::from((d[0], d[1], g.ho, g.wo))))
    }
}

impl CustomOp1 for PoolSpec {
    fn name(&self) -> &'static str {
        "pool2d"
    }

    cpu_fwd!("pool2d"; s, l);

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &PoolGrad(*self))?))
    }
}

/// The input gradient of a pooling: `(x, output gradient)` → `[B, C, H, W]`.
struct PoolGrad(PoolSpec);

impl candle_core::CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "pool2d-grad"
    }

    cpu_fwd!("pool2d grad"; s1, l1, s2, l2);
}

impl PoolGrad {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let spec = &self.0;
        let (planes, g) = spec.geometry(l1.dims())?;
        if l2.dims()[..2] != l1.dims()[..2] || l2.dims()[2..] != [g.ho, g.wo] {
            candle_core::bail!("pool grad: output gradient {:?} does not match input {:?}", l2.dims(), l1.dims())
        }
        let (x, gy) = (slice::<T>(s1, l1, "pool grad")?, slice::<T>(s2, l2, "pool grad")?);
        let area = T::from_f64((spec.k * spec.k) as f64);
        let mut dx = vec![T::zero(); planes * g.h * g.w];
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane, dp)| {
            isa::run(|| {
                let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let gp = &gy[plane * g.ho * g.wo..(plane + 1) * g.ho * g.wo];
                if spec.is_max_2x2() {
                    max_pairs(xp, &g, |o, i| dp[i] += gp[o]);
                    return;
                }
                spec.each_window(&g, |o, ys, xs| match spec.kind {
                    PoolKind::Max => {
                        if let Some(i) = PoolSpec::argmax(xp, g.w, ys, xs) {
                            dp[i] += gp[o];
                        }
                    }
                    PoolKind::Avg => {
                        let share = gp[o] / area;
                        for y in ys.0..ys.1 {
                            for d in &mut dp[y * g.w + xs.0..y * g.w + xs.1] {
                                *d += share;
                            }
                        }
                    }
                });
            })
        });
        Ok((dx, Shape::from(l1.dims())))
    }
}

/// `at(output index, flat input index of its window's first maximum)` for every 2×2,
/// stride-2 window of one plane, in the order and with the comparisons of
/// [`PoolSpec::argmax`] (so the same maximum wins), read two rows at a time.
#[inline(always)]
fn max_pairs<T: WithDType>(xp: &[T], g: &Geometry, mut at: impl FnMut(usize, usize)) {
    for oy in 0..g.ho {
        let (r0, r1) = (2 * oy * g.w, (2 * oy + 1) * g.w);
        let (top, bottom) = (&xp[r0..r0 + 2 * g.wo], &xp[r1..r1 + 2 * g.wo]);
        for (ox, (t, b)) in top.chunks_exact(2).zip(bottom.chunks_exact(2)).enumerate() {
            let mut best = (r0 + 2 * ox, t[0]);
            for (i, v) in [(r0 + 2 * ox + 1, t[1]), (r1 + 2 * ox, b[0]), (r1 + 2 * ox + 1, b[1])] {
                if v > best.1 {
                    best = (i, v);
                }
            }
            at(oy * g.wo + ox, best.0);
        }
    }
}

/// Rows `start, start + s, …` (`n` of them) of `x` along `dim`, from narrows and
/// reshapes (autograd differentiates it exactly, on any device).
pub(crate) fn strided(x: &Tensor, dim: usize, start: usize, n: usize, s: usize) -> candle_core::Result<Tensor> {
    if s == 1 {
        return x.narrow(dim, start, n);
    }
    let avail = x.dim(dim)? - start;
    let x = if avail < n * s {
        x.pad_with_zeros(dim, 0, n * s - avail)?
    } else {
        x.clone()
    };
    let v = x.narrow(dim, start, n * s)?;
    let mut shape = v.dims().to_vec();
    shape[dim] = n;
    shape.insert(dim + 1, s);
    v.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Pad `x` along `dim` with `value` (a −∞ border for max-pooling).
fn pad_with(x: &Tensor, dim: usize, lo: usize, hi: usize, value: f64) -> candle_core::Result<Tensor> {
    let mut parts = Vec::with_capacity(3);
    let side = |n: usize| -> candle_core::Result<Tensor> {
        let mut shape = x.dims().to_vec();
        shape[dim] = n;
        Tensor::full(value, shape, x.device())?.to_dtype(x.dtype())
    };
    if lo > 0 {
        parts.push(side(lo)?);
    }
    parts.push(x.clone());
    if hi > 0 {
        parts.push(side(hi)?);
    }
    Tensor::cat(&parts, dim)
}

/// The pooling as a fold over the K² strided views of the padded input: the
/// composition that runs where the CPU kernel does not (CUDA, bf16).
fn pool_composed(x: &Tensor, spec: PoolSpec) -> candle_core::Result<Tensor> {
    let (_, g) = spec.geometry(x.dims())?;
    let [t, b, l, r] = spec.pad;
    let fill = if spec.kind == PoolKind::Max { f64::NEG_INFINITY } else { 0.0 };
    let xp = pad_with(&pad_with(x, 2, t, b, fill)?, 3, l, r, fill)?;
    let mut acc: Option<Tensor> = None;
    for ky in 0..spec.k {
        let rows = strided(&xp, 2, ky, g.ho, spec.stride)?;
        for kx in 0..spec.k {
            let tap = strided(&rows, 3, kx, g.wo, spec.stride)?;
            acc = Some(match (acc, spec.kind) {
                (None, _) => tap,
                (Some(a), PoolKind::Max) => a.maximum(&tap)?,
                (Some(a), PoolKind::Avg) => (a + tap)?,
            });
        }
    }
    let acc = acc.ok_or_else(|| candle_core::Error::Msg("pool: empty kernel".into()))?;
    match spec.kind {
        PoolKind::Max => Ok(acc),
        PoolKind::Avg => acc / (spec.k * spec.k) as f64,
    }
}

/// Pool `x` `[B, C, H, W]` as `spec` says.
pub fn pool2d(x: &Tensor, spec: PoolSpec) -> candle_core::Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op1(spec)
    } else {
        pool_composed(x, spec)
    }
}

/// `k × k` max-pooling at `stride` with padding `pad` on every side.
pub fn max_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    pool2d(
        x,
        PoolSpec {
            kind: PoolKind::Max,
            k,
            stride,
            pad: [pad; 4],
        },
    )
}

/// `k × k` average pooling at `stride` with padding `pad` on every side.
pub fn avg_pool2d(x: &Tensor, k: usize, stride: usize, pad: usize) -> candle_core::Result<Tensor> {
    pool2d(
        x,
        PoolSpec {
            kind: PoolKind::Avg,
            k,
            stride,
            pad: [pad; 4],
        },
    )
}
