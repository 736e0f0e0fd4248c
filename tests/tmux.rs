//! End to end: the real release binary in a real terminal (tmux), driven by keys and
//! by edits to its config file on disk, read back through `capture-pane`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    /// Whether tmux is here to drive (it must be in CI).
    fn installed() -> bool {
        if Command::new("tmux").arg("-V").output().is_ok() {
            return true;
        }
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI (.ci/run installs it)");
        eprintln!("tmux is not installed: skipping the end-to-end test");
        false
    }
    /// A detached session `w` on its own server, `width`×`height`, running `shell`;
    /// `None` where tmux is missing (allowed outside CI only).
    fn start(tag: &str, width: u16, height: u16, shell: &str) -> Option<Tmux> {
        if !Tmux::installed() {
            return None;
        }
        let tmux = Tmux {
            socket: format!("tdmr-{tag}-{}", std::process::id()),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let out = tmux.cmd(&["new-session", "-d", "-s", "w", "-x", &w, "-y", &h, shell]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Some(tmux)
    }
    /// The process running in the pane (the shell `exec`s tdmr, so tdmr itself).
    fn pane_pid(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["display", "-p", "-t", "w", "#{pane_pid}"]).stdout)
            .trim()
            .to_string()
    }
    /// Wait for the session to end (the program in it exited).
    fn wait_exit(&self, secs: u64, what: &str) {
        let t = Instant::now();
        while self.alive() {
            assert!(t.elapsed() < Duration::from_secs(secs), "{what}: {}", self.screen());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }
    fn keys(&self, keys: &str) {
        assert!(self.cmd(&["send-keys", "-t", "w", keys]).status.success());
    }
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "w"]).stdout).to_string()
    }
    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "w"]).status.success()
    }
    /// Wait until the screen satisfies `ok`; returns it and the time it took.
    fn wait(&self, secs: u64, what: &str, ok: impl Fn(&str) -> bool) -> (String, Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return (s, t0.elapsed());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(secs),
                "timed out waiting for {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn chart_steps(screen: &str) -> Option<u64> {
    // The accuracy chart's x axis ends with the last step: "step 0 … N".
    screen
        .lines()
        .find(|l| l.contains("│step "))
        .and_then(|l| l.split_whitespace().rev().find_map(|w| w.trim_end_matches('│').parse::<u64>().ok()))
}

