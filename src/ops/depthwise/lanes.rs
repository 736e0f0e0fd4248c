//! Depthwise convolution on small output planes with sixteen channels to a vector:
//! per image and block of 16 channels, the input (or, for the input gradient, the
//! output gradient) is turned round to pixel-major `[pixel, 16]` with its zero border,
//! and every tap is one 16-wide multiply and add per output pixel.
//!
//! Why: EfficientNet-Lite0's last stages run 5×5 depthwise convolutions on 6×6 and
//! 3×3 planes with 480–1152 channels. Plane by plane, each of the 25 taps was a loop
//! of a few elements behind a call: the 3×3-plane layer with 1152 channels took 11 ms
//! for 33 MFLOP (batch 64, Intel Xeon), and depthwise layers were half of the prompt's
//! forward and backward through Lite0.
//!
//! Same arithmetic as the plane-by-plane path, in the same order: each output starts
//! at zero and adds its taps row by row (plain `*` and `+`), each input-gradient cell
//! adds its taps' contributions in tap order. So the bits are the same as that path's
//! on every ISA path, and the same as the composed ops'.

use candle_core::WithDType;
use rayon::prelude::*;

use super::Geometry;
use crate::ops::act::Act;
use crate::ops::isa;

/// Channels per vector (and per job).
pub(super) const LANES: usize = 16;

/// Output planes smaller than this (pixels) take the channel-lanes forward: 4.7× the
/// plane-by-plane path on 3×3 planes, 2× on 6×6, 1.2–1.4× on 12×12 (batch 64, Intel
/// Xeon, AVX-512).
pub(super) const SMALL_PLANE: usize = 256;

/// Output planes smaller than this take the channel-lanes input gradient: 2.2–2.4× on
/// 3×3 planes, a tie on 6×6, and 0.5–0.7× on 12×12, where each tap's read-modify-write
/// of its cells costs more than the plane path's runs.
pub(super) const SMALL_GRADIENT_PLANE: usize = 16;

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

/// `act(depthwise(x) + bias)` for `g` (small output planes): `[B, C, HO, WO]`.
pub(super) fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], bias: &[T], act: Act) -> Vec<T> {
    let (t, k, taps) = (g.t, g.k, g.k * g.k);
    let (hp, wp) = padded(g);
    let (plane, out_plane) = (g.plane(), g.out_plane());
    let weights = arranged(g, w);
    let mut y = vec![T::zero(); g.b * g.c * out_plane];
    y.par_chunks_mut(g.c * out_plane).enumerate().for_each(|(b, yb)| {
        yb.par_chunks_mut(LANES * out_plane)
            .enumerate()
            .for_each_init(Scratch::new, |s, (block, yc)| {
                let lanes = yc.len() / out_plane;
                let xb = &x[(b * g.c + block * LANES) * plane..][..lanes * plane];
                s.padded.clear();
                s.padded.resize(hp * wp, [T::zero(); LANES]);
                for iy in 0..t.h.min(hp - t.top) {
                    let row = &mut s.padded[(iy + t.top) * wp + t.left..][..t.w.min(wp - t.left)];
                    for (ix, cell) in row.iter_mut().enumerate() {
                        for (l, xp) in xb.chunks(plane).enumerate() {
                            cell[l] = xp[iy * t.w + ix];
                        }
                    }
                }
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
            });
    });
    y
}

/// The input gradient for `g` (small output planes) from the output gradient `gy`:
/// `[B, C, H, W]`.
pub(super) fn grad_input<T: WithDType>(g: &Geometry, gy: &[T], w: &[T]) -> Vec<T> {
    let (t, k, taps) = (g.t, g.k, g.k * g.k);
    let (hp, wp) = padded(g);
    let (plane, out_plane) = (g.plane(), g.out_plane());
    let weights = arranged(g, w);
    let mut gx = vec![T::zero(); g.b * g.c * plane];
    gx.par_chunks_mut(g.c * plane).enumerate().for_each(|(b, gxb)| {
        gxb.par_chunks_mut(LANES * plane)
            .enumerate()
            .for_each_init(Scratch::new, |s, (block, gxc)| {
                let lanes = gxc.len() / plane;
                let gyb = &gy[(b * g.c + block * LANES) * out_plane..][..lanes * out_plane];
                s.out.clear();
                s.out.resize(out_plane, [T::zero(); LANES]);
                for (px, o) in s.out.iter_mut().enumerate() {
                    for (l, gp) in gyb.chunks(out_plane).enumerate() {
                        o[l] = gp[px];
                    }
                }
                s.padded.clear();
                s.padded.resize(hp * wp, [T::zero(); LANES]);
                let wb = &weights[block * taps..][..taps];
                let (cells, gys) = (&mut s.padded, &s.out);
                isa::run(|| {
                    for ky in 0..k {
                        for kx in 0..k {
                            let wv = &wb[ky * k + kx];
                            for (oy, grow) in gys.chunks(t.wo).enumerate() {
                                let crow = &mut cells[(oy * t.s + ky) * wp + kx..];
                                for (cell, gv) in crow.iter_mut().step_by(t.s).zip(grow) {
                                    for l in 0..LANES {
                                        cell[l] += wv[l] * gv[l];
                                    }
                                }
                            }
                        }
                    }
                });
                for iy in 0..t.h.min(hp - t.top) {
                    let row = &s.padded[(iy + t.top) * wp + t.left..][..t.w.min(wp - t.left)];
                    for (ix, cell) in row.iter().enumerate() {
                        for (l, gp) in gxc.chunks_mut(plane).enumerate() {
                            gp[iy * t.w + ix] += cell[l];
                        }
                    }
                }
            });
    });
    gx
}
