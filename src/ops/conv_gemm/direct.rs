//! 3×3, stride-1, one-pixel-padded convolutions on planes at least 16 pixels wide,
//! computed straight from the image on AVX-512, without im2col: ResNet's and VGG's
//! workhorse, and (through `ConvGradInput::as_convolution`) the input gradient of
//! every such layer.
//!
//! Why: on 32² planes with 64 channels, the im2col copy and a GEMM whose shape suits
//! the `gemm` crate's micro-kernels poorly ran at about 60% of the CPU's peak. Here a
//! register tile of 8 output channels × 48 output pixels (three vectors of up to 16
//! pixels, each inside one row) takes its 9 taps for each input channel from unaligned
//! loads of a zero-bordered copy of the image, and broadcasts each weight once for its
//! 48 pixels. Measured on an Intel Xeon (AVX-512), forward, batch 64: 1.3–1.5× the
//! GEMM path at 64 channels on 32², 1.05–1.15× at 128 on 16² (README "CPU speed").
//!
//! Planes narrower than 16 pixels stay on the packed GEMM: tried with several rows to
//! a vector, the direct kernel tied it on 8² and lost on 4². The weight gradient has
//! its own kernel with the output channels as the lanes (`direct_grad_weight.rs`).
//! And there is no AVX2 path: tiles of
//! 4 × 24 and 6 × 16 pixels on 8-lane vectors did not beat the FMA GEMM on the same
//! Xeon (not yet tried on an AMD CPU).
//!
//! Every output element is one chain of fused multiply-adds over input channels, then
//! taps in row-major order: the same on any thread count. It differs in the last bits
//! from the GEMM path, which sums in blocks.

use rayon::prelude::*;

use super::Geometry;
use crate::ops::gemm_kernels::GemmKernels;

/// Output channels per register tile.
const OB: usize = 8;
/// f32 lanes per vector: output pixels per segment.
const LANES: usize = 16;
/// Segments per register tile: 8 × 3 accumulators of the 32 vector registers.
const SEGS: usize = 3;
const TAPS: usize = 9;

/// Whether the direct kernel computes the convolution `g`: 3×3, stride 1, padding 1 on
/// every side, at least 16 input channels, rows of at least 16 pixels, and the
/// AVX-512 GEMM kernels active (the choice that sets the summation order; see
/// [`GemmKernels`]).
pub(super) fn applies(g: &Geometry) -> bool {
    let t = &g.t;
    cfg!(target_arch = "x86_64")
        && GemmKernels::active() == GemmKernels::Avx512
        && (g.kh, g.kw, t.s, t.top, t.left) == (3, 3, 1, 1, 1)
        && (t.ho, t.wo) == (t.h, t.w)
        && g.c >= 16
        && t.w >= LANES
}

/// Up to [`LANES`] output pixels of one row: where their window starts in the padded
/// plane (tap (0, 0) of the first pixel), where they go in the output plane, and how
/// many there are.
#[derive(Clone, Copy)]
struct Segment {
    src: usize,
    dst: usize,
    lanes: usize,
}

/// One image with a border of zeros, `[C, H+2, W+2]`, and slack after it: the last
/// row's loads are full vectors whatever the row's width.
struct Padded {
    data: Vec<f32>,
    channels: usize,
    stride: usize,
    plane: usize,
}

impl Padded {
    /// `x` (`[C, H, W]`) padded in `data`, the buffer of an earlier image of the same
    /// call or a new one: only the interior is ever written, so a reused buffer's
    /// border is still zero and is not cleared again.
    fn new(mut data: Vec<f32>, x: &[f32], c: usize, h: usize, w: usize) -> Padded {
        let (stride, plane) = (w + 2, (h + 2) * (w + 2));
        if data.len() != c * plane + LANES {
            data = vec![0.0; c * plane + LANES];
        }
        for (dst, src) in data.chunks_mut(plane).zip(x.chunks(h * w)) {
            for (d, s) in dst[stride + 1..].chunks_mut(stride).zip(src.chunks(w)) {
                d[..w].copy_from_slice(s);
            }
        }
        Padded {
            data,
            channels: c,
            stride,
            plane,
        }
    }
}

