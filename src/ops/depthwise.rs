//! Depthwise 2-D convolution as a candle custom op with its own backward.
//!
//! Why: candle runs `groups = C` as C separate convolutions and its backward is
//! O(C²·H·W); EfficientNet-style foundation models are mostly depthwise layers and the
//! visual prompt is trained *through* them. Direct loops are exact and linear in size.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::act::Act;
use super::cpu::{dispatch, fast_path, slice};
use super::pool::strided;

/// `x`: `[B, C, H, W]` already padded; `w`: `[C, 1, K, K]`; valid convolution with `stride`.
/// The direct kernel on CPU (f32, f64); elsewhere (CUDA, bf16) [`depthwise_conv2d_taps`].
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize) -> candle_core::Result<Tensor> {
    depthwise_conv2d_act(x, w, None, stride, Act::Identity)
}

/// `act(depthwise(x, w) + bias)`, the bias and activation fused into the kernel's
/// output pass on the CPU.
pub fn depthwise_conv2d_act(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, act: Act) -> candle_core::Result<Tensor> {
    if !fast_path(x) {
        let y = depthwise_conv2d_taps(x, w, stride)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?)?,
            None => y,
        };
        return act.composed(&y);
    }
    let bias = match bias {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device())?,
    };
    x.contiguous()?.apply_op3(&w.contiguous()?, &bias, DepthwiseFwd { stride, act })
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
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    ho: usize,
    wo: usize,
}

fn geometry(xs: &[usize], ws: &[usize], s: usize) -> candle_core::Result<Geometry> {
    let (&[b, c, h, w], &[wc, 1, k, k2]) = (xs, ws) else {
        candle_core::bail!("depthwise_conv2d: expected x [B,C,H,W] and w [C,1,K,K], got {xs:?} and {ws:?}")
    };
    if wc != c || k != k2 || h < k || w < k || s == 0 {
        candle_core::bail!("depthwise_conv2d: incompatible x {xs:?}, w {ws:?}, stride {s}")
    }
    Ok(Geometry {
        b,
        c,
        h,
        w,
        k,
        s,
        ho: (h - k) / s + 1,
        wo: (w - k) / s + 1,
    })
}

struct DepthwiseFwd {
    stride: usize,
    act: Act,
}

impl CustomOp3 for DepthwiseFwd {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        dispatch!("depthwise_conv2d", self, fwd, s1, l1, s2, l2, s3, l3)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = self.act.backward(grad, res)?.contiguous()?;
        let gx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(
                w,
                &DepthwiseGradInput {
                    stride: self.stride,
                    h: x.dim(2)?,
                    w: x.dim(3)?,
                },
            )?)
        } else {
            None
        };
        // Frozen foundation weights are plain tensors: skip their gradient entirely.
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(
                &grad,
                &DepthwiseGradWeight {
                    stride: self.stride,
                    k: w.dim(2)?,
                },
            )?)
        } else {
            None
        };
        let gb = if bias.track_op() { Some(grad.sum((0, 2, 3))?) } else { None };
        Ok((gx, gw, gb))
    }
}

impl DepthwiseFwd {
    #[allow(clippy::too_many_arguments)]
    fn fwd<T: WithDType>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(Vec<T>, Shape)> {
        let g = geometry(l1.dims(), l2.dims(), self.stride)?;
        let (x, w) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        let bias = slice::<T>(s3, l3, "depthwise_conv2d")?;
        if bias.len() != g.c {
            candle_core::bail!("depthwise_conv2d: bias {:?} for {} channels", l3.dims(), g.c)
        }
        let mut out = vec![T::zero(); g.b * g.c * g.ho * g.wo];
        out.par_chunks_mut(g.ho * g.wo).enumerate().for_each(|(plane, o)| {
            let ch = plane % g.c;
            let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            let wp = &w[ch * g.k * g.k..(ch + 1) * g.k * g.k];
            for oy in 0..g.ho {
                let orow = &mut o[oy * g.wo..(oy + 1) * g.wo];
                for ky in 0..g.k {
                    let xrow = &xp[(oy * g.s + ky) * g.w..];
                    for kx in 0..g.k {
                        let wv = wp[ky * g.k + kx];
                        if g.s == 1 {
                            // Contiguous slices: the compiler vectorises this loop.
                            for (ov, &xv) in orow.iter_mut().zip(&xrow[kx..kx + g.wo]) {
                                *ov += wv * xv;
                            }
                        } else {
                            for (ox, ov) in orow.iter_mut().enumerate() {
                                *ov += wv * xrow[ox * g.s + kx];
                            }
                        }
                    }
                }
                for v in orow.iter_mut() {
                    *v = self.act.apply(*v + bias[ch]);
                }
            }
        });
        Ok((out, Shape::from((g.b, g.c, g.ho, g.wo))))
    }
}

