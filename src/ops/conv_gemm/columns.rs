//! Column matrices of the GEMM convolution: [`im2col`] and its adjoint [`col2im`].
//!
//! Stride-1 convolutions whose output is as wide as their input (3×3 with padding 1,
//! TF "SAME") take a shorter route: a tap's row of the column matrix is then the input
//! plane shifted by one fixed offset, so the rows that fall inside the plane move as
//! one contiguous copy (or add), and only the padding columns at each row's ends are
//! written apart. The per-row loops it replaces spent most of their time on calls for
//! 8 to 32 elements at a time. Same values and the same order of additions per pixel,
//! so the same bits.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::WithDType;

use super::Geometry;

/// Tap `(ky, kx)` of a stride-1, same-width convolution, as one shifted span: output
/// `dst + i` reads input `src + i` for `i < len`, which is right for the output rows
/// `rows` and columns `cols`; everything else in the tap's row is padding.
struct Span {
    rows: Range<usize>,
    cols: Range<usize>,
    dst: usize,
    src: usize,
    len: usize,
}

/// How a tap's row of columns is built: output row by output row (any stride or
/// width), not at all (the tap reads only padding), or as one [`Span`].
enum Route {
    Rows,
    Padding,
    Span(Span),
}

fn route(g: &Geometry, ky: usize, kx: usize) -> Route {
    let t = &g.t;
    if t.s != 1 || t.wo != t.w {
        return Route::Rows;
    }
    let (lo, hi, _) = t.columns(kx);
    let rows = t.top.saturating_sub(ky)..(t.h + t.top).saturating_sub(ky).min(t.ho);
    if lo >= hi || rows.is_empty() {
        return Route::Padding;
    }
    let w = t.w as isize;
    // The input index output `rows.start·w` would read, before clipping to the plane:
    // one before it (the padding column of the first row) when the tap looks left.
    let start = (rows.start + ky - t.top) as isize * w + kx as isize - t.left as isize;
    let skip = (-start).max(0) as usize;
    let src = (start + skip as isize) as usize;
    let len = (rows.len() * t.w - skip).min(t.h * t.w - src);
    Route::Span(Span {
        dst: rows.start * t.w + skip,
        rows,
        cols: lo..hi,
        src,
        len,
    })
}

/// Zero the columns outside `cols` of `rows` (rows `w` long): a column at a time, as
/// strided stores. A `fill` per row's ends was two `memset` calls per row for one
/// element each, most of the columns' cost.
fn zero_padding_columns<E: Copy>(rows: &mut [E], w: usize, cols: &Range<usize>, zero: E) {
    for j in (0..cols.start).chain(cols.end..w) {
        for v in rows[j..].iter_mut().step_by(w) {
            *v = zero;
        }
    }
}

/// `dst` as a copy of `src` (of one length), in memory that may be uninitialised.
pub(super) fn write_copy<T: Copy>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// One image `[C, H, W]` to its column matrix `[C·KH·KW, HO·WO]` (zeros where a tap
/// falls in the padding), whose rows start `ld` apart in `col`. Every element of those
/// rows is written, so `col` need not be initialised (a scratch buffer's zero-fill was
/// 2% of a ResNet-18 step).
pub(super) fn im2col<T: WithDType>(g: &Geometry, x: &[T], col: &mut [MaybeUninit<T>], ld: usize) {
    let taps = g.kh * g.kw;
    for c in 0..g.c {
        channel_columns(g, &x[c * g.plane()..(c + 1) * g.plane()], &mut col[c * taps * ld..], ld);
    }
}

/// The `KH·KW` rows of [`im2col`] that one channel's plane `xc` gives, rows starting
/// `ld` apart in `col`.
pub(super) fn channel_columns<T: WithDType>(g: &Geometry, xc: &[T], col: &mut [MaybeUninit<T>], ld: usize) {
    let (t, p) = (&g.t, g.p());
    let zero = MaybeUninit::new(T::zero());
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            let row = &mut col[(ky * g.kw + kx) * ld..][..p];
            match route(g, ky, kx) {
                Route::Padding => row.fill(zero),
                Route::Span(s) => {
                    row[..s.rows.start * t.wo].fill(zero);
                    row[s.rows.end * t.wo..].fill(zero);
                    write_copy(&mut row[s.dst..s.dst + s.len], &xc[s.src..s.src + s.len]);
                    zero_padding_columns(&mut row[s.rows.start * t.wo..s.rows.end * t.wo], t.wo, &s.cols, zero);
                }
                Route::Rows => tap_by_rows(g, xc, row, ky, kx),
            }
        }
    }
}

fn tap_by_rows<T: WithDType>(g: &Geometry, xc: &[T], row: &mut [MaybeUninit<T>], ky: usize, kx: usize) {
    let t = &g.t;
    let zero = MaybeUninit::new(T::zero());
    let (lo, hi, x0) = t.columns(kx);
    for oy in 0..t.ho {
        let out = &mut row[oy * t.wo..(oy + 1) * t.wo];
        let Some(iy) = t.row(oy, ky).filter(|_| lo < hi) else {
            out.fill(zero);
            continue;
        };
        let xr = &xc[iy * t.w..(iy + 1) * t.w];
        out[..lo].fill(zero);
        out[hi..].fill(zero);
        if t.s == 1 {
            write_copy(&mut out[lo..hi], &xr[x0..x0 + hi - lo]);
        } else {
            for (i, v) in out[lo..hi].iter_mut().enumerate() {
                v.write(xr[x0 + i * t.s]);
            }
        }
    }
}