#[test]
fn workbench_in_tmux_keys_live_edit_bad_edit_and_quit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    let text = tiny_text().replace("[stage1]\nepochs = 2", "[stage1]\nepochs = 60");
    std::fs::write(&cfg, &text).unwrap();
    let run = dir.path().join("run");
    // An "editor" that changes the temperature and exits: `e` must hand it the terminal
    // and the file, take the terminal back, and apply the change.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nfor f; do :; done\nsed -i 's/^\\[distill\\]$/[distill]\\ntemperature = 2.0/' \"$f\"\n",
    )
    .unwrap();
    assert!(Command::new("chmod").arg("+x").arg(&editor).status().unwrap().success());
    let shell = format!(
        "cd {:?} && EDITOR={:?} exec {:?} tui {:?} --out {:?}",
        root(),
        editor,
        env!("CARGO_BIN_EXE_tdmr"),
        cfg,
        run
    );
    let Some(tmux) = Tmux::start("test", 120, 36, &shell) else { return };
    tmux.wait(60, "the foundation to load", |s| s.contains("✓ efficientnet-lite0"));

    // Idle: the UI should sleep. Measured, reported, not asserted (shared machines).
    let pid = tmux.pane_pid();
    let (c0, t0) = (cpu_ticks(&pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let idle = (cpu_ticks(&pid) - c0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    eprintln!("idle UI CPU: {:.2}% of a core", 100.0 * idle);

    tmux.keys("s");
    let (s, _) = tmux.wait(90, "steps in the charts", |s| {
        chart_steps(s).is_some_and(|n| n > 3) && s.contains("▶ vp/reprogram")
    });
    let first = chart_steps(&s).unwrap();
    tmux.wait(60, "the loss pane to update", |s| chart_steps(s).is_some_and(|n| n > first));

    // Key latency while training: '?' until the help is on screen.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        tmux.keys("?");
        latencies.push(tmux.wait(5, "the help overlay", |s| s.contains("any key closes")).1);
        tmux.keys("?");
        tmux.wait(5, "the help to close", |s| !s.contains("any key closes"));
    }
    latencies.sort();
    eprintln!(
        "key → screen while training (incl. tmux capture): median {:?}, max {:?}",
        latencies[2], latencies[4]
    );

    tmux.keys("p");
    tmux.wait(30, "paused", |s| s.contains("⏸ paused"));
    tmux.keys("p");
    tmux.wait(30, "running again", |s| s.contains("▶ running"));

    // A live edit of the learning rate, saved the way editors do (temp file + rename).
    let tmp = dir.path().join(".exp.toml.tmp");
    std::fs::write(&tmp, text.replace("[stage1]\nepochs = 60", "[stage1]\nepochs = 60\nlr = 0.002")).unwrap();
    std::fs::rename(&tmp, &cfg).unwrap();
    tmux.wait(30, "the change applied", |s| s.contains("config applied: stage1.lr"));

    tmux.keys("e");
    tmux.wait(30, "the editor's change applied", |s| {
        s.contains("config applied: distill.temperature")
    });

    // SIGUSR1 reloads too.
    assert!(Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    tmux.wait(10, "the SIGUSR1 reload", |s| s.contains("SIGUSR1: reloading"));

    // A broken file: the error shows, training goes on.
    std::fs::write(&cfg, "[stage1\nlr = 0.1\n").unwrap();
    let (s, _) = tmux.wait(30, "the config error", |s| s.contains("config error"));
    let at = chart_steps(&s).unwrap();
    let (s, _) = tmux.wait(60, "training to continue", |s| chart_steps(s).is_some_and(|n| n > at));
    assert!(s.contains("▶ running") && s.contains("line"), "{s}");

    tmux.keys("q");
    tmux.wait(10, "the quit question", |s| s.contains("Stop it and quit?"));
    tmux.keys("y");
    tmux.wait_exit(60, "tdmr did not exit");
    assert_complete(&run);
}

fn assert_complete(run: &Path) {
    for f in ["config.toml", "metrics.jsonl", "report.md", "summary.json"] {
        assert!(run.join(f).is_file(), "{f} missing in {}", run.display());
    }
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    for l in metrics.lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("torn metrics line {l:?}: {e}"));
    }
    assert!(metrics.contains("\"config-applied\""));
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("stopped early") && report.contains("linear-probe"), "{report}");
}

/// An SSH drop: the terminal disappears (tmux kills the pane and sends SIGHUP) while
/// training is paused; the run goes on to the end and its directory is complete.
#[test]
fn a_hang_up_lets_the_run_finish() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(&cfg, tiny_text()).unwrap();
    let run = dir.path().join("run");
    let shell = format!(
        "cd {:?} && exec {:?} tui {:?} --out {:?} --start",
        root(),
        env!("CARGO_BIN_EXE_tdmr"),
        cfg,
        run
    );
    let Some(tmux) = Tmux::start("hup", 100, 30, &shell) else { return };
    tmux.wait(90, "training", |s| chart_steps(s).is_some_and(|n| n > 2));
    let pid = tmux.pane_pid();
    // Paused when the link drops: nobody can resume it, so it must carry on by itself.
    tmux.keys("p");
    tmux.wait(30, "paused", |s| s.contains("⏸ paused"));
    assert!(tmux.cmd(&["kill-server"]).status.success());

    // `tdmr attach` shows the orphaned run again, live, from its directory.
    let shell = format!("cd {:?} && exec {:?} attach {:?}", root(), env!("CARGO_BIN_EXE_tdmr"), run);
    let viewer = Tmux::start("attach", 120, 36, &shell).expect("tmux ran a moment ago");
    viewer.wait(30, "the attached timeline", |s| {
        s.contains("read-only") && s.contains("✓ linear-probe/probe")
    });
    viewer.wait(180, "the run to finish, seen through attach", |s| s.contains("✓ done"));
    viewer.keys("q");
    viewer.wait_exit(10, "attach did not quit");

    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t.elapsed() < Duration::from_secs(180), "tdmr still running 180 s after the hang-up");
        std::thread::sleep(Duration::from_millis(200));
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for m in ["scratch", "linear-probe", "vp", "kd", "tdmr-teacher", "tdmr"] {
        assert!(
            summary.get(m).is_some(),
            "{m} missing: the run did not finish after the hang-up: {summary}"
        );
    }
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(!report.contains("stopped early"), "{report}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().last().unwrap().contains("\"done\""), "the last event is `done`");
}

