//! The workbench rendered into ratatui's TestBackend, driven by key presses, by a
//! scripted engine (for exact control of the event stream) and by the real engine on
//! the tiny experiment.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::workbench::*;
use common::*;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tdmr::config::Experiment;
use tdmr::engine::{Command, Event, FailReason, LossParts, Session, Summary};
use tdmr::tui::app::{App, Confirm, Overlay, RunState};
use tdmr::tui::plan::RowState;
use tdmr::tui::view;

/// A scripted engine: runs the stages of `plan` with `steps` steps per epoch, and
/// honours pause, resume, skip and abort between steps like the real one.
fn fake_engine(stages: Vec<(&'static str, &'static str, usize)>, steps: usize) -> Session {
    let (etx, erx) = mpsc::sync_channel(64);
    let (ctx, crx) = mpsc::channel::<Command>();
    let handle = std::thread::spawn(move || -> tdmr::Result<Summary> {
        let send = |e: Event| etx.send(e).is_ok();
        let mut step = 0usize;
        for (method, stage, epochs) in stages {
            send(Event::StageStarted {
                method: method.into(),
                stage: stage.into(),
                epochs,
                steps_per_epoch: steps,
                trainable_params: 1000,
            });
            'stage: for epoch in 1..=epochs {
                for _ in 0..steps {
                    let mut skip = false;
                    while let Ok(cmd) = crx.try_recv() {
                        match cmd {
                            Command::Pause => {
                                send(Event::Paused);
                                loop {
                                    match crx.recv() {
                                        Ok(Command::Resume) => break,
                                        Ok(Command::Abort) | Err(_) => return Err(tdmr::Error::Aborted),
                                        _ => {}
                                    }
                                }
                                send(Event::Resumed);
                            }
                            Command::SkipStage => skip = true,
                            Command::Abort => {
                                send(Event::Failed {
                                    message: "the user stopped it".into(),
                                    reason: FailReason::Aborted,
                                });
                                return Err(tdmr::Error::Aborted);
                            }
                            _ => {}
                        }
                    }
                    if skip {
                        send(Event::StageSkipped {
                            method: method.into(),
                            stage: stage.into(),
                            epoch,
                        });
                        break 'stage;
                    }
                    step += 1;
                    let loss = 2.0 / (1.0 + step as f64 * 0.05);
                    send(Event::Step {
                        method: method.into(),
                        stage: stage.into(),
                        epoch,
                        steps,
                        step,
                        loss,
                        lr: 1e-3,
                        images: 16,
                        wall_s: 0.002,
                        data_wait_s: 0.0002,
                    });
                    std::thread::sleep(Duration::from_millis(2));
                }
                let acc = 0.1 + 0.8 * epoch as f64 / epochs as f64;
                send(Event::Epoch {
                    method: method.into(),
                    stage: stage.into(),
                    epoch,
                    epochs,
                    loss: LossParts {
                        total: 1.0 / epoch as f64,
                        align: 0.5 / epoch as f64,
                        kd: 0.2,
                        ce: 0.3,
                    },
                    lr: 1e-3,
                    train_acc: acc,
                    test_acc: Some(acc - 0.05),
                    images_per_s: 8000.0,
                    gpu_memory_mib: None,
                });
            }
        }
        send(Event::Done {
            summary: Summary::new(),
            wall_s: 1.0,
        });
        Ok(Summary::new())
    });
    Session {
        events: erx,
        commands: ctx,
        run_dir: PathBuf::from("fake-run"),
        handle,
    }
}

fn row_state(app: &App, method: &str, stage: &str) -> RowState {
    app.schedule
        .plan
        .rows
        .iter()
        .find(|r| r.method == method && r.stage == stage)
        .unwrap_or_else(|| panic!("no row {method}/{stage}"))
        .state
        .clone()
}

