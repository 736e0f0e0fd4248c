//! The engine end to end on a tiny real experiment: outputs, determinism, the teacher
//! cache, frozen foundation weights, and commands.

mod common;

use std::time::Duration;

use candle_core::{Device, Tensor};
use common::*;
use tdmr::engine::control::Control;
use tdmr::engine::methods::Lab;
use tdmr::engine::run_dir::RunDir;
use tdmr::engine::{run_blocking, Command, Event, Session};

#[test]
fn tiny_experiment_writes_a_complete_run_and_stage2_never_runs_the_foundation() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(Some(&dir.path().join("run")), "tiny").unwrap();
    let summary = run_blocking(&tiny_experiment(), &run, None, None).unwrap();
    for key in ["scratch", "linear-probe", "vp", "kd", "tdmr-teacher", "tdmr"] {
        let r = summary.get(key).unwrap_or_else(|| panic!("summary lacks {key}"));
        assert!((0.0..=1.0).contains(&r.test_acc) && r.trainable_params > 0, "{key}: {r:?}");
    }
    for f in [
        "config.toml",
        "metrics.jsonl",
        "report.md",
        "summary.json",
        "checkpoints/tdmr-task.safetensors",
        "checkpoints/tdmr-teacher.safetensors",
    ] {
        assert!(run.root.join(f).is_file(), "missing {f}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.root.join("summary.json")).unwrap()).unwrap();
    assert!(json["tdmr"]["test_acc"].is_number() && json["kd"]["trainable_params"].is_number());
    let report = std::fs::read_to_string(run.root.join("report.md")).unwrap();
    assert!(report.contains("| tdmr |") && report.contains("| linear-probe |"));
    // The config as run parses back to the same experiment.
    let again = tdmr::config::Experiment::load(&run.root.join("config.toml"), &[]).unwrap();
    assert_eq!(again.to_toml(), tiny_experiment().to_toml());
    // Foundation batches per method, from the recorded events.
    let metrics = std::fs::read_to_string(run.root.join("metrics.jsonl")).unwrap();
    let mut forwards = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"] == "method-done" {
            forwards.insert(
                v["method"].as_str().unwrap().to_string(),
                v["foundation_forwards"].as_u64().unwrap(),
            );
        }
    }
    assert_eq!(forwards["tdmr"], 0, "stage 2 ran the foundation model: {forwards:?}");
    assert_eq!(forwards["kd"], 0, "kd ran the foundation model: {forwards:?}");
    assert_eq!(forwards["scratch"], 0);
    assert!(forwards["tdmr-teacher"] > 0 && forwards["vp"] > 0 && forwards["linear-probe"] > 0);
    // The stages ran in the order, and with the epochs and steps, that the plan (what
    // the Schedule pane draws) said they would.
    let ran: Vec<(String, String, u64, u64)> = events(&run.root, "stage-started")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (
                s("method"),
                s("stage"),
                e["epochs"].as_u64().unwrap(),
                e["steps_per_epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    let planned: Vec<(String, String, u64, u64)> = tdmr::engine::plan::plan(&tiny_experiment(), 10)
        .into_iter()
        .map(|p| (p.method, p.stage, p.epochs as u64, p.steps_per_epoch as u64))
        .collect();
    assert_eq!(ran, planned);
}

#[test]
fn same_seed_gives_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = tiny_experiment();
    exp.methods = vec![tdmr::config::Method::Tdmr, tdmr::config::Method::Kd];
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        // Separate parents: the second run must compute its teacher cache, not reuse
        // the first's.
        let run = RunDir::create(Some(&dir.path().join(name).join("run")), "tiny").unwrap();
        run_blocking(&exp, &run, None, None).unwrap();
        runs.push(without_timings(&std::fs::read_to_string(run.root.join("metrics.jsonl")).unwrap()));
    }
    assert!(runs[0].len() > 20);
    assert_eq!(runs[0], runs[1]);
    // A different seed changes the numbers (the comparison above can fail).
    exp.seed += 1;
    let run = RunDir::create(Some(&dir.path().join("c")), "tiny").unwrap();
    run_blocking(&exp, &run, None, None).unwrap();
    assert_ne!(
        runs[0],
        without_timings(&std::fs::read_to_string(run.root.join("metrics.jsonl")).unwrap())
    );
}

#[test]
fn stage1_trains_the_prompt_and_leaves_the_foundation_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let exp = tiny_experiment();
    let run = RunDir::create(Some(dir.path()), "tiny").unwrap();
    let f =
        tdmr::models::foundation::Foundation::load(&exp.foundation_path(), tdmr::models::foundation::Family::Auto, &Device::Cpu).unwrap();
    let probe = ((Tensor::arange(0f32, (3 * 32 * 32) as f32, &Device::Cpu)
        .unwrap()
        .reshape((1, 3, 32, 32))
        .unwrap()
        / 3072.0)
        .unwrap()
        - 0.5)
        .unwrap();
    let before: Vec<f32> = f.features(&probe).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let digits = tdmr::data::Digits::load(&exp.data_path()).unwrap();
    let split = digits.split(exp.data.k).unwrap();
    let mut ctl = Control::new(None, None);
    let mut lab = Lab {
        exp: &exp,
        ctl: &mut ctl,
        run: &run,
        device: Device::Cpu,
        foundation: &f,
        train: tdmr::data::ViewSet::new(&digits, &split.train, 2, 0, &Device::Cpu).unwrap(),
        target_train: None,
        test: tdmr::data::ViewSet::plain(&digits, &split.test[..50], &Device::Cpu).unwrap(),
        validation: tdmr::data::ViewSet::plain(&digits, &split.validation[..20], &Device::Cpu).unwrap(),
        transfer: None,
        items: split.train.len(),
        classes: 10,
        cache_budget: 1 << 30,
        ckpt: tdmr::engine::checkpoint::Checkpointer::new(&run.checkpoints(), &exp),
        teacher_predictions: None,
    };
    let teacher = lab.reprogram_foundation("tdmr-teacher", true, false).unwrap();
    let after: Vec<f32> = f.features(&probe).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(before, after, "a foundation weight changed during stage 1");
    let delta = teacher.params.tensors()["teacher.prompt.delta"].clone();
    let moved = delta.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(moved > 0.0, "the prompt did not train");
    let calls = f.forward_calls();
    let cache = lab
        .cache_teacher("tdmr", &teacher, tdmr::engine::methods::Views::Labelled, false)
        .unwrap();
    assert_eq!(f.forward_calls() - calls, 1, "4 training views fit one cache batch");
    assert_eq!((cache.rows(), cache.z_dim()), (split.train.len() * 2, exp.reprogram.proxy_dim));
}

