//! The ONNX export against tdmr's own forward pass, through tract: every target
//! architecture, with batch-norm statistics and affine parameters far from their
//! initial values (so folding is exercised), on real clip-art images.

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use prost::Message;
use tdmr::config::ProjectorKind;
use tdmr::deploy::{Deployable, InputSpec, ModelCard, ProjectorSpec, Provenance};
use tdmr::models::targets::{Arch, TargetSpec};
use tdmr::onnx::runtime::OnnxClassifier;
use tract_onnx::pb::ModelProto;

const SIDE: usize = 32;
const CLASSES: usize = 5;

fn card(arch: &str, projector: Option<ProjectorSpec>) -> ModelCard {
    // The wide architectures are narrowed to keep the test quick; the graph is the same.
    let width = match arch {
        "resnet18" => 0.25,
        "mobilenetv2" => 0.5,
        _ => 1.0,
    };
    ModelCard {
        format: tdmr::deploy::FORMAT.into(),
        target: TargetSpec {
            arch: arch.parse().unwrap(),
            width,
            image_size: SIDE,
            in_channels: 3,
        },
        classes: (0..CLASSES).map(|c| format!("class-{c}")).collect(),
        input: InputSpec {
            image_size: SIDE,
            channels: 3,
            mean: [0.45, 0.5, 0.55],
            std: [0.25, 0.2, 0.3],
            stored_side: 64,
            preprocessing: String::new(),
        },
        head_scale: if projector.as_ref().is_some_and(|p| p.normalize) {
            8.0
        } else {
            1.0
        },
        projector,
        params: 0,
        macs: 0,
        source: Provenance {
            run: String::new(),
            method: "tdmr".into(),
            checkpoint: String::new(),
            accuracy: None,
            evaluated_on: "test".into(),
            data_kind: "image-folder".into(),
        },
    }
}

/// A model of `card`'s architecture whose every parameter is moved off its initial value
/// by noise of its own scale, with batch-norm statistics then estimated on `x` (as in a
/// trained model, where they match the activations).
fn perturbed_model(card: &ModelCard, seed: u64, x: &Tensor) -> Deployable {
    let model = Deployable::build(card, &Device::Cpu).unwrap();
    let mut moved = HashMap::new();
    for (i, (name, t)) in model.params.tensors().into_iter().enumerate() {
        let noise = common::randn(t.dims(), seed + i as u64);
        let v = if name.contains("running_") {
            t.copy().unwrap()
        } else if name.ends_with(".bias") {
            (noise * 0.2).unwrap()
        } else if name.ends_with("bn.weight") || name.contains("norm") {
            ((noise * 0.2).unwrap() + 1.0).unwrap()
        } else {
            let scale = t
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .sqrt()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                .max(0.02);
            (t.copy().unwrap() + (noise * (0.3 * scale) as f64).unwrap()).unwrap()
        };
        moved.insert(name, v);
    }
    model.params.restore(&moved, std::path::Path::new("perturbed")).unwrap();
    model.recalibrate_batch_norm(x, 30).unwrap();
    model
}

/// Eight clip-art images at `SIDE`², rendered as `tdmr predict` renders them.
fn images() -> (Vec<f32>, usize) {
    let root = common::root().join("sample-data/clipart");
    let files = tdmr::deploy::image_files(&[root.join("bird"), root.join("vehicle")]).unwrap();
    let picked: Vec<_> = files.iter().step_by(files.len() / 8).take(8).collect();
    let mut pixels = Vec::new();
    for f in &picked {
        pixels.extend(tdmr::data::image_folder::file_input(f, 64, SIDE).unwrap());
    }
    (pixels, picked.len())
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(r, s)| {
            assert_eq!(r.len(), s.len());
            r.iter().zip(s).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f32::max)
}

