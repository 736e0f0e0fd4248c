//! Every differentiable building block against central finite differences, and the
//! prompt gradient through the real EfficientNet-Lite0.

mod common;

use candle_core::{DType, Device, Tensor, D};
use tdmr::config::{AlignLoss, PromptKind};
use tdmr::distill::loss;
use tdmr::models::efficientnet_lite::EfficientNetLite;
use tdmr::models::IMAGENET;
use tdmr::ops::act::Act;
use tdmr::ops::{self, conv, gradcheck::max_relative_error, norm, residual};
use tdmr::params::Params;
use tdmr::reprogram::Prompt;

use common::{max_abs_diff, randn, weighted_sum};

fn check(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) {
    common::check_gradient(name, x, 1e-2, f)
}

#[test]
fn depthwise_forward_matches_candle_grouped_conv() {
    for stride in [1, 2] {
        let x = randn(&[2, 5, 9, 9], 1);
        let w = randn(&[5, 1, 3, 3], 2);
        let ours = ops::depthwise_conv2d(&x, &w, stride).unwrap();
        let reference = x.conv2d(&w, 0, stride, 1, 5).unwrap();
        let diff = max_abs_diff(&ours, &reference);
        assert!(diff < 1e-5, "stride {stride}: max abs diff {diff}");
    }
}

/// The device-agnostic version (CUDA, bf16) against the CPU kernel: same values, same
/// gradients to input and weight, on odd sizes where strided views need padding.
#[test]
fn depthwise_taps_match_the_cpu_kernel_values_and_gradients() {
    for (stride, k, size) in [(1, 3, 9), (2, 3, 9), (2, 5, 12), (1, 5, 7), (2, 3, 10)] {
        let x = candle_core::Var::from_tensor(&randn(&[2, 6, size, size], 7)).unwrap();
        let w = candle_core::Var::from_tensor(&randn(&[6, 1, k, k], 8)).unwrap();
        let run = |f: fn(&Tensor, &Tensor, usize) -> candle_core::Result<Tensor>| {
            let y = f(x.as_tensor(), w.as_tensor(), stride).unwrap();
            let g = weighted_sum(&y, 9).unwrap().backward().unwrap();
            (y, g.get(&x).unwrap().clone(), g.get(&w).unwrap().clone())
        };
        let (y1, gx1, gw1) = run(ops::depthwise_conv2d);
        let (y2, gx2, gw2) = run(ops::depthwise::depthwise_conv2d_taps);
        assert_eq!(y1.dims(), y2.dims());
        for (what, a, b) in [("output", &y1, &y2), ("input grad", &gx1, &gx2), ("weight grad", &gw1, &gw2)] {
            let d = max_abs_diff(a, b);
            assert!(d < 1e-4, "s{stride} k{k} {size}²: {what} differs by {d}");
        }
    }
}

#[test]
fn depthwise_gradients_match_finite_differences() {
    for (stride, k) in [(1, 3), (2, 3), (2, 5), (1, 5)] {
        let w = randn(&[4, 1, k, k], 3);
        let x = randn(&[2, 4, 11, 11], 4);
        check(&format!("depthwise input s{stride} k{k}"), &x, |x| {
            weighted_sum(&ops::depthwise_conv2d(x, &w, stride)?, 5)
        });
        check(&format!("depthwise weight s{stride} k{k}"), &w, |w| {
            weighted_sum(&ops::depthwise_conv2d(&x, w, stride)?, 6)
        });
    }
}

#[test]
fn pointwise_conv_matches_conv2d_and_gradients() {
    let x = randn(&[2, 6, 5, 5], 7);
    let w = randn(&[4, 6, 1, 1], 8);
    let b = randn(&[4], 9);
    let ours = ops::pointwise_conv(&x, &w, Some(&b)).unwrap();
    let reference = x
        .conv2d(&w, 0, 1, 1, 1)
        .unwrap()
        .broadcast_add(&b.reshape((1, 4, 1, 1)).unwrap())
        .unwrap();
    let diff = max_abs_diff(&ours, &reference);
    assert!(diff < 1e-5, "max abs diff {diff}");
    check("pointwise input", &x, |x| weighted_sum(&ops::pointwise_conv(x, &w, Some(&b))?, 10));
    check("pointwise weight", &w, |w| weighted_sum(&ops::pointwise_conv(&x, w, Some(&b))?, 11));
}

