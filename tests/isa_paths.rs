//! The CPU kernels on every vector path this machine has (`ops::isa`: scalar, avx2,
//! avx512): each path against the compositions of candle ops the kernels replace, and
//! every path bit for bit equal to the scalar one (the loops neither reorder sums nor
//! fuse multiply-adds, so the path must not change a result).
//!
//! One test function: the path limit is process-wide.

mod common;

use candle_core::{Tensor, Var};
use tdmr::ops::act::Act;
use tdmr::ops::conv_gemm::{conv2d_cpu, ConvSpec};
use tdmr::ops::cpu::set_composed_only;
use tdmr::ops::depthwise::depthwise_conv2d_act;
use tdmr::ops::isa::{self, Isa};
use tdmr::ops::norm::batch_norm_train_act;
use tdmr::ops::pool::{max_pool2d, pool2d, PoolKind, PoolSpec};
use tdmr::ops::residual::add_act;

use common::{bits, max_abs_diff, randn, weighted_sum};

/// Every output and gradient of the layers whose loops run on the chosen path:
/// depthwise convolution (taps via `axpy`) with ReLU6, a dense convolution's fused
/// bias + ReLU epilogue and its activation gradient, batch norm with ReLU and with
/// ReLU6 (its gradient gated from the input, both ends of ReLU6 open and shut), max and
/// average pooling (3×3 and the 2×2 loop), a residual join with ReLU.
fn layers() -> Vec<(&'static str, Tensor)> {
    let x = Var::from_tensor(&randn(&[3, 8, 13, 11], 1)).unwrap();
    let dw = Var::from_tensor(&(randn(&[8, 1, 5, 5], 2) * 0.5).unwrap()).unwrap();
    let w = Var::from_tensor(&(randn(&[6, 8, 3, 3], 3) * 0.3).unwrap()).unwrap();
    let (gamma, beta) = (
        Var::from_tensor(&randn(&[6], 4)).unwrap(),
        Var::from_tensor(&randn(&[6], 5)).unwrap(),
    );
    let bias = randn(&[8], 6);

    let d = depthwise_conv2d_act(x.as_tensor(), dw.as_tensor(), Some(&bias), 2, [2, 2, 1, 3], Act::Relu6).unwrap();
    let c = conv2d_cpu(
        x.as_tensor(),
        w.as_tensor(),
        &randn(&[6], 7),
        ConvSpec { stride: 1, pad: [1; 4] },
        Act::Relu,
    )
    .unwrap();
    let (n, _, _) = batch_norm_train_act(&c, gamma.as_tensor(), beta.as_tensor(), 1e-5, Act::Relu).unwrap();
    // β shifted so that some outputs pass 6 and ReLU6's upper gate closes.
    let (n6, _, _) = batch_norm_train_act(
        &c,
        &(gamma.as_tensor() * 3.0).unwrap(),
        &(beta.as_tensor() + 4.0).unwrap(),
        1e-5,
        Act::Relu6,
    )
    .unwrap();
    let m = max_pool2d(&n, 3, 2, 1).unwrap();
    let a = pool2d(
        &n,
        PoolSpec {
            kind: PoolKind::Avg,
            k: 2,
            stride: 2,
            pad: [0; 4],
        },
    )
    .unwrap();
    let m2 = max_pool2d(&n, 2, 2, 0).unwrap();
    let r = add_act(&n, &c, Act::Relu).unwrap();
    let loss = ((weighted_sum(&d, 8).unwrap() + weighted_sum(&m, 9).unwrap()).unwrap() + weighted_sum(&a, 10).unwrap()).unwrap();
    let loss = ((loss + weighted_sum(&r, 11).unwrap()).unwrap() + weighted_sum(&m2, 12).unwrap()).unwrap();
    let loss = (loss + weighted_sum(&n6, 13).unwrap()).unwrap();
    let g = loss.backward().unwrap();
    let grad = |v: &Var| g.get(v).unwrap().clone();
    vec![
        ("depthwise output", d),
        ("batch-norm output", n),
        ("batch-norm ReLU6 output", n6),
        ("max-pool output", m),
        ("2×2 max-pool output", m2),
        ("avg-pool output", a),
        ("residual join output", r),
        ("input gradient", grad(&x)),
        ("depthwise weight gradient", grad(&dw)),
        ("conv weight gradient", grad(&w)),
        ("gamma gradient", grad(&gamma)),
        ("beta gradient", grad(&beta)),
    ]
}

#[test]
fn every_vector_path_matches_the_composed_ops_and_the_scalar_path_bit_for_bit() {
    set_composed_only(true);
    let reference = layers();
    set_composed_only(false);

    let paths = Isa::available();
    assert_eq!(paths[0], Isa::Scalar, "the scalar path runs everywhere");
    let mut scalar: Option<Vec<(&str, Tensor)>> = None;
    for &path in &paths {
        isa::limit(Some(path));
        assert_eq!(Isa::active(), path);
        let got = layers();
        for ((what, a), (_, r)) in got.iter().zip(&reference) {
            let scale = r.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0) as f64;
            let d = max_abs_diff(a, r);
            assert!(d < 2e-5 * scale, "path {path}: {what} differs from the composed ops by {d}");
        }
        if let Some(s) = &scalar {
            for ((what, a), (_, b)) in got.iter().zip(s) {
                assert!(bits(a) == bits(b), "path {path}: {what} is not bit-identical to the scalar path");
            }
        } else {
            scalar = Some(got);
        }
        eprintln!("kernels on path {path}: match the composed ops and the scalar path");
    }
    isa::limit(None);
    eprintln!("paths checked on this CPU ({}): {paths:?}", isa::cpu_model());
}
