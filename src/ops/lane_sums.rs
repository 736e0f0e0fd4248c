//! The batch norm's per-plane sums in f64, in [`LANES`] interleaved partial sums.
//!
//! One running sum is a chain of dependent f64 adds, bound by their latency (the
//! statistics were ~10% of a small CNN's step); eight independent chains fill a vector
//! register. Lane `l` adds elements `l, l + 8, …` in order and the lanes are folded
//! pairwise at the end, an order that depends only on the plane's length.
//!
//! For f32 data the loops are written with AVX-512 and AVX2 intrinsics: compiled from
//! the generic loops, the widening and the gate came out as SSE code, mostly scalar.
//! Measured on an Intel Xeon (batch 64, best of 30): a 64-channel 32² layer's gradient
//! sums 2.0 → 1.6 ms and statistics 1.7 → 1.1 ms; at 256 channels on 8², 0.64 → 0.33
//! and 0.78 → 0.37 ms. The intrinsics do the same operations per lane (plain
//! multiplies and adds, no fused multiply-add) in the same order, so every path gives
//! the same bits (`tests/isa_paths.rs`).

use std::any::TypeId;

use candle_core::WithDType;

use super::act::Act;
use super::cpu::as_f32;
use super::isa::{self, Isa};

/// Partial sums per plane.
pub(crate) const LANES: usize = 8;

/// Which sum over a plane `x`, each element widened to f64.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sum {
    /// `Σ x`.
    Plain,
    /// `Σ (x − mean)²`.
    Squares { mean: f64 },
}

impl Sum {
    /// What each element is centred on before it is squared (nothing for a plain sum).
    fn centre(self) -> f64 {
        match self {
            Sum::Plain => 0.0,
            Sum::Squares { mean } => mean,
        }
    }
}

/// The activation gate of a batch norm's backward pass: the gradient passes where
/// `act` passes at `x · scale + shift`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Gate<T> {
    pub act: Act,
    pub scale: T,
    pub shift: T,
}

impl<T: WithDType> Gate<T> {
    /// `g` where the gate is open at `x`, else zero.
    #[inline(always)]
    pub fn apply(self, g: T, x: T) -> T {
        if self.act.passes(x * self.scale + self.shift) {
            g
        } else {
            T::zero()
        }
    }
}

fn fold(s: [f64; LANES]) -> f64 {
    ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
}

/// `s` over the plane `x`.
pub(crate) fn sum<T: WithDType>(x: &[T], s: Sum) -> f64 {
    let term = |v: f64| match s {
        Sum::Plain => v,
        Sum::Squares { mean } => (v - mean) * (v - mean),
    };
    let mut a = [0f64; LANES];
    let done = match as_f32(x) {
        // SAFETY: each arm runs only where `Isa::active` found its extension.
        #[cfg(target_arch = "x86_64")]
        Some(x) if Isa::active() == Isa::Avx512 => unsafe { x86::sum_avx512(x, s, &mut a) },
        #[cfg(target_arch = "x86_64")]
        Some(x) if Isa::active() == Isa::Avx2 => unsafe { x86::sum_avx2(x, s, &mut a) },
        _ => 0,
    };
    isa::run(|| {
        let chunks = x[done..].chunks_exact(LANES);
        let rest = chunks.remainder();
        for c in chunks {
            for l in 0..LANES {
                a[l] += term(c[l].to_f64());
            }
        }
        for (l, v) in rest.iter().enumerate() {
            a[l] += term(v.to_f64());
        }
    });
    fold(a)
}

/// `(Σ dy, Σ dy · (x − mean) · invstd)` over one plane, `dy` the gradient `g` through
/// `gate`: the β and γ gradients' terms.
pub(crate) fn grad_sums<T: WithDType>(g: &[T], x: &[T], gate: Gate<T>, (mean, invstd): (f64, f64)) -> (f64, f64) {
    assert_eq!(g.len(), x.len(), "grad_sums: planes of different lengths");
    let mut sums = [[0f64; LANES]; 2];
    let done = match (as_f32(g), as_f32(x), gate_f32(gate)) {
        // SAFETY: each arm runs only where `Isa::active` found its extension.
        #[cfg(target_arch = "x86_64")]
        (Some(g), Some(x), Some(gate)) if Isa::active() == Isa::Avx512 => unsafe {
            x86::grad_sums_avx512(g, x, (gate, mean, invstd), &mut sums)
        },
        #[cfg(target_arch = "x86_64")]
        (Some(g), Some(x), Some(gate)) if Isa::active() == Isa::Avx2 => unsafe {
            x86::grad_sums_avx2(g, x, (gate, mean, invstd), &mut sums)
        },
        _ => 0,
    };
    let [mut a, mut b] = sums;
    let mut add = |l: usize, g: T, v: T| {
        let (d, v) = (gate.apply(g, v).to_f64(), v.to_f64());
        a[l] += d;
        b[l] += d * (v - mean) * invstd;
    };
    isa::run(|| {
        let (gc, xc) = (g[done..].chunks_exact(LANES), x[done..].chunks_exact(LANES));
        let (gr, xr) = (gc.remainder(), xc.remainder());
        for (g, x) in gc.zip(xc) {
            for l in 0..LANES {
                add(l, g[l], x[l]);
            }
        }
        for (l, (&g, &v)) in gr.iter().zip(xr).enumerate() {
            add(l, g, v);
        }
    });
    (fold(a), fold(b))
}

