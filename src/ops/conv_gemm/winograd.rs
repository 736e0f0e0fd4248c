//! 3×3, stride-1, same-size convolutions on small planes by Winograd's minimal
//! filtering F(2×2, 3×3): each 2×2 block of output pixels from a 4×4 block of input in
//! 16 products per channel pair instead of 36.
//!
//! The weights are turned to `U = G·g·Gᵀ` (4×4 per output and input channel), each 4×4
//! input tile to `V = Bᵀ·d·B`, and for each of the 16 tile positions one GEMM
//! `M = U·V` (`[O, C]·[C, tiles]`) does all the multiplying; `Aᵀ·M·A` gives the 2×2
//! outputs. The transforms' coefficients are 0, ±½ and ±1, so the rounding stays close
//! to the direct sum's; the result is not the same bits (the README says where).
//!
//! Used on the planes under 256 pixels that otherwise take packed GEMMs over
//! im2col columns (`packed`): the 8² and 4² stages of a CIFAR ResNet, where the GEMM's
//! 2.25× fewer multiply-adds outweigh three cheap passes over memory. The input
//! gradient of such a layer is such a convolution too (`ConvGradInput::as_convolution`),
//! so it takes this path as well.

use super::*;

/// Wide enough that the 16 GEMMs (`k = C`, `m = O`) run near the micro-kernels' peak;
/// narrower layers keep the packed GEMM, whose rounding they had before.
const MIN_CHANNELS: usize = 64;

pub(super) fn applies(g: &Geometry) -> bool {
    let t = &g.t;
    (g.kh, g.kw, t.s, t.top, t.left) == (3, 3, 1, 1, 1)
        && (t.ho, t.wo) == (t.h, t.w)
        && g.p() < SMALL_PLANE
        && g.c >= MIN_CHANNELS
        && g.o >= MIN_CHANNELS
}

/// Where the tiles lie: `ty × tx` tiles of 2×2 outputs per image (the last row or
/// column half outside an odd plane), `n` in all; `ld` is the row length of `V` and `M`
/// (see [`row_length`]).
struct Tiles {
    ty: usize,
    tx: usize,
    n: usize,
    ld: usize,
}

impl Tiles {
    fn of(g: &Geometry) -> Tiles {
        let (ty, tx) = (g.t.ho.div_ceil(2), g.t.wo.div_ceil(2));
        let n = g.b * ty * tx;
        Tiles {
            ty,
            tx,
            n,
            ld: row_length(n),
        }
    }
}

/// The transforms write (and read) 16 rows at once, one per position. At a power-of-two
/// length those 16 streams fall in the same cache sets and evict each other: measured
/// 2–3× slower transforms at 1024 tiles. One cache line more per row spreads them.
fn row_length(n: usize) -> usize {
    n + 16
}

/// `x ⊛ w` for a geometry [`applies`] takes: `[B, O, H, W]`, without bias.
pub(super) fn forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
    let tiles = Tiles::of(g);
    let u = weights(g, w);
    let v = inputs(g, &tiles, x);
    let m = products(g, &tiles, &u, &v);
    outputs(g, &tiles, &m)
}

/// `U` as `[O, 16, C]` (rows [`row_length`]`(C)` long): position `ξ = 4i + j` of
/// `G·g·Gᵀ` for every channel pair.
fn weights(g: &Geometry, w: &[f32]) -> Vec<f32> {
    let (c, ld) = (g.c, row_length(g.c));
    // SAFETY: chunk `o` is `[16, ld]`; every element is written below, the slack zeros.
    unsafe {
        par_uninit(g.o * 16 * ld, 16 * ld, |o, out| {
            for row in out.chunks_mut(ld) {
                for v in &mut row[c..] {
                    v.write(0.0);
                }
            }
            for ch in 0..c {
                let k = &w[(o * c + ch) * 9..][..9];
                // G·g: rows g₀, (g₀+g₁+g₂)/2, (g₀−g₁+g₂)/2, g₂ of the 3×3 kernel.
                let mut gg = [[0f32; 3]; 4];
                for col in 0..3 {
                    let (a, b, d) = (k[col], k[3 + col], k[6 + col]);
                    gg[0][col] = a;
                    gg[1][col] = 0.5 * (a + b + d);
                    gg[2][col] = 0.5 * (a - b + d);
                    gg[3][col] = d;
                }
                for (i, [a, b, d]) in gg.into_iter().enumerate() {
                    let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                    for (j, v) in row.into_iter().enumerate() {
                        out[(4 * i + j) * ld + ch].write(v);
                    }
                }
            }
        })
    }
}

