//! Plumbing shared by the CPU custom ops: contiguous slices of a storage, the f32/f64
//! dispatch, and the switch that sends every op down its composed-candle-ops path
//! (`tdmr bench` times both, so the table shows what the kernels buy).

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};

static COMPOSED_ONLY: AtomicBool = AtomicBool::new(false);

/// Route every op through its composition of candle ops instead of the CPU kernels
/// (for the benchmark's before/after column; results agree to float rounding).
pub fn set_composed_only(on: bool) {
    COMPOSED_ONLY.store(on, Ordering::SeqCst);
}

/// Whether `t` can take the CPU kernels: on the CPU, in f32 (training) or f64
/// (gradient checks). CUDA and bf16 take the compositions, which candle runs natively.
pub fn fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64) && !COMPOSED_ONLY.load(Ordering::Relaxed)
}

/// The contiguous data behind `l` (the wrappers call `.contiguous()` first).
pub fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: non-contiguous input"),
    }
}

/// Call `$op.$f::<T>(args…)` for the storage's dtype (f32 or f64) and wrap the result.
macro_rules! dispatch {
    ($name:expr, $op:expr, $f:ident, $s1:expr $(, $rest:expr)* ) => {
        match $s1 {
            CpuStorage::F32(_) => $op.$f::<f32>($s1 $(, $rest)*).map(|(v, s)| (CpuStorage::F32(v), s)),
            CpuStorage::F64(_) => $op.$f::<f64>($s1 $(, $rest)*).map(|(v, s)| (CpuStorage::F64(v), s)),
            other => candle_core::bail!(
                "{}: unsupported dtype {:?}",
                $name,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
pub(crate) use dispatch;
