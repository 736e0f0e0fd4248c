//! The CPU kernels (`ops::conv_gemm`, `ops::pool`, `ops::batch_norm`): values and both
//! gradients against straightforward references on random shapes (kernel, stride,
//! asymmetric padding, odd sizes), and against central finite differences in f64.

mod common;

use candle_core::{DType, Tensor, Var};
use proptest::prelude::*;
use tdmr::ops::act::Act;
use tdmr::ops::conv_gemm::{conv2d_cpu, ConvSpec};
use tdmr::ops::depthwise::{depthwise_conv2d_act, depthwise_conv2d_taps};
use tdmr::ops::norm::batch_norm_train;
use tdmr::ops::pool::{pool2d, PoolKind, PoolSpec};

use common::{max_abs_diff, randn, reference_conv, run2, scale, weighted_sum};

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv_matches_its_definition_values_and_gradients(
        b in 1usize..4, c in 1usize..6, o in 1usize..7, kh in 1usize..6, kw in 1usize..6,
        h in 1usize..12, w in 1usize..12, stride in 1usize..4,
        pad in proptest::array::uniform4(0usize..3), seed in 0u64..1000,
    ) {
        prop_assume!(h + pad[0] + pad[1] >= kh && w + pad[2] + pad[3] >= kw);
        let spec = ConvSpec { stride, pad };
        let x = randn(&[b, c, h, w], seed);
        let wt = randn(&[o, c, kh, kw], seed + 1);
        let zeros = Tensor::zeros(o, DType::F32, x.device()).unwrap();
        let (y1, gx1, gw1) = run2(&x, &wt, |x, w| conv2d_cpu(x, w, &zeros, spec, Act::Identity));
        let (y2, gx2, gw2) = run2(&x, &wt, |x, w| reference_conv(x, w, spec));
        prop_assert_eq!(y1.dims(), y2.dims());
        for (what, a, r) in [("output", &y1, &y2), ("input grad", &gx1, &gx2), ("weight grad", &gw1, &gw2)] {
            let d = max_abs_diff(a, r);
            prop_assert!(d < 1e-4 * scale(r), "{}: differs by {} ({:?}, x {:?}, w {:?})", what, d, spec, x.dims(), wt.dims());
        }
    }

    /// Bias and activation fused into the kernels' output pass, and the depthwise
    /// kernel's own padding, against candle ops doing the same steps one by one.
    #[test]
    fn fused_bias_activation_and_depthwise_padding_match_the_composition(
        b in 1usize..3, c in 1usize..5, o in 1usize..5, k in 1usize..6, h in 1usize..10, w in 1usize..10,
        stride in 1usize..3, pad in proptest::array::uniform4(0usize..3), act in 0usize..3, seed in 0u64..1000,
    ) {
        prop_assume!(h + pad[0] + pad[1] >= k && w + pad[2] + pad[3] >= k);
        let act = [Act::Identity, Act::Relu, Act::Relu6][act];
        // Scaled so ReLU6's upper clip is reached too.
        let x = (randn(&[b, c, h, w], seed) * 8.0).unwrap();
        let bias = randn(&[c], seed + 3);
        let dw = randn(&[c, 1, k, k], seed + 1);
        let composed = |x: &Tensor, w: &Tensor, bias: &Tensor| -> candle_core::Result<Tensor> {
            let [t, bo, l, r] = pad;
            let xp = x.pad_with_zeros(2, t, bo)?.pad_with_zeros(3, l, r)?;
            act.composed(&depthwise_conv2d_taps(&xp, w, stride)?.broadcast_add(&bias.reshape((1, (), 1, 1))?)?)
        };
        let vars = [&x, &dw, &bias].map(|t| Var::from_tensor(t).unwrap());
        let grads = |y: Tensor| {
            let g = weighted_sum(&y, 9).unwrap().backward().unwrap();
            (y, vars.each_ref().map(|v| g.get(v).unwrap().clone()))
        };
        let (t1, g1) = grads(depthwise_conv2d_act(vars[0].as_tensor(), vars[1].as_tensor(), Some(vars[2].as_tensor()), stride, pad, act).unwrap());
        let (t2, g2) = grads(composed(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor()).unwrap());
        prop_assert!(max_abs_diff(&t1, &t2) < 1e-4 * scale(&t2), "depthwise {:?} output", act);
        for (what, a, r) in [("x", &g1[0], &g2[0]), ("w", &g1[1], &g2[1]), ("bias", &g1[2], &g2[2])] {
            prop_assert!(max_abs_diff(a, r) < 1e-4 * scale(r), "depthwise {:?} {} grad differs by {}", act, what, max_abs_diff(a, r));
        }
        // The dense kernel's epilogue, on the same activation.
        let cw = randn(&[o, c, k, k], seed + 4);
        let cb = randn(&[o], seed + 5);
        let spec = ConvSpec { stride, pad };
        let (y1, gx1, _) = run2(&x, &cw, |x, w| conv2d_cpu(x, w, &cb, spec, act));
        let (y2, gx2, _) = run2(&x, &cw, |x, w| act.composed(&reference_conv(x, w, spec)?.broadcast_add(&cb.reshape((1, (), 1, 1))?)?));
        prop_assert!(max_abs_diff(&y1, &y2) < 1e-4 * scale(&y2), "conv {:?} output", act);
        prop_assert!(max_abs_diff(&gx1, &gx2) < 1e-4 * scale(&gx2), "conv {:?} input grad", act);
    }

    #[test]
    fn pooling_matches_the_definition_and_gradients_sum_right(
        b in 1usize..3, c in 1usize..4, h in 1usize..11, w in 1usize..11,
        k in 1usize..5, stride in 1usize..4, pad in proptest::array::uniform4(0usize..3),
        max in any::<bool>(), seed in 0u64..1000,
    ) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        prop_assume!(pad.iter().all(|&p| p < k) && h + pad[0] + pad[1] >= k && w + pad[2] + pad[3] >= k);
        let spec = PoolSpec { kind, k, stride, pad };
        let x = randn(&[b, c, h, w], seed).to_dtype(DType::F64).unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = pool2d(xv.as_tensor(), spec).unwrap();
        let reference = naive_pool(&x, spec);
        prop_assert!(max_abs_diff(&y, &reference) < 1e-12, "{:?} on {:?}", spec, x.dims());
        // Every output's gradient lands in its own window: for max on its maximum
        // (one input), for avg spread as 1/K² over the window's image pixels.
        let gy = randn(y.dims(), seed + 2).to_dtype(DType::F64).unwrap();
        let gx = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap().get(&xv).unwrap().clone();
        let expected = naive_pool_grad(&x, &gy, spec);
        prop_assert!(max_abs_diff(&gx, &expected) < 1e-12, "grad {:?} on {:?}", spec, x.dims());
    }
}