/// `V` as `[C, 16, tiles]`: `Bᵀ·d·B` of every 4×4 input tile `d` (zero outside the plane).
fn inputs(g: &Geometry, tiles: &Tiles, x: &[f32]) -> Vec<f32> {
    let (h, w, plane) = (g.t.h, g.t.w, g.plane());
    let per_image = tiles.ty * tiles.tx;
    // The plane inside a zero border, wide enough for the last tile of an odd side.
    let (ph, pw) = (2 * tiles.ty + 2, 2 * tiles.tx + 2);
    let ld = tiles.ld;
    // SAFETY: chunk `ch` is `[16, ld]`; every tile of every image writes its 16, and
    // the slack is zeroed.
    unsafe {
        par_uninit(g.c * 16 * ld, 16 * ld, |ch, out| {
            for row in out.chunks_mut(ld) {
                for v in &mut row[tiles.n..] {
                    v.write(0.0);
                }
            }
            let mut padded = vec![0f32; ph * pw];
            for i in 0..g.b {
                let src = &x[(i * g.c + ch) * plane..][..plane];
                for (r, row) in src.chunks(w).enumerate() {
                    padded[(r + 1) * pw + 1..][..w].copy_from_slice(row);
                }
                for ty in 0..tiles.ty {
                    for tx in 0..tiles.tx {
                        let at = |r: usize, s: usize| padded[(2 * ty + r) * pw + 2 * tx + s];
                        let d: [[f32; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|s| at(r, s)));
                        // Bᵀ·d: rows d₀−d₂, d₁+d₂, d₂−d₁, d₁−d₃; then the same on columns.
                        let e: [[f32; 4]; 4] =
                            std::array::from_fn(|s| [d[0][s] - d[2][s], d[1][s] + d[2][s], d[2][s] - d[1][s], d[1][s] - d[3][s]]);
                        let t = i * per_image + ty * tiles.tx + tx;
                        for r in 0..4 {
                            let v = [e[0][r] - e[2][r], e[1][r] + e[2][r], e[2][r] - e[1][r], e[1][r] - e[3][r]];
                            for (s, v) in v.into_iter().enumerate() {
                                out[(4 * r + s) * ld + t].write(v);
                            }
                        }
                    }
                }
            }
            debug_assert!(h <= ph - 2 && w <= pw - 2);
        })
    }
}

/// `M` as `[O, 16, tiles]`: for each position ξ, `U_ξ [O, C] · V_ξ [C, tiles]`. The 16
/// GEMMs run in parallel, each on one thread, so the sums' order is the same on any
/// thread count.
fn products(g: &Geometry, tiles: &Tiles, u: &[f32], v: &[f32]) -> Vec<f32> {
    let (c, n, ld, ldc) = (g.c, tiles.n, tiles.ld, row_length(g.c));
    let mut m: Vec<f32> = Vec::with_capacity(g.o * 16 * ld);
    for row in m.spare_capacity_mut()[..g.o * 16 * ld].chunks_mut(ld) {
        for v in &mut row[n..] {
            v.write(0.0);
        }
    }
    let dst = m.as_mut_ptr() as usize;
    (0..16).into_par_iter().for_each(|xi| {
        // SAFETY: `u` is `[O, 16, ldc]` and `v` `[C, 16, ld]`, so position ξ's matrices
        // start at ξ·ldc (ξ·ld) with rows 16·ldc (16·ld) apart, C (n) used of each; its
        // destination rows `[O, n]` at ξ·ld, 16·ld apart, are disjoint from every other
        // ξ's and lie inside the `O·16·ld` elements reserved above.
        unsafe {
            super::super::gemm_kernels::gemm_f32(
                (g.o, n, c),
                ((dst as *mut f32).add(xi * ld), 1, (16 * ld) as isize),
                false,
                (u.as_ptr().add(xi * ldc), 1, (16 * ldc) as isize),
                (v.as_ptr().add(xi * ld), 1, (16 * ld) as isize),
                (0.0, 1.0),
                Parallelism::None,
            );
        }
    });
    // SAFETY: the 16 GEMMs wrote the first n columns of every row of every position,
    // and the slack after them was zeroed above: all O·16·ld elements.
    unsafe { m.set_len(g.o * 16 * ld) };
    m
}