#[test]
fn scripted_engine_timeline_charts_pause_skip_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    let idle = screen(&app, 80, 24);
    assert!(idle.contains("no training yet"), "{idle}");
    assert!(idle.contains("· tdmr/align"), "the pending stages are listed:\n{idle}");

    // Long stages so pause and skip land while they run.
    app.attach(fake_engine(
        vec![
            ("tdmr-teacher", "reprogram", 2),
            ("tdmr", "align", 400),
            ("tdmr", "align+kd", 400),
            ("tdmr", "task", 2),
        ],
        5,
    ));
    pump(&mut app, 10, "the teacher stage to finish", |a| {
        matches!(row_state(a, "tdmr", "align"), RowState::Running { .. })
    });
    assert!(matches!(row_state(&app, "tdmr-teacher", "reprogram"), RowState::Done { .. }));
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(
            s.contains("✓ tdmr-teacher/reprogram"),
            "{w}×{h}: the timeline shows the finished stage:\n{s}"
        );
        assert!(s.contains("▶ tdmr/align"), "{w}×{h}: and the running one:\n{s}");
        let braille = s.chars().filter(|c| ('\u{2801}'..='\u{28ff}').contains(c)).count();
        assert!(braille > 20, "{w}×{h}: the charts have points ({braille} braille cells):\n{s}");
        assert!(s.contains("img/s"), "{w}×{h}: throughput in the status line:\n{s}");
    }

    // Tiny or odd terminals never panic (SSH windows get resized to anything).
    for (w, h) in [(20, 5), (40, 12), (79, 23), (300, 90), (1, 1)] {
        screen(&app, w, h);
    }

    // Pause: the state says so and no step arrives any more.
    press(&mut app, ' ');
    pump(&mut app, 5, "paused", |a| a.run.state == RunState::Paused);
    let s = screen(&app, 80, 24);
    assert!(s.contains("paused"), "{s}");
    std::thread::sleep(Duration::from_millis(50));
    app.poll();
    let x = app.charts.x;
    std::thread::sleep(Duration::from_millis(300));
    app.poll();
    assert_eq!(app.charts.x, x, "no step while paused");
    press(&mut app, 'p');
    pump(&mut app, 5, "resumed", |a| a.run.state == RunState::Running && a.charts.x > x);

    // Skip: the running stage is marked skipped and the next one runs.
    press(&mut app, 'n');
    pump(&mut app, 5, "the skip", |a| {
        matches!(row_state(a, "tdmr", "align"), RowState::Skipped { .. })
    });
    pump(&mut app, 5, "the next stage", |a| {
        matches!(row_state(a, "tdmr", "align+kd"), RowState::Running { .. })
    });
    let s = screen(&app, 160, 48);
    assert!(s.contains("» tdmr/align") && s.contains("▶ tdmr/align+kd"), "{s}");

    // A broken edit: the error (with its line) is shown, the run goes on untouched.
    let cfg = app.config.path.clone();
    std::fs::write(&cfg, tiny_text().replace("lr = 1e-3", "lr = \"fast\"")).unwrap();
    assert!(app.reload_config(false));
    let before = app.charts.x;
    pump(&mut app, 5, "steps after the bad edit", |a| a.charts.x > before + 3.0);
    let s = screen(&app, 80, 24);
    assert!(s.contains("config error") && s.contains("line"), "{s}");
    assert_eq!(app.run.state, RunState::Running);
    assert_eq!(app.config.exp.distill.stages[2].lr, 1e-3, "the session kept its configuration");

    // Abort asks first, then stops the engine.
    press(&mut app, 'x');
    assert!(screen(&app, 80, 24).contains("Abort the run?"));
    press(&mut app, 'y');
    pump(&mut app, 5, "the abort", |a| a.run.state == RunState::Aborted);
}

#[test]
fn keys_overlays_zoom_and_focus() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    press(&mut app, '?');
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        // Every binding is listed, also at 80×24.
        for b in tdmr::tui::keymap::KEYMAP {
            assert!(s.contains(b.help), "{w}×{h}: help lacks `{}`:\n{s}", b.help);
        }
    }
    screen(&app, 20, 5);
    press(&mut app, 'j'); // any key closes the help
    assert!(!screen(&app, 80, 24).contains("any key closes"));
    app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    press(&mut app, 'z');
    let zoomed = screen(&app, 80, 24);
    assert!(zoomed.contains("Charts") && !zoomed.contains("Schedule"), "{zoomed}");
    press(&mut app, 'z');
    press(&mut app, 'h');
    assert!(screen(&app, 80, 24).contains("recent (h)"));
    press(&mut app, 'm');
    assert!(screen(&app, 80, 24).contains("block (m)"));
    // Quitting an idle app needs no confirmation.
    press(&mut app, 'q');
    assert!(app.should_quit);
}

#[test]
fn schedule_edits_rewrite_the_file_and_keep_comments() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!("# keep me\n{}", tiny_text());
    let mut app = new_app(dir.path(), &text);
    let first = app.schedule.plan.rows.iter().position(|r| r.distill_index == Some(0)).unwrap();
    app.schedule.selected = first;
    press(&mut app, 'a');
    let names = |a: &App| a.config.exp.distill.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&app), ["align", "align-2", "align+kd", "task"]);
    press(&mut app, 'J');
    assert_eq!(names(&app), ["align-2", "align", "align+kd", "task"], "{}", log_text(&app));
    press(&mut app, 'd');
    assert_eq!(names(&app), ["align-2", "align+kd", "task"]);
    let on_disk = std::fs::read_to_string(&app.config.path).unwrap();
    assert!(on_disk.starts_with("# keep me"), "{on_disk}");
    let s = screen(&app, 160, 48);
    assert!(s.contains("tdmr/align-2") && !s.contains("tdmr/align "), "{s}");
}