/// The 2×2, stride-2 max-pool has a loop of its own: even and odd planes, and windows
/// with ties, where the first maximum in row order takes the gradient.
#[test]
fn max_pool_2x2_matches_the_definition_with_ties_and_odd_sizes() {
    let spec = PoolSpec {
        kind: PoolKind::Max,
        k: 2,
        stride: 2,
        pad: [0; 4],
    };
    for (h, w) in [(8, 8), (7, 9), (2, 3), (5, 2), (1, 4)] {
        // On a coarse grid, so most windows hold ties.
        let x = (randn(&[2, 3, h, w], (h * w) as u64) * 1.5)
            .unwrap()
            .round()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let xv = Var::from_tensor(&x).unwrap();
        let y = pool2d(xv.as_tensor(), spec);
        if h < 2 {
            assert!(y.is_err(), "{h}×{w} is smaller than the window");
            continue;
        }
        let y = y.unwrap();
        assert_eq!(max_abs_diff(&y, &naive_pool(&x, spec)), 0.0, "{h}×{w}");
        let gy = randn(y.dims(), 3).to_dtype(DType::F64).unwrap();
        let gx = (y * &gy).unwrap().sum_all().unwrap().backward().unwrap().get(&xv).unwrap().clone();
        assert_eq!(max_abs_diff(&gx, &naive_pool_grad(&x, &gy, spec)), 0.0, "grad {h}×{w}");
    }
}

/// Output planes of 256 pixels and more take the per-image GEMM path (smaller ones are
/// packed several images to a GEMM): both against the definition. The last case's
/// columns (130 images of 64 channels × 3×3 taps × 64 pixels) pass the 16 MiB a group
/// of images may take, so its weight gradient adds up more than one group's GEMM.
#[test]
fn conv_paths_for_large_and_small_planes_agree_with_the_definition() {
    for (size, k, stride, pad, b, c) in [
        (20, 3, 1, [1; 4], 3, 4),
        (33, 3, 2, [1, 0, 1, 0], 2, 4),
        (16, 1, 1, [0; 4], 5, 4),
        (9, 3, 1, [1; 4], 9, 4),
        (8, 3, 1, [1; 4], 130, 64),
    ] {
        let spec = ConvSpec { stride, pad };
        let x = randn(&[b, c, size, size], 21);
        let wt = randn(&[6, c, k, k], 22);
        let bias = randn(&[6], 23);
        let (y1, gx1, gw1) = run2(&x, &wt, |x, w| conv2d_cpu(x, w, &bias, spec, Act::Relu));
        let (y2, gx2, gw2) = run2(&x, &wt, |x, w| {
            reference_conv(x, w, spec)?.broadcast_add(&bias.reshape((1, 6, 1, 1))?)?.relu()
        });
        for (what, a, r) in [("output", &y1, &y2), ("input grad", &gx1, &gx2), ("weight grad", &gw1, &gw2)] {
            let d = max_abs_diff(a, r);
            assert!(d < 1e-4 * scale(r), "{size}² k{k} s{stride}: {what} differs by {d}");
        }
    }
}

