//! Small output planes: the images of a group side by side in one column matrix
//! `[C·KH·KW, G·P]`, so each GEMM is `G·P` columns wide. The forward pass and the input
//! gradient run their groups in parallel; the weight gradient runs them in order, each
//! GEMM on every thread.

use super::columns::{channel_columns, write_copy};
use super::*;

/// Images per group: the batch in [`WEIGHT_GRAD_CHUNKS`] groups (a count fixed by the
/// shapes alone, so sums over groups run in the same order on every machine), fewer
/// images where their columns would pass [`PACK_BUDGET`].
fn group_size(g: &Geometry) -> usize {
    let per_image = g.ck().max(g.o) * g.p();
    g.b.div_ceil(WEIGHT_GRAD_CHUNKS).min(PACK_BUDGET / per_image.max(1)).max(1)
}

pub(super) fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], bias: &[T], act: Act) -> Vec<T> {
    let (ck, p, size) = (g.ck(), g.p(), group_size(g));
    // SAFETY: each group's rows are all copied from its GEMM output below.
    unsafe {
        par_uninit(g.b * g.o * p, size * g.o * p, |k, yg| {
            let n = yg.len() / (g.o * p);
            let (mut buf, ld) = (Vec::new(), n * p);
            let cols = columns(g, x, k * size, n, &mut buf);
            let out = gemm_new(
                (g.o, ld, ck),
                Mat::rows(w.as_ptr(), ck),
                Mat::rows(cols.as_ptr(), ld),
                Parallelism::None,
            );
            for j in 0..n {
                for (o, &b) in bias.iter().enumerate() {
                    let row = &mut yg[(j * g.o + o) * p..][..p];
                    for (r, &v) in row.iter_mut().zip(&out[o * ld + j * p..][..p]) {
                        r.write(v);
                    }
                    act.apply_row(init(row), b);
                }
            }
        })
    }
}

pub(super) fn grad_input<T: WithDType>(g: &Geometry, dy: &[T], w: &[T]) -> Vec<T> {
    let (ck, p, size, plane) = (g.ck(), g.p(), group_size(g), g.c * g.plane());
    // SAFETY: each group's gradient is zero-filled before col2im adds into it.
    unsafe {
        par_uninit(g.b * plane, size * plane, |k, dxg| {
            let n = dxg.len() / plane;
            let (mut buf, ld) = (Vec::new(), n * p);
            let dyp = pack_output(g, dy, k * size, n, &mut buf);
            let mut dcol = gemm_new(
                (ck, ld, g.o),
                Mat::transposed(w.as_ptr(), ck),
                Mat::rows(dyp.as_ptr(), ld),
                Parallelism::None,
            );
            dxg.fill(MaybeUninit::new(T::zero()));
            for (j, dxi) in init(dxg).chunks_mut(plane).enumerate() {
                col2im(g, &mut dcol[j * p..], ld, dxi);
            }
        })
    }
}

/// The weight gradient over groups of images taken one after another, each group's
/// columns side by side in one GEMM `dWᵀ += cols · dyᵀ` (`C·KH·KW × O`, `G·P` terms)
/// that runs on every thread. One `dWᵀ` accumulates, where a partial per group in
/// parallel wrote and re-read a whole weight-sized matrix per group (9 MiB at 512
/// channels) for GEMMs only 128 terms deep: 4×4-plane layers ran at two thirds of the
/// forward's rate. The groups are as large as [`PACK_BUDGET`] allows, a size fixed by
/// the shapes, and the `gemm` crate splits a GEMM between threads by its output, never
/// its terms, so the sums run in the same order whatever the thread count.
pub(super) fn grad_weight<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (ck, p) = (g.ck(), g.p());
    if g.b == 0 {
        return vec![T::zero(); g.o * ck];
    }
    let size = (PACK_BUDGET / (ck.max(g.o) * p).max(1)).clamp(1, g.b);
    // One group at a time: the threads share each GEMM.
    let par = inner_parallelism(1);
    let mut dwt = Vec::with_capacity(ck * g.o);
    let (mut cols, mut dyp) = (Vec::new(), Vec::new());
    for first in (0..g.b).step_by(size) {
        let n = size.min(g.b - first);
        let ld = n * p;
        let cols = columns(g, x, first, n, &mut cols);
        let dyp = pack_output(g, dy, first, n, &mut dyp);
        let (lhs, rhs) = (Mat::rows(cols.as_ptr(), ld), Mat::transposed(dyp.as_ptr(), ld));
        // The first group writes `dWᵀ`, the others add to it.
        gemm_raw(&mut dwt.spare_capacity_mut()[..ck * g.o], (ck, g.o, ld), lhs, rhs, first > 0, par);
    }
    // SAFETY: the first group's GEMM wrote all `ck · O` elements (`g.b > 0`).
    unsafe { dwt.set_len(ck * g.o) };
    sum_turned(&[dwt], ck, g.o)
}

/// Columns of images `first..first + n` in `cols`, rows `n·P` long, built in parallel
/// a channel's rows at a time.
fn columns<'a, T: WithDType>(g: &Geometry, x: &[T], first: usize, n: usize, cols: &'a mut Vec<T>) -> &'a [T] {
    let (p, taps, ld) = (g.p(), g.kh * g.kw, n * g.p());
    let out = scratch(cols, g.ck() * ld);
    out.par_chunks_mut(taps * ld).enumerate().for_each(|(c, rows)| {
        for j in 0..n {
            let plane = &x[((first + j) * g.c + c) * g.plane()..][..g.plane()];
            channel_columns(g, plane, &mut rows[j * p..], ld);
        }
    });
    // SAFETY: channel `c`'s chunk is its `KH·KW` rows, each written by all `n` images.
    unsafe { init(out) }
}

/// `dy` of images `first..first + n` as one `[O, n·P]` matrix in `buf`, a row at a
/// time in parallel.
fn pack_output<'a, T: WithDType>(g: &Geometry, dy: &[T], first: usize, n: usize, buf: &'a mut Vec<T>) -> &'a [T] {
    let p = g.p();
    let out = scratch(buf, g.o * n * p);
    out.par_chunks_mut(n * p).enumerate().for_each(|(o, row)| {
        for (j, dst) in row.chunks_mut(p).enumerate() {
            write_copy(dst, &dy[((first + j) * g.o + o) * p..][..p]);
        }
    });
    // SAFETY: row `o` takes `P` values from each of the `n` images.
    unsafe { init(out) }
}
