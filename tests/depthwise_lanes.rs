//! The depthwise convolution's channel-lanes kernels (small output planes and strided
//! layers) against the plane-by-plane path they replace there: the same bits for the
//! output and both gradients, on every vector path this machine has, with bias and
//! ReLU6, strides 1 and 2, kernels 3 and 5, asymmetric padding, and channel counts
//! that leave a partial block of 16. Also within rounding of the composed candle ops.
//!
//! One test function: the vector-path limit is process-wide.

mod common;

use candle_core::{Tensor, Var};
use tdmr::ops::act::Act;
use tdmr::ops::cpu::set_composed_only;
use tdmr::ops::depthwise::{depthwise_conv2d_act, set_plane_by_plane};
use tdmr::ops::isa::{self, Isa};

use common::{bits, max_abs_diff, randn, scale, weighted_sum};

/// Output, input gradient and weight gradient of one depthwise layer.
fn run(x: &Tensor, w: &Tensor, bias: &Tensor, stride: usize, pad: [usize; 4]) -> [Tensor; 3] {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = depthwise_conv2d_act(xv.as_tensor(), wv.as_tensor(), Some(bias), stride, pad, Act::Relu6).unwrap();
    let g = weighted_sum(&y, 5).unwrap().backward().unwrap();
    [y, g.get(&xv).unwrap().clone(), g.get(&wv).unwrap().clone()]
}

#[test]
fn channel_lane_kernels_give_the_plane_by_plane_bits() {
    // (images, channels, height, width, kernel, stride, padding): output planes of
    // 3×3 (both kernels), 2×2, 6×6, 12×12 and, strided, 17×17.
    let shapes = [
        (2, 20, 3, 3, 5, 1, [2, 2, 2, 2]),
        (3, 16, 6, 6, 3, 2, [1, 1, 1, 1]),
        (2, 7, 5, 4, 3, 2, [1, 0, 0, 1]),
        (2, 33, 6, 6, 5, 1, [2, 2, 2, 2]),
        (1, 17, 24, 24, 5, 2, [1, 2, 1, 2]),
        (1, 18, 34, 33, 3, 2, [1, 1, 0, 1]),
    ];
    let paths = Isa::available();
    for &path in &paths {
        isa::limit(Some(path));
        for (seed, &(b, c, h, w, k, stride, pad)) in shapes.iter().enumerate() {
            let seed = 500 + 10 * seed as u64;
            let x = (randn(&[b, c, h, w], seed) * 3.0).unwrap();
            let wt = randn(&[c, 1, k, k], seed + 1);
            let bias = randn(&[c], seed + 2);
            let lanes = run(&x, &wt, &bias, stride, pad);
            set_plane_by_plane(true);
            let planes = run(&x, &wt, &bias, stride, pad);
            set_plane_by_plane(false);
            set_composed_only(true);
            let composed = run(&x, &wt, &bias, stride, pad);
            set_composed_only(false);
            let what = format!("path {path}, {b}×{c}×{h}×{w}, {k}×{k}/{stride} {pad:?}");
            for (name, (a, p), r) in ["output", "input gradient", "weight gradient"]
                .into_iter()
                .zip(lanes.iter().zip(&planes))
                .zip(&composed)
                .map(|((n, ap), r)| (n, ap, r))
            {
                assert!(bits(a) == bits(p), "{what}: {name} differs from the plane-by-plane path's bits");
                let d = max_abs_diff(a, r);
                assert!(d < 2e-5 * scale(r), "{what}: {name} differs from the composed ops by {d}");
            }
        }
        eprintln!("depthwise channel lanes on path {path}: the plane-by-plane bits");
    }
    isa::limit(None);
}
