//! Users' own images: an ImageFolder written in the test (real PNG and JPEG files, one
//! corrupt image, one text file), decoded pixels against the files, the seeded split,
//! a whole experiment on it, the same run with no memory budget (images decoded from
//! disk, teacher cache memory-mapped and reused), and `tdmr export` / `tdmr eval`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::events;
use image::{ImageFormat, Rgb, RgbImage};
use tdmr::data::image_folder::{self, ImageFolder, LoadOptions, View};
use tdmr::engine::run_blocking;
use tdmr::engine::run_dir::RunDir;

const CLASSES: [&str; 3] = ["checker", "horizontal", "vertical"];

/// Class `c`'s pattern with a per-image phase and colour, so views differ.
fn pattern(c: usize, i: usize, side: u32) -> RgbImage {
    let tint = [(40 + 17 * i as u8) % 200, 90, (200 - 13 * i as u8) % 250];
    RgbImage::from_fn(side, side, |x, y| {
        let (x, y) = (x + i as u32, y + 2 * i as u32);
        let on = match c {
            0 => (x / 4 + y / 4) % 2 == 0,
            1 => (y / 4) % 2 == 0,
            _ => (x / 4) % 2 == 0,
        };
        if on {
            Rgb([230, 230, 230])
        } else {
            Rgb(tint)
        }
    })
}

/// `per_class` images per class (PNG and JPEG alternating), plus `checker/broken.png`
/// (a truncated PNG), `vertical/notes.txt` and a hidden file that must be ignored.
fn make_folder(root: &Path, per_class: usize, side: u32) {
    for (c, name) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = pattern(c, i, side);
            if i % 2 == 0 {
                img.save_with_format(dir.join(format!("{i:04}.png")), ImageFormat::Png).unwrap();
            } else {
                img.save_with_format(dir.join(format!("{i:04}.jpg")), ImageFormat::Jpeg).unwrap();
            }
        }
    }
    let good = std::fs::read(root.join("checker/0000.png")).unwrap();
    std::fs::write(root.join("checker/broken.png"), &good[..good.len() / 2]).unwrap();
    std::fs::write(root.join("vertical/notes.txt"), "labels were checked by hand\n").unwrap();
    std::fs::write(root.join("horizontal/.DS_Store"), [0u8; 16]).unwrap();
}

fn opts(side: usize, budget: usize) -> LoadOptions {
    LoadOptions {
        stored_side: side,
        memory_budget_bytes: budget,
        workers: 2,
    }
}

#[test]
fn loads_sorted_classes_and_names_every_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), 6, 24);
    let store = ImageFolder::load(dir.path(), opts(24, 1 << 30)).unwrap();
    assert_eq!(store.classes, CLASSES);
    assert_eq!(store.len(), 18, "6 readable images per class");
    let mut skipped: Vec<String> = store.skipped.iter().map(|s| s.path.clone()).collect();
    skipped.sort();
    assert_eq!(skipped.len(), 2, "{:?}", store.skipped);
    assert!(skipped[0].ends_with("checker/broken.png") && skipped[1].ends_with("vertical/notes.txt"));
    assert!(store.skipped.iter().all(|s| !s.reason.is_empty()));
    assert_eq!(store.resident_bytes, 18 * 24 * 24 * 3);
    // Labels follow the sorted class folders.
    for i in 0..store.len() {
        assert!(store.name(i).starts_with(CLASSES[store.label(i) as usize]));
    }
    // A folder with fewer than two classes is an error that names it.
    let lonely = tempfile::tempdir().unwrap();
    std::fs::create_dir(lonely.path().join("only")).unwrap();
    let e = ImageFolder::load(lonely.path(), opts(24, 0)).err().unwrap().to_string();
    assert!(
        e.contains(&lonely.path().display().to_string()) && e.contains("class folder"),
        "{e}"
    );
}