fn gate_f32<T: WithDType>(gate: Gate<T>) -> Option<Gate<f32>> {
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| Gate {
        act: gate.act,
        scale: gate.scale.to_f64() as f32,
        shift: gate.shift.to_f64() as f32,
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Whole groups of [`LANES`] elements: how many were summed into the lanes. The
    //! caller adds the rest, lane `i % LANES` each, as the generic loop does.

    use std::arch::x86_64::*;

    use super::{Gate, Sum, LANES};
    use crate::ops::act::Act;

    /// Eight f32 gradients through the gate at eight inputs (AVX only).
    #[inline(always)]
    unsafe fn gate8(g: __m256, x: __m256, gate: Gate<f32>) -> __m256 {
        let pre = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(gate.scale)), _mm256_set1_ps(gate.shift));
        // Ordered comparisons: false for NaN, as `>` and `<` are.
        let above = _mm256_cmp_ps::<_CMP_GT_OQ>(pre, _mm256_setzero_ps());
        match gate.act {
            Act::Identity => g,
            Act::Relu => _mm256_and_ps(above, g),
            Act::Relu6 => _mm256_and_ps(_mm256_and_ps(above, _mm256_cmp_ps::<_CMP_LT_OQ>(pre, _mm256_set1_ps(6.0))), g),
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_avx512(x: &[f32], s: Sum, out: &mut [f64; LANES]) -> usize {
        let n = x.len() / LANES * LANES;
        let mean = _mm512_set1_pd(s.centre());
        let mut a = _mm512_setzero_pd();
        for i in (0..n).step_by(LANES) {
            let v = _mm512_cvtps_pd(_mm256_loadu_ps(x.as_ptr().add(i)));
            let t = match s {
                Sum::Plain => v,
                Sum::Squares { .. } => {
                    let d = _mm512_sub_pd(v, mean);
                    _mm512_mul_pd(d, d)
                }
            };
            a = _mm512_add_pd(a, t);
        }
        _mm512_storeu_pd(out.as_mut_ptr(), a);
        n
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sum_avx2(x: &[f32], s: Sum, out: &mut [f64; LANES]) -> usize {
        let n = x.len() / LANES * LANES;
        let mean = _mm256_set1_pd(s.centre());
        let term = |v: __m256d| match s {
            Sum::Plain => v,
            Sum::Squares { .. } => {
                let d = _mm256_sub_pd(v, mean);
                _mm256_mul_pd(d, d)
            }
        };
        let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
        for i in (0..n).step_by(LANES) {
            let v = _mm256_loadu_ps(x.as_ptr().add(i));
            lo = _mm256_add_pd(lo, term(_mm256_cvtps_pd(_mm256_castps256_ps128(v))));
            hi = _mm256_add_pd(hi, term(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v))));
        }
        _mm256_storeu_pd(out.as_mut_ptr(), lo);
        _mm256_storeu_pd(out.as_mut_ptr().add(4), hi);
        n
    }

    /// The gate, the mean and 1/σ.
    type Terms = (Gate<f32>, f64, f64);

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad_sums_avx512(g: &[f32], x: &[f32], (gate, mean, invstd): Terms, out: &mut [[f64; LANES]; 2]) -> usize {
        let n = g.len().min(x.len()) / LANES * LANES;
        let (m, is) = (_mm512_set1_pd(mean), _mm512_set1_pd(invstd));
        let (mut a, mut b) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for i in (0..n).step_by(LANES) {
            let xv = _mm256_loadu_ps(x.as_ptr().add(i));
            let d = _mm512_cvtps_pd(gate8(_mm256_loadu_ps(g.as_ptr().add(i)), xv, gate));
            let v = _mm512_cvtps_pd(xv);
            a = _mm512_add_pd(a, d);
            b = _mm512_add_pd(b, _mm512_mul_pd(_mm512_mul_pd(d, _mm512_sub_pd(v, m)), is));
        }
        _mm512_storeu_pd(out[0].as_mut_ptr(), a);
        _mm512_storeu_pd(out[1].as_mut_ptr(), b);
        n
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn grad_sums_avx2(g: &[f32], x: &[f32], (gate, mean, invstd): Terms, out: &mut [[f64; LANES]; 2]) -> usize {
        let n = g.len().min(x.len()) / LANES * LANES;
        let (m, is) = (_mm256_set1_pd(mean), _mm256_set1_pd(invstd));
        let (mut a_lo, mut a_hi, mut b_lo, mut b_hi) = (_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd());
        let term = |d: __m256d, v: __m256d| _mm256_mul_pd(_mm256_mul_pd(d, _mm256_sub_pd(v, m)), is);
        for i in (0..n).step_by(LANES) {
            let xv = _mm256_loadu_ps(x.as_ptr().add(i));
            let dv = gate8(_mm256_loadu_ps(g.as_ptr().add(i)), xv, gate);
            let (d_lo, d_hi) = (
                _mm256_cvtps_pd(_mm256_castps256_ps128(dv)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(dv)),
            );
            let (v_lo, v_hi) = (
                _mm256_cvtps_pd(_mm256_castps256_ps128(xv)),
                _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(xv)),
            );
            a_lo = _mm256_add_pd(a_lo, d_lo);
            a_hi = _mm256_add_pd(a_hi, d_hi);
            b_lo = _mm256_add_pd(b_lo, term(d_lo, v_lo));
            b_hi = _mm256_add_pd(b_hi, term(d_hi, v_hi));
        }
        _mm256_storeu_pd(out[0].as_mut_ptr(), a_lo);
        _mm256_storeu_pd(out[0].as_mut_ptr().add(4), a_hi);
        _mm256_storeu_pd(out[1].as_mut_ptr(), b_lo);
        _mm256_storeu_pd(out[1].as_mut_ptr().add(4), b_hi);
        n
    }
}