#[test]
fn real_engine_pause_live_lr_bad_edit_skip_and_quit() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough stage 1 that the edits land while it runs.
    let text = tiny_text().replace("[stage1]\nepochs = 2", "[stage1]\nepochs = 40");
    let mut app = new_app(dir.path(), &text);
    press(&mut app, 's');
    pump(&mut app, 120, "stage 1 steps", |a| {
        a.schedule.plan.running().is_some_and(|r| r.method == "vp") && a.charts.x > 3.0
    });
    let s = screen(&app, 80, 24);
    assert!(s.contains("▶ vp/reprogram"), "{s}");

    press(&mut app, 'p');
    pump(&mut app, 120, "paused", |a| a.run.state == RunState::Paused);
    let x = app.charts.x;
    std::thread::sleep(Duration::from_millis(600));
    app.poll();
    assert_eq!(app.charts.x, x, "the real engine takes no step while paused");
    assert!(screen(&app, 80, 24).contains("paused"));
    press(&mut app, 'p');
    pump(&mut app, 120, "resumed", |a| a.run.state == RunState::Running);

    // A live edit: stage 1's learning rate.
    let cfg = app.config.path.clone();
    let edited = text.replace("[stage1]\nepochs = 40", "[stage1]\nepochs = 40\nlr = 0.002");
    std::fs::write(&cfg, &edited).unwrap();
    app.reload_config(false);
    pump(&mut app, 120, "the lr change applied", |a| {
        log_text(a).contains("config applied: stage1.lr")
    });
    pump(&mut app, 120, "a step at the new lr", |a| (a.charts.lr - 0.002).abs() / 0.002 < 0.5);
    assert!(app.config.pending.is_empty());

    // A restart-only edit is pending, not applied.
    std::fs::write(&cfg, edited.replace("proxy_dim = 16", "proxy_dim = 32")).unwrap();
    app.reload_config(false);
    assert_eq!(app.config.pending.len(), 1, "{:?}", app.config.pending);
    assert_eq!(app.config.exp.reprogram.proxy_dim, 16);
    assert!(screen(&app, 80, 24).contains("restart pending"));

    // A broken edit never reaches the engine.
    std::fs::write(&cfg, "[stage1\nlr = 1").unwrap();
    app.reload_config(false);
    let x = app.charts.x;
    pump(&mut app, 120, "training to go on", |a| a.charts.x > x + 2.0);
    assert!(screen(&app, 80, 24).contains("config error"));
    assert_eq!(app.run.state, RunState::Running);

    press(&mut app, 'c');
    pump(&mut app, 120, "the checkpoint on demand", |a| {
        a.runs.checkpoints.iter().any(|c| c.method == "vp")
    });
    assert!(
        screen(&app, 160, 48).contains("vp/reprogram resume-"),
        "the resumable checkpoint is listed"
    );

    press(&mut app, 'n');
    pump(&mut app, 120, "the skip", |a| {
        matches!(row_state(a, "vp", "reprogram"), RowState::Skipped { .. })
    });

    // The pending change takes effect with a restart (a new run directory).
    std::fs::write(&cfg, edited.replace("proxy_dim = 16", "proxy_dim = 32")).unwrap();
    app.reload_config(false);
    let first_run = app.run.dir.clone().unwrap();
    press(&mut app, 'R');
    assert!(screen(&app, 80, 24).contains("pending change"));
    press(&mut app, 'y');
    assert_eq!(app.config.exp.reprogram.proxy_dim, 32);
    assert_ne!(app.run.dir.as_ref(), Some(&first_run));
    assert!(app.config.pending.is_empty());
    pump(&mut app, 60, "the restarted run's first stage", |a| {
        a.schedule.plan.running().is_some()
    });

    // Quit while running: confirm, and the run directory is complete.
    press(&mut app, 'q');
    assert!(screen(&app, 80, 24).contains("Stop it and quit?"));
    press(&mut app, 'y');
    assert!(app.should_quit);
    app.shutdown();
    for run in [first_run.clone(), app.run.dir.clone().unwrap()] {
        for f in ["config.toml", "metrics.jsonl", "report.md", "summary.json"] {
            assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
        }
    }
    let metrics = std::fs::read_to_string(first_run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics.contains("\"config-applied\"") && metrics.contains("stage1.lr"),
        "the live change is on record"
    );
    assert!(metrics.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(first_run.join("summary.json")).unwrap()).unwrap();
    assert!(
        summary.get("linear-probe").is_some(),
        "finished methods are in the summary: {summary}"
    );
}

/// The watcher's next event, which must be a config change, within 10 s.
fn wait_for_config_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<tdmr::tui::watch::Changed>, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.try_recv() {
            Ok(tdmr::tui::watch::Changed::Config) => return,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("no event for {what}: {e}"),
        }
    }
}

#[test]
fn hot_reload_sees_atomic_rename_saves() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &tiny_text());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w = tdmr::tui::watch::watch(std::slice::from_ref(&cfg), None, tx).expect("inotify works here");
    // What editors do: write a temp file beside it, rename it over the original.
    let tmp = dir.path().join(".exp.toml.swp");
    std::fs::write(&tmp, tiny_text().replace("temperature", "# t\ntemperature")).unwrap();
    std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    wait_for_config_event(&mut rx, "the renamed config");
}

