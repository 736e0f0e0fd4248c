//! The direct weight gradient (`ops::conv_gemm`, AVX-512 only) and the im2col + GEMM
//! path it replaces there, against the convolution's definition on geometries that
//! take each of its branches: strides 1 and 2, 1×1 windows read straight from the
//! input and padded windows read from a copy (padding on some sides only, a bottom row
//! no window reaches), output channels that leave a partial vector and a second block
//! of 64, weight positions not a multiple of its tile, and batches over several
//! chunks of images. Also: the same bits on one thread as on all of them.
//!
//! One test function: the GEMM kernel choice, which picks the path, is process-wide.

mod common;

use tdmr::ops::act::Act;
use tdmr::ops::conv_gemm::{conv2d_cpu, ConvSpec};

use common::{bits, max_abs_diff, on_each_gemm_kernels, randn, reference_conv, run2, scale};

#[test]
fn direct_and_gemm_weight_gradients_match_the_definition_on_every_geometry() {
    // (images, in channels, out channels, height, width, kernel, stride, padding)
    let shapes = [
        (2, 16, 19, 12, 12, 3, 2, [1, 1, 1, 1]),
        (3, 17, 70, 9, 11, 1, 2, [0; 4]),
        (2, 20, 16, 10, 10, 1, 1, [0; 4]),
        (2, 16, 33, 9, 9, 3, 1, [0, 1, 0, 1]),
        (2, 18, 24, 11, 8, 5, 1, [2, 2, 2, 2]),
        (2, 16, 16, 8, 8, 3, 2, [0; 4]),
        // 128 turned-round channels per pixel: one 64² image to a chunk.
        (3, 16, 70, 64, 64, 3, 1, [1, 1, 1, 1]),
    ];
    on_each_gemm_kernels(|path| {
        for (seed, &(b, c, o, h, w, k, stride, pad)) in shapes.iter().enumerate() {
            let spec = ConvSpec { stride, pad };
            let seed = 300 + 10 * seed as u64;
            let x = randn(&[b, c, h, w], seed);
            let wt = (randn(&[o, c, k, k], seed + 1) * 0.2).unwrap();
            let bias = randn(&[o], seed + 2);
            let ours = |x: &_, w: &_| conv2d_cpu(x, w, &bias, spec, Act::Identity);
            let (_, _, gw1) = run2(&x, &wt, ours);
            let (_, _, gw2) = run2(&x, &wt, |x, w| {
                reference_conv(x, w, spec)?.broadcast_add(&bias.reshape((1, o, 1, 1))?)
            });
            let d = max_abs_diff(&gw1, &gw2);
            let what = format!("{path}, {b}×{c}×{h}×{w} → {o}, {k}×{k}/{stride} {pad:?}");
            assert!(d < 2e-5 * scale(&gw2), "{what}: weight gradient differs from the definition by {d}");
            let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let (_, _, gw3) = one_thread.install(|| run2(&x, &wt, ours));
            assert!(bits(&gw1) == bits(&gw3), "{what}: one thread gives other bits");
        }
    });
}