#[test]
fn im2col_conv_matches_conv2d_and_gradients() {
    let x = randn(&[2, 3, 6, 6], 12);
    let w = randn(&[5, 3, 3, 3], 13);
    let ours = conv::conv2d_im2col(&x, &w, None).unwrap();
    let reference = x.conv2d(&w, 1, 1, 1, 1).unwrap();
    let diff = max_abs_diff(&ours, &reference);
    assert!(diff < 1e-5, "max abs diff {diff}");
    check("im2col input", &x, |x| weighted_sum(&conv::conv2d_im2col(x, &w, None)?, 14));
    check("im2col weight", &w, |w| weighted_sum(&conv::conv2d_im2col(&x, w, None)?, 15));
}

#[test]
fn residual_join_matches_add_then_activation_and_its_gradients() {
    let f64 = |t: Tensor| t.to_dtype(DType::F64).unwrap();
    // Spread over the activations' kinks and ReLU6's ceiling; f64 so a small step
    // rarely straddles a kink.
    let y = f64((randn(&[2, 4, 5, 5], 40) * 4.0).unwrap());
    let skip = f64((randn(&[2, 4, 5, 5], 41) * 4.0).unwrap());
    for act in [Act::Identity, Act::Relu, Act::Relu6] {
        let ours = residual::add_act(&y, &skip, act).unwrap();
        let reference = act.composed(&(&y + &skip).unwrap()).unwrap();
        assert_eq!(max_abs_diff(&ours, &reference), 0.0, "{act:?}");
        let name = |what| format!("residual join {act:?}, {what}");
        common::check_gradient(&name("first summand"), &y, 1e-6, |y| {
            weighted_sum(&residual::add_act(y, &skip, act)?, 42)
        });
        common::check_gradient(&name("skip"), &skip, 1e-6, |s| weighted_sum(&residual::add_act(&y, s, act)?, 43));
        // An identity shortcut: both summands grow from one tensor.
        common::check_gradient(&name("shared input"), &y, 1e-6, |x| {
            weighted_sum(&residual::add_act(&(x * 0.5)?, x, act)?, 44)
        });
    }
}

#[test]
fn tf_same_conv_gradient() {
    let w = randn(&[4, 3, 3, 3], 16);
    let x = randn(&[1, 3, 8, 8], 17);
    check("stem conv stride 2", &x, |x| weighted_sum(&ops::conv2d_same_tf(x, &w, 2)?, 18));
    assert_eq!(conv::same_padding(224, 3, 2), (0, 1));
    assert_eq!(conv::same_padding(7, 5, 1), (2, 2));
}

#[test]
fn bilinear_resize_values_and_gradient() {
    // PyTorch: F.interpolate([[1, 2]], size=4, mode='bilinear', align_corners=False)
    // gives [1.0, 1.25, 1.75, 2.0] along each axis.
    let x = Tensor::new(&[[[[1f32, 2.0]]]], &Device::Cpu).unwrap();
    let y = ops::resize_bilinear(&x.repeat((1, 1, 2, 1)).unwrap(), 4, 4).unwrap();
    let row: Vec<f32> = y.get(0).unwrap().get(0).unwrap().get(0).unwrap().to_vec1().unwrap();
    assert_eq!(row, vec![1.0, 1.25, 1.75, 2.0]);
    let x = randn(&[2, 3, 5, 7], 19);
    check("resize up", &x, |x| weighted_sum(&ops::resize_bilinear(x, 9, 12)?, 20));
    check("resize down", &x, |x| weighted_sum(&ops::resize_bilinear(x, 3, 4)?, 21));
}