#[test]
fn a_headless_run_on_a_terminal_shows_a_stage_progress_bar_and_keeps_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(&cfg, tiny_text()).unwrap();
    let run = dir.path().join("run");
    let shell = format!(
        "cd {:?} && {:?} run {:?} --out {:?}; sleep 60",
        root(),
        env!("CARGO_BIN_EXE_tdmr"),
        cfg,
        run
    );
    let Some(tmux) = Tmux::start("bar", 160, 40, &shell) else { return };
    let bar = |s: &str| {
        s.lines().find_map(|l| {
            let (head, tail) = l.split_once("] ")?;
            let (counts, rest) = tail.split_once(" steps")?;
            let (pos, len) = counts.split_once('/')?;
            let (pos, len) = (pos.trim().parse::<u64>().ok()?, len.parse::<u64>().ok()?);
            (head.contains(" [") && rest.contains("img/s") && rest.contains("ETA")).then_some((pos, len))
        })
    };
    let (screen, _) = tmux.wait(120, "a progress bar", |s| bar(s).is_some_and(|(p, _)| p > 1));
    let (pos, len) = bar(&screen).unwrap();
    assert!(pos <= len, "{pos}/{len}:\n{screen}");
    // The epoch lines stay above the bar, as they are without a terminal.
    tmux.wait(120, "the end of the run", |s| s.contains("report: "));
    let screen = tmux.screen();
    assert!(bar(&screen).is_none(), "the bar outlived the run:\n{screen}");
    let text = String::from_utf8_lossy(&tmux.cmd(&["capture-pane", "-p", "-t", "w", "-S", "-2000"]).stdout).to_string();
    assert!(text.contains("[tdmr/task] epoch") && text.contains("== tdmr: test"), "{text}");
}

/// `tdmr attach` on a sweep that is still running: its points appear with their state,
/// `enter` opens one in the read-only workbench, `q` there comes back to the points.
#[test]
fn attach_follows_a_running_sweep_and_opens_its_sub_runs() {
    if !Tmux::installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    std::fs::write(&cfg, tiny_text()).unwrap();
    let out = dir.path().join("sweep");
    let mut sweep = Command::new(env!("CARGO_BIN_EXE_tdmr"))
        .args([
            "sweep",
            cfg.to_str().unwrap(),
            "--grid",
            "stage1.lr=1e-3,1e-2",
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--set", "methods=[\"scratch\",\"tdmr\"]"])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !out.join("sweep.json").is_file() {
        assert!(t.elapsed() < Duration::from_secs(30), "the sweep wrote no manifest");
        std::thread::sleep(Duration::from_millis(10));
    }
    let shell = format!("cd {:?} && exec {:?} attach {:?}", root(), env!("CARGO_BIN_EXE_tdmr"), out);
    let tmux = Tmux::start("sweep", 120, 30, &shell).expect("tmux is installed");
    // The best point's test run cannot start before both points are done.
    let (first, _) = tmux.wait(30, "the points", |s| s.contains("p1-stage1.lr=1e-2") && s.contains("best-on-test"));
    assert!(first.contains("pending") || first.contains("▶"), "{first}");
    let (done, _) = tmux.wait(240, "the whole sweep, followed live", |s| s.contains("3/3 sub-runs done"));
    assert!(sweep.wait().unwrap().success());
    assert!(done.contains("best so far on validation: p"), "{done}");
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    let best = md
        .split("Best point by validation: ")
        .nth(1)
        .unwrap()
        .split(". Its")
        .next()
        .unwrap();
    let ranked_first = done.lines().find(|l| l.trim_start_matches('│').starts_with("1 ")).unwrap_or("");
    assert!(ranked_first.contains(best), "rank 1 is the report's best, {best}:\n{done}");

    tmux.keys("Down");
    tmux.keys("Enter");
    tmux.wait(30, "the second point's run in the workbench", |s| {
        s.contains("p1-stage1.lr=1e-2/seed-") && s.contains("✓ done") && s.contains("q back to the sweep")
    });
    tmux.keys("q");
    tmux.wait(10, "back at the points", |s| {
        s.contains("sub-runs done") && s.contains("best-on-test")
    });
    tmux.keys("q");
    tmux.wait_exit(10, "attach did not quit");
}

#[test]
fn an_in_place_edit_at_80x24_applies_live_and_keeps_the_files_comments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    let text = tiny_text().replace("[stage1]\nepochs = 2", "[stage1] # stage one\nepochs = 60\nlr = 0.01 # the lr");
    std::fs::write(&cfg, &text).unwrap();
    let run = dir.path().join("run");
    let Some(tmux) = Tmux::start("edit", 80, 24, &workbench(&cfg, &run)) else {
        return;
    };
    tmux.keys("s");
    tmux.wait(90, "stage 1 to run", |s| s.contains("▶ vp/reprogram"));
    // Reprogrammer pane, the stage1 line, edit.
    tmux.keys("BTab");
    for _ in 0..3 {
        tmux.keys("Down");
    }
    tmux.keys("Enter");
    tmux.wait(10, "the editor", |s| s.contains("stage1.lr = 0.01"));
    for _ in 0..4 {
        tmux.keys("BSpace");
    }
    // An invalid value first: nothing is written.
    tmux.keys("0");
    tmux.keys("Enter");
    tmux.wait(10, "the validator's message", |s| s.contains("positive"));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text, "the file is byte-identical");
    tmux.keys("BSpace");
    tmux.keys("0.002");
    tmux.keys("Enter");
    // The pane's legend always reads "✓live applied": wait for the new value itself,
    // then zoom the pane so its line is wide enough to show its own mark.
    tmux.wait(60, "the new lr on the Reprogrammer pane", |s| s.contains("lr 2e-3"));
    tmux.keys("z");
    tmux.wait(10, "the live mark on the stage1 line", |s| {
        s.lines().any(|l| l.contains("lr 2e-3") && l.contains("✓live"))
    });
    tmux.keys("z");
    let on_disk = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        on_disk.contains("lr = 0.002 # the lr") && on_disk.contains("# stage one"),
        "{on_disk}"
    );
    let metrics = run.join("metrics.jsonl");
    let applied = || {
        std::fs::read_to_string(&metrics)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("\"config-applied\"") && l.contains("stage1.lr"))
    };
    let end = Instant::now() + Duration::from_secs(60);
    while !applied() {
        assert!(Instant::now() < end, "no config-applied event for stage1.lr");
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux.keys("q");
    tmux.wait(10, "the quit confirmation", |s| s.contains("Stop it and quit?"));
    tmux.keys("y");
    tmux.wait_exit(60, "the workbench to quit");
}

