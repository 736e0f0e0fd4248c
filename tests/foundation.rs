//! The bundled EfficientNet-Lite0: strict loading, clear errors, and proof that it is
//! really pretrained.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use tdmr::data::{Digits, ViewSet};
use tdmr::models::efficientnet_lite::EfficientNetLite;
use tdmr::models::IMAGENET;
use tdmr::params::Params;
use tdmr::reprogram::Head;

fn load_all() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(root().join(WEIGHTS), &Device::Cpu).unwrap()
}

fn write(dir: &tempfile::TempDir, name: &str, t: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let p = dir.path().join(name);
    candle_core::safetensors::save(t, &p).unwrap();
    p
}

fn load_err(path: &std::path::Path) -> String {
    match EfficientNetLite::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bundled_checkpoint_loads_strictly() {
    let f = EfficientNetLite::load(&root().join(WEIGHTS), &Device::Cpu).unwrap();
    assert_eq!(f.variant(), "efficientnet-lite0");
    assert_eq!(f.feature_dim(), 1280);
    let all = load_all();
    assert_eq!(all.len(), 296);
    let floats: usize = all.values().filter(|t| t.dtype().is_float()).map(|t| t.elem_count()).sum();
    assert_eq!(f.param_count(), floats);
    // The checkpoint's own ImageNet head is usable: logits are 1000-way.
    let x = Tensor::zeros((1, 3, 64, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
    let logits = f.classify(&f.features(&x).unwrap()).unwrap();
    assert_eq!(logits.dims(), &[1, 1000]);
}

#[test]
fn missing_extra_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = load_all();
    t.remove("_blocks.7._bn1.running_var");
    let e = load_err(&write(&dir, "missing.safetensors", &t));
    assert!(e.contains("_blocks.7._bn1.running_var") && e.contains("missing"), "{e}");

    let mut t = load_all();
    t.insert(
        "_blocks.3.extra".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = load_err(&write(&dir, "extra.safetensors", &t));
    assert!(e.contains("_blocks.3.extra") && e.contains("unexpected"), "{e}");

    let mut t = load_all();
    t.insert(
        "_blocks.2._bn2.weight".into(),
        Tensor::zeros(7, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = load_err(&write(&dir, "shape.safetensors", &t));
    assert!(
        e.contains("_blocks.2._bn2.weight") && e.contains("[24]") && e.contains("[7]"),
        "{e}"
    );
}

#[test]
fn missing_and_truncated_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_err(&dir.path().join("nope.safetensors"));
    assert!(e.contains("nope.safetensors"), "{e}");
    let bytes = std::fs::read(root().join(WEIGHTS)).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&cut);
    assert!(e.contains("cut.safetensors") && e.contains("truncated"), "{e}");
}

/// Train a linear classifier on frozen pooled features; return test accuracy.
fn probe_accuracy(f: &EfficientNetLite, train: &ViewSet, test: &ViewSet) -> f64 {
    let size = 96;
    let feats = |v: &ViewSet| {
        let rows: Vec<usize> = (0..v.len()).collect();
        let parts: Vec<Tensor> = rows
            .chunks(100)
            .map(|c| f.features(&IMAGENET.apply(&v.batch(c, size).unwrap()).unwrap()).unwrap())
            .collect();
        Tensor::cat(&parts, 0).unwrap()
    };
    let (xtr, xte) = (feats(train), feats(test));
    // Standardise with training statistics so both nets get the same optimiser footing.
    let mu = xtr.mean_keepdim(0).unwrap();
    let sd = (xtr.broadcast_sub(&mu).unwrap().sqr().unwrap().mean_keepdim(0).unwrap() + 1e-6)
        .unwrap()
        .sqrt()
        .unwrap();
    let norm = |x: &Tensor| x.broadcast_sub(&mu).unwrap().broadcast_div(&sd).unwrap();
    let (xtr, xte) = (norm(&xtr), norm(&xte));
    let mut p = Params::new(&Device::Cpu, 0);
    let head = Head::new(&mut p, "h.", 1280, 10, 1.0).unwrap();
    let mut opt = tdmr::engine::optim::Optimizer::new(tdmr::config::OptimizerKind::Adamw, p.named_vars(&["h.".into()]), 1e-3, 0.9);
    let ytr = train.label_tensor(&(0..train.len()).collect::<Vec<_>>()).unwrap();
    for _ in 0..300 {
        let l = tdmr::distill::loss::cross_entropy(&head.forward(&xtr).unwrap(), &ytr, 0.0).unwrap();
        opt.step(&l.backward().unwrap(), 1e-2).unwrap();
    }
    let yte = test.label_tensor(&(0..test.len()).collect::<Vec<_>>()).unwrap();
    tdmr::distill::loss::correct(&head.forward(&xte).unwrap(), &yte).unwrap() as f64 / test.len() as f64
}

#[test]
fn pretrained_features_beat_a_random_copy_of_the_same_net() {
    let digits = Digits::load(&root().join(DIGITS)).unwrap();
    let split = digits.split(50).unwrap();
    let test_rows: Vec<usize> = split.test.iter().copied().step_by(4).collect();
    let train = ViewSet::plain(&digits, &split.train, &Device::Cpu).unwrap();
    let test = ViewSet::plain(&digits, &test_rows, &Device::Cpu).unwrap();
    let pretrained = EfficientNetLite::load(&root().join(WEIGHTS), &Device::Cpu).unwrap();
    let random = pretrained.randomized(7).unwrap();
    let (a, b) = (probe_accuracy(&pretrained, &train, &test), probe_accuracy(&random, &train, &test));
    eprintln!(
        "linear probe, k=50, {} test images: pretrained {a:.3}, random init {b:.3}",
        test.len()
    );
    assert!(a > 0.6, "pretrained probe only {a:.3}");
    assert!(a > b + 0.15, "pretrained {a:.3} is not far better than random {b:.3}");
}

/// `precision = "bf16"` casts the frozen network only: f32 in, f32 out, gradients to the
/// f32 input. candle's CPU matmul has no bf16, so the same code path (casts at the
/// edges, the device-agnostic depthwise) is checked here in f16 against the f32 network;
/// on CUDA it runs in bf16.
#[test]
fn half_precision_foundation_takes_and_returns_f32_and_passes_gradients() {
    let f32_net = EfficientNetLite::load(&root().join(WEIGHTS), &Device::Cpu).unwrap();
    let bf16_net = f32_net.to_dtype(candle_core::DType::F16).unwrap();
    let mut p = Params::new(&Device::Cpu, 5);
    let x = candle_core::Var::from_tensor(&p.uniform("x", &[2, 3, 64, 64], 3).unwrap()).unwrap();
    let run = |net: &EfficientNetLite| {
        let feats = net.features(x.as_tensor()).unwrap();
        assert_eq!(feats.dtype(), candle_core::DType::F32);
        let g = feats.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        (feats, g.get(&x).expect("a gradient reaches the input").clone())
    };
    let (fa, ga) = run(&f32_net);
    let (fb, gb) = run(&bf16_net);
    assert_eq!(gb.dtype(), candle_core::DType::F32);
    let rel = |a: &Tensor, b: &Tensor| -> f32 {
        let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        let den = a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        (num / den).sqrt()
    };
    // f16 keeps 11 bits of mantissa (bf16 8): well under a few percent through 16 blocks.
    let (rf, rg) = (rel(&fa, &fb), rel(&ga, &gb));
    eprintln!("half vs f32: features {rf:.2e}, input gradients {rg:.2e} (relative L2)");
    assert!(rf < 0.05, "features differ by {rf} (relative L2)");
    assert!(rg < 0.25, "input gradients differ by {rg} (relative L2)");
}
