//! The real binary: clear errors, never a panic.

mod common;

use std::process::Command;

use common::*;

fn tdmr_status(args: &[&str]) -> (Option<i32>, String) {
    tdmr_in(&root(), &[], args)
}

fn tdmr(args: &[&str]) -> (bool, String) {
    let (code, text) = tdmr_status(args);
    (code == Some(0), text)
}

#[test]
fn exit_status_tells_bad_config_from_other_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = |name: &str| dir.path().join(name).display().to_string();
    // Bad config, a missing experiment file, and bad arguments: 2.
    for args in [
        vec!["run", "--set", "data.k=0", "--out", &out("a")],
        vec!["run", "/nonexistent/exp.toml"],
        vec!["run", "--set", "precision=\"fp8\""],
        vec!["run", "--no-such-flag"],
    ] {
        let (code, text) = tdmr_status(&args);
        assert_eq!(code, Some(2), "{args:?}: {text}");
    }
    // A weight file that is not there is an error of the run, not of the config: 1.
    let set = format!("foundation.path={}", out("none.safetensors"));
    let (code, text) = tdmr_status(&["run", "--out", &out("b"), "--set", &set]);
    assert_eq!(code, Some(1), "{text}");
    // A run whose loss overflows, with no learning-rate back-off left: 3.
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(&tiny, tiny_text()).unwrap();
    let (code, text) = tdmr_status(&[
        "run",
        tiny.to_str().unwrap(),
        "--out",
        &out("c"),
        "--set",
        "methods=[\"vp\"]",
        "--set",
        "stage1.lr=1e38",
        "--set",
        "checkpoint.lr_backoff=0",
    ]);
    assert_eq!(code, Some(3), "{text}");
    // The statuses are documented where a script writer looks.
    let (code, help) = tdmr_status(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        help.contains("2 bad config") && help.contains("3 the run diverged") && help.contains("4 the run was aborted"),
        "{help}"
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef tdmr"), ("fish", "complete -c tdmr")] {
        let (code, text) = tdmr_status(&["completions", shell]);
        assert_eq!(code, Some(0), "{shell}: {text}");
        assert!(text.contains(marker) && text.contains("export"), "{shell} completions:\n{text}");
    }
    let (code, _) = tdmr_status(&["completions", "tcsh"]);
    assert_eq!(code, Some(2));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "name = \"x\"\n[foundation]\nimage_sise = 96\n").unwrap();
    let (ok, text) = tdmr(&["run", cfg.to_str().unwrap()]);
    assert!(!ok && text.contains("image_sise") && text.contains("line 3"), "{text}");

    let missing = dir.path().join("none.safetensors");
    let out = dir.path().join("run");
    let set = format!("foundation.path={}", missing.display());
    let (ok, text) = tdmr(&["run", "--out", out.to_str().unwrap(), "--set", &set, "--set", "data.k=2"]);
    assert!(!ok && text.contains("none.safetensors"), "{text}");

    let (ok, text) = tdmr(&["run", "--set", "data.k=51", "--out", dir.path().join("r2").to_str().unwrap()]);
    assert!(!ok && text.contains("data.k"), "{text}");

    let (ok, text) = tdmr(&["run", "--set", "reprogram.pad=65"]);
    assert!(!ok && text.contains("reprogram.pad"), "{text}");

    let (ok, text) = tdmr(&["run", "/nonexistent/exp.toml"]);
    assert!(!ok && text.contains("/nonexistent/exp.toml"), "{text}");

    let (ok, text) = tdmr(&["run", "--set", "precision=\"fp8\""]);
    assert!(!ok && text.contains("precision") && text.contains("fp8"), "{text}");

    // An .onnx file that is not ONNX, and an ONNX export without tdmr's metadata.
    let image = root().join("sample-data/clipart/bird");
    let fake = dir.path().join("fake.onnx");
    std::fs::write(&fake, b"\x0a\xff\xff not protobuf").unwrap();
    let (ok, text) = tdmr(&["predict", fake.to_str().unwrap(), image.to_str().unwrap()]);
    assert!(!ok && text.contains("fake.onnx") && text.contains("not an ONNX model"), "{text}");
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, b"").unwrap();
    let (ok, text) = tdmr(&["predict", bare.to_str().unwrap(), image.to_str().unwrap()]);
    assert!(!ok && text.contains("bare.onnx") && text.contains("tdmr.image_size"), "{text}");

    // The typed registries still name the key and list what it takes.
    let (ok, text) = tdmr(&["run", "--set", "target.arch=\"resnet9\""]);
    assert!(
        !ok && text.contains("target.arch") && text.contains("resnet9") && text.contains("mobilenetv2"),
        "{text}"
    );
    let (ok, text) = tdmr(&["run", "--set", "foundation.family=\"effnet\""]);
    assert!(
        !ok && text.contains("foundation.family") && text.contains("efficientnet-lite"),
        "{text}"
    );
    let (ok, text) = tdmr(&["run", "--set", "data.kind=\"csv\""]);
    assert!(!ok && text.contains("data.kind") && text.contains("image-folder"), "{text}");

    let (ok, text) = tdmr(&["run", "--device", "gpu"]);
    assert!(!ok && text.contains("device") && text.contains("cpu, cuda, cuda:N, auto"), "{text}");

    // A CPU-only build asked for CUDA says how to get a CUDA build.
    if !cfg!(feature = "cuda") {
        for cmd in [&["run", "--device", "cuda"][..], &["bench", "--device", "cuda:1"][..]] {
            let (ok, text) = tdmr(cmd);
            assert!(
                !ok && text.contains("built without CUDA") && text.contains("scripts/build-cuda.sh"),
                "{text}"
            );
        }
    }
}