struct DepthwiseGradInput {
    stride: usize,
    h: usize,
    w: usize,
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        dispatch!("depthwise_conv2d", self, fwd, s1, l1, s2, l2)
    }
}

impl DepthwiseGradInput {
    fn fwd<T: WithDType>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(Vec<T>, Shape)> {
        let &[b, c, ho, wo] = l1.dims() else {
            candle_core::bail!("depthwise grad: bad grad shape")
        };
        let g = geometry(&[b, c, self.h, self.w], l2.dims(), self.stride)?;
        if (g.ho, g.wo) != (ho, wo) {
            candle_core::bail!("depthwise grad: output size mismatch")
        }
        let (gy, w) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        let mut gx = vec![T::zero(); b * c * g.h * g.w];
        gx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane, gxp)| {
            let ch = plane % c;
            let gyp = &gy[plane * ho * wo..(plane + 1) * ho * wo];
            let wp = &w[ch * g.k * g.k..(ch + 1) * g.k * g.k];
            for oy in 0..ho {
                let grow = &gyp[oy * wo..(oy + 1) * wo];
                for ky in 0..g.k {
                    let xrow = &mut gxp[(oy * g.s + ky) * g.w..];
                    for kx in 0..g.k {
                        let wv = wp[ky * g.k + kx];
                        if g.s == 1 {
                            for (xv, &gv) in xrow[kx..kx + wo].iter_mut().zip(grow) {
                                *xv += wv * gv;
                            }
                        } else {
                            for (ox, &gv) in grow.iter().enumerate() {
                                xrow[ox * g.s + kx] += wv * gv;
                            }
                        }
                    }
                }
            }
        });
        Ok((gx, Shape::from((b, c, g.h, g.w))))
    }
}

struct DepthwiseGradWeight {
    stride: usize,
    k: usize,
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        dispatch!("depthwise_conv2d", self, fwd, s1, l1, s2, l2)
    }
}

impl DepthwiseGradWeight {
    fn fwd<T: WithDType>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(Vec<T>, Shape)> {
        let &[b, c, h, w] = l1.dims() else {
            candle_core::bail!("depthwise grad: bad input shape")
        };
        let g = geometry(&[b, c, h, w], &[c, 1, self.k, self.k], self.stride)?;
        if l2.dims() != [b, c, g.ho, g.wo] {
            candle_core::bail!("depthwise grad: grad shape mismatch")
        }
        let (x, gy) = (slice::<T>(s1, l1, "depthwise_conv2d")?, slice::<T>(s2, l2, "depthwise_conv2d")?);
        let kk = g.k * g.k;
        let mut gw = vec![T::zero(); c * kk];
        gw.par_chunks_mut(kk).enumerate().for_each(|(ch, gwc)| {
            for bi in 0..b {
                let plane = bi * c + ch;
                let xp = &x[plane * h * w..(plane + 1) * h * w];
                let gyp = &gy[plane * g.ho * g.wo..(plane + 1) * g.ho * g.wo];
                for ky in 0..g.k {
                    for kx in 0..g.k {
                        let mut acc = T::zero();
                        for oy in 0..g.ho {
                            let xrow = &xp[(oy * g.s + ky) * w..];
                            let grow = &gyp[oy * g.wo..(oy + 1) * g.wo];
                            for (ox, &gv) in grow.iter().enumerate() {
                                acc += gv * xrow[ox * g.s + kx];
                            }
                        }
                        gwc[ky * g.k + kx] += acc;
                    }
                }
            }
        });
        Ok((gw, Shape::from((c, 1, g.k, g.k))))
    }
}
