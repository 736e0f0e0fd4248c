//! The digits loader against known values, the fixed split, and config errors.

mod common;

use common::*;
use tdmr::config::Experiment;
use tdmr::data::Digits;

#[test]
fn digits_load_with_known_values() {
    let d = Digits::load(&root().join(DIGITS)).unwrap();
    assert_eq!(d.images.len(), 1797);
    // First line of the file: 0,0,5,13,9,1,0,0,... label 0.
    assert_eq!(d.labels[0], 0);
    assert_eq!(
        &d.images[0][..8],
        &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0, 9.0 / 16.0, 1.0 / 16.0, 0.0, 0.0]
    );
    assert_eq!(d.labels[1], 1);
    let mut counts = [0usize; 10];
    d.labels.iter().for_each(|&y| counts[y as usize] += 1);
    assert_eq!(counts.iter().sum::<usize>(), 1797);
    assert!(counts.iter().all(|&c| (174..=183).contains(&c)), "{counts:?}");
}

#[test]
fn split_is_fixed_first_k_per_class_and_shared_test_set() {
    let d = Digits::load(&root().join(DIGITS)).unwrap();
    let s10 = d.split(10).unwrap();
    let s50 = d.split(50).unwrap();
    assert_eq!(s10.train.len(), 100);
    assert_eq!(s50.train.len(), 500);
    assert_eq!(s10.test.len(), 1297);
    assert_eq!(s10.test, s50.test, "the test set must not depend on k");
    // Train images are the first k of their class in file order.
    for c in 0..10u32 {
        let firsts: Vec<usize> = (0..d.labels.len()).filter(|&i| d.labels[i] == c).take(10).collect();
        let ours: Vec<usize> = s10.train.iter().copied().filter(|&i| d.labels[i] == c).collect();
        assert_eq!(firsts, ours);
    }
    assert!(s50.train.iter().all(|i| !s50.test.contains(i)));
    let e = d.split(51).err().expect("k = 51 exceeds the training pool").to_string();
    assert!(e.contains("data.k") && e.contains("51"), "{e}");
}

#[test]
fn default_experiment_parses() {
    let e = Experiment::load(&root().join("sample-data/experiments/digits.toml"), &[]).unwrap();
    assert_eq!(e.data.k, 10);
    assert_eq!(e.distill.stages.len(), 3);
    assert_eq!(e.distill.stages[0].weights.ce, 0.0);
    assert!(e.foundation_path().exists());
    // The quick look stays a complete experiment: every method, the same three stages.
    let q = Experiment::load(&root().join("sample-data/experiments/quick.toml"), &[]).unwrap();
    assert_eq!(q.methods.len(), 5);
    assert_eq!(q.distill.stages.len(), 3);
    assert!(q.data_path().exists() && q.foundation_path().exists());
}

fn parse_err(text: &str, sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Experiment::parse(text, "exp.toml", &sets).expect_err("should fail").to_string()
}

#[test]
fn config_errors_name_key_and_line() {
    let e = parse_err("name = \"x\"\n[stage1]\nepochs = 3\nlearning_rate = 0.1\n", &[]);
    assert!(e.contains("exp.toml") && e.contains("learning_rate") && e.contains("line 4"), "{e}");
    let e = parse_err("name = \"x\"\n\n[data]\nk = \"ten\"\n", &[]);
    assert!(e.contains("line 4") && e.contains("k"), "{e}");
    let e = parse_err("[reprogram]\npad = 60\n", &[]);
    assert!(e.contains("reprogram.pad") && e.contains("canvas"), "{e}");
    let e = parse_err("", &["stage1.lr=-1"]);
    assert!(e.contains("stage1.lr"), "{e}");
    let e = parse_err("", &["data.kk=3"]);
    assert!(e.contains("kk") && e.contains("--set data.kk=3"), "{e}");
    let e = parse_err("", &["data.k"]);
    assert!(e.contains("KEY=VALUE"), "{e}");
}

#[test]
fn absurd_values_are_refused_by_key() {
    for (set, key) in [
        ("stage1.epochs=1000000000000", "stage1.epochs"),
        ("foundation.image_size=100000", "foundation.image_size"),
        ("data.views=0", "data.views"),
        ("stage1.batch_size=1000000", "stage1.batch_size"),
        ("stage1.warmup_epochs=50", "stage1.warmup_epochs"),
        ("reprogram.proxy_dim=100000000", "reprogram.proxy_dim"),
        ("reprogram.label_smoothing=1.5", "reprogram.label_smoothing"),
        ("stage1.momentum=-1", "stage1.momentum"),
        ("baselines.kd_alpha=nan", "baselines.kd_alpha"),
        ("distill.temperature=inf", "distill.temperature"),
    ] {
        let e = parse_err("", &[set]);
        assert!(e.contains(key) && e.contains("range"), "--set {set}: {e}");
    }
    // Negative sizes never reach the checks: they are not unsigned integers.
    let e = parse_err("[foundation]\nimage_size = -96\n", &[]);
    assert!(e.contains("image_size") && e.contains("line 2"), "{e}");
    let e = parse_err("[stage1]\nepochs = 1e12\n", &[]);
    assert!(e.contains("epochs") && e.contains("line 2"), "{e}");
}

#[test]
fn set_overrides_by_dotted_path() {
    let e = Experiment::parse(
        "[data]\nk = 10\n",
        "exp.toml",
        &["data.k=50".into(), "stage1.lr=3e-3".into(), "name=other".into()],
    )
    .unwrap();
    assert_eq!(e.data.k, 50);
    assert_eq!(e.stage1.lr, 3e-3);
    assert_eq!(e.name, "other");
}