/// The adjoint of [`im2col`]: add each column entry back onto its input pixel. `col`
/// is scratch: the shifted route zeroes its padding entries so that one contiguous add
/// can run over them (adding +0 leaves every sum's bits as they were: a sum that
/// starts at +0 is never -0).
pub(super) fn col2im<T: WithDType>(g: &Geometry, col: &mut [T], ld: usize, dx: &mut [T]) {
    let (t, p) = (&g.t, g.p());
    for c in 0..g.c {
        let dc = &mut dx[c * g.plane()..(c + 1) * g.plane()];
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = &mut col[((c * g.kh + ky) * g.kw + kx) * ld..][..p];
                match route(g, ky, kx) {
                    Route::Padding => {}
                    Route::Span(s) => {
                        zero_padding_columns(&mut row[s.rows.start * t.wo..s.rows.end * t.wo], t.wo, &s.cols, T::zero());
                        for (d, &v) in dc[s.src..s.src + s.len].iter_mut().zip(&row[s.dst..s.dst + s.len]) {
                            *d += v;
                        }
                    }
                    Route::Rows => add_tap_by_rows(g, row, dc, ky, kx),
                }
            }
        }
    }
}

fn add_tap_by_rows<T: WithDType>(g: &Geometry, row: &[T], dc: &mut [T], ky: usize, kx: usize) {
    let t = &g.t;
    let (lo, hi, x0) = t.columns(kx);
    for oy in 0..t.ho {
        let Some(iy) = t.row(oy, ky).filter(|_| lo < hi) else { continue };
        let src = &row[oy * t.wo + lo..oy * t.wo + hi];
        let dr = &mut dc[iy * t.w..(iy + 1) * t.w];
        if t.s == 1 {
            for (d, &v) in dr[x0..x0 + hi - lo].iter_mut().zip(src) {
                *d += v;
            }
        } else {
            for (i, &v) in src.iter().enumerate() {
                dr[x0 + i * t.s] += v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv_gemm::ConvSpec;
    use rand::{Rng, SeedableRng};

    /// Every stride-1 shape with output width equal to input width (the span route),
    /// and some that are not, built both ways: the same bits.
    #[test]
    fn the_shifted_span_gives_the_row_loops_bits() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut spans = 0;
        for h in 1..8 {
            for w in 1..8 {
                for (kh, kw) in [(1, 1), (3, 3), (2, 3), (3, 2), (5, 5), (1, 7), (7, 1)] {
                    for [top, bottom] in [[0, 0], [1, 1], [0, 2], [2, 0], [3, 3]] {
                        for left in 0..kw {
                            let pad = [top, bottom, left, kw - 1 - left];
                            let spec = ConvSpec { stride: 1, pad };
                            let Ok(g) = Geometry::new(&[1, 2, h, w], &[1, 2, kh, kw], spec) else {
                                continue;
                            };
                            spans += check(&g, &mut rng);
                        }
                    }
                }
            }
        }
        assert!(spans > 1000, "only {spans} taps took the span route");
    }

    /// `n` values written by `fill` into a buffer of NaNs (so a skipped element shows).
    fn built(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
        let mut v = vec![MaybeUninit::new(f32::NAN); n];
        fill(&mut v);
        // SAFETY: every element started as a NaN.
        v.into_iter().map(|e| unsafe { e.assume_init() }).collect()
    }

    /// Taps that took the span route.
    fn check(g: &Geometry, rng: &mut impl Rng) -> usize {
        let (p, plane) = (g.p(), g.plane());
        let x: Vec<f32> = (0..g.c * plane).map(|_| rng.random_range(-1.0..1.0)).collect();
        let col = built(g.ck() * p, |c| im2col(g, &x, c, p));
        let cols: Vec<f32> = (0..g.ck() * p).map(|_| rng.random_range(-1.0..1.0)).collect();
        let dx0: Vec<f32> = (0..g.c * plane).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut dx = dx0.clone();
        col2im(g, &mut cols.clone(), p, &mut dx);
        let (mut want_dx, mut spans) = (dx0, 0);
        for c in 0..g.c {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    spans += matches!(route(g, ky, kx), Route::Span(_)) as usize;
                    let r = ((c * g.kh + ky) * g.kw + kx) * p;
                    let want = built(p, |w| tap_by_rows(g, &x[c * plane..(c + 1) * plane], w, ky, kx));
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&col[r..r + p]), bits(&want), "im2col {g:?}, tap ({ky}, {kx})");
                    add_tap_by_rows(g, &cols[r..r + p], &mut want_dx[c * plane..(c + 1) * plane], ky, kx);
                }
            }
        }
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&dx), bits(&want_dx), "col2im {g:?}");
        spans
    }
}
