//! One AdamW update of one parameter tensor on the CPU in a single pass: read θ, the
//! gradient and both moments once, write the new three. Composed from candle ops the
//! same update is fourteen full passes over the tensor, about a tenth of a ResNet-18
//! training step on two cores.
//!
//! Every element goes through the composed update's own operations, in its order and
//! f32 rounding (candle's `t * s` is `t·s + 0`, `t / s` is `t·(1/s) + 0`, `t + s` is
//! `t·1 + s`), so the two give the same bits.

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::cpu::fast_path;
use super::isa;

/// The scalars of one step.
#[derive(Clone, Copy, Debug)]
pub struct AdamwStep {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// The step number, from 1 (bias correction).
    pub t: i32,
}

/// The new θ and moments `(θ', m', v')`, or `None` where the kernel does not apply
/// (another device or dtype, or a non-contiguous tensor): the caller composes then.
pub fn adamw_cpu(
    theta: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
    s: AdamwStep,
) -> Option<candle_core::Result<(Tensor, Tensor, Tensor)>> {
    if !fast_path(theta)
        || m.is_some() != v.is_some()
        || g.dims() != theta.dims()
        || [m, v].iter().flatten().any(|t| t.dims() != theta.dims())
    {
        return None;
    }
    let (new_theta, new_m, new_v) = with_f32(theta, |th| {
        with_f32(g, |g| match (m, v) {
            (Some(m), Some(v)) => with_f32(m, |m| with_f32(v, |v| update(th, g, Some((m, v)), s))).flatten(),
            _ => Some(update(th, g, None, s)),
        })
        .flatten()
    })
    .flatten()?;
    let tensor = |data: Vec<f32>| Tensor::from_vec(data, theta.shape(), theta.device());
    Some((|| Ok((tensor(new_theta)?, tensor(new_m)?, tensor(new_v)?)))())
}

/// `f` of `t`'s contiguous f32 data on the CPU.
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout): (_, &Layout) = t.storage_and_layout();
    let (a, b) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(CpuStorage::F32(data)) => Some(f(&data[a..b])),
        _ => None,
    }
}

fn update(theta: &[f32], g: &[f32], moments: Option<(&[f32], &[f32])>, s: AdamwStep) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let f = |x: f64| x as f32;
    let affine = |x: f32, mul: f32, add: f32| x * mul + add;
    let (b1, one_b1, b2, one_b2) = (f(s.beta1), f(1.0 - s.beta1), f(s.beta2), f(1.0 - s.beta2));
    let (m_corr, v_corr) = (f(1.0 / (1.0 - s.beta1.powi(s.t))), f(1.0 / (1.0 - s.beta2.powi(s.t))));
    let (decay, lr, eps) = (f(1.0 - s.lr * s.weight_decay), f(s.lr), f(s.eps));
    let n = theta.len();
    let (mut out_t, mut out_m, mut out_v) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    const CHUNK: usize = 1 << 14;
    out_t.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(out_m.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .zip(out_v.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, ((ot, om), ov))| {
            let range = c * CHUNK..c * CHUNK + ot.len();
            let (th, g) = (&theta[range.clone()], &g[range.clone()]);
            // Slices and iterators, and the match outside the loop, so that the loop
            // vectorises (it was scalar, with a bounds check per element); `isa::run`
            // offers it the widest vector path. Same operations, so the same bits.
            let step = |ot: &mut [MaybeUninit<f32>],
                        om: &mut [MaybeUninit<f32>],
                        ov: &mut [MaybeUninit<f32>],
                        m: &[f32],
                        v: &[f32],
                        first: bool| {
                for (i, (((ot, om), ov), (&th, &gi))) in ot.iter_mut().zip(om).zip(ov).zip(th.iter().zip(g)).enumerate() {
                    let (m, v) = if first {
                        (affine(gi, one_b1, 0.0), affine(gi * gi, one_b2, 0.0))
                    } else {
                        (
                            affine(m[i], b1, 0.0) + affine(gi, one_b1, 0.0),
                            affine(v[i], b2, 0.0) + affine(gi * gi, one_b2, 0.0),
                        )
                    };
                    let (m_hat, v_hat) = (affine(m, m_corr, 0.0), affine(v, v_corr, 0.0));
                    let upd = m_hat / affine(v_hat.sqrt(), 1.0, eps);
                    ot.write(affine(th, decay, 0.0) - affine(upd, lr, 0.0));
                    om.write(m);
                    ov.write(v);
                }
            };
            isa::run(|| match moments {
                Some((m, v)) => step(ot, om, ov, &m[range.clone()], &v[range.clone()], false),
                None => step(ot, om, ov, th, th, true),
            });
        });
    // SAFETY: the chunks cover all `n` slots of each output and the loop writes each
    // element of its three chunks.
    unsafe {
        out_t.set_len(n);
        out_m.set_len(n);
        out_v.set_len(n);
    }
    (out_t, out_m, out_v)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;
    use crate::config::OptimizerKind;
    use crate::engine::optim::Optimizer;
    use crate::ops::cpu::set_composed_only;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .map(f32::to_bits)
            .collect()
    }

    fn filled(dims: &[usize], seed: usize) -> Tensor {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| ((i * 7919 + seed) % 97) as f32 / 48.5 - 1.0).collect();
        Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
    }

    /// Four AdamW steps with weight decay on a weight and a bias, once on the fused
    /// kernel and once composed from candle ops: the parameters and both moments after
    /// every step, bit for bit.
    #[test]
    fn the_fused_step_gives_the_composed_steps_bits() {
        let run = |composed: bool| {
            set_composed_only(composed);
            let w = Var::from_tensor(&filled(&[37, 29], 1)).unwrap();
            let b = Var::from_tensor(&filled(&[29], 2)).unwrap();
            let x = filled(&[8, 37], 3);
            let mut opt = Optimizer::new(
                OptimizerKind::Adamw,
                vec![("w".into(), w.clone()), ("b".into(), b.clone())],
                0.05,
                0.9,
            );
            let mut seen: Vec<Vec<u32>> = Vec::new();
            for step in 0..4 {
                let y = x.matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
                let loss = (y.tanh().unwrap().sqr().unwrap().sum_all().unwrap() * (step + 1) as f64).unwrap();
                opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
                seen.push([w.as_tensor(), b.as_tensor()].map(bits).concat());
                seen.push(opt.state().iter().flat_map(|(_, t)| bits(t)).collect());
            }
            set_composed_only(false);
            seen
        };
        let t = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        let s = AdamwStep {
            lr: 1e-3,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            t: 1,
        };
        assert!(adamw_cpu(&t, &t, None, None, s).is_some(), "CPU f32 takes the fused kernel");
        assert!(adamw_cpu(&t.to_dtype(DType::F64).unwrap(), &t, None, None, s).is_none());
        let (fused, composed) = (run(false), run(true));
        assert_eq!(fused.len(), composed.len());
        for (i, (a, b)) in fused.iter().zip(&composed).enumerate() {
            assert!(
                a == b,
                "step {}: {} differ",
                i / 2 + 1,
                if i % 2 == 0 { "the parameters" } else { "the moments" }
            );
        }
        assert_ne!(fused[0], fused[6], "the parameters moved");
        assert_ne!(bits(&filled(&[37, 29], 1)), fused[0][..37 * 29], "the first step moved them");
    }
}