#[test]
fn without_a_terminal_the_workbench_runs_headless() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, tiny_text()).unwrap();
    let out = dir.path().join("run");
    // `output()` pipes stdout: exactly `tdmr tui … | cat`.
    let (ok, text) = tdmr(&["tui", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("not a terminal") && text.contains("headless"), "{text}");
    assert!(text.contains("== tdmr: test"), "readable progress lines, not a dump:\n{text}");
    assert!(out.join("report.md").is_file() && out.join("summary.json").is_file());
}

#[test]
fn bench_reports_every_workload() {
    let (ok, text) = tdmr(&["bench", "--device", "cpu", "--json", "--no-before", "--budget", "0.2"]);
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(v["device"], "cpu");
    let figures = v["figures"].as_array().unwrap();
    let names: Vec<&str> = figures.iter().map(|f| f["workload"].as_str().unwrap()).collect();
    for want in [
        "small CNN train step",
        "ResNet-18",
        "efficientnet-lite0 forward",
        "backward to the prompt",
        "teacher cache",
        "teacher recomputed",
        "stage-1 step",
    ] {
        assert_eq!(
            names.iter().filter(|n| n.contains(want)).count(),
            if want.ends_with("forward") { 2 } else { 1 },
            "{want} in {names:?}"
        );
    }
    assert_eq!(figures.len(), 7, "{v}");
    // Where it ran: the CPU, the vector path this CPU gives the kernels, the threads.
    let machine = &v["machine"];
    assert!(!machine["cpu"].as_str().unwrap().is_empty(), "{machine}");
    assert_eq!(machine["kernels"], tdmr::ops::isa::Isa::detected().name(), "{machine}");
    assert!(machine["threads"].as_u64().unwrap() >= 1, "{machine}");
    for f in figures {
        assert!(
            f["images_per_s"].as_f64().unwrap() > 0.0 && f["iterations"].as_u64().unwrap() >= 2 && f["peak_mib"].as_f64().unwrap() > 0.0,
            "{f}"
        );
        assert!(f["before_images_per_s"].is_null(), "{f}");
    }
    // One workload with the composed-ops column beside it, as a table.
    let (ok, text) = tdmr(&["bench", "--device", "cpu", "--only", "teacher cache", "--budget", "0.2"]);
    assert!(ok, "{text}");
    let row = text
        .lines()
        .find(|l| l.contains("teacher cache"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(cells[7].parse::<f64>().unwrap() > 0.0 && cells[9].ends_with('×'), "{row}");
    let (ok, text) = tdmr(&["bench", "--device", "cpu", "--precision", "bf16"]);
    assert!(!ok && text.contains("bf16") && text.contains("CUDA"), "{text}");
}

#[test]
fn inspect_detects_the_family_and_explains_misfits() {
    let (ok, text) = tdmr(&["inspect", WEIGHTS]);
    assert!(ok, "{text}");
    for want in [
        "efficientnet-lite0",
        "296 tensors",
        "features    1280",
        "224² native",
        "0.485",
        "_blocks.0-15.*",
    ] {
        assert!(text.contains(want), "missing `{want}`:\n{text}");
    }
    let (ok, text) = tdmr(&["inspect", WEIGHTS, "--keys"]);
    assert!(
        ok && text.lines().filter(|l| l.contains("F32") || l.contains("I64")).count() >= 296,
        "{text}"
    );
    let (ok, text) = tdmr(&["inspect", WEIGHTS, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(ok && v["detected"]["feature_dim"] == 1280 && v["tensors"].as_array().unwrap().len() == 296);

    // Another layout: the families tried, what they missed, and the file's first keys.
    let dir = tempfile::tempdir().unwrap();
    let vit = dir.path().join("vit.safetensors");
    let t = candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("encoder.layer.0.attention.weight".to_string(), t)]),
        &vit,
    )
    .unwrap();
    let (ok, text) = tdmr(&["inspect", vit.to_str().unwrap()]);
    assert!(
        !ok && text.contains("efficientnet-lite (missing") && text.contains("encoder.layer.0.attention.weight"),
        "{text}"
    );

    // A truncated file is named, not a crash.
    let cut = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(root().join(WEIGHTS)).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, text) = tdmr(&["inspect", cut.to_str().unwrap()]);
    assert!(!ok && text.contains("cut.safetensors") && text.contains("truncated"), "{text}");
}

