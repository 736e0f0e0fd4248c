//! Depthwise 2-D convolution as a candle custom op with its own backward.
//!
//! Why: candle runs `groups = C` as C separate convolutions and its backward is
//! O(C²·H·W); EfficientNet-style foundation models are mostly depthwise layers and the
//! visual prompt is trained *through* them. Direct loops are exact and linear in size.
//! Small output planes and strided layers run with 16 channels to a vector instead
//! (`depthwise/lanes.rs`), with the same bits.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::act::{conv_backward, Act};
use super::cpu::{add_channel_bias, axpy, bias_or_zeros, cpu_fwd, fast_path, slice, Input, Taps};
use super::pool::strided;

mod lanes;

thread_local! {
    static PLANE_BY_PLANE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run this thread's depthwise convolutions plane by plane even on small planes, where
/// the channel-lanes kernels take them otherwise: for tests and benchmarks that compare
/// the two (the bits are the same).
pub fn set_plane_by_plane(on: bool) {
    PLANE_BY_PLANE.with(|c| c.set(on));
}

/// Whether this thread lets the channel-lanes kernels take the layers they suit.
fn lanes_allowed() -> bool {
    !PLANE_BY_PLANE.with(|c| c.get())
}

/// `x`: `[B, C, H, W]` already padded; `w`: `[C, 1, K, K]`; valid convolution with `stride`.
/// The direct kernel on CPU (f32, f64); elsewhere (CUDA, bf16) [`depthwise_conv2d_taps`].
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    depthwise_conv2d_act(x, w, None, stride, [0; 4], Act::Identity)
}

/// `act(depthwise(x, w) + bias)` with zero padding `[top, bottom, left, right]`: on the
/// CPU the padding is never materialised and the bias and activation are fused into
/// the kernel's output pass.
pub fn depthwise_conv2d_act(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    pad: [usize; 4],
    act: Act,
) -> candle_core::Result<Tensor> {
    if !fast_path(x) {
        let [t, b, l, r] = pad;
        let xp = x.pad_with_zeros(2, t, b)?.pad_with_zeros(3, l, r)?;
        return act.composed(&add_channel_bias(depthwise_conv2d_taps(&xp, w, stride)?, bias)?);
    }
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &bias_or_zeros(bias, w)?, DepthwiseFwd { stride, pad, act })
}

/// The same convolution as a sum of K² shifted, per-channel-scaled views: no custom
/// kernel, so it runs on every device and dtype candle has (CUDA, bf16) and its
/// gradients come from candle's verified elementwise ops. Why not candle's grouped
/// conv2d: its backward is O(C²·H·W) in time and memory.
pub fn depthwise_conv2d_taps(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    let (_, c, h, wd) = x.dims4()?;
    let (cw, one, k, k2) = w.dims4()?;
    if cw != c || one != 1 || k != k2 || h < k || wd < k {
        candle_core::bail!("depthwise_conv2d: x {:?} vs w {:?}", x.dims(), w.dims())
    }
    let (ho, wo) = ((h - k) / stride + 1, (wd - k) / stride + 1);
    let mut acc: Option<Tensor> = None;
    for ky in 0..k {
        let rows = strided(x, 2, ky, ho, stride)?;
        for kx in 0..k {
            let tap = strided(&rows, 3, kx, wo, stride)?;
            let wk = w.narrow(2, ky, 1)?.narrow(3, kx, 1)?.reshape((1, c, 1, 1))?;
            let t = tap.broadcast_mul(&wk)?;
            acc = Some(match acc {
                Some(a) => (a + t)?,
                None => t,
            });
        }
    }
    acc.ok_or_else(|| candle_core::Error::Msg("depthwise_conv2d: empty kernel".into()))
}

#[derive(Clone, Copy)]
struct Geometry {
    b: usize,
    c: usize,
    k: usize,
    t: Taps,
}

impl Geometry {
    fn new(xs: &[usize], ws: &[usize], s: usize, pad: [usize; 4]) -> candle_core::Result<Geometry> {
        let (&[b, c, h, w], &[wc, 1, k, k2]) = (xs, ws) else {
            candle_core::bail!("depthwise_conv2d: expected x [B,C,H,W] and w [C,1,K,K], got {xs:?} and {ws:?}")
        };
        match Taps::new(h, w, k, k2, s, pad) {
            Some(t) if wc == c && k == k2 => Ok(Geometry { b, c, k, t }),
            _ => candle_core::bail!("depthwise_conv2d: incompatible x {xs:?}, w {ws:?}, stride {s}, padding {pad:?}"),
        }
    }

    fn plane(&self) -> usize {
        self.t.h * self.t.w
    }

    fn out_plane(&self) -> usize {
        self.t.ho * self.t.wo
    }
}