#[test]
fn normalisation_and_loss_gradients() {
    let x = randn(&[4, 3, 3, 3], 22);
    let gamma = (randn(&[3], 23) + 1.5).unwrap();
    let beta = randn(&[3], 24);
    check("batch norm (train)", &x, |x| {
        weighted_sum(&norm::batch_norm_train(x, &gamma, &beta, 1e-5)?.0, 25)
    });
    let z = randn(&[5, 8], 26);
    check("l2 normalise", &z, |z| weighted_sum(&norm::l2_normalize(z)?, 27));
    let labels = Tensor::new(&[1u32, 0, 3, 2, 7], &Device::Cpu).unwrap();
    let teacher = randn(&[5, 8], 28);
    let to_candle = |r: tdmr::Result<Tensor>| r.map_err(|e| candle_core::Error::Msg(e.to_string()));
    check("cross-entropy", &z, |z| to_candle(loss::cross_entropy(z, &labels, 0.0)));
    check("cross-entropy smoothed", &z, |z| to_candle(loss::cross_entropy(z, &labels, 0.1)));
    let second = Tensor::new(&[4u32, 0, 1, 6, 7], &Device::Cpu).unwrap();
    let lambda = Tensor::new(&[0.5f32, 1.0, 0.7, 0.9, 0.6], &Device::Cpu).unwrap();
    check("mixup cross-entropy", &z, |z| {
        to_candle(loss::mixup_cross_entropy(z, &labels, &second, &lambda, 0.1))
    });
    check("kd", &z, |z| to_candle(loss::kd(z, &teacher, 4.0)));
    check("align cosine", &z, |z| to_candle(loss::align(z, &teacher, AlignLoss::Cosine)));
    check("align mse", &z, |z| to_candle(loss::align(z, &teacher, AlignLoss::Mse)));
    // The generic softmax is the one the project relies on; it must carry a gradient.
    check("softmax", &z, |z| weighted_sum(&candle_nn::ops::softmax(z, D::Minus1)?, 29));
}