/// Windows of output `(oy, ox)` clipped to the image: rows and columns.
fn window(spec: PoolSpec, o: usize, pad_lo: usize, size: usize) -> std::ops::Range<usize> {
    let start = (o * spec.stride) as isize - pad_lo as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + spec.k as isize).max(0) as usize).min(size);
    lo..hi.max(lo)
}

fn out_size(spec: PoolSpec, size: usize, lo: usize, hi: usize) -> usize {
    (size + lo + hi - spec.k) / spec.stride + 1
}

fn naive_pool(x: &Tensor, spec: PoolSpec) -> Tensor {
    let (b, c, h, w) = x.dims4().unwrap();
    let data = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (ho, wo) = (
        out_size(spec, h, spec.pad[0], spec.pad[1]),
        out_size(spec, w, spec.pad[2], spec.pad[3]),
    );
    let mut out = Vec::new();
    for p in 0..b * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let vals: Vec<f64> = window(spec, oy, spec.pad[0], h)
                    .flat_map(|y| window(spec, ox, spec.pad[2], w).map(move |x| (y, x)))
                    .map(|(y, xx)| data[p * h * w + y * w + xx])
                    .collect();
                out.push(match spec.kind {
                    PoolKind::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::Avg => vals.iter().sum::<f64>() / (spec.k * spec.k) as f64,
                });
            }
        }
    }
    Tensor::from_vec(out, (b, c, ho, wo), x.device()).unwrap()
}

fn naive_pool_grad(x: &Tensor, gy: &Tensor, spec: PoolSpec) -> Tensor {
    let (b, c, h, w) = x.dims4().unwrap();
    let data = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let g = gy.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let (_, _, ho, wo) = gy.dims4().unwrap();
    let mut dx = vec![0.0; data.len()];
    for p in 0..b * c {
        for oy in 0..ho {
            for ox in 0..wo {
                let idx: Vec<usize> = window(spec, oy, spec.pad[0], h)
                    .flat_map(|y| window(spec, ox, spec.pad[2], w).map(move |xx| p * h * w + y * w + xx))
                    .collect();
                let go = g[(p * ho + oy) * wo + ox];
                match spec.kind {
                    PoolKind::Max => {
                        // The first maximum in row-major order (PyTorch's choice).
                        let best = idx.iter().cloned().fold(None, |best: Option<usize>, i| match best {
                            Some(j) if data[j] >= data[i] => Some(j),
                            _ => Some(i),
                        });
                        if let Some(i) = best {
                            dx[i] += go;
                        }
                    }
                    PoolKind::Avg => idx.iter().for_each(|&i| dx[i] += go / (spec.k * spec.k) as f64),
                }
            }
        }
    }
    Tensor::from_vec(dx, (b, c, h, w), x.device()).unwrap()
}

fn f64s(shape: &[usize], seed: u64) -> Tensor {
    randn(shape, seed).to_dtype(DType::F64).unwrap()
}

fn check(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) {
    common::check_gradient(name, x, 1e-6, f)
}

#[test]
fn conv_gradients_match_finite_differences() {
    for (k, stride, pad) in [
        (3, 1, [1, 1, 1, 1]),
        (3, 2, [0, 1, 0, 1]),
        (1, 1, [0; 4]),
        (5, 3, [2, 0, 1, 2]),
        (2, 2, [0; 4]),
    ] {
        let spec = ConvSpec { stride, pad };
        let (x, w) = (f64s(&[2, 3, 9, 8], 1), f64s(&[4, 3, k, k], 2));
        let b = f64s(&[4], 3);
        let conv = |x: &Tensor, w: &Tensor, b: &Tensor| conv2d_cpu(x, w, b, spec, Act::Identity);
        check(&format!("conv x k{k} s{stride} {pad:?}"), &x, |x| {
            weighted_sum(&conv(x, &w, &b)?, 3)
        });
        check(&format!("conv w k{k} s{stride} {pad:?}"), &w, |w| {
            weighted_sum(&conv(&x, w, &b)?, 3)
        });
        check(&format!("conv bias k{k} s{stride} {pad:?}"), &b, |b| {
            weighted_sum(&conv(&x, &w, b)?, 3)
        });
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (k, stride, pad) in [(3, 2, [1, 1, 1, 1]), (2, 2, [0; 4]), (3, 1, [0, 2, 1, 0])] {
            let spec = PoolSpec { kind, k, stride, pad };
            let x = f64s(&[2, 3, 7, 6], 4);
            check(&format!("{spec:?}"), &x, |x| weighted_sum(&pool2d(x, spec)?, 5));
        }
    }
}