/// `y` `[B, O, H, W]` from `M`: `Aᵀ·m·A` of each tile, clipped to the plane.
fn outputs(g: &Geometry, tiles: &Tiles, m: &[f32]) -> Vec<f32> {
    let (ho, wo, p, ld) = (g.t.ho, g.t.wo, g.p(), tiles.ld);
    let per_image = tiles.ty * tiles.tx;
    // One chunk per output plane `(image, o)`: reads that channel's 16 rows of `M`.
    // SAFETY: the tiles cover the plane, so every pixel is written (once) below.
    unsafe {
        par_uninit(g.b * g.o * p, p, |k, plane| {
            let (i, o) = (k / g.o, k % g.o);
            let rows = &m[o * 16 * ld..][..16 * ld];
            for ty in 0..tiles.ty {
                for tx in 0..tiles.tx {
                    let t = i * per_image + ty * tiles.tx + tx;
                    let at = |xi: usize| rows[xi * ld + t];
                    // Aᵀ·m: rows m₀+m₁+m₂ and m₁−m₂−m₃; then the same on columns.
                    let q: [[f32; 4]; 2] = [
                        std::array::from_fn(|s| at(s) + at(4 + s) + at(8 + s)),
                        std::array::from_fn(|s| at(4 + s) - at(8 + s) - at(12 + s)),
                    ];
                    for (a, [b0, b1, b2, b3]) in q.into_iter().enumerate() {
                        let (r, out) = (2 * ty + a, [b0 + b1 + b2, b1 - b2 - b3]);
                        for (b, v) in out.into_iter().enumerate() {
                            let col = 2 * tx + b;
                            if r < ho && col < wo {
                                plane[r * wo + col].write(v);
                            }
                        }
                    }
                }
            }
        })
    }
}

/// The weight gradient `[O, C, 3, 3]` of a convolution [`applies`] takes, from its
/// input `x` and output gradient `dy`. The forward pass is `Aᵀ·(U ⊙ V)·A` per tile
/// with `U = G·g·Gᵀ`, linear in `U`; so `dg = Σ_tiles Gᵀ·((A·dy·Aᵀ) ⊙ V)·G`, and the sum
/// over tiles is, for each of the 16 positions, one GEMM `[O, tiles]·[tiles, C]`.
pub(super) fn grad_weight(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let tiles = Tiles::of(g);
    let v = inputs(g, &tiles, x);
    let du = output_grads(g, &tiles, dy);
    let m = weight_products(g, &tiles, &du, &v);
    kernel_grads(g, &m)
}