/// The binary's exit status and output, run in `dir` with `env` set (and no
/// `TDMR_HOME` from the caller's environment).
fn tdmr_in(dir: &std::path::Path, env: &[(&str, &std::path::Path)], args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tdmr"));
    cmd.args(args).current_dir(dir).env_remove("TDMR_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("panicked"), "the binary panicked:\n{text}");
    (out.status.code(), text)
}

#[test]
fn the_binary_runs_the_default_experiment_from_any_directory() {
    let empty = tempfile::tempdir().unwrap();
    let quick = [
        "--set",
        "methods=[\"linear-probe\"]",
        "--set",
        "data.views=1",
        "--set",
        "baselines.linear_probe_epochs=2",
    ];
    let run = empty.path().join("run");
    let mut args = vec!["run", "--out", run.to_str().unwrap()];
    args.extend(quick);
    let (code, text) = tdmr_in(empty.path(), &[], &args);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("clipart-tdmr") && text.contains("linear-probe: test"), "{text}");
    // $TDMR_HOME comes before the source tree: its own default experiment is the one run.
    let home = tempfile::tempdir().unwrap();
    let exp = home.path().join("sample-data/experiments");
    std::fs::create_dir_all(&exp).unwrap();
    let text = std::fs::read_to_string(root().join("sample-data/experiments/clipart.toml")).unwrap();
    std::fs::write(
        exp.join("clipart.toml"),
        text.replace("name = \"clipart-tdmr\"", "name = \"from-tdmr-home\""),
    )
    .unwrap();
    let run = empty.path().join("run2");
    let mut args = vec!["run", "--out", run.to_str().unwrap()];
    args.extend(quick);
    let (code, text) = tdmr_in(empty.path(), &[("TDMR_HOME", home.path())], &args);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("from-tdmr-home"), "{text}");
}

