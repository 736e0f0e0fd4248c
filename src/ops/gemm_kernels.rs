//! Which micro-kernels the convolutions' f32 GEMMs run on, chosen at run time.
//!
//! The `gemm` crate picks its kernels by itself: with its `x86-v4` feature, AVX-512
//! wherever the CPU has it. Measured, that is 10–25% faster on an Intel Xeon and 5–15%
//! slower on AMD Zen 4, whose AVX-512 unit runs each 512-bit instruction as two 256-bit
//! halves (README "CPU speed"). So tdmr calls the crate's kernels itself: AVX-512 where
//! the CPU has it and is not a Zen 4, FMA (AVX2) otherwise, and the crate's own choice
//! off x86. Each choice sums in its own order, so figures differ in the last bits
//! between the two; one machine always takes the same one.

use std::sync::atomic::{AtomicU8, Ordering};

use gemm::Parallelism;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernels {
    /// The crate's own dispatch (non-x86 CPUs, or x86 without FMA).
    Crate,
    /// 256-bit FMA kernels.
    Fma,
    /// 512-bit kernels.
    Avx512,
}

impl GemmKernels {
    pub const ALL: [GemmKernels; 3] = [GemmKernels::Crate, GemmKernels::Fma, GemmKernels::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            GemmKernels::Crate => "crate",
            GemmKernels::Fma => "fma",
            GemmKernels::Avx512 => "avx512",
        }
    }

    /// What this CPU runs unless told otherwise (asked once: cpuid is slow in a VM).
    pub fn preferred() -> GemmKernels {
        static PREFERRED: std::sync::OnceLock<GemmKernels> = std::sync::OnceLock::new();
        *PREFERRED.get_or_init(GemmKernels::widest_worth_it)
    }

    fn widest_worth_it() -> GemmKernels {
        let available = GemmKernels::available();
        let widest = *available.last().expect("the crate's dispatch is always available");
        if widest == GemmKernels::Avx512 && double_pumped_avx512() {
            GemmKernels::Fma
        } else {
            widest
        }
    }

    /// Every choice this CPU can run.
    pub fn available() -> Vec<GemmKernels> {
        let mut all = vec![GemmKernels::Crate];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx2") {
                all.push(GemmKernels::Fma);
                if std::is_x86_feature_detected!("avx512f") {
                    all.push(GemmKernels::Avx512);
                }
            }
        }
        all
    }

    /// The kernels in use: the preferred ones, or those set by [`choose`].
    pub fn active() -> GemmKernels {
        match CHOSEN.load(Ordering::Relaxed) {
            NONE => GemmKernels::preferred(),
            i => GemmKernels::ALL[i as usize],
        }
    }
}

impl std::str::FromStr for GemmKernels {
    type Err = String;

    fn from_str(s: &str) -> Result<GemmKernels, String> {
        GemmKernels::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown GEMM kernels {s:?}: expected fma, avx512 or crate"))
    }
}

const NONE: u8 = u8::MAX;
static CHOSEN: AtomicU8 = AtomicU8::new(NONE);

/// Run the f32 GEMMs on `kernels` (`None`: the CPU's preferred ones), for benchmarks
/// and tests that compare the two. Process-wide.
pub fn choose(kernels: Option<GemmKernels>) -> Result<(), String> {
    match kernels {
        Some(k) if !GemmKernels::available().contains(&k) => Err(format!("this CPU cannot run the {} GEMM kernels", k.name())),
        k => {
            CHOSEN.store(k.map_or(NONE, |k| k as u8), Ordering::Relaxed);
            Ok(())
        }
    }
}

/// `TDMR_GEMM=fma|avx512|crate` picks the kernels for the whole process (to reproduce
/// another CPU's figures, or to compare); unset, the CPU's preferred ones.
pub fn choose_from_env() -> Result<(), String> {
    match std::env::var("TDMR_GEMM") {
        Ok(v) if !v.is_empty() => v.parse().and_then(|k| choose(Some(k))).map_err(|e| format!("TDMR_GEMM={v}: {e}")),
        _ => Ok(()),
    }
}

