//! Central finite differences against candle's backward, used by the gradient tests.

use candle_core::{DType, Tensor, Var};

/// Largest relative error between the autograd gradient of `f(x)` (a scalar) with
/// respect to `x` and central differences at `probes` coordinates spread over `x`.
/// Perturbations happen in `x`'s own dtype: check in f64 with a small `eps` where
/// f32 rounding or kinks (ReLU6) would swamp the difference quotient.
pub fn max_relative_error(
    x: &Tensor,
    probes: usize,
    eps: f64,
    f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<GradCheck> {
    let var = Var::from_tensor(x)?;
    let loss = f(var.as_tensor())?;
    let grads = loss.backward()?;
    let analytic = match grads.get(var.as_tensor()) {
        Some(g) => g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?,
        None => candle_core::bail!("gradcheck: no gradient reached the input"),
    };
    let base = x.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let n = base.len();
    let eval = |v: Vec<f64>| -> candle_core::Result<f64> {
        let t = Tensor::from_vec(v, x.shape(), x.device())?.to_dtype(x.dtype())?;
        f(&t)?.to_dtype(DType::F64)?.to_scalar::<f64>()
    };
    let step = (n / probes.max(1)).max(1);
    let (mut numeric, mut picked) = (Vec::new(), Vec::new());
    for i in (0..n).step_by(step).take(probes) {
        let mut plus = base.clone();
        plus[i] += eps;
        let mut minus = base.clone();
        minus[i] -= eps;
        numeric.push((eval(plus)? - eval(minus)?) / (2.0 * eps));
        picked.push(analytic[i]);
    }
    // Relative to the gradient's overall scale, so coordinates with a near-zero
    // gradient do not divide by ~0.
    let scale = numeric.iter().chain(picked.iter()).fold(0f64, |m, v| m.max(v.abs())).max(1e-8);
    let max_err = numeric.iter().zip(&picked).map(|(a, b)| (a - b).abs() / scale).fold(0f64, f64::max);
    Ok(GradCheck {
        max_err,
        scale,
        numeric,
        analytic: picked,
    })
}

#[derive(Debug)]
pub struct GradCheck {
    pub max_err: f64,
    pub scale: f64,
    pub numeric: Vec<f64>,
    pub analytic: Vec<f64>,
}
