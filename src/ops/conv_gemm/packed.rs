//! Small output planes: the images of a group side by side in one column matrix
//! `[C·KH·KW, G·P]`, so each GEMM is `G·P` columns wide; the groups run in parallel.

use super::*;

/// Images per group: the batch in [`WEIGHT_GRAD_CHUNKS`] groups (a count fixed by the
/// shapes alone, so sums over groups run in the same order on every machine), fewer
/// images where their columns would pass [`PACK_BUDGET`].
fn group_size(g: &Geometry) -> usize {
    let per_image = g.ck().max(g.o) * g.p();
    g.b.div_ceil(WEIGHT_GRAD_CHUNKS).min(PACK_BUDGET / per_image.max(1)).max(1)
}

/// Columns of images `first..first + n` in `cols`, rows `n·P` long: the matrix and its
/// row length.
fn columns<'a, T: WithDType>(g: &Geometry, x: &[T], first: usize, n: usize, cols: &'a mut Vec<T>) -> (&'a [T], usize) {
    let (p, plane) = (g.p(), g.c * g.plane());
    let ld = n * p;
    let out = scratch(cols, g.ck() * ld);
    for j in 0..n {
        let i = first + j;
        im2col(g, &x[i * plane..(i + 1) * plane], &mut out[j * p..], ld);
    }
    // SAFETY: image `j` wrote columns `j·P..(j + 1)·P` of every row, so together the
    // images wrote all `ld` of each.
    (unsafe { init(out) }, ld)
}

/// `dy` of images `first..first + n` as one `[O, n·P]` matrix.
fn pack_output<T: WithDType>(g: &Geometry, dy: &[T], first: usize, n: usize) -> Vec<T> {
    let p = g.p();
    let ld = n * p;
    let mut out = Vec::with_capacity(g.o * ld);
    for o in 0..g.o {
        for j in 0..n {
            out.extend_from_slice(&dy[((first + j) * g.o + o) * p..][..p]);
        }
    }
    out
}

pub(super) fn forward<T: WithDType>(g: &Geometry, x: &[T], w: &[T], bias: &[T], act: Act) -> Vec<T> {
    let (ck, p, size) = (g.ck(), g.p(), group_size(g));
    // SAFETY: each group's rows are all copied from its GEMM output below.
    unsafe {
        par_uninit(g.b * g.o * p, size * g.o * p, |k, yg| {
            let n = yg.len() / (g.o * p);
            let mut buf = Vec::new();
            let (cols, ld) = columns(g, x, k * size, n, &mut buf);
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
            let (dyp, ld) = (pack_output(g, dy, k * size, n), n * p);
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

pub(super) fn grad_weight<T: WithDType>(g: &Geometry, x: &[T], dy: &[T]) -> Vec<T> {
    let (ck, size) = (g.ck(), group_size(g));
    let partials: Vec<Vec<T>> = (0..g.b.div_ceil(size))
        .into_par_iter()
        .map(|k| {
            let n = size.min(g.b - k * size);
            let mut buf = Vec::new();
            let (cols, ld) = columns(g, x, k * size, n, &mut buf);
            let dyp = pack_output(g, dy, k * size, n);
            // Not turned round as the per-image path is: with several images side by
            // side that ran slower (4×4 planes, 512 channels).
            gemm_new(
                (g.o, ck, ld),
                Mat::rows(dyp.as_ptr(), ld),
                Mat::transposed(cols.as_ptr(), ld),
                Parallelism::None,
            )
        })
        .collect();
    sum_in_order(partials, g.o * ck)
}
