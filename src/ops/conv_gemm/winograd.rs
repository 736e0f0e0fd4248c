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
//! im2col columns (`packed`): the 8² and 4² stages of a CIFAR ResNet, where the 2.25×
//! fewer multiply-adds outweigh the transforms' passes over memory. The input gradient
//! of such a layer is such a convolution too (`ConvGradInput::as_convolution`), and the
//! weight gradient is one GEMM per position over the tiles ([`grad_weight`]). Measured
//! per op in the ResNet-18 step on an Intel Xeon (AVX-512), batch 64: forward 14.1
//! against 18.1 ms at 256 channels on 8² and 13.4 against 17.3 at 512 on 4²; input
//! gradient 13.6 against 17.8 and 14.5 against 18.6; weight gradient 12.7 against 15.2
//! and 12.4 against 16.2 (the direct kernel). On 16² planes it lost to the direct
//! kernel (the transforms' 34 MB per layer): not used there.
//!
//! The transforms take 16 images of one tile position as vectors (tiles are numbered
//! with the images innermost), compiled per vector path by `ops::isa::run`.

use super::*;
use crate::ops::isa;

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

/// Where the tiles lie: `ty × tx` tile positions of 2×2 outputs per image (the last row
/// or column half outside an odd plane), `n` tiles in all, numbered position by
/// position with the images innermost ([`Tiles::index`]); `ld` is the row length of
/// `V` and `M` (see [`row_length`]).
struct Tiles {
    ty: usize,
    tx: usize,
    b: usize,
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
            b: g.b,
            n,
            ld: row_length(n),
        }
    }

    /// The column of image `i`'s tile at position `(ty, tx)`: with the images
    /// innermost, the transforms take [`LANES`] images of one position as vectors.
    fn index(&self, ty: usize, tx: usize, i: usize) -> usize {
        (ty * self.tx + tx) * self.b + i
    }
}

/// Images per vector in the transforms (one AVX-512 register of f32).
const LANES: usize = 16;

/// Channel `ch` of every image (`[B, channels, h, w]`) turned round to `[pixel, B]`
/// inside a zero border of `border` pixels top and left, `rows × cols` pixels in all:
/// each pixel's images side by side, for the transforms' vectors.
fn turned(
    src: &[f32],
    b: usize,
    ch: usize,
    channels: usize,
    (h, w): (usize, usize),
    border: usize,
    (rows, cols): (usize, usize),
) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols * b];
    for i in 0..b {
        let plane = &src[(i * channels + ch) * h * w..][..h * w];
        for (r, row) in plane.chunks(w).enumerate() {
            for (col, &v) in row.iter().enumerate() {
                out[((r + border) * cols + col + border) * b + i] = v;
            }
        }
    }
    out
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

/// `V` as `[C, 16, ld]`: `Bᵀ·d·B` of every 4×4 input tile `d` (zero outside the plane).
fn inputs(g: &Geometry, tiles: &Tiles, x: &[f32]) -> Vec<f32> {
    // The plane inside a one-pixel zero border, wide enough for the last tile of an odd
    // side.
    let padded = Padded {
        border: 1,
        rows: 2 * tiles.ty + 2,
        cols: 2 * tiles.tx + 2,
    };
    tile_transform::<4>(tiles, (x, g.c, (g.t.h, g.t.w)), padded, input_tile)
}

/// A plane turned round with a zero border (see [`turned`]): `border` pixels top and
/// left, `rows × cols` in all.
struct Padded {
    border: usize,
    rows: usize,
    cols: usize,
}

/// `[channels, 16, ld]`: for each channel of `src` (`[B, channels, h, w]`), `transform`
/// of every `N × N` tile (at 2-pixel steps, from the plane turned round into `padded`),
/// [`LANES`] images at a time, by position and tile ([`Tiles::index`]).
fn tile_transform<const N: usize>(
    tiles: &Tiles,
    (src, channels, hw): (&[f32], usize, (usize, usize)),
    padded: Padded,
    // A generic (not a fn pointer) so it is inlined into `isa::run`'s vector code.
    transform: impl Fn(&[[[f32; LANES]; N]; N]) -> [[f32; LANES]; 16] + Sync,
) -> Vec<f32> {
    let (b, ld, pw) = (tiles.b, tiles.ld, padded.cols);
    // SAFETY: chunk `ch` is `[16, ld]`; every tile of every image writes its 16, and
    // the slack is zeroed.
    unsafe {
        par_uninit(channels * 16 * ld, 16 * ld, |ch, out| {
            for row in out.chunks_mut(ld) {
                for v in &mut row[tiles.n..] {
                    v.write(0.0);
                }
            }
            let pt = turned(src, b, ch, channels, hw, padded.border, (padded.rows, pw));
            isa::run(|| {
                for ty in 0..tiles.ty {
                    for tx in 0..tiles.tx {
                        for i0 in (0..b).step_by(LANES) {
                            let len = LANES.min(b - i0);
                            let mut d = [[[0f32; LANES]; N]; N];
                            for (r, row) in d.iter_mut().enumerate() {
                                for (s, lanes) in row.iter_mut().enumerate() {
                                    lanes[..len].copy_from_slice(&pt[((2 * ty + r) * pw + 2 * tx + s) * b + i0..][..len]);
                                }
                            }
                            let v = transform(&d);
                            let t = tiles.index(ty, tx, i0);
                            for (xi, lanes) in v.iter().enumerate() {
                                for (o, &v) in out[xi * ld + t..][..len].iter_mut().zip(lanes) {
                                    o.write(v);
                                }
                            }
                        }
                    }
                }
            });
        })
    }
}

