//! The target zoo: each kind of layer against finite differences (and the strided
//! convolutions against candle's reference convolution), the parameter and MAC counts
//! against the published architectures, and a short training run per target on the
//! digits that must beat chance (10%) by a wide margin.

mod common;

use candle_core::{Device, Tensor};
use common::weighted_sum;
use tdmr::engine::run_blocking;
use tdmr::engine::run_dir::RunDir;
use tdmr::models::targets::blocks::{softmax_last, Conv, ConvBn, LayerNorm, Macs};
use tdmr::models::targets::mobilenet_v2::{Expansion, InvertedResidual};
use tdmr::models::targets::resnet::BasicBlock;
use tdmr::models::targets::vit_tiny::{self, Block};
use tdmr::models::targets::{Backbone, TargetSpec};
use tdmr::params::Params;

/// Test inputs in f64 (the layers under test are built in f64 too).
fn randn(shape: &[usize], seed: u64) -> Tensor {
    common::randn(shape, seed).to_dtype(candle_core::DType::F64).unwrap()
}

/// Layers under test are built in f64, so central differences at a small step are
/// neither swamped by f32 rounding nor thrown off by ReLU6 kinks.
fn f64_params(seed: u64) -> Params {
    Params::with_dtype(&Device::Cpu, seed, candle_core::DType::F64)
}

/// Gradient to an f64 input of `f` against central differences.
fn check(name: &str, x: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) {
    common::check_gradient(name, x, 1e-4, f)
}

fn lift(e: tdmr::Error) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

#[test]
fn strided_dense_and_depthwise_convolutions_match_candle_with_pytorch_padding() {
    let x = randn(&[2, 4, 9, 9], 1).to_dtype(candle_core::DType::F32).unwrap();
    for (k, depthwise) in [(3, false), (1, false), (3, true)] {
        let mut p = Params::new(&Device::Cpu, 7);
        let (mut side, mut macs) = (9, Macs::default());
        let layer = ConvBn::new(
            &mut p,
            "c",
            Conv {
                cin: 4,
                cout: 4,
                k,
                stride: 2,
                depthwise,
            },
            &mut side,
            &mut macs,
        )
        .unwrap();
        let w = p.tensors()["c.weight"].clone();
        let ours = layer.conv(&x).unwrap();
        let groups = if depthwise { 4 } else { 1 };
        let reference = x.conv2d(&w, k / 2, 2, 1, groups).unwrap();
        assert_eq!(ours.dims(), reference.dims(), "k {k} depthwise {depthwise}");
        assert_eq!(side, 5, "output side of a stride-2 layer on 9 pixels");
        let diff = (ours - reference)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "k {k} depthwise {depthwise}: max abs diff {diff}");
        let per_image = 4 * if depthwise { 1 } else { 4 } * k * k * 25;
        assert_eq!(macs.0, per_image as u64);
    }
}

#[test]
fn conv_bn_layers_pass_gradient_checks() {
    for (k, stride, depthwise) in [(3, 2, false), (1, 2, false), (3, 2, true), (3, 1, true)] {
        let mut p = f64_params(3);
        let (mut side, mut macs) = (7, Macs::default());
        let layer = ConvBn::new(
            &mut p,
            "c",
            Conv {
                cin: 3,
                cout: 3,
                k,
                stride,
                depthwise,
            },
            &mut side,
            &mut macs,
        )
        .unwrap();
        let x = randn(&[2, 3, 7, 7], 2);
        // Batch norm on top, in training mode (batch statistics).
        check(&format!("k {k} stride {stride} depthwise {depthwise}"), &x, |x| {
            weighted_sum(&layer.forward(x, true).map_err(lift)?, 5)
        });
    }
}

#[test]
fn residual_blocks_pass_gradient_checks() {
    let x = randn(&[2, 4, 6, 6], 3);
    let mut p = f64_params(4);
    let (mut side, mut macs) = (6, Macs::default());
    let basic = BasicBlock::new(&mut p, "b", 4, 6, 2, &mut side, &mut macs).unwrap();
    check("ResNet basic block with projection shortcut", &x, |x| {
        weighted_sum(&basic.forward(x, true).map_err(lift)?, 6)
    });
    let (mut side, mut macs) = (6, Macs::default());
    let inverted = InvertedResidual::new(
        &mut p,
        "ir",
        Expansion {
            cin: 4,
            cout: 4,
            t: 3,
            stride: 1,
        },
        &mut side,
        &mut macs,
    )
    .unwrap();
    check("MobileNetV2 inverted residual", &x, |x| {
        weighted_sum(&inverted.forward(x, true).map_err(lift)?, 7)
    });
}

#[test]
fn transformer_layers_pass_gradient_checks() {
    let mut p = f64_params(5);
    let ln = LayerNorm::new(&mut p, "ln", 6).unwrap();
    let mut macs = Macs::default();
    let block = Block::new(&mut p, "blk", 6, 2, 5, &mut macs).unwrap();
    assert_eq!(macs.0, (5 * 6 * 18 + 2 * 25 * 6 + 5 * 36 + 2 * 5 * 6 * 24) as u64);
    let x = randn(&[2, 5, 6], 8);
    check("softmax over the last dimension", &x, |x| weighted_sum(&softmax_last(x)?, 9));
    check("layer norm", &x, |x| weighted_sum(&ln.forward(x).map_err(lift)?, 10));
    check("pre-norm attention + MLP block", &x, |x| {
        weighted_sum(&block.forward(x).map_err(lift)?, 11)
    });
}

