//! Runs that survive: SIGKILL at random points and resume (the result must equal an
//! uninterrupted run exactly), the divergence guard, a full disk and an unwritable run
//! directory.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::*;
use rand::{Rng, SeedableRng};
use tdmr::engine::checkpoint;
use tdmr::engine::run_dir::RunDir;
use tdmr::engine::{run_blocking, Event};
use tdmr::Error;

/// The tiny experiment, evaluated once per stage, with a checkpoint before every step
/// so that kills often land inside a checkpoint write.
fn kill_config(dir: &Path) -> PathBuf {
    let text =
        tiny_text().replace("eval_every = 1", "eval_every = 100\neval_on = \"validation\"") + "\n[checkpoint]\nevery_steps = 1\nkeep = 2\n";
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tdmr(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tdmr"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every event with its timings, paths and bookkeeping removed: what must be identical
/// between an interrupted and an uninterrupted run. Resume notices are dropped.
fn deterministic_events(run: &Path) -> Vec<serde_json::Value> {
    without_timings(&std::fs::read_to_string(run.join("metrics.jsonl")).unwrap())
        .into_iter()
        .filter(|e| !matches!(e["event"].as_str(), Some("run-resumed" | "log")))
        .map(|mut e| {
            // Methods restored on a resume run the foundation less often, and a run
            // killed before its teacher cache was committed may take the reference
            // run's identical one (same content hash) from beside it.
            let o = e.as_object_mut().unwrap();
            o.remove("foundation_forwards");
            o.remove("reused_from");
            e
        })
        .collect()
}

fn test_accuracies(run: &Path) -> Vec<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, r)| (k.clone(), r["test_acc"].as_f64().unwrap()))
        .collect()
}

/// Every resumable checkpoint on disk reads back whole, with finite values.
fn assert_checkpoints_load(run: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(run.join("checkpoints")).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("resume-") && name.ends_with(".json") {
            let r = checkpoint::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
            assert_eq!(checkpoint::first_non_finite(r.tensors.iter()).unwrap(), None, "{name}");
            n += 1;
        } else if name.ends_with(".safetensors") && !name.starts_with("resume-") {
            candle_core::safetensors::load(&p, &Device::Cpu).unwrap_or_else(|e| panic!("{name} does not load: {e}"));
        }
    }
    n
}

fn checkpoint_names(run: &Path) -> Vec<String> {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default()
}