/// The shell line that runs the workbench on `cfg`, writing its run under `run`.
fn workbench(cfg: &Path, run: &Path) -> String {
    format!(
        "cd {:?} && exec {:?} tui {:?} --out {:?}",
        root(),
        env!("CARGO_BIN_EXE_tdmr"),
        cfg,
        run
    )
}

fn events(run: &Path) -> Vec<tdmr::engine::Event> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn the_picker_at_80x24_previews_a_checkpoint_and_the_foundation_pane_names_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("more")).unwrap();
    std::fs::copy(root().join(WEIGHTS), models.join("current.safetensors")).unwrap();
    std::fs::copy(root().join(WEIGHTS), models.join("more").join("chosen.safetensors")).unwrap();
    let cfg = dir.path().join("exp.toml");
    let text = format!("# keep me\n{}", tiny_text()).replace(
        &format!("{:?}", root().join(WEIGHTS).display().to_string()),
        &format!("{:?}", models.join("current.safetensors").display().to_string()),
    );
    std::fs::write(&cfg, &text).unwrap();
    let Some(tmux) = Tmux::start("picker", 80, 24, &workbench(&cfg, &dir.path().join("run"))) else {
        return;
    };
    tmux.wait(60, "the foundation to load", |s| {
        s.contains("current.safetensors") && s.contains("✓")
    });
    tmux.keys("o");
    // It opens at the current file's directory on the current file: `..`, `more/`, it.
    tmux.wait(10, "the picker", |s| s.contains("more") && s.contains("current.safetensors"));
    tmux.keys("Up");
    tmux.keys("Enter");
    tmux.wait(10, "the sub-directory", |s| s.contains("chosen.safetensors"));
    tmux.keys("Down");
    tmux.wait(20, "the preview's family", |s| {
        s.contains("efficientnet-lite") && s.contains("d1280")
    });
    tmux.keys("Enter");
    tmux.wait(10, "the native-size offer", |s| s.contains("native input is 224"));
    tmux.keys("n");
    let (s, _) = tmux.wait(60, "the Foundation pane to name the choice", |s| {
        s.contains("chosen.safetensors") && s.contains("✓ efficientnet-lite")
    });
    assert!(!s.contains("native input is 224"), "{s}");
    let on_disk = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        on_disk.starts_with("# keep me") && on_disk.contains("more/chosen.safetensors"),
        "{on_disk}"
    );
    assert!(on_disk.contains("image_size = 32"), "n keeps the configured size: {on_disk}");
    tmux.keys("q");
    tmux.wait_exit(30, "the workbench to quit");
}