#[test]
fn vit_patch_embedding_and_class_token_pass_a_gradient_check() {
    let mut p = f64_params(6);
    let spec = TargetSpec {
        arch: tdmr::models::targets::Arch::VitTiny,
        width: 1.0,
        image_size: 8,
        in_channels: 3,
    };
    let vit = Backbone::new(&mut p, "vit.", &spec).unwrap();
    assert_eq!(vit.feature_dim(), vit_tiny::DIM);
    let x = randn(&[2, 3, 8, 8], 12);
    check("tiny ViT features (patch embedding, class token, blocks)", &x, |x| {
        weighted_sum(&vit.features(x, true).map_err(lift)?, 13)
    });
}

#[test]
fn parameter_and_mac_counts_match_the_published_architectures() {
    let count = |arch: &str, width: f64, side: usize| {
        let mut p = Params::new(&Device::Cpu, 0);
        let spec = TargetSpec {
            arch: arch.parse().unwrap(),
            width,
            image_size: side,
            in_channels: 3,
        };
        let b = Backbone::new(&mut p, "", &spec).unwrap();
        (p.count(&[String::new()]), b.macs(), b.feature_dim())
    };
    // Backbones without their classifiers, counted layer by layer from the published
    // definitions: He et al. 2016's CIFAR ResNet-8 (0.078M with its 650-parameter
    // classifier), the CIFAR ResNet-18 (11,173,962 with a 10-class classifier),
    // torchvision's MobileNetV2 (3,504,872 with its 1,281,000-parameter classifier)
    // and a ViT of 6 blocks of width 192 on 4×4 patches of a 32×32 image (65 tokens).
    let (p8, m8, d8) = count("resnet8", 1.0, 32);
    assert_eq!((p8, d8), (77_392, 64), "resnet8");
    assert_eq!(count("resnet18", 1.0, 32).0, 11_173_962 - 5_130, "resnet18");
    let (pm, _, dm) = count("mobilenetv2", 1.0, 32);
    assert_eq!((pm, dm), (3_504_872 - 1_281_000, 1280), "mobilenetv2");
    let (pv, mv, _) = count("vit-tiny", 1.0, 32);
    let block = 2 * 2 * 192 + (192 * 576 + 576) + (192 * 192 + 192) + (192 * 768 + 768) + (768 * 192 + 192);
    assert_eq!(pv, (48 * 192 + 192) + 192 + 65 * 192 + 6 * block + 2 * 192, "vit-tiny");
    assert!(mv > 0 && m8 > 0);
    // MACs scale with the image area for convolutional targets.
    let (_, m8_half, _) = count("resnet8", 1.0, 16);
    assert_eq!(m8, 4 * m8_half);
}

#[test]
fn every_backbone_names_its_architecture_and_counts_its_cost() {
    for arch in tdmr::models::targets::Arch::ALL {
        let mut p = Params::new(&Device::Cpu, 0);
        let spec = TargetSpec {
            arch,
            width: 0.5,
            image_size: 16,
            in_channels: 3,
        };
        let b = Backbone::new(&mut p, "", &spec).unwrap();
        assert_eq!(b.variant(), arch.name(), "{arch}");
        // A 16×16 image costs at least one multiply-accumulate per weight of the
        // first layer at each output pixel; zero would mean the cost went uncounted.
        assert!(b.macs() > 1_000, "{arch}: {} MACs", b.macs());
        let x = Tensor::zeros((2, 3, 16, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(b.features(&x, false).unwrap().dims(), [2, b.feature_dim()], "{arch}");
    }
}

/// Train `arch` from scratch on ten digits per class for a few epochs; test accuracy.
fn scratch_accuracy(arch: &str, width: f64, epochs: usize, lr: f64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
name = "zoo"
seed = 0
device = "cpu"
methods = ["scratch"]
[data]
path = {digits:?}
k = 10
views = 2
eval_every = 1000
[target]
arch = "{arch}"
width = {width}
image_size = 16
[distill]
batch_size = 32
[[distill.stages]]
name = "task"
epochs = {epochs}
lr = {lr}
weights = {{ ce = 1.0 }}
"#,
        digits = common::root().join(common::DIGITS).display().to_string()
    );
    let exp = tdmr::config::Experiment::parse(&text, "zoo.toml", &[]).unwrap();
    let run = RunDir::create(Some(&dir.path().join("run")), "zoo").unwrap();
    let summary = run_blocking(&exp, &run, None, None).unwrap();
    summary["scratch"].test_acc
}

#[test]
fn resnet8_learns_digits() {
    let acc = scratch_accuracy("resnet8", 1.0, 15, 3e-3);
    assert!(acc > 0.5, "resnet8: {acc}");
}

#[test]
fn resnet18_learns_digits() {
    let acc = scratch_accuracy("resnet18", 0.25, 10, 3e-3);
    assert!(acc > 0.5, "resnet18 (width 0.25): {acc}");
}

#[test]
fn mobilenetv2_learns_digits() {
    let acc = scratch_accuracy("mobilenetv2", 0.25, 15, 1e-2);
    assert!(acc > 0.25, "mobilenetv2 (width 0.25): {acc}");
}

#[test]
fn vit_tiny_learns_digits() {
    let acc = scratch_accuracy("vit-tiny", 1.0, 30, 5e-4);
    assert!(acc > 0.2, "vit-tiny: {acc}");
}