/// One plane, zero-padded and split by row and column phase (index mod stride), so a
/// tap reads the inputs of the *whole* output plane as one contiguous run: padded cell
/// `(oy·s + ky, ox·s + kx)` sits in phase `(ky mod s, kx mod s)` at
/// `(oy + ky / s, ox + kx / s)`. The output is computed `cols` wide (the columns past
/// `wo` are scratch, cropped after), so each of the K² taps is one long vector loop
/// even on 3×3 planes, where per-row loops would be all overhead.
struct Phased<T> {
    buf: Vec<T>,
    /// Output plane `ho × cols`, widened.
    wide: Vec<T>,
    s: usize,
    rows: usize,
    cols: usize,
}

impl<T: WithDType> Phased<T> {
    fn new() -> Self {
        Phased {
            buf: Vec::new(),
            wide: Vec::new(),
            s: 1,
            rows: 0,
            cols: 0,
        }
    }

    /// Zeros, shaped for `g`'s padded window extent (one spare row per phase so the
    /// last tap's run stays inside its phase).
    fn reset(&mut self, g: &Geometry) {
        let t = &g.t;
        self.s = t.s;
        self.rows = ((t.ho - 1) * t.s + g.k).div_ceil(t.s) + 1;
        self.cols = ((t.wo - 1) * t.s + g.k).div_ceil(t.s);
        self.buf.clear();
        self.buf.resize(t.s * t.s * self.rows * self.cols, T::zero());
    }

    /// The row of phase `(r mod s, pc)` that padded row `r` lands in.
    fn row_start(&self, r: usize, pc: usize) -> usize {
        (((r % self.s) * self.s + pc) * self.rows + r / self.s) * self.cols
    }

    /// Padded rows that hold image rows, with the image row.
    fn image_rows(&self, g: &Geometry) -> impl Iterator<Item = (usize, usize)> + use<T> {
        let t = g.t;
        let padded_rows = (self.rows - 1) * self.s;
        (t.top..(t.top + t.h).min(padded_rows)).map(move |r| (r, r - t.top))
    }

    /// Load one input plane.
    fn fill(&mut self, g: &Geometry, xp: &[T]) {
        self.reset(g);
        let (s, cols, t) = (self.s, self.cols, g.t);
        for (r, iy) in self.image_rows(g) {
            let src = &xp[iy * t.w..(iy + 1) * t.w];
            for pc in 0..s {
                let start = self.row_start(r, pc);
                let dst = &mut self.buf[start..start + cols];
                for (jj, ix) in image_cols(&t, s, cols, pc) {
                    dst[jj] = src[ix];
                }
            }
        }
    }

    /// Add the image cells onto a gradient plane (the adjoint of [`Self::fill`]).
    fn scatter(&self, g: &Geometry, gxp: &mut [T]) {
        for (r, iy) in self.image_rows(g) {
            let dst = &mut gxp[iy * g.t.w..(iy + 1) * g.t.w];
            for pc in 0..self.s {
                let src = &self.buf[self.row_start(r, pc)..][..self.cols];
                for (jj, ix) in image_cols(&g.t, self.s, self.cols, pc) {
                    dst[ix] += src[jj];
                }
            }
        }
    }

    /// The cells that tap `(ky, kx)` reads for the whole widened output plane.
    fn run(&self, g: &Geometry, ky: usize, kx: usize) -> std::ops::Range<usize> {
        let start = self.row_start(ky, kx % self.s) + kx / self.s;
        start..start + g.t.ho * self.cols
    }

    /// Copy an output-gradient plane into the widened layout (zeros past `wo`).
    fn widen(&mut self, g: &Geometry, gyp: &[T]) {
        let (t, cols) = (g.t, self.cols);
        self.wide.clear();
        self.wide.resize(t.ho * cols, T::zero());
        for (dst, src) in self.wide.chunks_mut(cols).zip(gyp.chunks(t.wo)) {
            dst[..t.wo].copy_from_slice(src);
        }
    }
}

/// For column phase `pc`, the `(phased index, image column)` pairs of a phased row.
fn image_cols(t: &Taps, s: usize, cols: usize, pc: usize) -> impl Iterator<Item = (usize, usize)> {
    let (left, w) = (t.left, t.w);
    (0..cols).filter_map(move |jj| (jj * s + pc).checked_sub(left).filter(|&ix| ix < w).map(|ix| (jj, ix)))
}

/// `Σ a·b` in eight interleaved partial sums (vectorisable, and the same order on
/// every machine).
fn dot<T: WithDType>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail = ra.iter().zip(rb).fold(T::zero(), |s, (&x, &y)| s + x * y);
    acc.iter().fold(tail, |s, &v| s + v)
}

struct DepthwiseFwd {
    stride: usize,
    pad: [usize; 4],
    act: Act,
}

impl CustomOp3 for DepthwiseFwd {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    cpu_fwd!("depthwise_conv2d"; s1, l1, s2, l2, s3, l3);

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let spec = Spec {
            stride: self.stride,
            pad: self.pad,
            h: x.dim(2)?,
            w: x.dim(3)?,
            k: w.dim(2)?,
        };
        conv_backward(
            self.act,
            (x, w, bias),
            res,
            grad,
            DepthwiseGradInput(spec),
            DepthwiseGradWeight(spec),
        )
    }
}