#[test]
fn rendered_views_match_the_decoded_pixels() {
    let dir = tempfile::tempdir().unwrap();
    for (c, name) in ["a", "b"].iter().enumerate() {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        // Left half one colour, right half another: a flip is visible.
        let img = RgbImage::from_fn(8, 8, |x, _| if x < 4 { Rgb([10, 20 * c as u8, 30]) } else { Rgb([250, 128, 0]) });
        img.save(dir.path().join(name).join("x.png")).unwrap();
    }
    let store = Arc::new(ImageFolder::load(dir.path(), opts(8, 1 << 20)).unwrap());
    let pool = image_folder::pool(1).unwrap();
    let plain = image_folder::render_batch(&store, &[View::whole(0)], 8, &pool).unwrap();
    let flipped = image_folder::render_batch(
        &store,
        &[View {
            flip: true,
            ..View::whole(0)
        }],
        8,
        &pool,
    )
    .unwrap();
    let at = |v: &[f32], c: usize, y: usize, x: usize| v[c * 64 + y * 8 + x];
    for y in 0..8 {
        for x in 0..8 {
            let (left, right) = ([10.0, 0.0, 30.0], [250.0, 128.0, 0.0]);
            let want = if x < 4 { left } else { right };
            let mirrored = if x < 4 { right } else { left };
            for c in 0..3 {
                assert_eq!(at(&plain, c, y, x), want[c] / 255.0, "pixel ({x}, {y}) channel {c}");
                assert_eq!(at(&flipped, c, y, x), mirrored[c] / 255.0, "flipped ({x}, {y}) channel {c}");
            }
        }
    }
    // A crop of the right half is the right colour everywhere.
    let crop = image_folder::render_batch(
        &store,
        &[View {
            image: 0,
            crop: [0.5, 0.0, 0.5, 1.0],
            flip: false,
        }],
        4,
        &pool,
    )
    .unwrap();
    assert!(crop[..16].iter().all(|&v| v == 250.0 / 255.0), "{crop:?}");
}

#[test]
fn mixed_views_blend_two_images_and_carry_both_labels() {
    let dir = tempfile::tempdir().unwrap();
    // One flat colour per image, so every crop of an image has that colour.
    let colours = [[200u8, 0, 0], [0, 100, 0], [0, 0, 50]];
    for (c, name) in ["a", "b", "c"].iter().enumerate() {
        std::fs::create_dir_all(dir.path().join(name)).unwrap();
        RgbImage::from_pixel(8, 8, Rgb(colours[c]))
            .save(dir.path().join(name).join("x.png"))
            .unwrap();
    }
    let store = Arc::new(ImageFolder::load(dir.path(), opts(8, 1 << 20)).unwrap());
    let pool = Arc::new(image_folder::pool(1).unwrap());
    let augment = tdmr::data::Augment {
        scale: [0.5, 1.0],
        ratio: [0.75, 4.0 / 3.0],
        flip: true,
    };
    let device = candle_core::Device::Cpu;
    let mut set = tdmr::data::ViewSet::folder(&store, &[0, 1, 2], 2, augment, 7, &pool, &device).unwrap();
    set.hide_labels_from(2);
    let set = set.with_mixes(3, 7).unwrap();
    assert_eq!((set.views, set.len(), set.images()), (5, 15, 3));
    let rows: Vec<usize> = (0..set.len()).collect();
    let pixels: Vec<f32> = set.batch(&rows, 4).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let (mixing_labels, mixing_weights) = set.mixing(&rows).unwrap().expect("mixed rows");
    let (mixing_labels, mixing_weights): (Vec<u32>, Vec<f32>) = (mixing_labels.to_vec1().unwrap(), mixing_weights.to_vec1().unwrap());
    let colour = |image: usize| colours[image].map(|v| v as f32 / 255.0);
    for row in rows {
        let image = row / 5;
        let got = &pixels[row * 48..(row + 1) * 48];
        match set.mix(row) {
            None => {
                assert!(row % 5 < 2, "row {row}: the first two views of an image are its own");
                assert_eq!(mixing_weights[row], 1.0);
                for c in 0..3 {
                    assert!(got[c * 16..(c + 1) * 16].iter().all(|&v| v == colour(image)[c]), "row {row}");
                }
            }
            Some(m) => {
                assert!(row % 5 >= 2, "row {row}");
                assert!((0.5..=1.0).contains(&m.lambda), "λ = {}", m.lambda);
                assert_ne!(m.partner.image, image, "row {row} is mixed with another image");
                let (own, other) = (colour(image), colour(m.partner.image));
                for c in 0..3 {
                    let want = m.lambda * own[c] + (1.0 - m.lambda) * other[c];
                    assert!(
                        got[c * 16..(c + 1) * 16].iter().all(|&v| (v - want).abs() < 1e-6),
                        "row {row} channel {c}"
                    );
                }
                assert_eq!((mixing_labels[row], mixing_weights[row]), (m.label, m.lambda));
                // A blend with the unlabelled image 2, or of it, has no label.
                let unlabelled = image == 2 || m.partner.image == 2;
                assert_eq!(set.labels[row] == tdmr::data::views::UNLABELED, unlabelled, "row {row}");
            }
        }
    }
    // Digits views are one tensor: mixing them is refused by name.
    let digits = tdmr::data::Digits::load(&common::root().join("sample-data/digits")).unwrap();
    let plain = tdmr::data::ViewSet::new(&digits, &[0, 1], 2, 0, &device).unwrap();
    let err = plain.with_mixes(1, 0).err().expect("refused").to_string();
    assert!(err.contains("data.mix_views"), "{err}");
}