#[test]
fn themes_hot_reload_and_no_color() {
    let dir = tempfile::tempdir().unwrap();
    let theme = dir.path().join("mine.toml");
    std::fs::write(&theme, "[colors]\naccent = \"red\"\n").unwrap();
    let text = format!("theme = {:?}\n{}", theme.display().to_string(), tiny_text());
    let mut app = new_app(dir.path(), &text);
    assert_eq!(app.theme.accent, ratatui::style::Color::Red);
    std::fs::write(&theme, "[colors]\naccent = \"#00ff00\"\n").unwrap();
    assert!(app.check_theme());
    assert_eq!(app.theme.accent, ratatui::style::Color::Rgb(0, 255, 0));
    // A broken theme keeps the colours and says why.
    std::fs::write(&theme, "[colors]\naccent = \"nope\"\n").unwrap();
    assert!(app.check_theme());
    assert_eq!(app.theme.accent, ratatui::style::Color::Rgb(0, 255, 0));
    assert!(log_text(&app).contains("colors.accent"));
    // The config's `theme` key is live: switching it repaints at once.
    std::fs::write(
        &app.config.path,
        text.replace(&format!("{:?}", theme.display().to_string()), "\"light\""),
    )
    .unwrap();
    app.reload_config(false);
    assert_eq!(app.theme.name, "light");

    // NO_COLOR: not one cell carries a colour.
    let mut mono = open_app(write_config(dir.path(), &tiny_text()), None, Some("high-contrast"), true);
    press(&mut mono, '?');
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    t.draw(|f| view::draw(f, &mono)).unwrap();
    let reset = ratatui::style::Color::Reset;
    assert!(t.backend().buffer().content().iter().all(|c| c.fg == reset && c.bg == reset));
}

#[test]
fn attach_replays_a_run_directory_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let run = tdmr::engine::run_dir::RunDir::create(Some(&run_dir), "tiny").unwrap();
    tdmr::engine::run_blocking(&tiny_experiment(), &run, None, None).unwrap();

    let mut app = open_app(run_dir.join("config.toml"), None, None, false);
    let (session, stop) = tdmr::tui::follow::attach(&run_dir).unwrap();
    app.attach_read_only(session, stop);
    pump(&mut app, 120, "the replay to reach the end", |a| a.run.state == RunState::Done);
    let s = screen(&app, 160, 48);
    assert!(s.contains("✓ done") && s.contains("✓ tdmr/task") && s.contains("✓ kd/train"), "{s}");
    assert_eq!(app.runs.results.len(), 6, "every method's result is in the Runs pane");
    assert!(app.charts.x > 10.0, "the charts replayed the steps");
    // Controls do not pretend to reach another process; quitting needs no confirmation.
    press(&mut app, 'p');
    assert!(log_text(&app).contains("read-only"));
    // Looking is allowed: enter zooms the focused pane, and nothing edits the file.
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(app.view.zoom && app.editor.is_none());
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    press(&mut app, 'q');
    assert!(app.should_quit);
    app.shutdown();

    let e = tdmr::tui::follow::attach(dir.path())
        .err()
        .expect("not a run directory")
        .to_string();
    assert!(e.contains("metrics.jsonl"), "{e}");
}

#[test]
fn resume_key_replays_the_history_and_continues_from_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    press(&mut app, 'u');
    assert!(log_text(&app).contains("no run to resume yet"));

    // A finished run, then its newest checkpoints removed: as if it had been killed
    // in the middle of its last method.
    let run_dir = dir.path().join("killed");
    let run = tdmr::engine::run_dir::RunDir::create(Some(&run_dir), "tiny").unwrap();
    tdmr::engine::run_blocking(&tiny_experiment(), &run, None, None).unwrap();
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(run.checkpoints())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("resume-") && p.extension().unwrap() == "json")
        .collect();
    manifests.sort();
    std::fs::remove_file(manifests.pop().unwrap()).unwrap();

    app.resume(Some(run_dir.clone()));
    assert_eq!(app.run.state, RunState::Running);
    assert!(app.runs.results.len() >= 5, "finished methods come back from the history");
    pump(&mut app, 120, "the resumed run to finish", |a| a.run.state == RunState::Done);
    assert!(log_text(&app).contains("resumed at kd/train"), "{}", log_text(&app));
    assert_eq!(app.runs.results.len(), 6);
    let s = screen(&app, 160, 48);
    assert!(s.contains("✓ done") && s.contains("✓ kd/train"), "{s}");
    app.shutdown();
}

#[test]
fn divergence_pauses_the_workbench_and_space_continues_with_the_edited_lr() {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny_text()
        .replace("name = \"tiny\"", "name = \"tiny\"\nmethods = [\"vp\"]")
        .replace("[stage1]\n", "[stage1]\nlr = 1e38\n");
    let mut app = new_app(dir.path(), &text);
    press(&mut app, 's');
    pump(&mut app, 60, "the divergence to pause the run", |a| a.run.state == RunState::Paused);
    assert!(log_text(&app).contains("diverged: vp / reprogram"), "{}", log_text(&app));
    // The user lowers the lr in the file; the reload takes it while paused.
    std::fs::write(dir.path().join("exp.toml"), text.replace("lr = 1e38", "lr = 1e-2")).unwrap();
    app.reload_config(true);
    press(&mut app, ' ');
    pump(&mut app, 120, "the run to finish after the divergence", |a| {
        a.run.state == RunState::Done
    });
    assert_eq!(app.runs.results.len(), 1, "{}", log_text(&app));
    app.shutdown();
}

