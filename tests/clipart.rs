//! The clip-art pipeline on a real subset of the bundled data: the split's parts stay
//! apart, stage 1 keeps what the probe knows, and the target distilled on the
//! unlabelled transfer set learns from it.

mod common;

use common::*;
use tdmr::config::Experiment;
use tdmr::engine::run_blocking;
use tdmr::engine::run_dir::RunDir;

/// Four of the ten classes, copied (real files) into a fresh ImageFolder.
const CLASSES: [&str; 4] = ["bird", "building", "fruit", "vehicle"];

fn subset(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("clipart4");
    for class in CLASSES {
        let (from, to) = (root_path().join("sample-data/clipart").join(class), root.join(class));
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
    root
}

fn root_path() -> std::path::PathBuf {
    root()
}

/// The default experiment, shrunk: 64² foundation canvas, k = 5, short schedules.
fn small_clipart(data: &std::path::Path, methods: &str) -> Experiment {
    let sets: Vec<String> = [
        format!("data.path={:?}", data.display().to_string()),
        "device=\"cpu\"".into(),
        format!("methods={methods}"),
        "data.k=5".into(),
        "data.views=8".into(),
        "data.unlabeled_views=4".into(),
        "data.eval_every=100".into(),
        "foundation.image_size=64".into(),
        "foundation.inner_size=56".into(),
        "reprogram.pad=4".into(),
        "stage1.epochs=4".into(),
        "stage1.probe_init_epochs=40".into(),
        "baselines.linear_probe_epochs=40".into(),
        "distill.transfer_budget=3.0".into(),
        "distill.stages=[{name=\"align\",epochs=40,lr=3e-3,train=[\"backbone\",\"projector\"],weights={align=1.0}},\
{name=\"align+kd\",epochs=40,lr=3e-3,weights={align=1.0,kd=1.0,ce=0.1}},\
{name=\"task\",epochs=40,lr=1e-3,weights={kd=0.2,ce=1.0}}]"
            .into(),
    ]
    .to_vec();
    Experiment::load(&root().join("sample-data/experiments/clipart.toml"), &sets).unwrap()
}

#[test]
fn split_keeps_test_validation_train_and_pool_apart() {
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let store = tdmr::data::ImageFolder::load(
        &data,
        tdmr::data::image_folder::LoadOptions {
            stored_side: 64,
            memory_budget_bytes: 1 << 30,
            workers: 1,
        },
    )
    .unwrap();
    let a = store.split(5, 0.25, 0.15, 1).unwrap();
    let b = store.split(10, 0.25, 0.15, 1).unwrap();
    // Test and validation are the same images at every k; the pool is what k leaves.
    assert_eq!(a.test, b.test);
    assert_eq!(a.validation, b.validation);
    let mut all: Vec<usize> = [&a.test, &a.validation, &a.train, &a.unlabeled]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((all.len(), n), (store.len(), store.len()), "the four parts overlap or miss images");
    assert_eq!(a.train.len(), 5 * CLASSES.len());
    assert_eq!(a.unlabeled.len(), b.unlabeled.len() + 5 * CLASSES.len());
    // Without a validation fraction the split is the one earlier versions made.
    assert!(store.split(5, 0.25, 0.0, 1).unwrap().unlabeled.is_empty());
}

#[test]
fn transfer_set_needs_a_separate_validation_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let e = Experiment::load(
        &root().join("sample-data/experiments/clipart.toml"),
        &[
            format!("data.path={:?}", data.display().to_string()),
            "data.validation_fraction=0".into(),
        ],
    )
    .expect_err("a pool without validation must be refused")
    .to_string();
    assert!(e.contains("data.unlabeled") && e.contains("validation_fraction"), "{e}");
}

#[test]
fn clipart_pipeline_keeps_the_probe_in_stage1_and_distils_on_the_transfer_set() {
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let exp = small_clipart(&data, r#"["linear-probe","tdmr-transfer","scratch"]"#);
    let run = RunDir::create(Some(&dir.path().join("run")), "clipart4").unwrap();
    let s = run_blocking(&exp, &run, None, None).unwrap();
    let acc = |k: &str| s.get(k).unwrap_or_else(|| panic!("no {k} in {s:?}")).test_acc;
    let (probe, teacher, scratch, transfer) = (acc("linear-probe"), acc("tdmr-teacher"), acc("scratch"), acc("tdmr-transfer"));
    eprintln!("probe {probe:.3} teacher {teacher:.3} scratch {scratch:.3} tdmr-transfer {transfer:.3}");
    // Chance is 25%. Stage 1, started from a probe in the proxy space and selected on
    // validation, keeps what the probe knows, and knows more than the target learns
    // from 20 labelled images.
    assert!(probe > 0.33, "linear probe {probe}");
    assert!(teacher >= probe, "stage 1 lost what the probe knows: {teacher} vs {probe}");
    assert!(teacher > scratch + 0.08, "teacher {teacher} vs scratch {scratch}");
    // At this size (4 classes, k = 5, 64² canvas, a few hundred steps) the distilled
    // target does not beat scratch (measured: 37.9% vs 45.3%); RESULTS.md reports the
    // full benchmark. What is asserted is that it learns well above chance.
    assert!(transfer > 0.30, "tdmr-transfer {transfer}");
    // The pool's images were labelled by the teacher only: split.json records them apart.
    let split: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.root.join("split.json")).unwrap()).unwrap();
    let pool = split["unlabeled"].as_array().unwrap();
    assert!(!pool.is_empty() && pool.iter().all(|p| !split["train"].as_array().unwrap().contains(p)));
}

#[test]
fn mixed_views_are_the_targets_and_leave_the_teacher_and_probe_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = subset(dir.path());
    let methods = r#"["linear-probe","kd-tdmr-teacher"]"#;
    let run = |name: &str, mix: usize| {
        let mut exp = small_clipart(&data, methods);
        exp.data.mix_views = mix;
        exp.distill.stages.iter_mut().for_each(|s| s.epochs = 5);
        exp.baselines.linear_probe_epochs = 10;
        exp.stage1.epochs = 2;
        let run = RunDir::create(Some(&dir.path().join(name)), "clipart4").unwrap();
        let s = run_blocking(&exp, &run, None, None).unwrap();
        (s, events(&run.root, "cache-built"))
    };
    let (plain, plain_cache) = run("plain", 0);
    let (mixed, mixed_cache) = run("mixed", 4);
    for key in ["linear-probe", "tdmr-teacher"] {
        assert_eq!(
            plain.get(key).unwrap().test_acc,
            mixed.get(key).unwrap().test_acc,
            "{key} changed with mixed views"
        );
    }
    // The teacher labels every mixed view: 20 images × (8 views + 4 mixed).
    let rows = |c: &[serde_json::Value]| c[0]["rows"].as_u64().unwrap();
    assert_eq!((rows(&plain_cache), rows(&mixed_cache)), (20 * 8, 20 * 12));
}
