//! Plumbing shared by the CPU custom ops: contiguous slices of a storage, the f32/f64
//! dispatch, and the switch that sends every op down its composed-candle-ops path
//! (`tdmr bench` times both, so the table shows what the kernels buy).

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::isa;
use candle_core::{CpuStorage, DType, Layout, Tensor, WithDType};

thread_local! {
    static COMPOSED_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// Route every op built on this thread through its composition of candle ops instead
/// of the CPU kernels (the benchmark's before column, and tests comparing the two);
/// results agree to float rounding. Per thread, so tests running beside each other
/// keep their own path.
pub fn set_composed_only(on: bool) {
    COMPOSED_ONLY.with(|c| c.set(on));
}

/// Whether `t` can take the CPU kernels: on the CPU, in f32 (training) or f64
/// (gradient checks). CUDA and bf16 take the compositions, which candle runs natively.
pub fn fast_path(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64) && !COMPOSED_ONLY.with(|c| c.get())
}

/// A convolution's bias as the kernels take it: `[O]`, contiguous, zeros when the
/// layer has none (`w` is `[O, …]`).
pub fn bias_or_zeros(bias: Option<&Tensor>, w: &Tensor) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => b.contiguous(),
        None => Tensor::zeros(w.dim(0)?, w.dtype(), w.device()),
    }
}

/// `y` `[B, C, H, W]` plus a per-channel bias, if any (the compositions' bias).
pub fn add_channel_bias(y: Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// The contiguous data behind `l` (the wrappers call `.contiguous()` first).
pub fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    let data = s.as_slice::<T>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: non-contiguous input"),
    }
}

/// Where the taps of a strided, zero-padded `kh × kw` window land in one `h × w` plane
/// (shared by the convolution kernels, which never materialise the padding).
#[derive(Clone, Copy, Debug)]
pub struct Taps {
    pub h: usize,
    pub w: usize,
    pub s: usize,
    pub top: usize,
    pub left: usize,
    pub ho: usize,
    pub wo: usize,
}

impl Taps {
    /// `None` when the padded plane is smaller than the window or the stride is 0.
    pub fn new(h: usize, w: usize, kh: usize, kw: usize, s: usize, pad: [usize; 4]) -> Option<Taps> {
        let [top, bottom, left, right] = pad;
        let (hp, wp) = (h + top + bottom, w + left + right);
        if s == 0 || kh == 0 || kw == 0 || hp < kh || wp < kw {
            return None;
        }
        Some(Taps {
            h,
            w,
            s,
            top,
            left,
            ho: (hp - kh) / s + 1,
            wo: (wp - kw) / s + 1,
        })
    }

    /// Output columns `lo..hi` whose tap `kx` lands inside the plane, and the input
    /// column of the first (`x0`; output `lo + i` reads `x0 + i·s`). Empty when `lo == hi`.
    #[inline]
    pub fn columns(&self, kx: usize) -> (usize, usize, usize) {
        let lo = if self.left > kx { (self.left - kx).div_ceil(self.s) } else { 0 };
        let hi = (self.w + self.left).saturating_sub(kx).div_ceil(self.s).min(self.wo);
        let lo = lo.min(hi);
        (lo, hi, (lo * self.s + kx).saturating_sub(self.left))
    }

    /// The input row of output row `oy` at tap `ky`, if inside the plane.
    #[inline]
    pub fn row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.s + ky).checked_sub(self.top).filter(|&iy| iy < self.h)
    }
}

/// `y += a · x` over the shorter of the two, on the widest vector path the CPU has
/// ([`isa`]). No FMA: the rounding is the same on every path and machine.
#[inline]
pub fn axpy<T: WithDType>(y: &mut [T], a: T, x: &[T]) {
    isa::run(|| {
        for (yv, &xv) in y.iter_mut().zip(x) {
            *yv += a * xv;
        }
    })
}

/// A new `[T]` of `n` elements filled in place, `chunk` elements at a time in parallel,
/// without zero-filling it first: for outputs written once, that fill is a whole extra
/// pass over memory (measured at 5–8% of a training step).
///
/// # Safety
/// `fill(i, out)` must write every element of `out`, the `i`-th chunk (the last may be
/// shorter), before it returns; [`init`] then views the chunk as `&mut [T]`.
pub(crate) unsafe fn par_uninit<T: Send>(n: usize, chunk: usize, fill: impl Fn(usize, &mut [MaybeUninit<T>]) + Sync + Send) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, o)| fill(i, o));
    // SAFETY: the chunks cover all `n` slots and the caller's `fill` wrote each one.
    unsafe { out.set_len(n) };
    out
}

/// `out` as initialised values.
///
/// # Safety
/// Every element of `out` has been written.
pub(crate) unsafe fn init<T>(out: &mut [MaybeUninit<T>]) -> &mut [T] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the caller wrote every element.
    unsafe { &mut *(out as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// `v` as f32 where `T` is f32, for kernels written with f32 intrinsics.
pub(crate) fn as_f32<T: 'static>(v: &[T]) -> Option<&[f32]> {
    // SAFETY: `T` is f32 (checked), so the slice is the same memory and length.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(v.as_ptr() as *const f32, v.len()) })
}

/// An f32 kernel's output as a `Vec<T>`, where `T` is f32 (checked).
pub(crate) fn from_f32<T: 'static>(v: Vec<f32>) -> Vec<T> {
    assert_eq!(std::any::TypeId::of::<T>(), std::any::TypeId::of::<f32>());
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `T` is f32: same layout, and the allocation moves over whole.
    unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) }
}

/// One argument of a custom op's CPU kernel: its storage and layout.
pub(crate) type Input<'a> = (&'a CpuStorage, &'a Layout);

/// Call `$op.$f::<T>((storage, layout), …)` for the first storage's dtype (f32 or f64)
/// and wrap the result.
macro_rules! dispatch {
    ($name:expr, $op:expr, $f:ident, $s0:ident, $l0:ident $(, $s:ident, $l:ident)*) => {
        match $s0 {
            CpuStorage::F32(_) => $op.$f::<f32>(($s0, $l0) $(, ($s, $l))*).map(|(v, s)| (CpuStorage::F32(v), s)),
            CpuStorage::F64(_) => $op.$f::<f64>(($s0, $l0) $(, ($s, $l))*).map(|(v, s)| (CpuStorage::F64(v), s)),
            other => candle_core::bail!(
                "{}: unsupported dtype {:?}",
                $name,
                candle_core::backend::BackendStorage::dtype(other)
            ),
        }
    };
}
pub(crate) use dispatch;

/// A custom op's `cpu_fwd`: hand its storages and layouts, paired, to its generic
/// `fwd::<T>` for the storage's dtype, e.g. `cpu_fwd!("conv2d"; s1, l1, s2, l2, s3, l3);`
/// calls `fwd::<f32>((s1, l1), (s2, l2), (s3, l3))`.
macro_rules! cpu_fwd {
    ($name:expr; $($s:ident, $l:ident),+) => {
        fn cpu_fwd(&self, $($s: &CpuStorage, $l: &Layout),+) -> candle_core::Result<(CpuStorage, Shape)> {
            $crate::ops::cpu::dispatch!($name, self, fwd, $($s, $l),+)
        }
    };
}
pub(crate) use cpu_fwd;