/// `Bᵀ·d·B` for [`LANES`] tiles at once: `d[r][s]` the tiles' pixel (r, s), the result
/// by position `ξ = 4r + s`.
#[inline(always)]
fn input_tile(d: &[[[f32; LANES]; 4]; 4]) -> [[f32; LANES]; 16] {
    // Bᵀ·d: rows d₀−d₂, d₁+d₂, d₂−d₁, d₁−d₃; then the same on columns.
    let mut e = [[[0f32; LANES]; 4]; 4];
    for s in 0..4 {
        for l in 0..LANES {
            let (d0, d1, d2, d3) = (d[0][s][l], d[1][s][l], d[2][s][l], d[3][s][l]);
            e[0][s][l] = d0 - d2;
            e[1][s][l] = d1 + d2;
            e[2][s][l] = d2 - d1;
            e[3][s][l] = d1 - d3;
        }
    }
    let mut v = [[0f32; LANES]; 16];
    for (r, e) in e.iter().enumerate() {
        for l in 0..LANES {
            let (a0, a1, a2, a3) = (e[0][l], e[1][l], e[2][l], e[3][l]);
            v[4 * r][l] = a0 - a2;
            v[4 * r + 1][l] = a1 + a2;
            v[4 * r + 2][l] = a2 - a1;
            v[4 * r + 3][l] = a1 - a3;
        }
    }
    v
}

/// `M` as `[O, 16, ld]`: for each position ξ, `U_ξ [O, C] · V_ξ [C, tiles]`.
fn products(g: &Geometry, tiles: &Tiles, u: &[f32], v: &[f32]) -> Vec<f32> {
    let (ld, ldc) = (tiles.ld, row_length(g.c));
    let lhs = Operand::rows(u, ldc);
    let rhs = Operand::rows(v, ld);
    per_position((g.o, tiles.n, g.c), ld, lhs, rhs)
}

/// One GEMM operand for each position ξ: the matrix at `data[ξ·at..]`, its columns
/// `cs` and rows `rs` elements apart.
struct Operand<'a> {
    data: &'a [f32],
    at: usize,
    cs: usize,
    rs: usize,
}

impl<'a> Operand<'a> {
    /// A `[rows, 16, ld]` array's position rows, read as they lie.
    fn rows(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            at: ld,
            cs: 1,
            rs: 16 * ld,
        }
    }

    /// The same, transposed.
    fn transposed(data: &'a [f32], ld: usize) -> Self {
        Operand {
            data,
            at: ld,
            cs: 16 * ld,
            rs: 1,
        }
    }

    /// Position ξ's `[rows, cols]` matrix in the GEMM's convention, checked to lie
    /// inside `data`.
    fn matrix(&self, xi: usize, (rows, cols): (usize, usize)) -> (*const f32, isize, isize) {
        let last = xi * self.at + (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(last < self.data.len(), "winograd: operand out of bounds");
        (self.data[xi * self.at..].as_ptr(), self.cs as isize, self.rs as isize)
    }
}

/// `[m, 16, ld]`: for each position ξ, `lhs_ξ [m, k] · rhs_ξ [k, n]` in the first `n` of
/// each row (the slack zeroed). The 16 GEMMs run in parallel, each on one thread, so the
/// sums' order is the same on any thread count.
fn per_position((m, n, k): (usize, usize, usize), ld: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(m * 16 * ld);
    for row in out.spare_capacity_mut()[..m * 16 * ld].chunks_mut(ld) {
        for v in &mut row[n..] {
            v.write(0.0);
        }
    }
    let dst = out.as_mut_ptr() as usize;
    (0..16).into_par_iter().for_each(|xi| {
        let (a, b) = (lhs.matrix(xi, (m, k)), rhs.matrix(xi, (k, n)));
        // SAFETY: both operands were checked to lie inside their slices; position ξ's
        // destination rows `[m, n]` at ξ·ld, 16·ld apart, are disjoint from every other
        // ξ's and lie inside the `m·16·ld` elements reserved above.
        unsafe {
            super::super::gemm_kernels::gemm_f32(
                (m, n, k),
                ((dst as *mut f32).add(xi * ld), 1, (16 * ld) as isize),
                false,
                (a.0, a.1, a.2),
                (b.0, b.1, b.2),
                (0.0, 1.0),
                Parallelism::None,
            );
        }
    });
    // SAFETY: the GEMMs wrote the first n columns of every row of every position, and
    // the slack after them was zeroed above: all m·16·ld elements.
    unsafe { out.set_len(m * 16 * ld) };
    out
}