/// AMD family 19h with AVX-512 is Zen 4: its 512-bit instructions take two passes.
fn double_pumped_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        #[allow(unused_unsafe)]
        // SAFETY: cpuid exists on every x86-64 CPU; leaves 0 and 1 always answer.
        let (vendor, signature) = unsafe { (__cpuid(0), __cpuid(1)) };
        let amd = [vendor.ebx, vendor.edx, vendor.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163];
        let family = ((signature.eax >> 8) & 0xf) + ((signature.eax >> 20) & 0xff);
        amd && family == 0x19
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// One f32 GEMM in the `gemm` crate's calling convention (`dst = alpha·dst +
/// beta·lhs·rhs`, strides in elements), on the active kernels.
///
/// # Safety
/// As `gemm::gemm`: the pointers hold the matrices their sizes and strides describe.
pub unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    (dst, dst_cs, dst_rs): (*mut f32, isize, isize),
    read_dst: bool,
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
    (alpha, beta): (f32, f32),
    par: Parallelism,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // As `gemm::gemm` does before its dispatch: the micro-kernels want a
        // column-major destination, so a row-major one is computed as dstᵀ = rhsᵀ·lhsᵀ.
        debug_assert!([dst_cs, dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs].iter().all(|s| *s >= 0));
        let (m, n, dst, lhs, rhs) = if dst_cs.abs() < dst_rs.abs() {
            (n, m, (dst, dst_rs, dst_cs), (rhs, rhs_rs, rhs_cs), (lhs, lhs_rs, lhs_cs))
        } else {
            (m, n, (dst, dst_cs, dst_rs), (lhs, lhs_cs, lhs_rs), (rhs, rhs_cs, rhs_rs))
        };
        match GemmKernels::active() {
            GemmKernels::Avx512 => return x86::avx512((m, n, k), dst, read_dst, lhs, rhs, (alpha, beta), par),
            GemmKernels::Fma => return x86::fma((m, n, k), dst, read_dst, lhs, rhs, (alpha, beta), par),
            GemmKernels::Crate => {}
        }
    }
    gemm::gemm(
        m, n, k, dst, dst_cs, dst_rs, read_dst, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs, alpha, beta, false, false, false, par,
    )
}

/// The two instantiations, each in a function of its own as the crate has them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use gemm::Parallelism;
    use gemm_common::gemm::gemm_basic_generic;
    use gemm_common::simd::{MixedSimd, V3, V4};
    use gemm_f32::microkernel::{avx512f::f32 as v4, fma::f32 as v3};

    type Dst = (*mut f32, isize, isize);
    type Src = (*const f32, isize, isize);

    /// `gemm_basic_generic` on one instruction set's micro-kernels: `$simd` the crate's
    /// SIMD token, `$ukr` its kernel module, `$lanes` f32 lanes per register.
    macro_rules! on_kernels {
        ($name:ident, $simd:ty, $ukr:ident, $lanes:literal) => {
            #[inline(never)]
            pub(super) unsafe fn $name(
                (m, n, k): (usize, usize, usize),
                (dst, dst_cs, dst_rs): Dst,
                read_dst: bool,
                (lhs, lhs_cs, lhs_rs): Src,
                (rhs, rhs_cs, rhs_rs): Src,
                (alpha, beta): (f32, f32),
                par: Parallelism,
            ) {
                let simd = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new().expect("checked by `available`");
                gemm_basic_generic::<
                    _,
                    f32,
                    $lanes,
                    { $ukr::MR_DIV_N * $lanes },
                    { $ukr::NR },
                    { $ukr::MR_DIV_N },
                    { $ukr::H_M },
                    { $ukr::H_N },
                >(
                    simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &$ukr::UKR,
                    &$ukr::H_UKR,
                    false,
                    par,
                )
            }
        };
    }

    on_kernels!(avx512, V4, v4, 16);
    on_kernels!(fma, V3, v3, 8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every choice this CPU has against the plain triple loop, on shapes that leave
    /// partial micro-tiles, with accumulation and transposed operands.
    #[test]
    fn every_kernel_choice_matches_the_definition() {
        let (m, n, k) = (37, 29, 53);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
        let start: Vec<f32> = (0..m * n).map(|i| (i % 5) as f32 * 0.25).collect();
        let mut want = start.clone();
        for i in 0..m {
            for j in 0..n {
                // lhs read transposed (column-major m×k), rhs row-major k×n.
                let dot: f64 = (0..k).map(|p| a[p * m + i] as f64 * b[p * n + j] as f64).sum();
                want[i * n + j] = (start[i * n + j] as f64 + 2.0 * dot) as f32;
            }
        }
        let available = GemmKernels::available();
        for kernels in available.iter().copied() {
            choose(Some(kernels)).unwrap();
            for par in [Parallelism::None, Parallelism::Rayon(2)] {
                let mut dst = start.clone();
                // SAFETY: the buffers hold m·k, k·n and m·n elements for these strides.
                unsafe {
                    gemm_f32(
                        (m, n, k),
                        (dst.as_mut_ptr(), 1, n as isize),
                        true,
                        (a.as_ptr(), m as isize, 1),
                        (b.as_ptr(), 1, n as isize),
                        (1.0, 2.0),
                        par,
                    )
                };
                let err = dst.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(err < 1e-4, "{}: max error {err}", kernels.name());
            }
        }
        choose(None).unwrap();
        println!("GEMM kernels checked on this CPU ({}): {available:?}", crate::ops::isa::cpu_model());
        assert!(choose(Some(GemmKernels::Avx512)).is_ok() == available.contains(&GemmKernels::Avx512));
        choose(None).unwrap();
    }
}
