//! Activations fused into the CPU kernels' epilogues (convolutions, batch norm), so a
//! layer's bias, normalisation and activation cost one pass over memory instead of
//! three or four, and their backward one masked pass.

use std::mem::MaybeUninit;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor, WithDType};

use super::cpu::{cpu_fwd, par_uninit, slice, Input};
use super::isa;

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
        isa::run(|| match self {
            // A layer without bias passes a zero one: no pass over memory for it.
            Act::Identity if bias == T::zero() => {}
            Act::Identity => row.iter_mut().for_each(|v| *v += bias),
            Act::Relu => row.iter_mut().for_each(|v| *v = Act::Relu.apply(*v + bias)),
            Act::Relu6 => row.iter_mut().for_each(|v| *v = Act::Relu6.apply(*v + bias)),
        })
    }

    /// Whether the gradient passes, judged from the activation's *output* (ReLU's and
    /// ReLU6's flat parts give none, as in PyTorch). Judged from the input instead it
    /// gives the same answer: `passes(v) == passes(apply(v))` for every `v`, NaN too.
    #[inline(always)]
    pub(crate) fn passes<T: WithDType>(self, y: T) -> bool {
        match self {
            Act::Identity => true,
            Act::Relu => y > T::zero(),
            Act::Relu6 => y > T::zero() && y < T::from_f64(6.0),
        }
    }

    /// The activation as a const generic argument (see [`Act::of`]), for kernels whose
    /// loops must be compiled, and vectorised, for one activation each.
    pub(crate) const fn code(self) -> u8 {
        match self {
            Act::Identity => 0,
            Act::Relu => 1,
            Act::Relu6 => 2,
        }
    }

    /// The activation [`Act::code`] gave `code`; a constant wherever `code` is one.
    #[inline(always)]
    pub(crate) const fn of(code: u8) -> Act {
        match code {
            0 => Act::Identity,
            1 => Act::Relu,
            _ => Act::Relu6,
        }
    }

    /// `out[i] = f(self, a[i], b[i])` over two slices of one length, in parallel chunks
    /// of a buffer that is never zero-filled first. The match on the activation is
    /// hoisted, so each arm's loop is compiled, and vectorised, for one activation.
    pub(crate) fn zip_map<T: WithDType>(self, a: &[T], b: &[T], f: impl Fn(Act, T, T) -> T + Sync + Send) -> Vec<T> {
        assert_eq!(a.len(), b.len(), "zip_map: slices of different lengths");
        const CHUNK: usize = 1 << 14;
        // SAFETY: `o`, `a` and `b` have one length, so each arm's loop writes every
        // element of its chunk.
        unsafe {
            par_uninit(a.len(), CHUNK, |i, o| {
                let (a, b) = (&a[i * CHUNK..i * CHUNK + o.len()], &b[i * CHUNK..i * CHUNK + o.len()]);
                isa::run(|| {
                    let each = |o: &mut [MaybeUninit<T>], act: Act| {
                        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                            o.write(f(act, a, b));
                        }
                    };
                    match self {
                        Act::Identity => each(o, Act::Identity),
                        Act::Relu => each(o, Act::Relu),
                        Act::Relu6 => each(o, Act::Relu6),
                    }
                })
            })
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

/// The gradients of `act(conv(x, w) + bias)` for a convolution kernel whose input and
/// weight gradients are the custom ops `grad_input` (applied to `(dy, w)`) and
/// `grad_weight` (to `(x, dy)`): the gradient before the activation first, then each
/// argument's only where something tracks it (frozen foundation weights are plain
/// tensors and get none).
pub fn conv_backward<GI: CustomOp2, GW: CustomOp2>(
    act: Act,
    (x, w, bias): (&Tensor, &Tensor, &Tensor),
    res: &Tensor,
    grad: &Tensor,
    grad_input: GI,
    grad_weight: GW,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
    let dy = act.backward(grad, res)?.contiguous()?;
    let (gx, gw) = input_and_weight_grads(x, w, &dy, grad_input, grad_weight)?;
    let gb = if bias.track_op() { Some(dy.sum((0, 2, 3))?) } else { None };
    Ok((gx, gw, gb))
}

/// The input gradient `grad_input(dy, w)` where `x` is tracked and the weight gradient
/// `grad_weight(x, dy)` where `w` is, from the gradient `dy` before the activation.
pub fn input_and_weight_grads<GI: CustomOp2, GW: CustomOp2>(
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    grad_input: GI,
    grad_weight: GW,
) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let gx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(w, &grad_input)?)
    } else {
        None
    };
    let gw = if w.track_op() {
        Some(x.apply_op2_no_bwd(dy, &grad_weight)?)
    } else {
        None
    };
    Ok((gx, gw))
}

struct ActGrad(Act);

impl CustomOp2 for ActGrad {
    fn name(&self) -> &'static str {
        "activation-grad"
    }

    cpu_fwd!("activation grad"; s1, l1, s2, l2);
}

impl ActGrad {
    fn fwd<T: WithDType>(&self, (s1, l1): Input<'_>, (s2, l2): Input<'_>) -> candle_core::Result<(Vec<T>, Shape)> {
        let (g, y) = (slice::<T>(s1, l1, "activation grad")?, slice::<T>(s2, l2, "activation grad")?);
        if g.len() != y.len() {
            candle_core::bail!("activation grad: gradient {:?} vs output {:?}", l1.dims(), l2.dims())
        }
        let out = self.0.zip_map(g, y, |act, g, y| if act.passes(y) { g } else { T::zero() });
        Ok((out, Shape::from(l1.dims())))
    }
}
