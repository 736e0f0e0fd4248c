//! Activations fused into the CPU kernels' epilogues (convolutions, batch norm), so a
//! layer's bias, normalisation and activation cost one pass over memory instead of
//! three or four, and their backward one masked pass.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::cpu::{cpu_fwd, slice};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity,
    Relu,
    Relu6,
}

impl Act {
    #[inline(always)]
    pub fn apply<T: WithDType>(self, v: T) -> T {
        match self {
            Act::Identity => v,
            Act::Relu => {
                if v > T::zero() {
                    v
                } else {
                    T::zero()
                }
            }
            Act::Relu6 => {
                let six = T::from_f64(6.0);
                if v <= T::zero() {
                    T::zero()
                } else if v >= six {
                    six
                } else {
                    v
                }
            }
        }
    }

    /// `row[i] = act(row[i] + bias)`, the match hoisted so each arm's loop vectorises.
    pub fn apply_row<T: WithDType>(self, row: &mut [T], bias: T) {
        match self {
            // A layer without bias passes a zero one: no pass over memory for it.
            Act::Identity if bias == T::zero() => {}
            Act::Identity => row.iter_mut().for_each(|v| *v += bias),
            Act::Relu => row.iter_mut().for_each(|v| *v = Act::Relu.apply(*v + bias)),
            Act::Relu6 => row.iter_mut().for_each(|v| *v = Act::Relu6.apply(*v + bias)),
        }
    }

    /// Whether the gradient passes, judged from the activation's *output* (ReLU's and
    /// ReLU6's flat parts give none, as in PyTorch).
    #[inline(always)]
    fn passes<T: WithDType>(self, y: T) -> bool {
        match self {
            Act::Identity => true,
            Act::Relu => y > T::zero(),
            Act::Relu6 => y > T::zero() && y < T::from_f64(6.0),
        }
    }

    /// The same activation from candle ops (the composed path).
    pub fn composed(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Act::Identity => Ok(x.clone()),
            Act::Relu => x.relu(),
            Act::Relu6 => x.clamp(0f32, 6f32),
        }
    }

    /// The gradient before the activation, from the one after it and the output `y`.
    pub fn backward(self, grad: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
        if self == Act::Identity {
            return Ok(grad.clone());
        }
        grad.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &ActGrad(self))
    }
}

struct ActGrad(Act);

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "activation-grad"
    }

    cpu_fwd!("activation grad"; s1, l1, s2, l2);
}

impl ActGrad {
    fn fwd<T: WithDType>(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(Vec<T>, Shape)> {
        let (g, y) = (slice::<T>(s1, l1, "activation grad")?, slice::<T>(s2, l2, "activation grad")?);
        if g.len() != y.len() {
            candle_core::bail!("activation grad: gradient {:?} vs output {:?}", l1.dims(), l2.dims())
        }
        let mut out = vec![T::zero(); g.len()];
        const CHUNK: usize = 1 << 14;
        out.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
            .for_each(|(o, (g, y))| {
                let mask = |o: &mut [T], act: Act| {
                    for ((o, &g), &y) in o.iter_mut().zip(g).zip(y) {
                        *o = if act.passes(y) { g } else { T::zero() };
                    }
                };
                match self.0 {
                    Act::Identity => o.copy_from_slice(g),
                    Act::Relu => mask(o, Act::Relu),
                    Act::Relu6 => mask(o, Act::Relu6),
                }
            });
        Ok((out, Shape::from(l1.dims())))
    }
}