#[test]
fn extends_chains_merge_tables_replace_arrays_and_reload_when_a_base_changes() {
    let dir = tempfile::tempdir().unwrap();
    let bases = dir.path().join("bases");
    std::fs::create_dir_all(&bases).unwrap();
    // base ← child (in another folder, named relative to itself) ← grandchild.
    let base = bases.join("base.toml");
    std::fs::write(&base, tiny_text()).unwrap();
    let child = dir.path().join("child.toml");
    std::fs::write(
        &child,
        "extends = \"bases/base.toml\"\nname = \"child\"\n[data]\nk = 3\n[distill]\ntemperature = 2.0\n\
         [[distill.stages]]\nname = \"only\"\nepochs = 2\nlr = 5e-3\nweights = { ce = 1.0 }\n",
    )
    .unwrap();
    let grandchild = dir.path().join("grandchild.toml");
    std::fs::write(&grandchild, "extends = \"child.toml\"\n[data]\nviews = 3\n").unwrap();

    let exp = Experiment::load(&grandchild, &[]).unwrap();
    let plain = Experiment::load(&base, &[]).unwrap();
    assert_eq!(exp.name, "child");
    // Tables merge key by key: k from the child, views from the grandchild, the rest
    // (eval_every, the data path) from the base.
    assert_eq!((exp.data.k, exp.data.views, exp.data.eval_every), (3, 3, plain.data.eval_every));
    assert_eq!(exp.data.path, plain.data.path);
    assert_eq!(exp.distill.temperature, 2.0);
    assert_eq!(exp.distill.batch_size, plain.distill.batch_size);
    // Arrays replace: the child's one stage, not the base's three plus one.
    let names: Vec<_> = exp.distill.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["only"]);
    assert_eq!(exp.bases.len(), 2);
    // `--set` still applies last, and a bad value names the whole chain.
    let set = Experiment::load(&grandchild, &["data.k=4".into()]).unwrap();
    assert_eq!(set.data.k, 4);
    let err = Experiment::load(&grandchild, &["data.k=\"many\"".into()]).unwrap_err().to_string();
    assert!(
        err.contains("grandchild.toml") && err.contains("child.toml") && err.contains("base.toml"),
        "{err}"
    );
    // The run directory gets the merged experiment, no `extends` left in it.
    let merged = exp.to_toml();
    assert!(!merged.contains("extends") && merged.contains("name = \"only\""), "{merged}");

    // A circle and a missing base are config errors that name the files.
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, "extends = \"b.toml\"\n").unwrap();
    std::fs::write(&b, "extends = \"a.toml\"\n").unwrap();
    let err = Experiment::load(&a, &[]).unwrap_err();
    assert!(
        matches!(err, tdmr::Error::Config { .. }) && err.to_string().contains("circle"),
        "{err}"
    );
    std::fs::write(&b, "extends = \"nowhere.toml\"\n").unwrap();
    let err = Experiment::load(&a, &[]).unwrap_err().to_string();
    assert!(err.contains("nowhere.toml") && err.contains("b.toml"), "{err}");
    // A base that is not TOML: the error names it and the line.
    std::fs::write(&b, "[data\nk = 1\n").unwrap();
    let err = Experiment::load(&a, &[]).unwrap_err().to_string();
    assert!(err.contains("b.toml") && err.contains("line 1"), "{err}");

    // The workbench on the grandchild watches the base too: an edit there reaches the
    // session, and a watcher event names it as a config change.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut app = open_app(grandchild.clone(), Some(dir.path().join("run")), None, false);
    assert_eq!(app.config_files().len(), 3);
    let _w = tdmr::tui::watch::watch(&app.config_files(), None, tx).expect("inotify works here");
    assert!(!app.reload_config(false), "nothing changed yet");
    std::fs::write(&base, tiny_text().replace("batch_size = 10", "batch_size = 12")).unwrap();
    wait_for_config_event(&mut rx, "the edited base");
    assert!(app.reload_config(false), "the base's edit was not seen");
    assert_eq!(app.config.exp.distill.batch_size, 12, "{}", log_text(&app));
}

#[test]
fn the_sweep_browser_shows_pending_points_and_refuses_to_open_them() {
    use tdmr::engine::sweep_status::{Manifest, ManifestPoint, SweepStatus, MANIFEST};
    use tdmr::tui::sweep_browser::{Action, SweepBrowser};
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest {
        rank_by: "kd".into(),
        seeds: vec![7],
        points: vec![ManifestPoint {
            name: "p0-stage1.lr=1e-3".into(),
            overrides: vec!["stage1.lr=1e-3".into()],
        }],
    };
    std::fs::write(dir.path().join(MANIFEST), serde_json::to_string(&manifest).unwrap()).unwrap();
    let mut b = SweepBrowser::new(SweepStatus::open(dir.path()).unwrap(), tdmr::tui::theme::Theme::built_in());
    let draw = |b: &SweepBrowser| drawn(100, 16, |f| b.draw(f));
    let s = draw(&b);
    assert!(
        s.contains("0/2 sub-runs done") && s.contains("kd %") && s.contains("overrides: stage1.lr=1e-3"),
        "{s}"
    );
    assert_eq!(s.matches("pending").count(), 2, "{s}");
    let key = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
    assert_eq!(b.on_key(key(KeyCode::Enter)), Action::None);
    assert!(draw(&b).contains("has not started yet"));
    b.on_key(key(KeyCode::Down));
    b.on_key(key(KeyCode::Down));
    assert_eq!(b.selected, 1, "the selection stops at the last row");
    assert_eq!(b.on_key(key(KeyCode::Char('q'))), Action::Quit);
}