/// `A·dy·Aᵀ` of every 2×2 tile of the output gradient (zero outside the plane), as
/// `[O, 16, ld]` like `V`.
fn output_grads(g: &Geometry, tiles: &Tiles, dy: &[f32]) -> Vec<f32> {
    let (ho, wo, p, ld) = (g.t.ho, g.t.wo, g.p(), tiles.ld);
    let per_image = tiles.ty * tiles.tx;
    let (ph, pw) = (2 * tiles.ty, 2 * tiles.tx);
    // SAFETY: chunk `o` is `[16, ld]`; every tile of every image writes its 16, and the
    // slack is zeroed.
    unsafe {
        par_uninit(g.o * 16 * ld, 16 * ld, |o, out| {
            for row in out.chunks_mut(ld) {
                for v in &mut row[tiles.n..] {
                    v.write(0.0);
                }
            }
            let mut plane = vec![0f32; ph * pw];
            for i in 0..g.b {
                let src = &dy[(i * g.o + o) * p..][..p];
                for (r, row) in src.chunks(wo).enumerate() {
                    plane[r * pw..][..wo].copy_from_slice(row);
                }
                debug_assert!(ho <= ph);
                for ty in 0..tiles.ty {
                    for tx in 0..tiles.tx {
                        let at = |r: usize, s: usize| plane[(2 * ty + r) * pw + 2 * tx + s];
                        let (a, b, c, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                        // A·dy: rows (a, b), (a+c, b+d), (a−c, b−d), (−c, −d); then each
                        // row (p, q) times Aᵀ: (p, p+q, p−q, −q).
                        let rows = [[a, b], [a + c, b + d], [a - c, b - d], [-c, -d]];
                        let t = i * per_image + ty * tiles.tx + tx;
                        for (r, [p, q]) in rows.into_iter().enumerate() {
                            for (s, v) in [p, p + q, p - q, -q].into_iter().enumerate() {
                                out[(4 * r + s) * ld + t].write(v);
                            }
                        }
                    }
                }
            }
        })
    }
}

/// `[O, 16, row_length(C)]`: for each position ξ, `dU_ξ [O, tiles] · V_ξᵀ [tiles, C]`,
/// the 16 GEMMs in parallel, each on one thread (the same sums on any thread count).
fn weight_products(g: &Geometry, tiles: &Tiles, du: &[f32], v: &[f32]) -> Vec<f32> {
    let (c, n, ld, ldc) = (g.c, tiles.n, tiles.ld, row_length(g.c));
    let mut m: Vec<f32> = Vec::with_capacity(g.o * 16 * ldc);
    for row in m.spare_capacity_mut()[..g.o * 16 * ldc].chunks_mut(ldc) {
        for v in &mut row[c..] {
            v.write(0.0);
        }
    }
    let dst = m.as_mut_ptr() as usize;
    (0..16).into_par_iter().for_each(|xi| {
        // SAFETY: `du` is `[O, 16, ld]` and `v` `[C, 16, ld]`: position ξ's rows start at
        // ξ·ld, 16·ld apart, n columns used; `vᵀ` is read with the strides swapped. The
        // destination rows `[O, C]` at ξ·ldc, 16·ldc apart, are disjoint from every other
        // ξ's and lie inside the `O·16·ldc` elements reserved above.
        unsafe {
            super::super::gemm_kernels::gemm_f32(
                (g.o, c, n),
                ((dst as *mut f32).add(xi * ldc), 1, (16 * ldc) as isize),
                false,
                (du.as_ptr().add(xi * ld), 1, (16 * ld) as isize),
                (v.as_ptr().add(xi * ld), (16 * ld) as isize, 1),
                (0.0, 1.0),
                Parallelism::None,
            );
        }
    });
    // SAFETY: the GEMMs wrote the first C columns of every row of every position, and
    // the slack after them was zeroed above: all O·16·ldc elements.
    unsafe { m.set_len(g.o * 16 * ldc) };
    m
}

/// `Gᵀ·M·G` for every channel pair: the 3×3 kernel gradients `[O, C, 3, 3]`.
fn kernel_grads(g: &Geometry, m: &[f32]) -> Vec<f32> {
    let (c, ldc) = (g.c, row_length(g.c));
    // SAFETY: chunk `o` is `[C, 9]` and every element is written below.
    unsafe {
        par_uninit(g.o * c * 9, c * 9, |o, out| {
            let rows = &m[o * 16 * ldc..][..16 * ldc];
            for ch in 0..c {
                let at = |xi: usize| rows[xi * ldc + ch];
                // Gᵀ·M: rows m₀ + (m₁+m₂)/2, (m₁−m₂)/2, (m₁+m₂)/2 + m₃; then the same on
                // columns.
                let q: [[f32; 4]; 3] = [
                    std::array::from_fn(|s| at(s) + 0.5 * (at(4 + s) + at(8 + s))),
                    std::array::from_fn(|s| 0.5 * (at(4 + s) - at(8 + s))),
                    std::array::from_fn(|s| 0.5 * (at(4 + s) + at(8 + s)) + at(12 + s)),
                ];
                for (i, [a, b, d, e]) in q.into_iter().enumerate() {
                    let row = [a + 0.5 * (b + d), 0.5 * (b - d), 0.5 * (b + d) + e];
                    for (j, v) in row.into_iter().enumerate() {
                        out[ch * 9 + 3 * i + j].write(v);
                    }
                }
            }
        })
    }
}
