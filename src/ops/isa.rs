//! Which x86 vector extension the CPU kernels' loops are compiled for, chosen at run
//! time: the crate is built for baseline x86-64 (SSE2), so each hot loop is also
//! compiled inside an AVX2 and an AVX-512 function and [`run`] calls the widest one the
//! CPU has.
//!
//! The loops use plain `+` and `*` (no `mul_add`) and keep their order, so every path
//! rounds the same way and gives the same bits: only the GEMM (the `gemm` crate, which
//! dispatches by itself) sums in a per-ISA order.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The widest path this CPU supports.
    pub fn detected() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every path this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|&i| i <= Isa::detected()).collect()
    }

    /// The path [`run`] takes now: the detected one, or a narrower one set by [`limit`].
    pub fn active() -> Isa {
        let detected = Isa::detected();
        match LIMIT.load(Ordering::Relaxed) {
            NO_LIMIT => detected,
            l => Isa::ALL[l as usize].min(detected),
        }
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s)
            .ok_or_else(|| format!("unknown vector path {s:?}: expected scalar, avx2 or avx512"))
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

const NO_LIMIT: u8 = u8::MAX;
static LIMIT: AtomicU8 = AtomicU8::new(NO_LIMIT);

/// Run the kernels on no wider a path than `isa` (`None`: the widest the CPU has), so
/// tests can check each path against the definitions and benchmarks can compare them.
/// Process-wide: callers that change it serialise among themselves.
pub fn limit(isa: Option<Isa>) {
    LIMIT.store(isa.map_or(NO_LIMIT, |i| i as u8), Ordering::Relaxed);
}

/// `f()`, compiled for and run on the active path. `f` must be a closure with its hot
/// loop in its own body: what it calls out of line keeps the baseline code.
#[inline(always)]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match Isa::active() {
        // SAFETY: `active` never exceeds what `is_x86_feature_detected!` found.
        Isa::Avx512 => return unsafe { run_avx512(f) },
        Isa::Avx2 => return unsafe { run_avx2(f) },
        Isa::Scalar => {}
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// The CPU's model name (Linux `/proc/cpuinfo`), for benchmark reports.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_narrows_the_path_and_never_widens_it() {
        let detected = Isa::detected();
        assert_eq!(Isa::available().last(), Some(&detected));
        limit(Some(Isa::Scalar));
        assert_eq!(Isa::active(), Isa::Scalar);
        limit(Some(Isa::Avx512));
        assert_eq!(Isa::active(), detected, "a limit above the CPU's path is the CPU's path");
        limit(None);
        assert_eq!(Isa::active(), detected);
    }
}