#[test]
fn the_split_is_reproducible_from_the_seed_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path(), 10, 16);
    let store = ImageFolder::load(dir.path(), opts(16, 1 << 30)).unwrap();
    let a = store.split(3, 0.2, 0.0, 7).unwrap();
    let b = store.split(3, 0.2, 0.0, 7).unwrap();
    let c = store.split(3, 0.2, 0.0, 8).unwrap();
    assert_eq!((&a.train, &a.test, &a.validation), (&b.train, &b.test, &b.validation));
    assert_ne!(a.test, c.test, "another seed holds out other images");
    assert_eq!((a.train.len(), a.test.len(), a.validation.len()), (9, 6, 15));
    let mut all: Vec<usize> = a.train.iter().chain(&a.test).chain(&a.validation).copied().collect();
    all.sort();
    assert_eq!(all, (0..30).collect::<Vec<_>>(), "train, test and validation partition the images");
    // The test set does not depend on k.
    assert_eq!(store.split(5, 0.2, 0.0, 7).unwrap().test, a.test);
    let e = store.split(9, 0.2, 0.0, 7).err().unwrap().to_string();
    assert!(e.contains("data.k") && e.contains("checker"), "{e}");
}

fn experiment(data: &Path, budget_mb: u64) -> tdmr::config::Experiment {
    let text = format!(
        r#"
name = "folder"
seed = 1
device = "cpu"
methods = ["scratch", "tdmr"]
[data]
kind = "image-folder"
path = {data:?}
k = 6
views = 2
eval_every = 100
memory_budget_mb = {budget_mb}
flip = true
[foundation]
path = {weights:?}
image_size = 32
inner_size = 24
[reprogram]
pad = 4
proxy_dim = 16
[stage1]
epochs = 2
batch_size = 9
[target]
image_size = 16
[distill]
batch_size = 12
[[distill.stages]]
name = "align"
epochs = 3
lr = 3e-3
train = ["backbone", "projector"]
weights = {{ align = 1.0 }}
[[distill.stages]]
name = "task"
epochs = 12
lr = 3e-3
weights = {{ kd = 0.5, ce = 1.0 }}
"#,
        data = data.display().to_string(),
        weights = common::root().join(common::WEIGHTS).display().to_string()
    );
    tdmr::config::Experiment::parse(&text, "folder.toml", &[]).unwrap()
}