/// Batch norm's kernels against its definition written in candle ops, values and all
/// three gradients, and against finite differences.
#[test]
fn batch_norm_matches_its_definition_and_finite_differences() {
    let (x, gamma, beta) = (f64s(&[3, 4, 5, 7], 6), f64s(&[4], 7), f64s(&[4], 8));
    let definition = |x: &Tensor, g: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        let c = x.broadcast_sub(&mean)?;
        let var = c.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
        c.broadcast_div(&(var + 1e-5)?.sqrt()?)?
            .broadcast_mul(&g.reshape((1, 4, 1, 1))?)?
            .broadcast_add(&b.reshape((1, 4, 1, 1))?)
    };
    let vars = [&x, &gamma, &beta].map(|t| Var::from_tensor(t).unwrap());
    let grads = |y: Tensor| {
        let g = weighted_sum(&y, 9).unwrap().backward().unwrap();
        (y, vars.each_ref().map(|v| g.get(v).unwrap().clone()))
    };
    let (y1, g1) = grads(
        batch_norm_train(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor(), 1e-5)
            .unwrap()
            .0,
    );
    let (y2, g2) = grads(definition(vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor()).unwrap());
    assert!(max_abs_diff(&y1, &y2) < 1e-12, "output differs by {}", max_abs_diff(&y1, &y2));
    for (what, a, b) in [("x", &g1[0], &g2[0]), ("gamma", &g1[1], &g2[1]), ("beta", &g1[2], &g2[2])] {
        let d = max_abs_diff(a, b);
        assert!(d < 1e-10, "batch norm {what} gradient differs by {d}");
    }
    let (_, mean, var) = batch_norm_train(&x, &gamma, &beta, 1e-5).unwrap();
    let m = x.mean_keepdim(0).unwrap().mean_keepdim(2).unwrap().mean_keepdim(3).unwrap();
    assert!(max_abs_diff(&mean, &m.flatten_all().unwrap()) < 1e-12);
    assert_eq!(var.dims(), &[4]);
    check("batch norm x", &x, |x| {
        weighted_sum(&batch_norm_train(x, &gamma, &beta, 1e-5)?.0, 9)
    });
}

/// The kernels against the compositions of candle ops they replace, on the real
/// networks: EfficientNet-Lite0's features and the prompt gradient through it, and a
/// small-CNN training loss with its weight gradients. The two sum in different orders,
/// so they agree to f32 rounding, not bit for bit.
#[test]
fn kernels_agree_with_the_composed_ops_on_real_networks() {
    use tdmr::models::efficientnet_lite::EfficientNetLite;
    use tdmr::models::small_cnn::SmallCnn;
    use tdmr::ops::cpu::set_composed_only;
    use tdmr::params::Params;

    let root = common::root();
    let net = EfficientNetLite::load(&root.join(common::WEIGHTS), &candle_core::Device::Cpu).unwrap();
    let image = randn(&[2, 3, 64, 64], 40);
    let prompt = Var::from_tensor(&(randn(&[1, 3, 64, 64], 41) * 0.1).unwrap()).unwrap();
    let lite = |composed: bool| {
        set_composed_only(composed);
        let f = net.features(&image.broadcast_add(prompt.as_tensor()).unwrap()).unwrap();
        let g = weighted_sum(&f, 42).unwrap().backward().unwrap();
        set_composed_only(false);
        (f, g.get(&prompt).unwrap().clone())
    };
    let ((f1, g1), (f2, g2)) = (lite(false), lite(true));
    assert!(
        max_abs_diff(&f1, &f2) < 1e-5 * scale(&f2),
        "features differ by {}",
        max_abs_diff(&f1, &f2)
    );
    assert!(
        max_abs_diff(&g1, &g2) < 1e-5 * scale(&g2),
        "prompt gradients differ by {}",
        max_abs_diff(&g1, &g2)
    );

    let x = randn(&[4, 3, 32, 32], 43);
    let cnn = |composed: bool| {
        set_composed_only(composed);
        let mut p = Params::new(&candle_core::Device::Cpu, 44);
        let net = SmallCnn::new(&mut p, "t.", 3).unwrap();
        let loss = weighted_sum(&net.features(&x, true).unwrap(), 45).unwrap();
        let grads = loss.backward().unwrap();
        let g: Vec<Tensor> = p
            .vars(&["t.".into()])
            .iter()
            .map(|v| grads.get(v.as_tensor()).unwrap().clone())
            .collect();
        set_composed_only(false);
        (loss, g)
    };
    let ((l1, g1), (l2, g2)) = (cnn(false), cnn(true));
    assert!(max_abs_diff(&l1, &l2) < 1e-5 * scale(&l2), "small-CNN loss differs");
    assert_eq!(g1.len(), g2.len());
    for (a, b) in g1.iter().zip(&g2) {
        assert!(
            max_abs_diff(a, b) < 1e-4 * scale(b),
            "small-CNN gradient differs by {}",
            max_abs_diff(a, b)
        );
    }
}

