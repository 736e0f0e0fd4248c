//! The direct 3×3 convolution (`ops::conv_gemm`, AVX-512 only) and the im2col + GEMM
//! path it replaces there, each against the convolution's definition: output, input
//! gradient (itself a 3×3 convolution, so direct too) and weight gradient, on shapes
//! that leave partial register tiles (output channels not a multiple of 8, rows not a
//! multiple of 16 pixels, tiles that run across rows) and under a ReLU epilogue.
//!
//! One test function: the GEMM kernel choice, which picks the path, is process-wide.

mod common;

use tdmr::ops::act::Act;
use tdmr::ops::conv_gemm::{conv2d_cpu, ConvSpec};

use common::{bits, max_abs_diff, on_each_gemm_kernels, randn, reference_conv, run2, scale};

#[test]
fn direct_and_gemm_three_by_three_convolutions_match_the_definition() {
    let spec = ConvSpec { stride: 1, pad: [1; 4] };
    // (images, in channels, out channels, height, width)
    let shapes = [(2, 16, 19, 32, 32), (3, 24, 16, 20, 20), (1, 17, 9, 7, 40), (2, 16, 16, 17, 16)];
    on_each_gemm_kernels(|path| {
        for (seed, &(b, c, o, h, w)) in shapes.iter().enumerate() {
            let seed = 100 + 10 * seed as u64;
            let x = randn(&[b, c, h, w], seed);
            let wt = (randn(&[o, c, 3, 3], seed + 1) * 0.2).unwrap();
            let bias = randn(&[o], seed + 2);
            let (y1, gx1, gw1) = run2(&x, &wt, |x, w| conv2d_cpu(x, w, &bias, spec, Act::Relu));
            let (y2, gx2, gw2) = run2(&x, &wt, |x, w| {
                reference_conv(x, w, spec)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)?.relu()
            });
            for (what, a, r) in [("output", &y1, &y2), ("input grad", &gx1, &gx2), ("weight grad", &gw1, &gw2)] {
                let d = max_abs_diff(a, r);
                assert!(
                    d < 2e-5 * scale(r),
                    "{path}, {b}×{c}×{h}×{w} → {o}: {what} differs from the definition by {d}"
                );
            }
            // The same call again gives the same bits (tiles never depend on timing).
            let (y3, gx3, gw3) = run2(&x, &wt, |x, w| conv2d_cpu(x, w, &bias, spec, Act::Relu));
            assert!(
                bits(&y1) == bits(&y3) && bits(&gx1) == bits(&gx3) && bits(&gw1) == bits(&gw3),
                "{path}: not repeatable"
            );
        }
    });
}