fn tdmr_bin(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tdmr")).args(args).output().unwrap();
    assert!(out.status.success(), "tdmr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_image_folder_experiment_trains_exports_and_repeats_from_disk_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    make_folder(&data, 14, 40);
    let runs = dir.path().join("runs");
    let first = RunDir::create(Some(&runs.join("a")), "folder").unwrap();
    let summary = run_blocking(&experiment(&data, 1024), &first, None, None).unwrap();
    for key in ["scratch", "tdmr"] {
        assert!(summary[key].test_acc > 0.6, "{key} on 3 classes (chance 1/3): {:?}", summary[key]);
    }
    // The corrupt files are reported by name; the split is recorded.
    let loaded = &events(&first.root, "data-loaded")[0];
    let skipped = loaded["skipped"].to_string();
    assert!(skipped.contains("broken.png") && skipped.contains("notes.txt"), "{skipped}");
    let split: tdmr::data::SplitRecord = serde_json::from_str(&std::fs::read_to_string(first.root.join("split.json")).unwrap()).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (18, 9));
    assert_eq!(split.skipped.len(), 2);
    let cache = &events(&first.root, "cache-built")[0];
    assert_eq!((cache["mapped"].as_bool(), cache["reused_from"].as_str()), (Some(false), None));
    let built = events(&first.root, "target-built");
    assert!(built.iter().all(|t| t["arch"] == "small-cnn" && t["macs"].as_u64().unwrap() > 0));

    // No memory at all: images decoded from disk per batch, the teacher cache mapped
    // and linked from the first run; every number the same.
    let second = RunDir::create(Some(&runs.join("b")), "folder").unwrap();
    let again = run_blocking(&experiment(&data, 0), &second, None, None).unwrap();
    let accs = |s: &tdmr::engine::Summary| s.iter().map(|(k, v)| (k.clone(), v.test_acc)).collect::<Vec<_>>();
    assert_eq!(accs(&summary), accs(&again));
    let loaded = &events(&second.root, "data-loaded")[0];
    assert_eq!((loaded["resident_bytes"].as_u64(), loaded["on_disk"].as_u64()), (Some(0), Some(42)));
    let cache = &events(&second.root, "cache-built")[0];
    assert_eq!(cache["mapped"].as_bool(), Some(true));
    assert!(cache["reused_from"].as_str().unwrap().ends_with("a"), "{cache}");
    let epochs = |run: &Path| {
        events(run, "epoch")
            .into_iter()
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("images_per_s");
                e
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        epochs(&first.root),
        epochs(&second.root),
        "losses differ when images come from disk"
    );

    // The exported model reproduces the run's final accuracy exactly.
    let model = dir.path().join("model/tdmr.safetensors");
    let root = first.root.display().to_string();
    tdmr_bin(&["export", &root, "--out", model.to_str().unwrap()]);
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(card["classes"], serde_json::json!(CLASSES));
    assert_eq!(card["target"]["arch"], "small-cnn");
    let split_file: PathBuf = first.root.join("split.json");
    let json = tdmr_bin(&[
        "eval",
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        "--split",
        split_file.to_str().unwrap(),
        "--json",
    ]);
    let eval: tdmr::deploy::Evaluation = serde_json::from_str(&json).unwrap();
    assert_eq!(eval.accuracy, summary["tdmr"].test_acc, "{eval:?}");
    assert_eq!(eval.total, 9);
    assert_eq!(eval.confusion.iter().flatten().sum::<usize>(), 9);
    let text = tdmr_bin(&["eval", model.to_str().unwrap(), data.to_str().unwrap()]);
    assert!(text.contains("confusion matrix") && text.contains("horizontal"), "{text}");
    // The heatmap carries every class name and every cell's count.
    let stem = dir.path().join("confusion");
    let split_arg = split_file.to_str().unwrap();
    tdmr_bin(&[
        "eval",
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        "--split",
        split_arg,
        "--plot",
        stem.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(stem.with_extension("svg")).unwrap();
    let texts: Vec<&str> = svg
        .split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>').and_then(|(_, rest)| rest.split("</text>").next()).map(str::trim))
        .collect();
    for class in CLASSES {
        assert!(texts.contains(&class), "no {class} label in {texts:?}");
    }
    for value in eval.confusion.iter().flatten() {
        let want = eval.confusion.iter().flatten().filter(|&c| c == value).count();
        let drawn = texts.iter().filter(|t| **t == value.to_string()).count();
        assert!(drawn >= want, "{want} cells hold {value}, the heatmap shows {drawn}: {texts:?}");
    }
    let png = image::open(stem.with_extension("png")).unwrap();
    assert!(png.width() > 300 && png.height() > 300);

    // `tdmr predict` on the test images, one file each, sees what eval saw: the same
    // top-1 accuracy, and probabilities that are ordered and sum to at most 1.
    let tests: Vec<String> = split.test.iter().map(|n| data.join(n).display().to_string()).collect();
    let mut args = vec!["predict", model.to_str().unwrap(), "--top", "3", "--json"];
    args.extend(tests.iter().map(String::as_str));
    let predictions: Vec<tdmr::deploy::Prediction> = serde_json::from_str(&tdmr_bin(&args)).unwrap();
    assert_eq!(predictions.len(), 9);
    let mut correct = 0;
    for (p, name) in predictions.iter().zip(&split.test) {
        assert_eq!(p.top.len(), 3, "{p:?}");
        assert!(p.top.windows(2).all(|w| w[0].probability >= w[1].probability), "{p:?}");
        assert!(p.top.iter().map(|c| c.probability).sum::<f64>() <= 1.0 + 1e-6, "{p:?}");
        correct += usize::from(name.starts_with(&format!("{}/", p.top[0].class)));
    }
    assert_eq!(correct, eval.correct, "predict and eval disagree");
    // A folder is walked for its images (the text file and the hidden one are left out,
    // the truncated PNG is an error naming it).
    let (ok, text) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tdmr"))
            .args([
                "predict",
                model.to_str().unwrap(),
                data.join("vertical").to_str().unwrap(),
                data.join("horizontal").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    assert!(ok, "{text}");
    assert!(!text.contains("notes.txt") && !text.contains(".DS_Store"), "{text}");
    let classified = |l: &str| {
        l.split_once(": ")
            .is_some_and(|(_, top)| CLASSES.iter().any(|c| top.starts_with(c)))
    };
    assert!(text.lines().count() >= 6 && text.lines().all(classified), "{text}");
    let err = std::process::Command::new(env!("CARGO_BIN_EXE_tdmr"))
        .args([
            "predict",
            model.to_str().unwrap(),
            data.join("checker/broken.png").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&err.stderr);
    assert!(!err.status.success() && msg.contains("broken.png"), "{msg}");

    // The ONNX export (default path RUN/export/tdmr.onnx) run through tract by `tdmr
    // predict` gives the safetensors export's probabilities on the same images.
    tdmr_bin(&["export", &root, "--format", "onnx"]);
    // A file name that contradicts --format is refused (exit 2), nothing written.
    let clash = dir.path().join("model/clash.safetensors");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tdmr"))
        .args(["export", &root, "--format", "onnx", "--out", clash.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(!clash.exists());
    let onnx_model = first.root.join("export/tdmr.onnx");
    assert!(onnx_model.is_file() && first.root.join("export/tdmr.json").is_file());
    let mut args = vec!["predict", onnx_model.to_str().unwrap(), "--top", "3", "--json"];
    args.extend(tests.iter().map(String::as_str));
    let via_onnx: Vec<tdmr::deploy::Prediction> = serde_json::from_str(&tdmr_bin(&args)).unwrap();
    assert_eq!(via_onnx.len(), predictions.len());
    for (o, p) in via_onnx.iter().zip(&predictions) {
        assert_eq!(o.top[0].class, p.top[0].class, "{o:?} vs {p:?}");
        for (a, b) in o.top.iter().zip(&p.top) {
            assert!((a.probability - b.probability).abs() < 1e-5, "{o:?} vs {p:?}");
        }
    }
    let card: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(first.root.join("export/tdmr.json")).unwrap()).unwrap();
    assert!(card["input"]["preprocessing"].as_str().unwrap().contains("Triangle"), "{card}");
}