/// Pending stages are sized by the data's own class count (an ImageFolder's class
/// folders), before the run has loaded anything: 3 classes × k = 2 is one stage-1 batch
/// of 8, where digits' 10 classes would be three.
#[test]
fn the_schedule_sizes_pending_stages_by_the_image_folders_classes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("folder");
    for class in ["ant", "bee", "cat"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for i in 0..4u8 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 40, 90, 200]))
                .save(data.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let text = tiny_text();
    let start = text.find("[data]\npath = ").unwrap() + "[data]\n".len();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}path = {:?}\nkind = \"image-folder\"{}",
        &text[..start],
        data.display().to_string(),
        &text[end..]
    );
    let app = new_app(dir.path(), &text);
    assert_eq!(app.config.exp.data.kind, tdmr::config::DataKind::ImageFolder);
    let steps = |method: &str, stage: &str| {
        let r = app.schedule.plan.rows.iter().find(|r| r.method == method && r.stage == stage);
        r.unwrap_or_else(|| panic!("no {method}/{stage} in {:?}", app.schedule.plan.rows))
            .steps_per_epoch
    };
    assert_eq!(steps("tdmr-teacher", "reprogram"), 1, "6 labelled images in batches of 8");
    assert_eq!(steps("tdmr", "align"), 1, "6 labelled images in batches of 10");
    assert!(app.schedule.plan.rows.iter().all(|r| r.state == RowState::Pending));
}

#[test]
fn steering_lengthens_the_running_stage_and_halves_its_lr() {
    let dir = tempfile::tempdir().unwrap();
    // A long last stage, so the keys land while it runs.
    let text = tiny_text().replace("name = \"task\"\nepochs = 1", "name = \"task\"\nepochs = 20");
    let mut app = new_app(dir.path(), &text);
    press(&mut app, '+');
    assert!(log_text(&app).contains("nothing is running"), "{}", log_text(&app));
    press(&mut app, 's');
    pump(&mut app, 300, "tdmr/task to run", |a| {
        a.schedule.plan.running().is_some_and(|r| r.method == "tdmr" && r.stage == "task")
            && matches!(row_state(a, "tdmr", "task"), RowState::Running { epoch, .. } if epoch >= 2)
    });
    press(&mut app, '+');
    pump(&mut app, 120, "the longer stage applied", |a| {
        log_text(a).contains("config applied: distill.stages.task.epochs: 20 → 21")
    });
    let on_disk = std::fs::read_to_string(&app.config.path).unwrap();
    assert!(on_disk.contains("name = \"task\"\nepochs = 21"), "{on_disk}");
    press(&mut app, '[');
    pump(&mut app, 120, "the halved lr applied", |a| {
        log_text(a).contains("config applied: distill.stages.task.lr")
    });
    pump(&mut app, 300, "the run to finish", |a| a.run.state == RunState::Done);
    let metrics = std::fs::read_to_string(app.run.dir.as_ref().unwrap().join("metrics.jsonl")).unwrap();
    let task_epochs: Vec<(usize, usize)> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter_map(|e| match e {
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                ..
            } if method == "tdmr" && stage == "task" => Some((epoch, epochs)),
            _ => None,
        })
        .collect();
    assert_eq!(task_epochs.last(), Some(&(21, 21)), "the stage ran its extra epoch");
    assert!(
        metrics.contains("distill.stages.task.epochs: 20 → 21"),
        "recorded as a config change"
    );
    assert!(metrics.contains("distill.stages.task.lr: 0.001 → 0.0005"), "{metrics}");

    // What the target learned from its teacher, class by class.
    let reported: Vec<&str> = app.compare.reports.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(reported[..3], ["tdmr-teacher", "linear-probe", "tdmr"], "{reported:?}");
    let tdmr = &app.compare.reports[2];
    assert_eq!(tdmr.per_class.len(), 10);
    assert!(tdmr.agreement.is_some_and(|a| (0.0..=1.0).contains(&a)), "{:?}", tdmr.agreement);
    let test_acc = |m: &str| app.runs.results.iter().find(|r| r.method == m).unwrap().test_acc;
    // Balanced test classes: the per-class mean is the accuracy the Runs pane shows.
    let mean = tdmr.per_class.iter().sum::<f64>() / 10.0;
    assert!((mean - test_acc("tdmr")).abs() < 0.02, "{mean} vs {}", test_acc("tdmr"));
    app.shutdown();
}