#[test]
fn compare_and_csv_read_real_runs_back() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(&tiny, tiny_text()).unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name).display().to_string();
        let mut args = vec![
            "run",
            tiny.to_str().unwrap(),
            "--out",
            &out,
            "--set",
            "methods=[\"scratch\",\"tdmr\"]",
        ];
        args.extend_from_slice(extra);
        let (ok, text) = tdmr(&args);
        assert!(ok, "{text}");
        dir.path().join(name)
    };
    let a = run("a", &[]);
    let b = run("b", &["--set", "distill.temperature=2.0", "--seeds", "1,2"]);
    let (ok, text) = tdmr(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok, "{text}");
    // Every figure is the run's own summary, as a percentage with two decimals.
    let summary = |d: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap()
    };
    let (sa, sb) = (summary(&a), summary(&b));
    for method in ["scratch", "tdmr"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(method) && !l.starts_with("tdmr-"))
            .unwrap_or_else(|| panic!("no {method} row:\n{text}"));
        let single = format!("{:.2}", 100.0 * sa[method]["test_acc"].as_f64().unwrap());
        let seeded = format!(
            "{:.2} ± {:.2} (n=2)",
            100.0 * sb[method]["test_acc"].as_f64().unwrap(),
            100.0 * sb[method]["test_acc_std"].as_f64().unwrap()
        );
        assert!(row.contains(&single) && row.contains(&seeded), "{row}\n{text}");
    }
    // The keys that differ, with both values (a --seeds run's seed is its list of seeds);
    // the keys that agree are left out.
    let temp = text.lines().find(|l| l.starts_with("distill.temperature")).expect(&text);
    assert!(temp.contains("4.0") && temp.contains("2.0"), "{temp}");
    let seed = text.lines().find(|l| l.starts_with("seed ")).expect(&text);
    assert!(seed.contains(" 3 ") && seed.ends_with("1, 2"), "{seed}");
    assert!(!text.lines().any(|l| l.starts_with("data.k")), "{text}");
    let (ok, md) = tdmr(&["compare", "--md", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(ok && md.lines().nth(1).unwrap().starts_with("| ---"), "{md}");
    // One directory is not a comparison; a folder that is not a run is named.
    let (ok, _) = tdmr(&["compare", a.to_str().unwrap()]);
    assert!(!ok);
    let (ok, err) = tdmr(&["compare", a.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert!(!ok && err.contains("summary.json"), "{err}");

    // Pictures: each single run's curves, the seeds' bar chart, linked from report.md;
    // `compare --plot` draws both runs; `tdmr plot` redraws the same SVG.
    for (run, files) in [
        (&a, vec!["loss", "accuracy"]),
        (&b, vec!["accuracy"]),
        (&b.join("seed-1"), vec!["loss", "accuracy"]),
    ] {
        let report = std::fs::read_to_string(run.join("report.md")).unwrap();
        for f in files {
            assert!(report.contains(&format!("({f}.png)")), "{report}");
            assert_png_drawn(&run.join(format!("{f}.png")));
            assert!(std::fs::read_to_string(run.join(format!("{f}.svg"))).unwrap().contains("<svg"));
        }
    }
    let svg = std::fs::read_to_string(a.join("loss.svg")).unwrap();
    for label in ["scratch", "tdmr", "align+kd", "epoch (all stages)", "loss (log scale)"] {
        assert!(svg.contains(label), "loss.svg lacks {label}");
    }
    let (ok, text) = tdmr(&["plot", a.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert_eq!(std::fs::read_to_string(a.join("loss.svg")).unwrap(), svg);
    let stem = dir.path().join("both");
    let (ok, text) = tdmr(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--plot",
        stem.to_str().unwrap(),
    ]);
    assert!(ok && text.contains("both.png"), "{text}");
    assert_png_drawn(&dir.path().join("both.png"));
    let svg = std::fs::read_to_string(dir.path().join("both.svg")).unwrap();
    assert!(svg.contains(a.to_str().unwrap()) && svg.contains(b.to_str().unwrap()));

    // CSV: one row per epoch event, the seeds of a --seeds run told apart.
    let (ok, csv) = tdmr(&["export-metrics", b.to_str().unwrap(), "--csv"]);
    assert!(ok, "{csv}");
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().starts_with("run,method,stage,epoch,epochs,loss,"));
    let epochs: usize = ["seed-1", "seed-2"].iter().map(|s| common::events(&b.join(s), "epoch").len()).sum();
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), epochs);
    assert!(rows.iter().any(|r| r.starts_with("seed-2,tdmr,task,")), "{csv}");
    let last = common::events(&b.join("seed-2"), "epoch").pop().unwrap();
    let fields: Vec<&str> = rows.last().unwrap().split(',').collect();
    assert_eq!(fields[5].parse::<f64>().unwrap(), last["loss"]["total"].as_f64().unwrap());
}

#[test]
fn sweep_ranks_by_validation_only_and_touches_test_once() {
    use tdmr::engine::sweep::{parse_axis, points, rank, report, PointResult};
    // The ranking sees validation figures only: p0 wins on validation although the
    // test figures (which a PointResult cannot carry) would put p1 first.
    let result = |name: &str, v: f64| PointResult {
        name: name.into(),
        overrides: vec![format!("stage1.lr={name}")],
        validation: [("tdmr".to_string(), vec![v, v + 0.02])].into_iter().collect(),
    };
    let results = vec![result("p0", 0.60), result("p1", 0.40)];
    let test_if_ranked_by_test = [0.30, 0.70];
    let order = rank(&results, "tdmr").unwrap();
    assert_eq!(order, [0, 1]);
    assert!(test_if_ranked_by_test[order[0]] < test_if_ranked_by_test[order[1]]);
    let text = report(&results, &order, "tdmr", &[0.30]);
    assert!(text.find("| 1 | p0").unwrap() < text.find("| 2 | p1").unwrap(), "{text}");
    assert!(
        text.contains("61.00 ± 1.41 (n=2)") && text.contains("Best point by validation: p0") && text.contains("30.00%"),
        "{text}"
    );
    assert!(rank(&results, "scratch").is_err());
    let axes = vec![parse_axis("a=1,2").unwrap(), parse_axis("b.c=x, y ,z").unwrap()];
    let grid: Vec<Vec<String>> = points(&axes).into_iter().map(|p| p.overrides).collect();
    assert_eq!(grid.len(), 6);
    assert_eq!(grid[1], ["a=1", "b.c=y"]);
    assert!(parse_axis("novalues").is_err() && parse_axis("k=1,,2").is_err());

    // The real thing on the tiny experiment: two learning rates, one seed.
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.toml");
    std::fs::write(&tiny, tiny_text()).unwrap();
    let out = dir.path().join("sweep");
    let args = [
        "sweep",
        tiny.to_str().unwrap(),
        "--grid",
        "stage1.lr=1e-3,1e-2",
        "--set",
        "methods=[\"scratch\",\"tdmr\"]",
        "--out",
        out.to_str().unwrap(),
    ];
    let (ok, text) = tdmr(&args);
    assert!(ok, "{text}");
    let val = |p: &str| -> f64 {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(p).join("seed-3/summary.json")).unwrap()).unwrap();
        s["tdmr"]["test_acc"].as_f64().unwrap()
    };
    let config = |p: &str| std::fs::read_to_string(out.join(p).join("seed-3/config.toml")).unwrap();
    let (a, b) = ("p0-stage1.lr=1e-3", "p1-stage1.lr=1e-2");
    assert!(config(a).contains("eval_on = \"validation\"") && config(b).contains("eval_on = \"validation\""));
    assert!(config("best-on-test").contains("eval_on = \"test\""));
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    let first = if val(a) >= val(b) { a } else { b };
    assert!(md.contains(&format!("| 1 | {first}")), "{md}");
    // Again with the same --out: every finished sub-run is kept, nothing trains.
    let (ok, again) = tdmr(&args);
    assert!(ok && again.matches("kept").count() == 3 && !again.contains("epoch"), "{again}");
}

/// A PNG that decodes and is a drawing: mostly white, with text and lines in black and
/// at least one colour of the Okabe–Ito palette (the first series' blue).
fn assert_png_drawn(path: &std::path::Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert!(
        img.width() >= 500 && img.height() >= 400,
        "{}: {:?}",
        path.display(),
        img.dimensions()
    );
    let n = (img.width() * img.height()) as usize;
    let white = img.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    let dark = img.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
    let blue = img.pixels().filter(|p| p.0 == [0, 114, 178]).count();
    assert!(
        white > n / 2 && dark > 500 && blue > 50,
        "{}: white {white}, dark {dark}, blue {blue} of {n}",
        path.display()
    );
}
