//! A residual block's join, `act(y + skip)`, as one pass over memory forward and one
//! masked pass backward. Composed from candle ops it is an add, the activation, and on
//! the way back the activation's compare, convert and multiply, each a full pass, plus
//! a second copy of the same gradient for the skip path; here both summands share the
//! one masked gradient.

use super::act::Act;
use super::cpu::{cpu_fwd, fast_path, slice, Input};
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
        let out = self.0.zip_map(a, b, |act, a, b| act.apply(a + b));
        Ok((out, Shape::from(l1.dims())))
    }
}