#[test]
fn the_compare_pane_shows_every_class_for_teacher_probe_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    let classes = ["airplane", "bicycle", "cat", "dog", "guitar"];
    app.on_engine(data_loaded(&classes));
    let report = |method: &str, base: f64, agreement: Option<f64>| Event::ClassReport {
        method: method.into(),
        per_class: (0..5).map(|c| base - 0.1 * c as f64).collect(),
        agreement,
        confused: vec![tdmr::engine::class_report::Confusion {
            truth: 3,
            predicted: 2,
            count: 4,
        }],
        during: None,
    };
    for _ in 0..4 {
        app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    }
    assert_eq!(app.view.focus, tdmr::tui::app::Pane::Compare);
    // While a target trains, its evaluations fill its column, marked live.
    let mut live = report("tdmr", 0.3, None);
    if let Event::ClassReport { during, .. } = &mut live {
        *during = Some(tdmr::engine::class_report::During {
            stage: "align".into(),
            epoch: 4,
        });
    }
    app.on_engine(live);
    let s = screen(&app, 160, 48);
    assert!(s.contains("tdmr live: align epoch 4") && s.contains(" 30% "), "{s}");
    // Reported in run order; shown teacher, probe, target, baselines.
    for (m, base, agree) in [
        ("linear-probe", 0.8, None),
        ("tdmr-teacher", 0.9, None),
        ("scratch", 0.5, None),
        ("kd", 0.6, None),
        ("tdmr", 0.7, Some(0.825)),
    ] {
        app.on_engine(report(m, base, agree));
    }
    let check = |s: &str, what: &str| {
        assert!(s.contains("Teacher vs target"), "{what}:\n{s}");
        for c in classes {
            assert!(s.contains(c), "{what}: no row for {c}:\n{s}");
        }
        assert!(s.contains("82.5%") && s.contains("dog→cat (4)"), "{what}:\n{s}");
        let header = s.lines().find(|l| l.contains("class ")).unwrap();
        let at = |m: &str| header.find(m).unwrap_or_else(|| panic!("{what}: no column {m}: {header}"));
        assert!(
            at("teacher") < at("probe") && at("probe") < at("tdmr") && at("tdmr") < at("kd"),
            "{header}"
        );
        assert!(s.contains('█'), "{what}: bars:\n{s}");
        assert!(!s.contains("live:"), "{what}: the finished report replaced the live one:\n{s}");
    };
    check(&screen(&app, 160, 48), "160×48");
    // At 80×24 the pane shows its head; zoomed, every class.
    let small = screen(&app, 80, 24);
    assert!(small.contains("Teacher vs target") && small.contains("airplane"), "{small}");
    press(&mut app, 'z');
    let zoomed = screen(&app, 80, 24);
    assert!(!zoomed.contains("Schedule"), "{zoomed}");
    check(&zoomed, "80×24 zoomed");
}

#[test]
fn skip_to_the_selected_stage_skips_every_stage_on_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    app.attach(fake_engine(
        vec![
            ("tdmr-teacher", "reprogram", 400),
            ("tdmr", "align", 400),
            ("tdmr", "align+kd", 400),
            ("tdmr", "task", 2),
        ],
        5,
    ));
    pump(&mut app, 10, "the teacher stage to run", |a| {
        matches!(row_state(a, "tdmr-teacher", "reprogram"), RowState::Running { .. })
    });
    let row = |a: &App, m: &str, s: &str| a.schedule.plan.rows.iter().position(|r| r.method == m && r.stage == s).unwrap();
    // A stage that has started is refused.
    app.schedule.selected = row(&app, "tdmr-teacher", "reprogram");
    press(&mut app, 'N');
    assert!(
        log_text(&app).contains("is not a pending stage after the running one"),
        "{}",
        log_text(&app)
    );
    app.schedule.selected = row(&app, "tdmr", "task");
    press(&mut app, 'N');
    pump(&mut app, 10, "tdmr/task to run", |a| {
        matches!(row_state(a, "tdmr", "task"), RowState::Running { .. } | RowState::Done { .. })
    });
    for (m, s) in [("tdmr-teacher", "reprogram"), ("tdmr", "align"), ("tdmr", "align+kd")] {
        assert!(
            matches!(row_state(&app, m, s), RowState::Skipped { .. }),
            "{m}/{s}: {:?}",
            row_state(&app, m, s)
        );
    }
    pump(&mut app, 10, "the run to finish", |a| a.run.state == RunState::Done);
    assert!(
        matches!(row_state(&app, "tdmr", "task"), RowState::Done { .. }),
        "the chosen stage itself ran"
    );
    app.shutdown();
}