fn load(bytes: &[u8], dir: &std::path::Path, name: &str) -> OnnxClassifier {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    OnnxClassifier::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_architecture_exports_a_graph_tract_runs_to_the_same_logits() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, n) = images();
    let x = Tensor::from_vec(pixels.clone(), (n, 3, SIDE, SIDE), &Device::Cpu).unwrap();
    let projectors = [
        Some(ProjectorSpec {
            kind: ProjectorKind::Linear,
            proxy_dim: 16,
            normalize: true,
        }),
        Some(ProjectorSpec {
            kind: ProjectorKind::Mlp,
            proxy_dim: 12,
            normalize: false,
        }),
        None,
    ];
    for (a, arch) in Arch::ALL.iter().map(|a| a.name()).enumerate() {
        let card = card(arch, projectors[a % projectors.len()].clone());
        let model = perturbed_model(&card, 100 * a as u64, &x);
        let expected = model.logits(&x).unwrap();
        let spread = expected.max_all().unwrap().to_scalar::<f32>().unwrap() - expected.min_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(spread > 0.25, "{arch}: logits too flat to test anything ({spread})");
        let bytes = model.to_onnx(&card).unwrap();
        let onnx = load(&bytes, dir.path(), &format!("{arch}.onnx"));
        // `TDMR_ZOO_OUT=DIR` keeps both exports of every architecture for
        // `scripts/check-pytorch.py --zoo DIR` (PyTorch against ONNX Runtime).
        if let Some(out) = std::env::var_os("TDMR_ZOO_OUT").map(std::path::PathBuf::from) {
            std::fs::create_dir_all(&out).unwrap();
            std::fs::write(out.join(format!("{arch}.onnx")), &bytes).unwrap();
            model.params.save(&out.join(format!("{arch}.safetensors"))).unwrap();
            std::fs::write(out.join(format!("{arch}.json")), serde_json::to_string(&card).unwrap()).unwrap();
        }
        let out = onnx.run(&pixels, n).unwrap();
        let diff = max_diff(&out.logits, &rows(&expected));
        eprintln!("{arch}: spread {spread}, diff {diff}");
        assert!(diff <= 1e-4, "{arch}: ONNX logits differ from tdmr's by {diff}");
        let probs = candle_nn::ops::softmax(&expected, 1).unwrap();
        assert!(max_diff(&out.probabilities, &rows(&probs)) <= 1e-5, "{arch}: probabilities");

        // The batch dimension is dynamic: one image alone gives its row of the batch.
        let one = onnx.run(&pixels[..3 * SIDE * SIDE], 1).unwrap();
        assert!(max_diff(&one.logits, &out.logits[..1]) <= 1e-5, "{arch}: batch of one");

        // A wrong graph is caught: one weight of the first convolution (or of the patch
        // embedding) moved by 0.05 moves the logits past the tolerance.
        let mut proto = ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let w = graph
            .initializer
            .iter_mut()
            .find(|t| t.dims.len() == 4 && t.name.contains("weight"))
            .expect("a convolution weight");
        let v = f32::from_le_bytes(w.raw_data[..4].try_into().unwrap()) + 0.05;
        w.raw_data[..4].copy_from_slice(&v.to_le_bytes());
        let wrong = load(&proto.encode_to_vec(), dir.path(), &format!("{arch}-wrong.onnx"));
        let diff = max_diff(&wrong.run(&pixels, n).unwrap().logits, &rows(&expected));
        assert!(diff > 1e-4, "{arch}: a perturbed weight went unnoticed ({diff})");
    }
}

#[test]
fn the_export_declares_opset_dynamic_batch_and_class_names() {
    let card = card("small-cnn", None);
    let (pixels, n) = images();
    let x = Tensor::from_vec(pixels, (n, 3, SIDE, SIDE), &Device::Cpu).unwrap();
    let model = perturbed_model(&card, 7, &x);
    let proto = ModelProto::decode(model.to_onnx(&card).unwrap().as_slice()).unwrap();
    assert!(proto.opset_import.iter().any(|o| o.domain.is_empty() && o.version >= 17));
    let graph = proto.graph.as_ref().unwrap();
    let dims = |v: &tract_onnx::pb::ValueInfoProto| -> Vec<String> {
        match &v.r#type.as_ref().unwrap().value {
            Some(tract_onnx::pb::type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .unwrap()
                .dim
                .iter()
                .map(|d| match &d.value {
                    Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(n)) => n.to_string(),
                    Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimParam(p)) => p.clone(),
                    None => "?".into(),
                })
                .collect(),
            _ => panic!("not a tensor"),
        }
    };
    assert_eq!(dims(&graph.input[0]), ["batch", "3", "32", "32"]);
    let outputs: Vec<_> = graph.output.iter().map(|o| (o.name.as_str(), dims(o))).collect();
    assert_eq!(
        outputs,
        [
            ("logits", vec!["batch".to_string(), "5".into()]),
            ("probabilities", vec!["batch".to_string(), "5".into()])
        ]
    );
    // Batch norm is folded: no BatchNormalization node is left.
    assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
    let meta: HashMap<_, _> = proto.metadata_props.iter().map(|p| (p.key.as_str(), p.value.as_str())).collect();
    let classes: Vec<String> = serde_json::from_str(meta["classes"]).unwrap();
    assert_eq!(classes, card.classes);
    let embedded: ModelCard = serde_json::from_str(meta["tdmr.card"]).unwrap();
    assert_eq!(embedded, card);
}