/// The sequence number of the newest complete checkpoint (0: none).
fn newest_manifest(run: &Path) -> u64 {
    checkpoint_names(run)
        .iter()
        .filter_map(|n| n.strip_prefix("resume-")?.strip_suffix(".json")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The sequence number of a checkpoint caught between its temp file and its rename.
fn temp_file_seq(run: &Path) -> Option<u64> {
    checkpoint_names(run)
        .iter()
        .filter_map(|n| n.strip_prefix(".resume-")?.split('.').next()?.parse().ok())
        .max()
}

#[test]
fn twenty_kills_and_resumes_end_exactly_where_an_uninterrupted_run_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = kill_config(dir.path());
    let cfg_s = cfg.to_str().unwrap();
    let reference = dir.path().join("reference");
    let t0 = Instant::now();
    let out = tdmr(&["run", cfg_s, "--out", reference.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full = t0.elapsed();

    let run = dir.path().join("killed");
    let run_s = run.to_str().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let (mut kills, mut mid_write) = (0, 0);
    while kills < 20 {
        let before = newest_manifest(&run);
        let mut cmd = if kills == 0 {
            tdmr(&["run", cfg_s, "--out", run_s])
        } else {
            tdmr(&["run", "--resume", run_s, cfg_s])
        };
        // Every other start is killed inside a write: it holds each atomic write open
        // between the temp file and its rename, and dies once a temp file shows up
        // (after one new checkpoint, so the run always gets further). The others die
        // at a random instant after 1 to 3 new checkpoints.
        let in_write = kills % 2 == 1;
        if in_write {
            cmd.env("TDMR_FAULT_WRITE_DELAY_MS", "150");
        }
        let extra = rng.random_range(0..3);
        let jitter = Duration::from_millis(rng.random_range(0..60));
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the run ended ({status}) after {kills} kills: too few checkpoints for the test ({full:?} uninterrupted)");
            }
            assert!(Instant::now() < deadline, "no progress within 2 minutes");
            let newest = newest_manifest(&run);
            let ready = if in_write {
                temp_file_seq(&run).is_some_and(|s| s > before + 1)
            } else {
                newest > before + extra
            };
            if ready {
                break;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        if !in_write {
            std::thread::sleep(jitter);
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        if temp_file_seq(&run).is_some() {
            mid_write += 1;
        }
        assert_checkpoints_load(&run);
    }
    let out = tdmr(&["run", "--resume", run_s, cfg_s]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{kills} kills ({mid_write} inside a checkpoint write); uninterrupted run {full:?}");
    assert!(assert_checkpoints_load(&run) >= 1);
    assert!(mid_write >= 10, "only {mid_write} kills landed inside a write");
    assert_eq!(test_accuracies(&run), test_accuracies(&reference));
    let (a, b) = (deterministic_events(&reference), deterministic_events(&run));
    assert_eq!(a.len(), b.len(), "metrics.jsonl has lost or duplicated lines");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
}

/// One method, stage 1 only, with a learning rate that overflows f32 at the second step.
fn exploding(dir: &Path, every_steps: usize, backoff: f64) -> (tdmr::config::Experiment, RunDir) {
    let set = [
        "methods=[\"vp\"]".to_string(),
        "stage1.lr=1e38".into(),
        "data.eval_every=100".into(),
        format!("checkpoint.every_steps={every_steps}"),
        "checkpoint.keep=100".into(),
        format!("checkpoint.lr_backoff={backoff}"),
    ];
    let exp = tdmr::config::Experiment::parse(&tiny_text(), "tiny.toml", &set).unwrap();
    let run = RunDir::create(Some(&dir.join("run")), "nan").unwrap();
    (exp, run)
}

fn collect(
    run: impl FnOnce(std::sync::mpsc::SyncSender<Event>) -> tdmr::Result<tdmr::engine::Summary>,
) -> (tdmr::Result<tdmr::engine::Summary>, Vec<Event>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(100_000);
    let r = run(tx);
    (r, rx.try_iter().collect())
}

#[test]
fn a_nan_loss_stops_the_run_naming_the_step_the_loss_terms_and_a_loadable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (exp, run) = exploding(dir.path(), 1, 0.0);
    let (result, events) = collect(|tx| run_blocking(&exp, &run, Some(tx), None));
    let msg = match result {
        Err(Error::Diverged(m)) => m,
        other => panic!("expected a divergence, got {other:?}"),
    };
    assert!(msg.contains("vp / reprogram") && msg.contains("step 2"), "{msg}");
    assert!(msg.contains("loss terms") && msg.contains("lr "), "{msg}");
    assert!(msg.contains("tdmr run --resume"), "{msg}");
    let named = events
        .iter()
        .find_map(|e| match e {
            Event::Diverged { checkpoint, .. } => Some(checkpoint.clone().expect("a checkpoint was written before step 2")),
            _ => None,
        })
        .expect("a diverged event");
    assert!(msg.contains(&named), "{msg} does not name {named}");
    let r = checkpoint::load(Path::new(&named), &Device::Cpu).unwrap();
    assert_eq!(checkpoint::first_non_finite(r.tensors.iter()).unwrap(), None);
    assert_eq!((r.manifest.method.as_str(), r.manifest.position.step), ("vp", 1));
    assert!(r.tensors.contains_key("optim.m.vp.head.weight"));
    assert_eq!(
        assert_checkpoints_load(&run.root),
        1,
        "one checkpoint, and never one of NaN weights"
    );
    // The run directory still has its report.
    assert!(std::fs::read_to_string(run.root.join("report.md"))
        .unwrap()
        .contains("stopped early"));
}

#[test]
fn lr_back_off_restarts_from_the_last_good_checkpoint_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let (exp, run) = exploding(dir.path(), 0, 1e-40);
    let (result, events) = collect(|tx| run_blocking(&exp, &run, Some(tx), None));
    let summary = result.expect("the back-off rescues the run");
    assert!(summary.contains_key("vp"));
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Diverged { .. })).count(), 1);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::Log { message } if message.contains("back-off 1 of 3"))));
    // The trajectory after the back-off is whole: one epoch event per epoch.
    let epochs: Vec<usize> = deterministic_events(&run.root)
        .iter()
        .filter(|e| e["event"] == "epoch")
        .map(|e| e["epoch"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(epochs, [1, 2]);
}

#[test]
fn a_full_disk_fails_one_checkpoint_keeps_the_previous_one_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let set = [
        "methods=[\"scratch\"]".to_string(),
        "checkpoint.every_steps=1".into(),
        "checkpoint.keep=100".into(),
    ];
    let exp = tdmr::config::Experiment::parse(&tiny_text(), "tiny.toml", &set).unwrap();
    let reference = RunDir::create(Some(&dir.path().join("reference")), "ref").unwrap();
    let expected = run_blocking(&exp, &reference, None, None).unwrap();

    let run = RunDir::create(Some(&dir.path().join("full")), "full").unwrap();
    // The second checkpoint's temp file is /dev/full: its write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", run.checkpoints().join(".resume-000002.safetensors.tmp")).unwrap();
    let (result, events) = collect(|tx| run_blocking(&exp, &run, Some(tx), None));
    let summary = result.expect("a failed checkpoint write does not stop the run");
    let (message, last_good) = events
        .iter()
        .find_map(|e| match e {
            Event::CheckpointFailed { message, last_good, .. } => Some((message.clone(), last_good.clone())),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the failed write is reported: {events:#?}"));
    assert!(message.contains("No space left on device"), "{message}");
    assert!(last_good.unwrap().ends_with("resume-000001.json"));
    checkpoint::load(&run.checkpoints().join("resume-000001.json"), &Device::Cpu).unwrap();
    assert_checkpoints_load(&run.root);
    let acc = |s: &tdmr::engine::Summary| s["scratch"].test_acc;
    assert_eq!(acc(&summary), acc(&expected), "the failure changed nothing in training");
}

#[test]
fn an_unwritable_run_directory_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = kill_config(dir.path());
    // /sys refuses new directories even to root; a read-only directory refuses others.
    let mut targets = vec![PathBuf::from("/sys/tdmr-run")];
    let ro = dir.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), "x").is_err() {
        targets.push(ro.join("run"));
    }
    for out in targets {
        let o = tdmr(&["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(out.to_str().unwrap()), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn resume_takes_live_changes_and_refuses_the_rest_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = kill_config(dir.path());
    let run = dir.path().join("run");
    let set = ["--set", "methods=[\"scratch\"]"];
    let ok = tdmr(&[&["run", cfg.to_str().unwrap(), "--out", run.to_str().unwrap()][..], &set[..]].concat())
        .output()
        .unwrap();
    assert!(ok.status.success());
    // A model change cannot apply to a run in progress.
    let o = tdmr(
        &[
            &["run", "--resume", run.to_str().unwrap(), cfg.to_str().unwrap()][..],
            &set[..],
            &["--set", "reprogram.proxy_dim=8"],
        ]
        .concat(),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    // A refused change is a config error: exit status 2.
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("reprogram.proxy_dim: 16 → 8") && err.contains("needs a new run"),
        "{err}"
    );
    // A learning rate can; the run ends again from its last checkpoint.
    let o = Command::new(env!("CARGO_BIN_EXE_tdmr"))
        .args([
            "run",
            "--resume",
            run.to_str().unwrap(),
            cfg.to_str().unwrap(),
            "--set",
            "methods=[\"scratch\"]",
            "--set",
            "stage1.lr=0.02",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("resumed from") && out.contains("stage1.lr: 0.01 → 0.02"), "{out}");
}
