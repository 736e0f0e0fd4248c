//! Depthwise convolution with sixteen channels to a vector, for small output planes
//! and strided layers: per image and block of 16 channels, the input (for the input
//! gradient, the output gradient) is turned round to pixel-major `[pixel, 16]` inside
//! a zero border, and every tap is one 16-wide multiply and add per output pixel (per
//! input cell for the gradient, which gathers its taps instead of scattering them).
//!
//! Why: EfficientNet-Lite0's last stages run 5×5 depthwise convolutions on 6×6 and
//! 3×3 planes with 480–1152 channels. Plane by plane, each of the 25 taps was a loop
//! of a few elements behind a call: the 3×3-plane layer with 1152 channels took 10 ms
//! for 33 MFLOP (batch 64, Intel Xeon), and depthwise layers were half of the prompt's
//! forward and backward through Lite0.
//!
//! Same arithmetic as the plane-by-plane path, in the same order: each output starts
//! at zero and adds its taps row by row (plain `*` and `+`), and each input-gradient
//! cell adds its taps' products in tap order (the zeros a spread-out or bordered
//! gradient adds change nothing). So the bits are the same as that path's, on every
//! ISA path (`tests/depthwise_lanes.rs`).

use candle_core::WithDType;
use rayon::prelude::*;

use super::Geometry;
use crate::ops::act::Act;
use crate::ops::isa;

/// Channels per vector (and per job).
const LANES: usize = 16;

/// Output planes smaller than this (pixels) take the channel-lanes kernels.
const SMALL_PLANE: usize = 256;

/// Whether the channel-lanes forward takes `g`: output planes under 256 pixels (4.7×
/// the plane-by-plane path on 3×3 planes, 2× on 6×6, 1.3× on 12×12, batch 64, Intel
/// Xeon, AVX-512), and strided layers of any size (1.25× from 48² to 24², where the
/// plane path splits each plane by phase). Stride-1 planes of 24² and 48² ran 0.8–0.9×.
pub(super) fn takes_forward(g: &Geometry) -> bool {
    g.out_plane() < SMALL_PLANE || g.t.s > 1
}

/// Whether the channel-lanes input gradient takes `g`: stride-1 output planes under
/// 256 pixels (5.4× on 3×3 planes, 2.2× on 6×6, 1.15× on 12×12), and strided ones
/// under 16. A strided layer gathers from a gradient spread out with zeros, a stride²
/// of wasted products: 0.6–0.8× from 12² and 24² outputs.
pub(super) fn takes_grad_input(g: &Geometry) -> bool {
    g.out_plane() < SMALL_PLANE && (g.t.s == 1 || g.out_plane() < 16)
}

/// The padded planes the windows read, `(ho−1)·s + k` square on each side.
fn padded(g: &Geometry) -> (usize, usize) {
    let t = &g.t;
    ((t.ho - 1) * t.s + g.k, (t.wo - 1) * t.s + g.k)
}

/// `w` `[C, 1, K, K]` as `[C/16, K·K, 16]`, channels past `C` zero.
fn arranged<T: WithDType>(g: &Geometry, w: &[T]) -> Vec<[T; LANES]> {
    let taps = g.k * g.k;
    let mut out = vec![[T::zero(); LANES]; g.c.div_ceil(LANES) * taps];
    for (ch, wc) in w.chunks(taps).enumerate().take(g.c) {
        for (tap, &v) in wc.iter().enumerate() {
            out[(ch / LANES) * taps + tap][ch % LANES] = v;
        }
    }
    out
}

/// Per-thread buffers: a padded plane block and an output block, pixel-major.
struct Scratch<T> {
    padded: Vec<[T; LANES]>,
    out: Vec<[T; LANES]>,
}

