//! The weight gradient of any dense convolution with at least 16 input and output
//! channels, computed on AVX-512 without im2col or a GEMM: `dW[o, c, ky, kx]` is the sum over
//! the batch's output pixels of `dy[o, pixel]` times the input under tap `(ky, kx)`.
//!
//! Why: through im2col and the `gemm` crate, ResNet-18's weight gradients ran at
//! about 55% of the rate its forward convolutions reach (20–26 ms against 13–14 ms
//! per 4.8-GFLOP layer on an Intel Xeon) and were the slowest ops of its training
//! step. A GEMM over `C·KH·KW × O` with `B·P` terms pays for the column copy of every
//! image and for packing both operands.
//!
//! Here the output channels are the vector lanes. `dy` is turned round per chunk of
//! images to pixel-major blocks of 64 channels, and a register tile of 64 output
//! channels × 6 weight positions (channel, tap) takes, for each output pixel, four
//! vector loads of `dy` and six broadcast inputs for its 24 multiply-adds. The inputs
//! come from a zero-bordered copy of each image (from the image itself when no window
//! reaches padding), so any stride, padding and kernel size runs the same branch-free
//! loop. (Pixels as the lanes, tried first, needed
//! twelve unaligned loads per 27 products and a sum across lanes per weight: it ran
//! 1.5–1.8× slower than the GEMM.)
//!
//! Measured per op in the ResNet-18 step (batch 64, Intel Xeon, AVX-512), against the
//! GEMM path in the same sitting: 15.9 against 19.5 ms at 512 channels on 4², 15.2
//! against 17.5 at 256 on 8², 16.3 against 16.5–16.9 at 128 on 16², a tie (19.5
//! against 19.2) at 64 on 32², where turning `dy` round and padding the input cost
//! 3–4 ms of it; the stem (3 input channels) stays on the GEMM.
//!
//! Each weight's gradient is one chain of fused multiply-adds over the batch's output
//! pixels in order (carried through memory between blocks of pixels), and each tile
//! belongs to one job: the same bits on any thread count. It differs in the last bits
//! from the GEMM path, which sums in blocks.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::windows::Planes;
use super::Geometry;
use crate::ops::cpu::par_uninit;
use crate::ops::gemm_kernels::GemmKernels;

/// f32 lanes per vector.
const LANES: usize = 16;
/// Output channels per register tile: four vectors.
const OT: usize = 4 * LANES;
/// Weight positions per register tile: 4 × 6 accumulators, four vectors of `dy` and
/// broadcasts in the rest of the 32 registers.
const RT: usize = 6;
/// Elements of turned-round `dy` and padded input per chunk of images (4 MiB in f32).
const CHUNK_BUDGET: usize = 1 << 20;
/// Output pixels a job takes through all its tiles at a time: their turned-round `dy`
/// (16 KiB) stays in L1 while it is read once per tile.
const PIXEL_BLOCK: usize = 64;
/// Register tiles per job, at most.
const GROUP: usize = 32;
/// Pixels per job when turning `dy` round.
const TURN_PIXELS: usize = 256;

/// Whether the direct kernel computes the weight gradient of `g`: at least 16 input
/// and output channels, and the AVX-512 GEMM kernels active (the choice that sets the
/// summation order; see [`GemmKernels`]). A 3-channel stem has too few weights per
/// output channel to fill the threads' tiles: 5.1 against 2.7 ms on the GEMM.
pub(super) fn applies(g: &Geometry) -> bool {
    cfg!(target_arch = "x86_64") && GemmKernels::active() == GemmKernels::Avx512 && g.o >= LANES && g.c >= LANES && g.b > 0
}

/// `dW` `[O, C, KH, KW]` of the convolution `g` from its input `x` `[B, C, H, W]` and
/// output gradient `dy` `[B, O, HO, WO]`, for a geometry that [`applies`].
pub(super) fn grad_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, ck, t) = (g.p(), g.ck(), &g.t);
    let planes = Planes::of(g);
    let image_len = g.c * planes.len();
    let blocks = g.o.div_ceil(OT);
    let tiles = ck.div_ceil(RT);
    let per_image = blocks * OT * p + if planes.copied { image_len } else { 0 };
    let size = (CHUNK_BUDGET / per_image).clamp(1, g.b);
    let offsets = planes.positions(g, tiles * RT);
    let windows = planes.windows(g, size);
    let group = (tiles * blocks / (2 * rayon::current_num_threads())).clamp(1, GROUP);
    // `[blocks, tiles, RT, OT]`: the running sums, a job's tiles side by side.
    let mut sums = vec![0f32; blocks * tiles * RT * OT];
    // Zeros once: each chunk writes only the interiors, so the borders stay zero.
    let mut padded = vec![0f32; if planes.copied { size * image_len } else { 0 }];
    let mut turned = vec![0f32; blocks * size * p * OT];
    for first in (0..g.b).step_by(size) {
        let n = size.min(g.b - first);
        let images = &x[first * g.c * t.h * t.w..];
        if planes.copied {
            planes.pad(g, images, n, &mut padded);
        }
        turn_round(g, &dy[first * g.o * p..], n, &mut turned, size * p * OT);
        let chunk = Chunk {
            images: if planes.copied { &padded } else { images },
            turned: &turned,
            block_len: size * p * OT,
            windows: &windows[..n * p],
        };
        sums.par_chunks_mut(tiles * RT * OT)
            .enumerate()
            .flat_map(|(block, sums)| sums.par_chunks_mut(group * RT * OT).enumerate().map(move |(k, s)| (block, k, s)))
            .for_each(|(block, k, sums)| {
                let vectors = (g.o - block * OT).min(OT).div_ceil(LANES);
                let offsets = &offsets[k * group * RT..];
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `applies` checked AVX-512 (through the GEMM kernels'
                // choice, which only takes it where the CPU has it); every window lies
                // inside its image's planes (`Planes` covers each) and every pixel's
                // `dy` inside the turned-round block.
                unsafe {
                    avx512::job(&chunk, block, offsets, vectors, sums)
                };
                #[cfg(not(target_arch = "x86_64"))]
                unreachable!("the direct weight gradient runs on x86-64 only ({}, {})", sums.len(), offsets.len());
            });
    }
    to_weight_layout(&sums, g.o, ck, tiles)
}