impl DepthwiseFwd {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>, (s3, l3): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let (x, w) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        let bias = slice::<T>(s3, l3, "depthwise_conv2d")?;
        if bias.len() != g.c {
            candle_core::bail!("depthwise_conv2d: bias {:?} for {} channels", l3.dims(), g.c)
        }
        if lanes_allowed() && lanes::takes_forward(&g) {
            let y = lanes::forward(&g, x, w, bias, self.act);
            return Ok((y, Shape::from((g.b, g.c, g.t.ho, g.t.wo))));
        }
        let (t, k) = (g.t, g.k);
        let mut out = vec![T::zero(); g.b * g.c * g.out_plane()];
        out.par_chunks_mut(g.out_plane())
            .enumerate()
            .for_each_init(Phased::new, |ph, (plane, o)| {
                let ch = plane % g.c;
                ph.fill(&g, &x[plane * g.plane()..(plane + 1) * g.plane()]);
                let wp = &w[ch * k * k..(ch + 1) * k * k];
                let mut wide = std::mem::take(&mut ph.wide);
                wide.clear();
                wide.resize(t.ho * ph.cols, T::zero());
                for ky in 0..k {
                    for kx in 0..k {
                        axpy(&mut wide, wp[ky * k + kx], &ph.buf[ph.run(&g, ky, kx)]);
                    }
                }
                for (orow, wrow) in o.chunks_mut(t.wo).zip(wide.chunks(ph.cols)) {
                    orow.copy_from_slice(&wrow[..t.wo]);
                    self.act.apply_row(orow, bias[ch]);
                }
                ph.wide = wide;
            });
        Ok((out, Shape::from((g.b, g.c, t.ho, t.wo))))
    }
}

/// What the gradient ops need to rebuild the forward's geometry.
#[derive(Clone, Copy)]
struct Spec {
    stride: usize,
    pad: [usize; 4],
    h: usize,
    w: usize,
    k: usize,
}

impl Spec {
    fn geometry(&self, b: usize, c: usize) -> candle_core::Result<Geometry> {
        Geometry::new(&[b, c, self.h, self.w], &[c, 1, self.k, self.k], self.stride, self.pad)
    }
}

struct DepthwiseGradInput(Spec);

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    cpu_fwd!("depthwise_conv2d"; s1, l1, s2, l2);
}

impl DepthwiseGradInput {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let &[b, c, ho, wo] = l1.dims() else {
            candle_core::bail!("depthwise grad: output gradient {:?} is not 4-D", l1.dims())
        };
        let g = self.0.geometry(b, c)?;
        let (t, k) = (g.t, g.k);
        if (t.ho, t.wo) != (ho, wo) {
            candle_core::bail!("depthwise grad: output gradient {:?} does not match the input", l1.dims())
        }
        let (gy, w) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        if lanes_allowed() && lanes::takes_grad_input(&g) {
            return Ok((lanes::grad_input(&g, gy, w), Shape::from((b, c, t.h, t.w))));
        }
        let mut gx = vec![T::zero(); b * c * g.plane()];
        gx.par_chunks_mut(g.plane())
            .enumerate()
            .for_each_init(Phased::new, |ph, (plane, gxp)| {
                let ch = plane % c;
                let wp = &w[ch * k * k..(ch + 1) * k * k];
                ph.reset(&g);
                ph.widen(&g, &gy[plane * g.out_plane()..(plane + 1) * g.out_plane()]);
                let wide = std::mem::take(&mut ph.wide);
                for ky in 0..k {
                    for kx in 0..k {
                        let run = ph.run(&g, ky, kx);
                        axpy(&mut ph.buf[run], wp[ky * k + kx], &wide);
                    }
                }
                ph.wide = wide;
                ph.scatter(&g, gxp);
            });
        Ok((gx, Shape::from((b, c, t.h, t.w))))
    }
}

struct DepthwiseGradWeight(Spec);

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-weight"
    }

    cpu_fwd!("depthwise_conv2d"; s1, l1, s2, l2);
}

impl DepthwiseGradWeight {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let &[b, c, _, _] = l1.dims() else {
            candle_core::bail!("depthwise grad: input {:?} is not 4-D", l1.dims())
        };
        let g = self.0.geometry(b, c)?;
        let (t, k) = (g.t, g.k);
        if l2.dims() != [b, c, t.ho, t.wo] {
            candle_core::bail!("depthwise grad: output gradient {:?} does not match the input", l2.dims())
        }
        let (x, gy) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        let mut gw = vec![T::zero(); c * k * k];
        gw.par_chunks_mut(k * k).enumerate().for_each_init(Phased::new, |ph, (ch, gwc)| {
            for bi in 0..b {
                let plane = bi * c + ch;
                ph.fill(&g, &x[plane * g.plane()..(plane + 1) * g.plane()]);
                ph.widen(&g, &gy[plane * g.out_plane()..(plane + 1) * g.out_plane()]);
                for ky in 0..k {
                    for kx in 0..k {
                        gwc[ky * k + kx] += dot(&ph.wide, &ph.buf[ph.run(&g, ky, kx)]);
                    }
                }
            }
        });
        Ok((gw, Shape::from((c, 1, k, k))))
    }
}