impl<T> Scratch<T> {
    fn new() -> Self {
        Scratch {
            padded: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// `cells` made a zero `rows × cols` grid of pixel-major cells, with pixel `(y, x)` of
/// the first `size.0 × size.1` of each of `src`'s planes (`plane` long, `width` wide; one
/// lane per plane) at cell `(top + y·step, left + x·step)`.
fn into_cells<T: WithDType>(
    cells: &mut Vec<[T; LANES]>,
    (rows, cols): (usize, usize),
    src: &[T],
    (plane, width): (usize, usize),
    size: (usize, usize),
    (top, left): (usize, usize),
    step: usize,
) {
    cells.clear();
    cells.resize(rows * cols, [T::zero(); LANES]);
    for y in 0..size.0 {
        for x in 0..size.1 {
            let cell = &mut cells[(top + y * step) * cols + left + x * step];
            for (l, p) in src.chunks(plane).enumerate() {
                cell[l] = p[y * width + x];
            }
        }
    }
}

/// A new `[B, C, plane]` output, zero-filled, computed in parallel a block of 16
/// channels of one image at a time: `job(scratch, image, block, out)` with the
/// block's `lanes · plane` slots (fewer lanes in a last, partial block).
fn per_block<T: WithDType>(g: &Geometry, plane: usize, job: impl Fn(&mut Scratch<T>, usize, usize, &mut [T]) + Sync + Send) -> Vec<T> {
    let mut out = vec![T::zero(); g.b * g.c * plane];
    out.par_chunks_mut(g.c * plane).enumerate().for_each(|(b, image)| {
        image
            .par_chunks_mut(LANES * plane)
            .enumerate()
            .for_each_init(Scratch::new, |s, (block, out)| job(s, b, block, out));
    });
    out
}

/// `act(depthwise(x) + bias)` for a layer [`takes_forward`] takes: `[B, C, HO, WO]`.
pub(super) fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], bias: &[T], act: Act) -> Vec<T> {
    let (t, k, taps) = (g.t, g.k, g.k * g.k);
    let (hp, wp) = padded(g);
    let (plane, out_plane) = (g.plane(), g.out_plane());
    let weights = arranged(g, w);
    per_block(g, out_plane, |s, b, block, yc| {
        let lanes = yc.len() / out_plane;
        let xb = &x[(b * g.c + block * LANES) * plane..][..lanes * plane];
        let inside = (t.h.min(hp - t.top), t.w.min(wp - t.left));
        into_cells(&mut s.padded, (hp, wp), xb, (plane, t.w), inside, (t.top, t.left), 1);
        let wb = &weights[block * taps..][..taps];
        s.out.clear();
        s.out.resize(out_plane, [T::zero(); LANES]);
        let (xs, out) = (&s.padded, &mut s.out);
        isa::run(|| {
            for oy in 0..t.ho {
                for ox in 0..t.wo {
                    let mut acc = [T::zero(); LANES];
                    for ky in 0..k {
                        let row = &xs[(oy * t.s + ky) * wp + ox * t.s..];
                        for (kx, xv) in row[..k].iter().enumerate() {
                            let wv = &wb[ky * k + kx];
                            for l in 0..LANES {
                                acc[l] += wv[l] * xv[l];
                            }
                        }
                    }
                    out[oy * t.wo + ox] = acc;
                }
            }
        });
        for (px, o) in s.out.iter().enumerate() {
            for (l, yp) in yc.chunks_mut(out_plane).enumerate() {
                yp[px] = o[l];
            }
        }
        for (l, yp) in yc.chunks_mut(out_plane).enumerate() {
            for row in yp.chunks_mut(t.wo) {
                act.apply_row(row, bias[block * LANES + l]);
            }
        }
    })
}

/// The input gradient for `g` from the output gradient `gy`: `[B, C, H, W]`. Each
/// input cell gathers its taps' products in tap order, from `gy` spread out by the
/// stride (zeros between, which add nothing) and bordered by `K − 1` zeros, so every
/// tap of every cell reads inside the buffer.
pub(super) fn grad_input<T: WithDType>(g: &Geometry, gy: &[T], w: &[T]) -> Vec<T> {
    let (t, k, taps) = (g.t, g.k, g.k * g.k);
    let (hp, wp) = padded(g);
    let (plane, out_plane) = (g.plane(), g.out_plane());
    // The spread-out gradient: output pixel (oy, ox) at (oy·s + k − 1, ox·s + k − 1).
    let (hs, ws) = ((t.ho - 1) * t.s + 2 * k - 1, (t.wo - 1) * t.s + 2 * k - 1);
    let (rows, cols) = (t.h.min(hp - t.top), t.w.min(wp - t.left));
    let weights = arranged(g, w);
    per_block(g, plane, |s, b, block, gxc| {
        let lanes = gxc.len() / plane;
        let gyb = &gy[(b * g.c + block * LANES) * out_plane..][..lanes * out_plane];
        into_cells(&mut s.padded, (hs, ws), gyb, (out_plane, t.wo), (t.ho, t.wo), (k - 1, k - 1), t.s);
        s.out.clear();
        s.out.resize(rows * cols, [T::zero(); LANES]);
        let wb = &weights[block * taps..][..taps];
        let (spread, out) = (&s.padded, &mut s.out);
        isa::run(|| {
            for iy in 0..rows {
                for ix in 0..cols {
                    // Padded cell (iy + top, ix + left); tap (ky, kx) reads the
                    // output pixel at (cy − ky, cx − kx), spread position + k − 1.
                    let (cy, cx) = (iy + t.top + k - 1, ix + t.left + k - 1);
                    let mut acc = [T::zero(); LANES];
                    for ky in 0..k {
                        let row = &spread[(cy - ky) * ws..];
                        for kx in 0..k {
                            let (wv, gv) = (&wb[ky * k + kx], &row[cx - kx]);
                            for l in 0..LANES {
                                acc[l] += wv[l] * gv[l];
                            }
                        }
                    }
                    out[iy * cols + ix] = acc;
                }
            }
        });
        for iy in 0..rows {
            for ix in 0..cols {
                let cell = &s.out[iy * cols + ix];
                for (l, gp) in gxc.chunks_mut(plane).enumerate() {
                    gp[iy * t.w + ix] += cell[l];
                }
            }
        }
    })
}
