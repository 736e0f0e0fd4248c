//! EfficientNet-Lite0 in candle against PyTorch on the same checkpoint
//! (`scripts/reference_features.py`), and on two real photographs.

mod common;

use candle_core::{Device, Tensor, D};
use common::*;
use tdmr::models::efficientnet_lite::EfficientNetLite;
use tdmr::models::IMAGENET;

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() / scale
}

#[test]
fn features_and_logits_match_pytorch_and_photos_are_recognised() {
    let dev = Device::Cpu;
    let r = candle_core::safetensors::load(root().join("sample-data/foundation/reference-lite0.safetensors"), &dev).unwrap();
    let f = EfficientNetLite::load(&root().join(WEIGHTS), &dev).unwrap();
    // 72×72: odd sizes deeper in the net exercise TF-"SAME" padding's asymmetry.
    let feats = f.features(&r["input"]).unwrap();
    let d = max_rel_diff(&feats, &r["features"]);
    assert!(d < 1e-4, "pooled features differ from PyTorch by {d:.2e} (relative to max)");
    let d = max_rel_diff(&f.classify(&feats).unwrap(), &r["logits"]);
    assert!(d < 1e-4, "logits differ from PyTorch by {d:.2e}");

    let x = IMAGENET.apply(&r["photos"]).unwrap();
    let logits = f.classify(&f.features(&x).unwrap()).unwrap();
    assert!(max_rel_diff(&logits, &r["photo_logits"]) < 1e-4);
    let top: Vec<u32> = logits.argmax(D::Minus1).unwrap().to_vec1().unwrap();
    // ImageNet-1k: 281 tabby, 282 tiger cat, 283 Persian, 284 Siamese, 285 Egyptian cat;
    // 967 espresso.
    assert!((281..=285).contains(&top[0]), "the cat photo was classified as {}", top[0]);
    assert_eq!(top[1], 967, "the coffee photo was classified as {}", top[1]);
}