/// What a job reads for one chunk of images.
struct Chunk<'a> {
    /// The chunk's images as the windows read them (see [`Planes`]).
    images: &'a [f32],
    /// `[blocks, size·P, OT]`: `dy` pixel-major, 64 channels to a block.
    turned: &'a [f32],
    block_len: usize,
    /// Each output pixel's window in `images`, in order.
    windows: &'a [usize],
}

/// Images `0..n` of `dy` (`[n, O, P]`) into `turned` as `[blocks, n·P, OT]` with
/// block `b` starting at `b · block_len`; channels past `O` are zeros. Sixteen
/// channels × sixteen pixels at a time, turned round in registers.
fn turn_round(g: &Geometry, dy: &[f32], n: usize, turned: &mut [f32], block_len: usize) {
    let (o, p) = (g.o, g.p());
    turned
        .par_chunks_mut(block_len)
        .enumerate()
        .flat_map(|(b, block)| {
            block[..n * p * OT].par_chunks_mut(p * OT).enumerate().flat_map(move |(i, image)| {
                image
                    .par_chunks_mut(TURN_PIXELS * OT)
                    .enumerate()
                    .map(move |(k, part)| (b, i, k * TURN_PIXELS, part))
            })
        })
        .for_each(|(b, i, first, part)| {
            let lanes = (o - b * OT).min(OT);
            let rows = &dy[(i * o + b * OT) * p + first..];
            for (k, group) in part.chunks_mut(LANES * OT).enumerate() {
                let q = k * LANES;
                let pixels = group.len() / OT;
                for l0 in (0..OT).step_by(LANES) {
                    if pixels == LANES && l0 + LANES <= lanes {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX-512 as in `grad_weight`; sixteen rows of sixteen
                        // pixels lie in `rows` (channels `l0..l0 + 16` are below
                        // `lanes`), and sixteen pixels of 64 lanes in `group`.
                        unsafe {
                            avx512::turn16(rows[l0 * p + q..].as_ptr(), p, group[l0..].as_mut_ptr(), OT)
                        };
                        continue;
                    }
                    for l in l0..(l0 + LANES).min(lanes) {
                        for (j, &v) in rows[l * p + q..][..pixels].iter().enumerate() {
                            group[j * OT + l] = v;
                        }
                    }
                    for l in lanes.max(l0)..l0 + LANES {
                        for j in 0..pixels {
                            group[j * OT + l] = 0.0;
                        }
                    }
                }
            }
        });
}

