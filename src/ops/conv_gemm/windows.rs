//! How the direct weight gradient (`direct_grad_weight.rs`) finds a convolution's
//! windows: every input a weight position reads for an output pixel sits at
//! `position + window` in the chunk's images, so the inner loop adds two offsets and
//! never tests a border.

use rayon::prelude::*;

use super::Geometry;

/// The planes the windows read: their rows and columns (padding included), and
/// whether that is `x` itself (no padding, and every window inside the plane) or a
/// zero-bordered copy.
pub(super) struct Planes {
    pub rows: usize,
    pub cols: usize,
    pub copied: bool,
}

impl Planes {
    pub fn of(g: &Geometry) -> Planes {
        let t = &g.t;
        let (rows, cols) = ((t.ho - 1) * t.s + g.kh, (t.wo - 1) * t.s + g.kw);
        if t.top == 0 && t.left == 0 && rows <= t.h && cols <= t.w {
            Planes {
                rows: t.h,
                cols: t.w,
                copied: false,
            }
        } else {
            Planes { rows, cols, copied: true }
        }
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Where weight position `r` (channel, then tap in row-major order) reads,
    /// relative to an output pixel's window, for `r` in `0..n`; positions past
    /// `C·KH·KW` (a partial register tile's) repeat the last one.
    pub fn positions(&self, g: &Geometry, n: usize) -> Vec<usize> {
        let (ck, taps) = (g.ck(), g.kh * g.kw);
        (0..n)
            .map(|r| {
                let (c, tap) = (r.min(ck - 1) / taps, r.min(ck - 1) % taps);
                c * self.len() + (tap / g.kw) * self.cols + tap % g.kw
            })
            .collect()
    }

    /// Where each output pixel of `images` images has its window, from the first
    /// image's start, pixels in order.
    pub fn windows(&self, g: &Geometry, images: usize) -> Vec<usize> {
        let (t, image_len) = (&g.t, g.c * self.len());
        (0..images)
            .flat_map(|i| (0..t.ho).flat_map(move |oy| (0..t.wo).map(move |ox| (i, oy, ox))))
            .map(|(i, oy, ox)| i * image_len + oy * t.s * self.cols + ox * t.s)
            .collect()
    }

    /// Images `0..n` of `x` into `padded` (`[n, C, rows, cols]`), leaving the borders
    /// as they are (zero).
    pub fn pad(&self, g: &Geometry, x: &[f32], n: usize, padded: &mut [f32]) {
        let (h, w, top, left) = (g.t.h, g.t.w, g.t.top, g.t.left);
        let (rows, cols) = (h.min(self.rows - top), w.min(self.cols - left));
        padded[..n * g.c * self.len()]
            .par_chunks_mut(self.len())
            .zip(x.par_chunks(h * w))
            .with_min_len(8)
            .for_each(|(dst, src)| {
                for (d, s) in dst[top * self.cols..].chunks_mut(self.cols).zip(src.chunks(w)).take(rows) {
                    d[left..left + cols].copy_from_slice(&s[..cols]);
                }
            });
    }
}
