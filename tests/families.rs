//! Every foundation family, from a checkpoint with the exact key names and shapes of
//! the published one (a narrower width where noted, the same layout and depth; random
//! weights) written to a real `.safetensors` file: detected, loaded through the public
//! loader, run forward, its input gradient checked against central differences (in
//! f64), and stage 1 run on the digits with the loss falling.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use tdmr::models::foundation::{Family, Foundation};
use tdmr::ops::gradcheck::max_relative_error;

/// Seeded values in ±`scale`.
struct Gen(u64);

impl Gen {
    fn t(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (((self.0 >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// A conv or linear weight at He scale for its fan-in.
    fn w(&mut self, shape: &[usize]) -> Tensor {
        let fan_in: usize = shape[1..].iter().product();
        self.t(shape, (3.0 / fan_in as f32).sqrt())
    }

    fn ones_ish(&mut self, n: usize) -> Tensor {
        (self.t(&[n], 0.1) + 1.0).unwrap()
    }
}

type Ckpt = HashMap<String, Tensor>;

fn bn(g: &mut Gen, m: &mut Ckpt, name: &str, c: usize, counter: bool) {
    m.insert(format!("{name}.weight"), g.ones_ish(c));
    m.insert(format!("{name}.bias"), g.t(&[c], 0.1));
    m.insert(format!("{name}.running_mean"), g.t(&[c], 0.1));
    m.insert(format!("{name}.running_var"), g.ones_ish(c));
    if counter {
        m.insert(format!("{name}.num_batches_tracked"), Tensor::new(0i64, &Device::Cpu).unwrap());
    }
}

fn linear(g: &mut Gen, m: &mut Ckpt, name: &str, out: usize, inp: usize) {
    m.insert(format!("{name}.weight"), g.w(&[out, inp]));
    m.insert(format!("{name}.bias"), g.t(&[out], 0.05));
}

fn ln(g: &mut Gen, m: &mut Ckpt, name: &str, d: usize) {
    m.insert(format!("{name}.weight"), g.ones_ish(d));
    m.insert(format!("{name}.bias"), g.t(&[d], 0.05));
}

/// torchvision/timm `resnet18` (basic blocks [2, 2, 2, 2]) or `resnet50` (bottlenecks
/// [3, 4, 6, 3]) at 1/8 width.
fn resnet(bottleneck: bool) -> Ckpt {
    let (mut g, mut m) = (Gen(1), Ckpt::new());
    let stem = 8;
    m.insert("conv1.weight".into(), g.w(&[stem, 3, 7, 7]));
    bn(&mut g, &mut m, "bn1", stem, true);
    let depths = if bottleneck { [3, 4, 6, 3] } else { [2, 2, 2, 2] };
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = stem;
    for (l, &n) in depths.iter().enumerate() {
        let width = stem << l;
        for b in 0..n {
            let p = format!("layer{}.{b}", l + 1);
            let cout = width * expansion;
            if bottleneck {
                m.insert(format!("{p}.conv1.weight"), g.w(&[width, cin, 1, 1]));
                m.insert(format!("{p}.conv2.weight"), g.w(&[width, width, 3, 3]));
                m.insert(format!("{p}.conv3.weight"), g.w(&[cout, width, 1, 1]));
                for i in 1..=3 {
                    bn(&mut g, &mut m, &format!("{p}.bn{i}"), if i == 3 { cout } else { width }, true);
                }
            } else {
                m.insert(format!("{p}.conv1.weight"), g.w(&[width, cin, 3, 3]));
                m.insert(format!("{p}.conv2.weight"), g.w(&[width, width, 3, 3]));
                bn(&mut g, &mut m, &format!("{p}.bn1"), width, true);
                bn(&mut g, &mut m, &format!("{p}.bn2"), width, true);
            }
            if b == 0 && (l > 0 || cin != cout) {
                m.insert(format!("{p}.downsample.0.weight"), g.w(&[cout, cin, 1, 1]));
                bn(&mut g, &mut m, &format!("{p}.downsample.1"), cout, true);
            }
            cin = cout;
        }
    }
    linear(&mut g, &mut m, "fc", 1000, cin);
    m
}

/// timm `convnext_tiny` (depths [3, 3, 9, 3]) at 1/12 width.
fn convnext() -> Ckpt {
    let (mut g, mut m) = (Gen(2), Ckpt::new());
    let dims = [8, 16, 32, 64];
    m.insert("stem.0.weight".into(), g.w(&[dims[0], 3, 4, 4]));
    m.insert("stem.0.bias".into(), g.t(&[dims[0]], 0.05));
    ln(&mut g, &mut m, "stem.1", dims[0]);
    for (s, &n) in [3, 3, 9, 3].iter().enumerate() {
        let c = dims[s];
        if s > 0 {
            ln(&mut g, &mut m, &format!("stages.{s}.downsample.0"), dims[s - 1]);
            m.insert(format!("stages.{s}.downsample.1.weight"), g.w(&[c, dims[s - 1], 2, 2]));
            m.insert(format!("stages.{s}.downsample.1.bias"), g.t(&[c], 0.05));
        }
        for b in 0..n {
            let p = format!("stages.{s}.blocks.{b}");
            m.insert(format!("{p}.gamma"), g.t(&[c], 0.5));
            m.insert(format!("{p}.conv_dw.weight"), g.w(&[c, 1, 7, 7]));
            m.insert(format!("{p}.conv_dw.bias"), g.t(&[c], 0.05));
            ln(&mut g, &mut m, &format!("{p}.norm"), c);
            linear(&mut g, &mut m, &format!("{p}.mlp.fc1"), 4 * c, c);
            linear(&mut g, &mut m, &format!("{p}.mlp.fc2"), c, 4 * c);
        }
    }
    ln(&mut g, &mut m, "head.norm", 64);
    linear(&mut g, &mut m, "head.fc", 1000, 64);
    m
}

/// Hugging Face `facebook/convnext-tiny-224` (`ConvNextForImageClassification`) at
/// 1/12 width.
fn convnext_hf() -> Ckpt {
    let (mut g, mut m) = (Gen(8), Ckpt::new());
    let dims = [8, 16, 32, 64];
    let p = "convnext";
    m.insert(format!("{p}.embeddings.patch_embeddings.weight"), g.w(&[dims[0], 3, 4, 4]));
    m.insert(format!("{p}.embeddings.patch_embeddings.bias"), g.t(&[dims[0]], 0.05));
    ln(&mut g, &mut m, &format!("{p}.embeddings.layernorm"), dims[0]);
    for (s, &n) in [3, 3, 9, 3].iter().enumerate() {
        let c = dims[s];
        let st = format!("{p}.encoder.stages.{s}");
        if s > 0 {
            ln(&mut g, &mut m, &format!("{st}.downsampling_layer.0"), dims[s - 1]);
            m.insert(format!("{st}.downsampling_layer.1.weight"), g.w(&[c, dims[s - 1], 2, 2]));
            m.insert(format!("{st}.downsampling_layer.1.bias"), g.t(&[c], 0.05));
        }
        for b in 0..n {
            let l = format!("{st}.layers.{b}");
            m.insert(format!("{l}.layer_scale_parameter"), g.t(&[c], 0.5));
            m.insert(format!("{l}.dwconv.weight"), g.w(&[c, 1, 7, 7]));
            m.insert(format!("{l}.dwconv.bias"), g.t(&[c], 0.05));
            ln(&mut g, &mut m, &format!("{l}.layernorm"), c);
            linear(&mut g, &mut m, &format!("{l}.pwconv1"), 4 * c, c);
            linear(&mut g, &mut m, &format!("{l}.pwconv2"), c, 4 * c);
        }
    }
    ln(&mut g, &mut m, &format!("{p}.layernorm"), 64);
    linear(&mut g, &mut m, "classifier", 1000, 64);
    m
}

const D: usize = 64;

/// timm `vit_base_patch16_224` (12 blocks, 197 tokens) at width 64 (one head).
fn timm_vit(g: &mut Gen, m: &mut Ckpt, patch_in: usize, patch: usize, grid: usize) {
    m.insert("cls_token".into(), g.t(&[1, 1, D], 0.5));
    m.insert("pos_embed".into(), g.t(&[1, grid * grid + 1, D], 0.5));
    m.insert("patch_embed.proj.weight".into(), g.w(&[D, patch_in, patch, patch]));
    m.insert("patch_embed.proj.bias".into(), g.t(&[D], 0.05));
    for i in 0..12 {
        let p = format!("blocks.{i}");
        ln(g, m, &format!("{p}.norm1"), D);
        linear(g, m, &format!("{p}.attn.qkv"), 3 * D, D);
        linear(g, m, &format!("{p}.attn.proj"), D, D);
        ln(g, m, &format!("{p}.norm2"), D);
        linear(g, m, &format!("{p}.mlp.fc1"), 4 * D, D);
        linear(g, m, &format!("{p}.mlp.fc2"), D, 4 * D);
    }
    ln(g, m, "norm", D);
    linear(g, m, "head", 1000, D);
}

fn vit_timm() -> Ckpt {
    let (mut g, mut m) = (Gen(3), Ckpt::new());
    timm_vit(&mut g, &mut m, 3, 16, 14);
    m
}

/// timm `vit_tiny_r_s16_p8_224`: a ResNetV2 stem (StdConv 7×7/2, GroupNorm, max-pool)
/// then 8×8 patches of its 56×56 map (7×7 tokens); stem width 32 instead of 64.
fn vit_hybrid() -> Ckpt {
    let (mut g, mut m) = (Gen(4), Ckpt::new());
    m.insert("patch_embed.backbone.conv.weight".into(), g.w(&[32, 3, 7, 7]));
    ln(&mut g, &mut m, "patch_embed.backbone.norm", 32);
    timm_vit(&mut g, &mut m, 32, 8, 7);
    m
}

/// Hugging Face `google/vit-base-patch16-224` (`ViTForImageClassification`) at width 64.
fn vit_hf() -> Ckpt {
    let (mut g, mut m) = (Gen(5), Ckpt::new());
    m.insert("vit.embeddings.cls_token".into(), g.t(&[1, 1, D], 0.5));
    m.insert("vit.embeddings.position_embeddings".into(), g.t(&[1, 197, D], 0.5));
    m.insert("vit.embeddings.patch_embeddings.projection.weight".into(), g.w(&[D, 3, 16, 16]));
    m.insert("vit.embeddings.patch_embeddings.projection.bias".into(), g.t(&[D], 0.05));
    for i in 0..12 {
        let p = format!("vit.encoder.layer.{i}");
        for q in ["query", "key", "value"] {
            linear(&mut g, &mut m, &format!("{p}.attention.attention.{q}"), D, D);
        }
        linear(&mut g, &mut m, &format!("{p}.attention.output.dense"), D, D);
        linear(&mut g, &mut m, &format!("{p}.intermediate.dense"), 4 * D, D);
        linear(&mut g, &mut m, &format!("{p}.output.dense"), D, 4 * D);
        ln(&mut g, &mut m, &format!("{p}.layernorm_before"), D);
        ln(&mut g, &mut m, &format!("{p}.layernorm_after"), D);
    }
    ln(&mut g, &mut m, "vit.layernorm", D);
    linear(&mut g, &mut m, "classifier", 1000, D);
    m
}

/// `facebook/dinov2-small` (`Dinov2Model`: 12 layers, 14-pixel patches, 37×37 grid at
/// 518) at width 64.
fn dinov2() -> Ckpt {
    let (mut g, mut m) = (Gen(6), Ckpt::new());
    m.insert("embeddings.cls_token".into(), g.t(&[1, 1, D], 0.5));
    m.insert("embeddings.mask_token".into(), g.t(&[1, D], 0.5));
    m.insert("embeddings.position_embeddings".into(), g.t(&[1, 1370, D], 0.5));
    m.insert("embeddings.patch_embeddings.projection.weight".into(), g.w(&[D, 3, 14, 14]));
    m.insert("embeddings.patch_embeddings.projection.bias".into(), g.t(&[D], 0.05));
    for i in 0..12 {
        let p = format!("encoder.layer.{i}");
        ln(&mut g, &mut m, &format!("{p}.norm1"), D);
        for q in ["query", "key", "value"] {
            linear(&mut g, &mut m, &format!("{p}.attention.attention.{q}"), D, D);
        }
        linear(&mut g, &mut m, &format!("{p}.attention.output.dense"), D, D);
        m.insert(format!("{p}.layer_scale1.lambda1"), g.t(&[D], 0.5));
        ln(&mut g, &mut m, &format!("{p}.norm2"), D);
        linear(&mut g, &mut m, &format!("{p}.mlp.fc1"), 4 * D, D);
        linear(&mut g, &mut m, &format!("{p}.mlp.fc2"), D, 4 * D);
        m.insert(format!("{p}.layer_scale2.lambda1"), g.t(&[D], 0.5));
    }
    ln(&mut g, &mut m, "layernorm", D);
    m
}

/// `openai/clip-vit-base-patch32` (`CLIPModel`: the vision tower with 32-pixel patches
/// and 50 positions, plus the text tower and projections, which tdmr ignores) at width 64.
fn clip() -> Ckpt {
    let (mut g, mut m) = (Gen(7), Ckpt::new());
    let v = "vision_model";
    m.insert(format!("{v}.embeddings.class_embedding"), g.t(&[D], 0.5));
    m.insert(format!("{v}.embeddings.patch_embedding.weight"), g.w(&[D, 3, 32, 32]));
    m.insert(format!("{v}.embeddings.position_embedding.weight"), g.t(&[50, D], 0.5));
    m.insert(
        format!("{v}.embeddings.position_ids"),
        Tensor::arange(0i64, 50, &Device::Cpu).unwrap().reshape((1, 50)).unwrap(),
    );
    ln(&mut g, &mut m, &format!("{v}.pre_layrnorm"), D);
    for i in 0..12 {
        let p = format!("{v}.encoder.layers.{i}");
        for q in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            linear(&mut g, &mut m, &format!("{p}.self_attn.{q}"), D, D);
        }
        ln(&mut g, &mut m, &format!("{p}.layer_norm1"), D);
        linear(&mut g, &mut m, &format!("{p}.mlp.fc1"), 4 * D, D);
        linear(&mut g, &mut m, &format!("{p}.mlp.fc2"), D, 4 * D);
        ln(&mut g, &mut m, &format!("{p}.layer_norm2"), D);
    }
    ln(&mut g, &mut m, &format!("{v}.post_layernorm"), D);
    m.insert("text_model.embeddings.token_embedding.weight".into(), g.t(&[100, 32], 0.1));
    ln(&mut g, &mut m, "text_model.final_layer_norm", 32);
    m.insert("visual_projection.weight".into(), g.w(&[32, D]));
    m.insert("text_projection.weight".into(), g.w(&[32, 32]));
    m.insert("logit_scale".into(), Tensor::new(2.6592f32, &Device::Cpu).unwrap());
    m
}

fn write(dir: &Path, name: &str, ckpt: &Ckpt) -> PathBuf {
    let path = dir.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(ckpt, &path).unwrap();
    path
}

/// (name, builder, family, native input, feature dim).
type Case = (&'static str, fn() -> Ckpt, &'static str, usize, usize);

fn cases() -> Vec<Case> {
    vec![
        ("resnet18", || resnet(false), "resnet", 224, 64),
        ("resnet50", || resnet(true), "resnet", 224, 256),
        ("convnext_tiny", convnext, "convnext", 224, 64),
        ("facebook-convnext-tiny-224", convnext_hf, "convnext", 224, 64),
        ("vit_base_patch16_224", vit_timm, "vit", 224, D),
        ("google-vit-base-patch16-224", vit_hf, "vit", 224, D),
        ("dinov2-small", dinov2, "dinov2", 518, D),
        ("clip-vit-base-patch32", clip, "clip", 224, D),
        ("vit_tiny_r_s16_p8_224", vit_hybrid, "vit-hybrid", 224, D),
    ]
}

fn weighted_sum(y: &Tensor) -> candle_core::Result<Tensor> {
    let n = y.elem_count();
    let w = (Tensor::arange(0f64, n as f64, y.device())?.reshape(y.shape())? * 0.37)?.sin()?;
    (y * w.to_dtype(y.dtype())?)?.sum_all()
}

#[test]
fn every_family_is_detected_loads_and_passes_a_gradient_check() {
    let dir = tempfile::tempdir().unwrap();
    for (name, build, family, native, dim) in cases() {
        let path = write(dir.path(), name, &build());
        let info = tdmr::models::inspect::inspect(&path).unwrap();
        assert_eq!(info.detected.family, family, "{name}: inspect");
        assert_eq!((info.detected.native_input, info.detected.feature_dim), (native, dim), "{name}");
        let f = Foundation::load(&path, Family::Auto, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((f.family(), f.feature_dim(), f.native_input()), (family, dim, native), "{name}");
        // Forward at a reprogramming size (not the native one) in f32.
        let side = if family == "clip" { 64 } else { 32 };
        let x = Gen(9).t(&[2, 3, side, side], 1.0);
        let y = f.features(&x).unwrap();
        assert_eq!(y.dims(), [2, dim], "{name}");
        assert!(y.sum_all().unwrap().to_scalar::<f32>().unwrap().is_finite());
        // The gradient to the input image, in f64.
        let f64_net = Foundation::load_as(&path, family.parse().unwrap(), &Device::Cpu, DType::F64).unwrap();
        let x64 = x.narrow(0, 0, 1).unwrap().to_dtype(DType::F64).unwrap();
        let r = max_relative_error(&x64, 16, 1e-5, |x| {
            weighted_sum(&f64_net.features(x).map_err(|e| candle_core::Error::Msg(e.to_string()))?)
        })
        .unwrap();
        assert!(r.max_err < 1e-2, "{name}: input gradient off by {:.2e}: {r:?}", r.max_err);
        eprintln!(
            "{name}: {family}, input-gradient max relative error {:.1e} (scale {:.1e})",
            r.max_err, r.scale
        );
    }
}

#[test]
fn vit_position_embeddings_are_resampled_to_the_input_grid() {
    let dir = tempfile::tempdir().unwrap();
    let native = write(dir.path(), "native", &vit_timm());
    let f = Foundation::load(&native, Family::Auto, &Device::Cpu).unwrap();
    // At 112 (a 7×7 grid) the 14×14 embeddings are resampled; a checkpoint resampled
    // beforehand and run at its own grid must give the same features.
    let mut small = vit_timm();
    let pos = small["pos_embed"].clone();
    let grid = pos
        .narrow(1, 1, 196)
        .unwrap()
        .reshape((1, 14, 14, D))
        .unwrap()
        .permute((0, 3, 1, 2))
        .unwrap();
    let grid = tdmr::ops::resize_bilinear(&grid, 7, 7)
        .unwrap()
        .permute((0, 2, 3, 1))
        .unwrap()
        .reshape((1, 49, D))
        .unwrap();
    small.insert("pos_embed".into(), Tensor::cat(&[&pos.narrow(1, 0, 1).unwrap(), &grid], 1).unwrap());
    let resampled = write(dir.path(), "resampled", &small);
    let g = Foundation::load(&resampled, Family::Auto, &Device::Cpu).unwrap();
    assert_eq!(g.native_input(), 112);
    let x = Gen(11).t(&[2, 3, 112, 112], 1.0);
    let (a, b) = (f.features(&x).unwrap(), g.features(&x).unwrap());
    let diff = (a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "resampled position embeddings differ by {diff}");
    // And they matter: the native grid's first 49 embeddings give other features.
    let mut cut = vit_timm();
    cut.insert("pos_embed".into(), pos.narrow(1, 0, 50).unwrap());
    let h = Foundation::load(&write(dir.path(), "cut", &cut), Family::Auto, &Device::Cpu).unwrap();
    let other = (h.features(&x).unwrap() - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(other > 1e-3);
}

#[test]
fn half_precision_checkpoints_compute_in_f32() {
    let dir = tempfile::tempdir().unwrap();
    let full = vit_timm();
    let half: Ckpt = full.iter().map(|(k, v)| (k.clone(), v.to_dtype(DType::F16).unwrap())).collect();
    let bf: Ckpt = full.iter().map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap())).collect();
    let x = Gen(12).t(&[1, 3, 32, 32], 1.0);
    let base = Foundation::load(&write(dir.path(), "f32", &full), Family::Auto, &Device::Cpu)
        .unwrap()
        .features(&x)
        .unwrap();
    for (name, c, tol) in [("f16", half, 2e-2), ("bf16", bf, 1e-1)] {
        let y = Foundation::load(&write(dir.path(), name, &c), Family::Auto, &Device::Cpu)
            .unwrap()
            .features(&x)
            .unwrap();
        assert_eq!(y.dtype(), DType::F32);
        let d = (y - &base).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < tol, "{name}: features differ from f32 weights by {d}");
    }
}

#[test]
fn misfits_are_one_line_errors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // A wrong shape for one tensor.
    let mut bad = convnext();
    bad.insert("stages.2.blocks.4.mlp.fc1.weight".into(), Gen(1).t(&[5, 32], 0.1));
    let path = write(dir.path(), "wrong-shape", &bad);
    let e = Foundation::load(&path, Family::Auto, &Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains("wrong-shape.safetensors") && e.contains("stages.2.blocks.4.mlp.fc1.weight"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
    // A missing tensor.
    let mut missing = clip();
    missing.remove("vision_model.encoder.layers.7.layer_norm2.bias");
    let e = Foundation::load(&write(dir.path(), "missing", &missing), Family::Auto, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("vision_model.encoder.layers.7.layer_norm2.bias"), "{e}");
    // An unknown layout lists the families tried.
    let mut unknown = Ckpt::new();
    unknown.insert("encoder.weird.weight".into(), Gen(1).t(&[4, 4], 0.1));
    let e = Foundation::load(&write(dir.path(), "unknown", &unknown), Family::Auto, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    for family in [
        "efficientnet-lite",
        "resnet",
        "convnext",
        "vit",
        "dinov2",
        "clip",
        "encoder.weird.weight",
    ] {
        assert!(e.contains(family), "{family} not in: {e}");
    }
    // A truncated file.
    let full = std::fs::read(write(dir.path(), "whole", &resnet(false))).unwrap();
    let cut = dir.path().join("truncated.safetensors");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let e = Foundation::load(&cut, Family::Auto, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("truncated.safetensors"), "{e}");
    // A family override that does not fit the file names the first tensor it missed.
    let e = Foundation::load(&path, Family::Resnet, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("conv1.weight"), "{e}");
}

#[test]
fn stage_one_loss_falls_for_every_family() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, build, family, _, _)) in cases().into_iter().enumerate() {
        let path = write(dir.path(), name, &build());
        let side = if family == "clip" { 64 } else { 32 };
        // Every prompt kind meets several families.
        let prompt = ["padding", "full", "none"][i % 3];
        let text = format!(
            r#"
name = "family"
seed = 0
device = "cpu"
methods = ["tdmr"]
[data]
path = {digits:?}
k = 4
views = 1
eval_every = 100
[foundation]
path = {path:?}
image_size = {side}
inner_size = {inner}
[reprogram]
prompt = "{prompt}"
pad = 4
proxy_dim = 16
[stage1]
epochs = 6
batch_size = 20
lr = 2e-2
warmup_epochs = 0
lr_schedule = "constant"
[[distill.stages]]
name = "align"
epochs = 0
"#,
            digits = common::root().join(common::DIGITS).display().to_string(),
            path = path.display().to_string(),
            inner = side - 8
        );
        let exp = tdmr::config::Experiment::parse(&text, "family.toml", &[]).unwrap();
        let run = tdmr::engine::run_dir::RunDir::create(Some(&dir.path().join(format!("run-{name}"))), "family").unwrap();
        tdmr::engine::run_blocking(&exp, &run, None, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        let losses: Vec<f64> = common::events(&run.root, "epoch")
            .into_iter()
            .filter(|v| v["method"] == "tdmr-teacher")
            .map(|v| v["loss"]["total"].as_f64().unwrap())
            .collect();
        assert_eq!(losses.len(), 6, "{name}");
        assert!(losses[5] < 0.8 * losses[0], "{name}: stage-1 loss per epoch {losses:?}");
        eprintln!("{name} ({prompt} prompt): stage-1 loss per epoch {losses:.3?}");
    }
}

#[test]
fn sharded_checkpoints_load_through_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let whole = resnet(false);
    let single = write(dir.path(), "single", &whole);
    // Two shards and the Hugging Face index naming each tensor's shard.
    let (mut a, mut b) = (Ckpt::new(), Ckpt::new());
    let mut map = serde_json::Map::new();
    for (k, v) in &whole {
        let (part, file) = if k.starts_with("layer3") || k.starts_with("layer4") || k.starts_with("fc") {
            (&mut b, "model-00002-of-00002.safetensors")
        } else {
            (&mut a, "model-00001-of-00002.safetensors")
        };
        part.insert(k.clone(), v.clone());
        map.insert(k.clone(), serde_json::Value::String(file.into()));
    }
    candle_core::safetensors::save(&a, dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let index = dir.path().join("model.safetensors.index.json");
    let json = serde_json::json!({ "metadata": { "total_size": 0 }, "weight_map": map });
    std::fs::write(&index, json.to_string()).unwrap();
    let info = tdmr::models::inspect::inspect(&index).unwrap();
    assert_eq!((info.detected.family.as_str(), info.tensors.len()), ("resnet", whole.len()));
    assert!(info.report().contains("sharded safetensors"));
    let x = Gen(13).t(&[2, 3, 32, 32], 1.0);
    let sharded = Foundation::load(&index, Family::Auto, &Device::Cpu).unwrap().features(&x).unwrap();
    let one = Foundation::load(&single, Family::Auto, &Device::Cpu).unwrap().features(&x).unwrap();
    let d = (sharded - one)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(d, 0.0);
    // A missing shard is named, with a tensor it should hold.
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = Foundation::load(&index, Family::Auto, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("missing"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("TDMR_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).map_or(64, |n: u32| n / 10).max(16),
        ..ProptestConfig::default()
    })]

    /// A published layout with one tensor reshaped, emptied or removed never panics a
    /// loader: it loads or it is an error.
    #[test]
    fn misshapen_checkpoints_never_panic(case in 0..9usize, pick in any::<prop::sample::Index>(), shape in prop::collection::vec(0..6usize, 0..5), remove in any::<bool>()) {
        let (name, build, _, _, _) = cases()[case];
        let mut ckpt = build();
        let mut keys: Vec<String> = ckpt.keys().cloned().collect();
        keys.sort();
        let key = pick.get(&keys).clone();
        if remove {
            ckpt.remove(&key);
        } else {
            ckpt.insert(key, Gen(3).t(&shape, 0.5));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), name, &ckpt);
        let _ = tdmr::models::inspect::inspect(&path);
        if let Ok(f) = Foundation::load(&path, Family::Auto, &Device::Cpu) {
            let _ = f.features(&Gen(1).t(&[1, 3, 64, 64], 1.0));
        }
    }
}

/// Checkpoints written by timm and transformers themselves
/// (`scripts/make-family-references.py`): their state_dicts as the libraries name them,
/// and the pooled features PyTorch computed for an input.
#[test]
fn features_match_pytorch_for_every_published_layout() {
    let dir = common::root().join("tests/fixtures/families");
    let cases = [
        ("timm-resnet18", "resnet"),
        ("timm-resnet50", "resnet"),
        ("timm-convnext-tiny", "convnext"),
        ("hf-convnext-tiny", "convnext"),
        ("timm-vit-patch16", "vit"),
        ("hf-vit-patch16", "vit"),
        ("hf-dinov2", "dinov2"),
        ("hf-clip-vit-patch32", "clip"),
        ("timm-vit-tiny-r-s16-p8", "vit-hybrid"),
    ];
    for (name, family) in cases {
        let f = Foundation::load(&dir.join(format!("{name}.safetensors")), Family::Auto, &Device::Cpu)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(f.family(), family, "{name}");
        let r = candle_core::safetensors::load(dir.join(format!("{name}.reference.safetensors")), &Device::Cpu).unwrap();
        let ours = f.features(&r["input"]).unwrap();
        let scale = r["features"].abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        let diff = (ours - &r["features"])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        eprintln!("{name}: max |tdmr − PyTorch| = {:.1e} of {scale:.2}", diff);
        assert!(
            diff / scale < 1e-4,
            "{name}: features differ from PyTorch by {diff:.2e} (scale {scale:.2e})"
        );
    }
}