fn next_matching(session: &Session, pred: impl Fn(&Event) -> bool) -> Event {
    loop {
        let e = session.events.recv_timeout(Duration::from_secs(300)).expect("engine went quiet");
        if pred(&e) {
            return e;
        }
    }
}

#[test]
fn commands_pause_skip_save_and_abort_between_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = tiny_experiment();
    exp.methods = vec![tdmr::config::Method::Scratch];
    exp.distill.stages[0].epochs = 200; // scratch trains for the sum of stage epochs
    let session = Session::spawn(exp, RunDir::create(Some(&dir.path().join("run")), "tiny").unwrap());
    next_matching(&session, |e| matches!(e, Event::Step { .. }));
    session.commands.send(Command::Pause).unwrap();
    next_matching(&session, |e| matches!(e, Event::Paused));
    // While paused, no step happens.
    std::thread::sleep(Duration::from_millis(300));
    while let Ok(e) = session.events.try_recv() {
        assert!(!matches!(e, Event::Step { .. }), "a step ran while paused");
    }
    session.commands.send(Command::Save).unwrap();
    session.commands.send(Command::Resume).unwrap();
    next_matching(&session, |e| matches!(e, Event::Resumed));
    let ckpt = match next_matching(&session, |e| matches!(e, Event::Checkpoint { .. })) {
        Event::Checkpoint { path, .. } => path,
        _ => unreachable!(),
    };
    // A manual save is a resumable checkpoint: its manifest and the tensors it names.
    let saved = tdmr::engine::checkpoint::load(std::path::Path::new(&ckpt), &Device::Cpu).unwrap();
    assert!(saved.tensors.contains_key("target.backbone.conv0.weight"));
    assert_eq!(saved.manifest.method, "scratch");
    session.commands.send(Command::SkipStage).unwrap();
    next_matching(&session, |e| matches!(e, Event::StageSkipped { .. }));
    next_matching(&session, |e| matches!(e, Event::MethodDone { .. }));
    assert!(session.handle.join().unwrap().is_ok());

    let mut exp = tiny_experiment();
    exp.methods = vec![tdmr::config::Method::Scratch];
    exp.distill.stages[0].epochs = 200;
    let session = Session::spawn(exp, RunDir::create(Some(&dir.path().join("run2")), "tiny").unwrap());
    next_matching(&session, |e| matches!(e, Event::Step { .. }));
    session.commands.send(Command::Abort).unwrap();
    next_matching(&session, |e| matches!(e, Event::Failed { .. }));
    let err = session.handle.join().unwrap().expect_err("abort ends the run with an error");
    assert!(matches!(err, tdmr::Error::Aborted), "{err}");
}

#[test]
fn checkpoints_load_strictly_and_name_the_misfit_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut a = tdmr::params::Params::new(&Device::Cpu, 1);
    a.uniform("head.weight", &[10, 16], 16).unwrap();
    a.buffer("bn.running_mean", &[4], 0.5).unwrap();
    a.save(&path).unwrap();
    // The same layout loads and restores the values.
    let mut b = tdmr::params::Params::new(&Device::Cpu, 2);
    b.uniform("head.weight", &[10, 16], 16).unwrap();
    b.buffer("bn.running_mean", &[4], 0.0).unwrap();
    b.load(&path).unwrap();
    assert_eq!(
        a.tensors()["head.weight"].to_vec2::<f32>().unwrap(),
        b.tensors()["head.weight"].to_vec2::<f32>().unwrap()
    );
    assert_eq!(b.tensors()["bn.running_mean"].to_vec1::<f32>().unwrap(), vec![0.5; 4]);
    // A model whose head has another width is refused, naming the tensor and both shapes.
    let mut c = tdmr::params::Params::new(&Device::Cpu, 3);
    c.uniform("head.weight", &[10, 32], 32).unwrap();
    c.buffer("bn.running_mean", &[4], 0.0).unwrap();
    let e = c.load(&path).unwrap_err().to_string();
    assert!(
        e.contains("ckpt.safetensors") && e.contains("head.weight") && e.contains("[10, 32]") && e.contains("[10, 16]"),
        "{e}"
    );
}

#[test]
fn a_run_directory_is_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::create(Some(dir.path()), "x").unwrap();
    std::fs::write(run.file("metrics.jsonl"), "{}\n").unwrap();
    let e = RunDir::create(Some(dir.path()), "x")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("already holds a run"), "{e}");
    assert_eq!(std::fs::read_to_string(run.file("metrics.jsonl")).unwrap(), "{}\n");
}