/// The fused convolution + batch norm node gives the bits of the two nodes it
/// replaces (the same kernels in the same order): output, batch statistics, and the
/// gradients of x, w, γ and β, in f32 and f64, for each activation, both strides, and
/// a 1×1 layer; and its gradients match finite differences.
#[test]
fn fused_conv_batch_norm_gives_the_two_nodes_bits() {
    use tdmr::ops::batch_norm::batch_norm_train_cpu;
    use tdmr::ops::conv_bn::conv_bn_train_cpu;
    let bits = |t: &Tensor| -> Vec<u64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    for dtype in [DType::F32, DType::F64] {
        for (k, stride, act) in [(3, 1, Act::Relu), (3, 2, Act::Identity), (1, 1, Act::Relu6), (3, 1, Act::Identity)] {
            let spec = ConvSpec { stride, pad: [k / 2; 4] };
            let t = |shape: &[usize], seed| randn(shape, seed).to_dtype(dtype).unwrap();
            let (x, w, gamma, beta) = (t(&[3, 4, 9, 9], 31), t(&[5, 4, k, k], 32), t(&[5], 33), t(&[5], 34));
            let vars = [&x, &w, &gamma, &beta].map(|t| Var::from_tensor(t).unwrap());
            let [xv, wv, gv, bv] = vars.each_ref().map(|v| v.as_tensor());
            let grads = |y: &Tensor| {
                let g = weighted_sum(y, 12).unwrap().backward().unwrap();
                vars.each_ref().map(|v| g.get(v).unwrap().clone())
            };
            let fused = conv_bn_train_cpu(xv, wv, gv, bv, spec, 1e-5, act).unwrap();
            let zeros = Tensor::zeros(5, dtype, x.device()).unwrap();
            let (y2, m2, v2) = batch_norm_train_cpu(&conv2d_cpu(xv, wv, &zeros, spec, Act::Identity).unwrap(), gv, bv, 1e-5, act).unwrap();
            let what = format!("{dtype:?} k{k} s{stride} {act:?}");
            assert_eq!(bits(&fused.y), bits(&y2), "{what}: output");
            assert_eq!(bits(&fused.mean), bits(&m2), "{what}: mean");
            assert_eq!(bits(&fused.var), bits(&v2), "{what}: variance");
            for (name, a, b) in ["x", "w", "gamma", "beta"]
                .into_iter()
                .zip(grads(&fused.y))
                .zip(grads(&y2))
                .map(|((n, a), b)| (n, a, b))
            {
                assert_eq!(bits(&a), bits(&b), "{what}: {name} gradient");
            }
        }
    }
    let (x, w, gamma, beta) = (f64s(&[2, 3, 6, 6], 41), f64s(&[4, 3, 3, 3], 42), f64s(&[4], 43), f64s(&[4], 44));
    let spec = ConvSpec { stride: 1, pad: [1; 4] };
    let f = |x: &Tensor, w: &Tensor, g: &Tensor, b: &Tensor| -> candle_core::Result<Tensor> {
        weighted_sum(&conv_bn_train_cpu(x, w, g, b, spec, 1e-5, Act::Identity)?.y, 13)
    };
    check("conv+bn x", &x, |x| f(x, &w, &gamma, &beta));
    check("conv+bn w", &w, |w| f(&x, w, &gamma, &beta));
    check("conv+bn gamma", &gamma, |g| f(&x, &w, g, &beta));
    check("conv+bn beta", &beta, |b| f(&x, &w, &gamma, b));
}