#[test]
fn mixup_cross_entropy_is_the_weighted_sum_of_two_cross_entropies() {
    let z = randn(&[3, 6], 33);
    let a = Tensor::new(&[0u32, 2, 5], &Device::Cpu).unwrap();
    let b = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
    let lambda = [0.75f32, 0.5, 1.0];
    let mixed = loss::mixup_cross_entropy(&z, &a, &b, &Tensor::new(&lambda, &Device::Cpu).unwrap(), 0.0).unwrap();
    // By hand, row by row, from single-row cross-entropies.
    let mut expected = 0.0;
    for (i, l) in lambda.iter().enumerate() {
        let row = z.narrow(0, i, 1).unwrap();
        let ce = |y: &Tensor| -> f32 {
            let y = y.narrow(0, i, 1).unwrap();
            loss::cross_entropy(&row, &y, 0.0).unwrap().to_scalar::<f32>().unwrap()
        };
        expected += (l * ce(&a) + (1.0 - l) * ce(&b)) / 3.0;
    }
    let got = mixed.to_scalar::<f32>().unwrap();
    assert!((got - expected).abs() < 1e-5, "mixup CE {got} vs {expected}");
    // All weights 1 is plain cross-entropy.
    let ones = Tensor::new(&[1f32, 1.0, 1.0], &Device::Cpu).unwrap();
    let plain = loss::cross_entropy(&z, &a, 0.1).unwrap().to_scalar::<f32>().unwrap();
    let same = loss::mixup_cross_entropy(&z, &a, &b, &ones, 0.1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((plain - same).abs() < 1e-6, "{plain} vs {same}");
}

#[test]
fn prompt_gradient_through_real_efficientnet_lite0() {
    let device = Device::Cpu;
    let f32_net = EfficientNetLite::load("sample-data/foundation/efficientnet-lite0.safetensors".as_ref(), &device).unwrap();
    let image = ((randn(&[2, 3, 32, 32], 30) + 1.0).unwrap() * 0.5).unwrap();
    let head = randn(&[1280], 31);
    let delta0 = (randn(&[3, 48, 48], 32) * 0.1).unwrap();
    // R_in (padding prompt around a 32×32 image in a 48×48 canvas) then F, as a function
    // of the prompt, in the dtype of `delta`.
    let forward = |net: &EfficientNetLite, delta: &Tensor| -> candle_core::Result<Tensor> {
        let dt = delta.dtype();
        let x = image.to_dtype(dt)?.pad_with_zeros(2, 8, 8)?.pad_with_zeros(3, 8, 8)?;
        let x = x.broadcast_add(&delta.unsqueeze(0)?)?;
        let x = IMAGENET.apply(&x)?;
        let feats = net.features(&x).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        feats.broadcast_mul(&head.to_dtype(dt)?)?.sum_all()
    };
    // f64 with a tiny step isolates the backward pass from ReLU6 kinks and rounding.
    let f64_net = f32_net.to_dtype(candle_core::DType::F64).unwrap();
    let d64 = delta0.to_dtype(candle_core::DType::F64).unwrap();
    let r = max_relative_error(&d64, 16, 1e-6, |d| forward(&f64_net, d)).unwrap();
    assert!(
        r.max_err < 1e-4,
        "f64 prompt gradient: max relative error {:.3e}\nnumeric  {:?}\nanalytic {:?}",
        r.max_err,
        r.numeric,
        r.analytic
    );
    // In f32 the difference quotient itself is the limit, not the gradient: steps below
    // ~5e-4 drown in rounding, larger ones cross ReLU6 kinks inside the net (2e-4: 2.1e-2,
    // 5e-4: 2.1e-2, 1e-3: 3.1e-2, 1e-2: 1.6e-1 measured). The f64 check above is the
    // exact one; this guards the f32 path against gross errors.
    let r = max_relative_error(&delta0, 16, 5e-4, |d| forward(&f32_net, d)).unwrap();
    eprintln!(
        "f32 prompt gradient through EfficientNet-Lite0: max relative error {:.3e}",
        r.max_err
    );
    assert!(r.max_err < 5e-2, "f32: {:.3e}", r.max_err);

    // The library's own padding prompt: gradient on the border, none on the image.
    let mut p = Params::new(&device, 0);
    let prompt = Prompt::new(&mut p, "prompt.", PromptKind::Padding, 48, 32, 8, IMAGENET).unwrap();
    let out = f32_net.features(&prompt.apply(&image, true).unwrap()).unwrap().sum_all().unwrap();
    let grads = out.backward().unwrap();
    let delta = p.vars(&["prompt.".to_string()]).remove(0);
    let g = grads.get(delta.as_tensor()).expect("the prompt receives a gradient");
    let border_energy = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    let inner_energy = g
        .narrow(1, 8, 32)
        .unwrap()
        .narrow(2, 8, 32)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(border_energy > 0.0, "no gradient reached the prompt");
    assert_eq!(inner_energy, 0.0, "a padding prompt must not change the image region");
}

/// The candle 0.11 ops `src/ops/` replaces, measured against central differences in
/// f64 (docs/ARCHITECTURE.md quotes these figures). If one of them starts to pass, candle
/// has been fixed and the replacement can be reconsidered: the test says which.
#[test]
fn the_candle_gradients_src_ops_replaces_are_still_wrong() {
    let x = randn(&[2, 3, 6, 6], 41).to_dtype(candle_core::DType::F64).unwrap();
    let err = |name: &str, f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>| {
        // candle's fused layer norm has no f64 kernel: that one is measured in f32.
        let (x, eps) = if name.contains("layer_norm") {
            (x.to_dtype(candle_core::DType::F32).unwrap(), 1e-2)
        } else {
            (x.clone(), 1e-6)
        };
        match max_relative_error(&x, 24, eps, f) {
            Ok(r) => {
                eprintln!("candle {name}: max relative gradient error {:.3e}", r.max_err);
                r.max_err
            }
            Err(e) => {
                eprintln!("candle {name}: {}", e.to_string().lines().next().unwrap_or_default());
                f64::INFINITY
            }
        }
    };
    let ln = |x: &Tensor| {
        let (a, b) = (Tensor::ones(6, x.dtype(), x.device())?, Tensor::zeros(6, x.dtype(), x.device())?);
        weighted_sum(&candle_nn::ops::layer_norm(x, &a, &b, 1e-5)?, 42)
    };
    let softmax = |x: &Tensor| weighted_sum(&candle_nn::ops::softmax_last_dim(x)?, 43);
    let max_pool = |x: &Tensor| weighted_sum(&x.max_pool2d(2)?, 44);
    let bilinear = |x: &Tensor| weighted_sum(&x.upsample_bilinear2d(9, 9, false)?, 45);
    let holes = [
        ("fused layer_norm", err("fused layer_norm", &ln)),
        ("softmax_last_dim", err("softmax_last_dim", &softmax)),
        ("max_pool2d", err("max_pool2d", &max_pool)),
        ("upsample_bilinear2d", err("upsample_bilinear2d", &bilinear)),
    ];
    // What tdmr uses instead passes the same check at 1e-6 (the tests above).
    for (name, e) in holes {
        assert!(
            e > 1e-2,
            "candle's {name} gradient is now right ({e:.3e}): src/ops may not need its replacement"
        );
    }
}