#[test]
fn plus_at_80x24_lengthens_the_running_stage_and_metrics_show_the_extra_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.toml");
    // Stage 1's length is fixed mid-run; a distillation stage's is not.
    let text = tiny_text().replace("name = \"align\"\nepochs = 1", "name = \"align\"\nepochs = 30");
    assert!(text.contains("epochs = 30"));
    std::fs::write(&cfg, text).unwrap();
    let run = dir.path().join("run");
    let Some(tmux) = Tmux::start("plus", 80, 24, &workbench(&cfg, &run)) else {
        return;
    };
    tmux.keys("s");
    tmux.wait(300, "tdmr/align to run", |s| s.contains("▶ tdmr/align "));
    tmux.keys("+");
    tmux.wait(60, "the steer in the log", |s| s.contains("steered tdmr/align"));
    let align = |e: &tdmr::engine::Event| match e {
        tdmr::engine::Event::Epoch {
            method,
            stage,
            epoch,
            epochs,
            ..
        } if method == "tdmr" && stage == "align" => Some((*epoch, *epochs)),
        _ => None,
    };
    let end = Instant::now() + Duration::from_secs(240);
    loop {
        let last = events(&run).iter().rev().find_map(align);
        if last == Some((31, 31)) {
            break;
        }
        assert!(
            Instant::now() < end,
            "tdmr/align never ran its 31st epoch: {last:?}\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let recorded = events(&run).iter().any(|e| {
        matches!(e, tdmr::engine::Event::ConfigApplied { changes }
            if changes.iter().any(|c| c.contains("distill.stages.align.epochs: 30 → 31")))
    });
    assert!(recorded, "the change is a config-applied event in metrics.jsonl");
    tmux.keys("q");
    tmux.wait(10, "the quit confirmation", |s| s.contains("Stop it and quit?"));
    tmux.keys("y");
    tmux.wait_exit(60, "the workbench to quit");
}

#[test]
fn after_the_quick_experiment_the_teacher_vs_target_pane_has_a_bar_row_for_every_class() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cfg = root().join("sample-data/experiments/quick.toml");
    let Some(tmux) = Tmux::start("compare", 80, 24, &workbench(&cfg, &run)) else {
        return;
    };
    tmux.wait(60, "the foundation to load", |s| s.contains("✓ efficientnet-lite"));
    tmux.keys("s");
    let end = Instant::now() + Duration::from_secs(600);
    while !events(&run).iter().any(|e| matches!(e, tdmr::engine::Event::Done { .. })) {
        assert!(Instant::now() < end, "the quick experiment never finished:\n{}", tmux.screen());
        std::thread::sleep(Duration::from_millis(200));
    }
    let classes = events(&run)
        .into_iter()
        .find_map(|e| match e {
            tdmr::engine::Event::DataLoaded { classes, .. } => Some(classes),
            _ => None,
        })
        .expect("a data-loaded event");
    for _ in 0..4 {
        tmux.keys("Tab");
    }
    tmux.keys("z");
    let (s, _) = tmux.wait(10, "the zoomed pane", |s| {
        s.contains("Teacher vs target") && !s.contains("Schedule")
    });
    let header = s.lines().position(|l| l.contains("class ") && l.contains("teacher")).expect(&s);
    let rows: Vec<&str> = s.lines().skip(header + 1).collect();
    for c in &classes {
        let row = rows.iter().find(|l| l.trim_start_matches(['│', ' ']).starts_with(&format!("{c} ")));
        let row = row.unwrap_or_else(|| panic!("no row for class {c}:\n{s}"));
        assert!(
            row.contains('█') || row.contains('▏') || row.contains("0%"),
            "class {c} has no bars: {row}\n{s}"
        );
        assert!(row.matches('%').count() >= 4, "teacher, probe, tdmr and kd for {c}: {row}");
    }
    assert!(s.contains("agrees with its teacher"), "{s}");
    tmux.keys("z");
    // metrics.jsonl has `done` a moment before the workbench has drained it; a `q`
    // before then asks whether to stop the run.
    tmux.wait(30, "the workbench to see the run end", |s| s.contains("✓ done"));
    tmux.keys("q");
    tmux.wait_exit(30, "the workbench to quit");
}