#[test]
fn the_foundation_picker_previews_a_checkpoint_and_chooses_it() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("more")).unwrap();
    std::fs::copy(root().join(WEIGHTS), models.join("lite.safetensors")).unwrap();
    std::fs::write(models.join("broken.safetensors"), b"not a checkpoint").unwrap();
    std::fs::write(models.join("notes.txt"), b"not listed").unwrap();
    let text = format!("# keep me\n{}", tiny_text());
    let mut app = new_app(dir.path(), &text);
    press(&mut app, 'o');
    let picker = app.picker.as_ref().expect("o opens the picker");
    assert_eq!(
        picker.dir,
        root().join(WEIGHTS).parent().unwrap(),
        "it starts at the current file's directory"
    );
    // Browse to the copy: up to the root, then into models/.
    app.picker = Some(tdmr::tui::panes::picker::Picker::open(&models, None));
    let names: Vec<String> = app.picker.as_ref().unwrap().entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(
        names,
        ["..", "more", "broken.safetensors", "lite.safetensors"],
        "directories, then checkpoints"
    );
    picker_to(&mut app, "broken.safetensors");
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("✗"), "{w}×{h}: an unreadable file shows its error:\n{s}");
    }
    picker_to(&mut app, "lite.safetensors");
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("efficientnet-lite") && s.contains("d1280"), "{w}×{h}: the preview:\n{s}");
    }
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(app.picker.is_none(), "choosing closes the picker");
    // Its native input differs from image_size = 32: the workbench offers it; no keeps 32.
    assert_eq!(app.view.overlay, Overlay::Confirm(Confirm::NativeSize(224)));
    assert!(screen(&app, 80, 24).contains("native input is 224"));
    press(&mut app, 'n');
    assert_eq!((app.view.overlay, app.config.exp.foundation.image_size), (Overlay::None, 32));
    let chosen = std::fs::canonicalize(models.join("lite.safetensors")).unwrap();
    assert_eq!(app.config.exp.foundation_path(), chosen);
    let on_disk = std::fs::read_to_string(&app.config.path).unwrap();
    assert!(
        on_disk.starts_with("# keep me") && on_disk.contains("lite.safetensors"),
        "{on_disk}"
    );
    wait_for_foundation(&mut app, "the chosen foundation to load");
    let s = screen(&app, 160, 48);
    assert!(s.contains("lite.safetensors") && s.contains("✓ efficientnet-lite"), "{s}");
    // Esc closes the picker without a change.
    press(&mut app, 'o');
    app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert!(app.picker.is_none());
    assert_eq!(std::fs::read_to_string(&app.config.path).unwrap(), on_disk);
}

#[test]
fn a_value_edited_in_place_is_validated_written_with_its_comments_and_undone() {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny_text().replace(
        "[stage1]\nepochs = 2",
        "[stage1] # stage one\nepochs = 2 # short\nlr = 0.01 # the lr",
    );
    let mut app = new_app(dir.path(), &text);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view.focus, tdmr::tui::app::Pane::Reprogrammer);
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    let editor = app.editor.as_ref().expect("enter edits the selected value");
    assert_eq!((editor.setting().to_string(), editor.input.as_str()), ("stage1.lr".into(), "0.01"));
    assert!(screen(&app, 80, 24).contains("stage1.lr = 0.01"));
    let retype = |app: &mut App, value: &str| {
        while !app.editor.as_ref().unwrap().input.is_empty() {
            app.on_key(KeyEvent::new(KeyCode::Backspace, KeyModifiers::NONE));
        }
        for c in value.chars() {
            press(app, c);
        }
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    };
    // An invalid value: the validator's message in place, the file untouched.
    retype(&mut app, "-1");
    let e = app.editor.as_ref().expect("the editor stays open").error.clone().unwrap();
    assert!(
        e.contains("stage1.lr") && e.contains("positive") && e.contains("exp.toml") && !e.contains("tdmr-edit"),
        "{e}"
    );
    assert!(screen(&app, 80, 24).contains("must be a positive number"));
    assert_eq!(std::fs::read_to_string(&app.config.path).unwrap(), text, "byte-identical");
    // A valid one: written with the comments, and taken by the session.
    retype(&mut app, "0.002");
    assert!(app.editor.is_none());
    let on_disk = std::fs::read_to_string(&app.config.path).unwrap();
    assert!(
        on_disk.contains("lr = 0.002 # the lr") && on_disk.contains("# stage one"),
        "{on_disk}"
    );
    assert_eq!(app.config.exp.stage1.lr, 0.002);
    assert!(screen(&app, 160, 48).contains("lr 2e-3"));
    // Esc cancels; ctrl-z puts the file back.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Esc);
    assert!(app.editor.is_none());
    app.on_key(KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL));
    assert_eq!(std::fs::read_to_string(&app.config.path).unwrap(), text);
    assert_eq!(app.config.exp.stage1.lr, 0.01);
}

#[test]
fn a_quit_question_asked_as_the_run_ends_goes_away_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = new_app(dir.path(), &tiny_text());
    app.attach(fake_engine(vec![("tdmr", "task", 30)], 5));
    pump(&mut app, 10, "the stage to run", |a| {
        a.run.is_active() && !a.schedule.plan.rows.is_empty()
    });
    press(&mut app, 'q');
    assert_eq!(app.view.overlay, Overlay::Confirm(Confirm::Quit), "q while training asks");
    assert!(!app.should_quit);
    pump(&mut app, 20, "the run to finish", |a| a.run.state == RunState::Done);
    assert_eq!(app.view.overlay, Overlay::None, "the question went with the run");
    assert!(log_text(&app).contains("nothing to stop"), "{}", log_text(&app));
    assert!(!screen(&app, 80, 24).contains("Stop it and quit?"));
    press(&mut app, 'q');
    assert!(app.should_quit, "a finished run quits without asking");
}
