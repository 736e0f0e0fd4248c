//! A residual block's join, `act(y + skip)`, as one pass over memory forward and one
//! masked pass backward. Composed from candle ops it is an add, the activation, and on
//! the way back the activation's compare, convert and multiply, each a full pass, plus
//! a second copy of the same gradient for the skip path; here both summands share the
//! one masked gradient.

use std::mem::MaybeUninit;

use super::act::Act;
use super::cpu::{cpu_fwd, fast_path, par_uninit, slice, Input};
use super::isa;
use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};

/// `act(y + skip)` for two tensors of one shape; on the CPU kernels where
/// [`fast_path`] allows, else composed from candle ops.
pub fn add_act(y: &Tensor, skip: &Tensor, act: Act) -> candle_core::Result<Tensor> {
    if fast_path(y) && y.dtype() == skip.dtype() && y.dims() == skip.dims() && skip.device().is_cpu() {
        y.contiguous()?.apply_op2(&skip.contiguous()?, AddAct(act))
    } else {
        act.composed(&(y + skip)?)
    }
}

struct AddAct(Act);

impl CustomOp2 for AddAct {
    fn name(&self) -> &'static str {
        "residual-add-act"
    }

    cpu_fwd!("residual add"; s1, l1, s2, l2);

    fn bwd(&self, _y: &Tensor, _skip: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.0.backward(grad, res)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

impl AddAct {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (a, b) = (slice::<T>(s1, l1, "residual add")?, slice::<T>(s2, l2, "residual add")?);
        if l1.dims() != l2.dims() {
            candle_core::bail!("residual add: {:?} vs {:?}", l1.dims(), l2.dims())
        }
        const CHUNK: usize = 1 << 14;
        // SAFETY: each chunk's loop writes every element (`o`, `a` and `b` have one length).
        let out = unsafe {
            par_uninit(a.len(), CHUNK, |i, o| {
                let (a, b) = (&a[i * CHUNK..i * CHUNK + o.len()], &b[i * CHUNK..i * CHUNK + o.len()]);
                isa::run(|| {
                    let join = |o: &mut [MaybeUninit<T>], act: Act| {
                        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                            o.write(act.apply(a + b));
                        }
                    };
                    match self.0 {
                        Act::Identity => join(o, Act::Identity),
                        Act::Relu => join(o, Act::Relu),
                        Act::Relu6 => join(o, Act::Relu6),
                    }
                })
            })
        };
        Ok((out, Shape::from(l1.dims())))
    }
}