/// `y` `[B, O, H, W]` from `M`: `Aᵀ·m·A` of each tile, clipped to the plane.
fn outputs(g: &Geometry, tiles: &Tiles, m: &[f32]) -> Vec<f32> {
    let (b, ho, wo, p, ld) = (g.b, g.t.ho, g.t.wo, g.p(), tiles.ld);
    let mut y: Vec<f32> = Vec::with_capacity(g.b * g.o * p);
    let dst = y.as_mut_ptr() as usize;
    // One task per output channel: it reads that channel's 16 rows of `M` and writes
    // its plane of every image.
    (0..g.o).into_par_iter().for_each(|o| {
        let rows = &m[o * 16 * ld..][..16 * ld];
        // The channel's planes turned round, `[pixel, B]`, then written back per image.
        let mut yt = vec![0f32; p * b];
        isa::run(|| {
            for ty in 0..tiles.ty {
                for tx in 0..tiles.tx {
                    for i0 in (0..b).step_by(LANES) {
                        let len = LANES.min(b - i0);
                        let t = tiles.index(ty, tx, i0);
                        let mut mt = [[0f32; LANES]; 16];
                        for (xi, lanes) in mt.iter_mut().enumerate() {
                            lanes[..len].copy_from_slice(&rows[xi * ld + t..][..len]);
                        }
                        for (a, row) in output_tile(&mt).iter().enumerate() {
                            for (c, lanes) in row.iter().enumerate() {
                                let (r, col) = (2 * ty + a, 2 * tx + c);
                                if r < ho && col < wo {
                                    yt[(r * wo + col) * b + i0..][..len].copy_from_slice(&lanes[..len]);
                                }
                            }
                        }
                    }
                }
            }
        });
        for i in 0..b {
            for (px, v) in yt.chunks(b).map(|images| images[i]).enumerate() {
                // SAFETY: `y` has room for B·O·P elements; pixel `px` of image `i`'s plane
                // `o` is written by this task alone, once.
                unsafe { *(dst as *mut f32).add((i * g.o + o) * p + px) = v };
            }
        }
    });
    // SAFETY: the tiles cover each plane, so every task wrote all B·P pixels of its
    // channel: all B·O·P elements.
    unsafe { y.set_len(g.b * g.o * p) };
    y
}

/// `Aᵀ·m·A` for [`LANES`] tiles at once: `m` by position, the 2×2 outputs by (row, col).
#[inline(always)]
fn output_tile(m: &[[f32; LANES]; 16]) -> [[[f32; LANES]; 2]; 2] {
    // Aᵀ·m: rows m₀+m₁+m₂ and m₁−m₂−m₃; then the same on columns.
    let mut q = [[[0f32; LANES]; 4]; 2];
    for s in 0..4 {
        for l in 0..LANES {
            q[0][s][l] = m[s][l] + m[4 + s][l] + m[8 + s][l];
            q[1][s][l] = m[4 + s][l] - m[8 + s][l] - m[12 + s][l];
        }
    }
    let mut y = [[[0f32; LANES]; 2]; 2];
    for (a, q) in q.iter().enumerate() {
        for l in 0..LANES {
            y[a][0][l] = q[0][l] + q[1][l] + q[2][l];
            y[a][1][l] = q[1][l] - q[2][l] - q[3][l];
        }
    }
    y
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
    let padded = Padded {
        border: 0,
        rows: 2 * tiles.ty,
        cols: 2 * tiles.tx,
    };
    tile_transform::<2>(tiles, (dy, g.o, (g.t.ho, g.t.wo)), padded, output_grad_tile)
}

/// `A·dy·Aᵀ` for [`LANES`] 2×2 tiles at once, by position `ξ = 4r + s`.
#[inline(always)]
fn output_grad_tile(d: &[[[f32; LANES]; 2]; 2]) -> [[f32; LANES]; 16] {
    let mut v = [[0f32; LANES]; 16];
    for l in 0..LANES {
        let (a, b, c, e) = (d[0][0][l], d[0][1][l], d[1][0][l], d[1][1][l]);
        // A·dy: rows (a, b), (a+c, b+e), (a−c, b−e), (−c, −e); then each row (p, q)
        // times Aᵀ: (p, p+q, p−q, −q).
        let rows = [[a, b], [a + c, b + e], [a - c, b - e], [-c, -e]];
        for (r, [p, q]) in rows.into_iter().enumerate() {
            v[4 * r][l] = p;
            v[4 * r + 1][l] = p + q;
            v[4 * r + 2][l] = p - q;
            v[4 * r + 3][l] = -q;
        }
    }
    v
}

/// `[O, 16, row_length(C)]`: for each position ξ, `dU_ξ [O, tiles] · V_ξᵀ [tiles, C]`.
fn weight_products(g: &Geometry, tiles: &Tiles, du: &[f32], v: &[f32]) -> Vec<f32> {
    let lhs = Operand::rows(du, tiles.ld);
    let rhs = Operand::transposed(v, tiles.ld);
    per_position((g.o, g.c, tiles.n), row_length(g.c), lhs, rhs)
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