/// `x ⊛ w` for a geometry that [`applies`]: `[B, O, H, W]`, never zero-filled first.
pub(super) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let (c, o, p, h, wd) = (g.c, g.o, g.p(), g.t.h, g.t.w);
    let n = g.b * o * p;
    assert!(x.len() >= g.b * c * p && w.len() >= o * c * TAPS);
    let weights = arranged(w, o, c);
    let per_row = wd.div_ceil(LANES);
    let segments: Vec<Segment> = (0..h)
        .flat_map(|row| {
            (0..per_row).map(move |s| Segment {
                src: row * (wd + 2) + s * LANES,
                dst: row * wd + s * LANES,
                lanes: LANES.min(wd - s * LANES),
            })
        })
        .collect();
    let mut y = Vec::with_capacity(n);
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(o * p)
        .zip(x.par_chunks(c * p))
        .for_each_init(Vec::new, |buf, (image, xi)| {
            let padded = Padded::new(std::mem::take(buf), xi, c, h, wd);
            image
                .par_chunks_mut(OB * p)
                .zip(weights.par_chunks(c * TAPS * OB))
                .for_each(|(rows, wb)| {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `applies` checked AVX-512 (through the GEMM kernels'
                    // choice, which only takes it where the CPU has it); each window
                    // lies inside `padded` (a row's last vector runs into the next row,
                    // the plane's last into the slack) and `rows` holds whole planes.
                    unsafe {
                        avx512::block(&padded, wb, &segments, rows, p)
                    };
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!("the direct convolution runs on x86-64 only ({}, {})", rows.len(), wb.len());
                });
            *buf = padded.data;
        });
    // SAFETY: each block stored every pixel of its output planes: the segments cover
    // each plane.
    unsafe { y.set_len(n) };
    y
}

/// `w` `[O, C, 3, 3]` as `[O/8, C, 9, 8]`: for each block of 8 output channels, input
/// channel and tap, the 8 weights a register tile broadcasts, side by side. Channels
/// past `O` in the last block are zeros.
fn arranged(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0; o.div_ceil(OB) * c * TAPS * OB];
    for oc in 0..o {
        let (block, j) = (oc / OB, oc % OB);
        for ci in 0..c {
            for t in 0..TAPS {
                out[((block * c + ci) * TAPS + t) * OB + j] = w[(oc * c + ci) * TAPS + t];
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Padded, Segment, OB, SEGS, TAPS};

    /// One block of up to 8 output channels of one image: `out` their planes of `p`
    /// pixels, `w` their weights `[C, 9, 8]`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(x: &Padded, w: &[f32], segments: &[Segment], out: &mut [MaybeUninit<f32>], p: usize) {
        let mut tiles = segments.chunks_exact(SEGS);
        for tile in &mut tiles {
            tile_of::<SEGS>(x, w, tile, out, p);
        }
        match *tiles.remainder() {
            [] => {}
            [a] => tile_of::<1>(x, w, &[a], out, p),
            [a, b] => tile_of::<2>(x, w, &[a, b], out, p),
            _ => unreachable!("a remainder of chunks of {SEGS}"),
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile_of<const S: usize>(x: &Padded, w: &[f32], tile: &[Segment], out: &mut [MaybeUninit<f32>], p: usize) {
        let mut at = [x.data.as_ptr(); S];
        for (a, seg) in at.iter_mut().zip(tile) {
            *a = a.add(seg.src);
        }
        let mut acc = [[_mm512_setzero_ps(); S]; OB];
        let mut wc = w.as_ptr();
        for _ in 0..x.channels {
            for ky in 0..3 {
                for kx in 0..3 {
                    let mut xv = [_mm512_setzero_ps(); S];
                    for s in 0..S {
                        xv[s] = _mm512_loadu_ps(at[s].add(ky * x.stride + kx));
                    }
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_set1_ps(*wc.add((ky * 3 + kx) * OB + j));
                        for (a, &xv) in acc.iter_mut().zip(&xv) {
                            *a = _mm512_fmadd_ps(xv, wv, *a);
                        }
                    }
                }
            }
            wc = wc.add(TAPS * OB);
            for a in at.iter_mut() {
                // Past the last channel this points beyond the data, never read.
                *a = a.wrapping_add(x.plane);
            }
        }
        let rows = out.len() / p;
        for (s, seg) in tile.iter().enumerate() {
            let keep = ((1u32 << seg.lanes) - 1) as u16;
            for (j, acc) in acc.iter().enumerate().take(rows) {
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j * p + seg.dst) as *mut f32, keep, acc[s]);
            }
        }
    }
}
