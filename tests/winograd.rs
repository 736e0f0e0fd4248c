//! The Winograd F(2×2, 3×3) convolution (`ops::conv_gemm`, 3×3 stride-1 layers of at
//! least 64 channels on planes under 256 pixels) against the convolution's definition:
//! output, input gradient (itself such a convolution) and weight gradient, on even and
//! odd planes (a last tile half outside), channel counts that are not a multiple of
//! the GEMM's tiles, and under a ReLU epilogue; on every GEMM kernel choice this CPU has.
//!
//! One test function: the GEMM kernel choice is process-wide.

mod common;

use tdmr::ops::act::Act;
use tdmr::ops::conv_gemm::{conv2d_cpu, ConvSpec};

use common::{bits, max_abs_diff, on_each_gemm_kernels, randn, reference_conv, run2, scale};

#[test]
fn winograd_convolutions_match_the_definition() {
    let spec = ConvSpec { stride: 1, pad: [1; 4] };
    // (images, in channels, out channels, height, width)
    let shapes = [
        (3, 64, 64, 8, 8),
        (2, 70, 65, 5, 7),
        (2, 64, 96, 4, 4),
        (1, 80, 64, 15, 15),
        (2, 64, 64, 1, 3),
    ];
    on_each_gemm_kernels(|_| {
        let path = format!("Winograd on {} GEMM kernels", tdmr::ops::gemm_kernels::GemmKernels::active().name());
        for (seed, &(b, c, o, h, w)) in shapes.iter().enumerate() {
            let case = format!("{path}, {b}×{c}×{h}×{w} → {o}");
            let seed = 300 + 10 * seed as u64;
            let x = randn(&[b, c, h, w], seed);
            let wt = (randn(&[o, c, 3, 3], seed + 1) * 0.1).unwrap();
            let bias = randn(&[o], seed + 2);
            let ours = |x: &candle_core::Tensor, w: &candle_core::Tensor| conv2d_cpu(x, w, &bias, spec, Act::Relu);
            let (y1, gx1, gw1) = run2(&x, &wt, ours);
            let (y2, gx2, gw2) = run2(&x, &wt, |x, w| {
                reference_conv(x, w, spec)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)?.relu()
            });
            for (what, a, r) in [("output", &y1, &y2), ("input grad", &gx1, &gx2), ("weight grad", &gw1, &gw2)] {
                let d = max_abs_diff(a, r);
                assert!(d < 2e-5 * scale(r), "{case}: {what} differs from the definition by {d}");
            }
            // One thread gives the bits of all of them: the GEMMs' sums never depend on
            // how the work was split.
            let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let (y3, gx3, gw3) = one_thread.install(|| run2(&x, &wt, ours));
            assert!(
                bits(&y1) == bits(&y3) && bits(&gx1) == bits(&gx3) && bits(&gw1) == bits(&gw3),
                "{case}: one thread differs"
            );
        }
    });
}