/// The running sums (`[blocks, tiles, RT, OT]`) as `[O, C·KH·KW]`, sixteen output
/// channels' rows to a job.
fn to_weight_layout(sums: &[f32], o: usize, ck: usize, tiles: usize) -> Vec<f32> {
    // SAFETY: job `k` is rows `16k..` of the output; each of its `rows · ck` elements
    // is written once below.
    unsafe {
        par_uninit(o * ck, LANES * ck, |k, out: &mut [MaybeUninit<f32>]| {
            let o0 = k * LANES;
            let rows = out.len() / ck;
            let (block, lane) = (o0 / OT, o0 % OT);
            for r in 0..ck {
                let src = &sums[((block * tiles + r / RT) * RT + r % RT) * OT + lane..][..rows];
                for (j, &v) in src.iter().enumerate() {
                    out[j * ck + r].write(v);
                }
            }
        })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Chunk, LANES, OT, PIXEL_BLOCK, RT};

    /// One job over one chunk: output channels `block·64..` (`vectors` of them with
    /// data) for the tiles whose running sums (`[RT, OT]` each) make up `sums`, weight
    /// positions from `offsets`. A block of pixels at a time through every tile.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn job(c: &Chunk<'_>, block: usize, offsets: &[usize], vectors: usize, sums: &mut [f32]) {
        let dy = c.turned.as_ptr().add(block * c.block_len);
        for (k, windows) in c.windows.chunks(PIXEL_BLOCK).enumerate() {
            let dy = dy.add(k * PIXEL_BLOCK * OT);
            for (sums, offs) in sums.chunks_exact_mut(RT * OT).zip(offsets.chunks_exact(RT)) {
                let offs: &[usize; RT] = offs.try_into().expect("RT offsets");
                match vectors {
                    4 => tile::<4>(c.images, offs, windows, dy, sums),
                    3 => tile::<3>(c.images, offs, windows, dy, sums),
                    2 => tile::<2>(c.images, offs, windows, dy, sums),
                    1 => tile::<1>(c.images, offs, windows, dy, sums),
                    v => unreachable!("{v} vectors in a tile of {}", OT / LANES),
                }
            }
        }
    }

    /// One register tile over some pixels: their products added to its running sums
    /// in pixel order.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const V: usize>(images: &[f32], offs: &[usize; RT], windows: &[usize], dy: *const f32, sums: &mut [f32]) {
        let mut acc = [[_mm512_setzero_ps(); RT]; V];
        for (j, row) in sums.chunks_exact(OT).enumerate() {
            for (v, acc) in acc.iter_mut().enumerate() {
                acc[j] = _mm512_loadu_ps(row.as_ptr().add(v * LANES));
            }
        }
        let mut at = [images.as_ptr(); RT];
        for (a, &off) in at.iter_mut().zip(offs) {
            *a = a.add(off);
        }
        for (k, &w) in windows.iter().enumerate() {
            let mut d = [_mm512_setzero_ps(); V];
            for (v, d) in d.iter_mut().enumerate() {
                *d = _mm512_loadu_ps(dy.add(k * OT + v * LANES));
            }
            for (j, a) in at.iter().enumerate() {
                let xv = _mm512_set1_ps(*a.add(w));
                for v in 0..V {
                    acc[v][j] = _mm512_fmadd_ps(d[v], xv, acc[v][j]);
                }
            }
        }
        for (j, row) in sums.chunks_exact_mut(OT).enumerate() {
            for (v, acc) in acc.iter().enumerate() {
                _mm512_storeu_ps(row.as_mut_ptr().add(v * LANES), acc[j]);
            }
        }
    }

    /// Sixteen rows of sixteen values (`src`, rows `src_stride` apart) turned round
    /// into `dst` (rows `dst_stride` apart): `dst[j][l] = src[l][j]`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn turn16(src: *const f32, src_stride: usize, dst: *mut f32, dst_stride: usize) {
        let mut r = [_mm512_setzero_ps(); 16];
        for (l, r) in r.iter_mut().enumerate() {
            *r = _mm512_loadu_ps(src.add(l * src_stride));
        }
        // Pairs of rows interleaved: in each 128-bit lane `k`, `t[2i]` holds columns
        // `4k, 4k+1` of rows `2i, 2i+1`, and `t[2i+1]` columns `4k+2, 4k+3`.
        let mut t = [_mm512_setzero_pd(); 16];
        for i in 0..8 {
            let (a, b) = (r[2 * i], r[2 * i + 1]);
            t[2 * i] = _mm512_castps_pd(_mm512_unpacklo_ps(a, b));
            t[2 * i + 1] = _mm512_castps_pd(_mm512_unpackhi_ps(a, b));
        }
        // Quads: `u[4m + c]`'s lane `k` holds column `4k + c` of rows `4m..4m + 4`.
        let mut u = [_mm512_setzero_ps(); 16];
        for m in 0..4 {
            let t = &t[4 * m..];
            u[4 * m] = _mm512_castpd_ps(_mm512_unpacklo_pd(t[0], t[2]));
            u[4 * m + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t[0], t[2]));
            u[4 * m + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t[1], t[3]));
            u[4 * m + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t[1], t[3]));
        }
        // Column `4k + c` is lane `k` of `u[c], u[4 + c], u[8 + c], u[12 + c]`.
        for c in 0..4 {
            let v1 = _mm512_shuffle_f32x4::<0x88>(u[c], u[4 + c]);
            let v2 = _mm512_shuffle_f32x4::<0xdd>(u[c], u[4 + c]);
            let w1 = _mm512_shuffle_f32x4::<0x88>(u[8 + c], u[12 + c]);
            let w2 = _mm512_shuffle_f32x4::<0xdd>(u[8 + c], u[12 + c]);
            _mm512_storeu_ps(dst.add(c * dst_stride), _mm512_shuffle_f32x4::<0x88>(v1, w1));
            _mm512_storeu_ps(dst.add((4 + c) * dst_stride), _mm512_shuffle_f32x4::<0x88>(v2, w2));
            _mm512_storeu_ps(dst.add((8 + c) * dst_stride), _mm512_shuffle_f32x4::<0xdd>(v1, w1));
            _mm512_storeu_ps(dst.add((12 + c) * dst_stride), _mm512_shuffle_f32x4::<0xdd>(v2, w2));
        }
    }
}
