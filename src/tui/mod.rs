//! The terminal workbench (ratatui + crossterm on tokio): the engine trains on its own
//! thread; this loop only drains its events, redraws when something changed, and turns
//! keys, file changes and signals into commands.

pub mod app;
pub mod follow;
pub mod keymap;
pub mod panes;
pub mod plan;
pub mod series;
pub mod sweep_browser;
pub mod theme;
pub mod view;
pub mod watch;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ratatui::crossterm::event::{self, Event as TermEvent, KeyEventKind};
use ratatui::DefaultTerminal;
use tokio::sync::mpsc;

pub use app::{App, Effect, Options};

/// Why the workbench cannot open here, or `None` if it can.
pub fn not_a_terminal() -> Option<&'static str> {
    if !std::io::stdout().is_terminal() {
        Some("stdout is not a terminal")
    } else if !std::io::stdin().is_terminal() {
        Some("stdin is not a terminal")
    } else if std::env::var("TERM").is_ok_and(|t| t == "dumb") {
        Some("TERM=dumb")
    } else {
        None
    }
}

/// Reads terminal input on its own thread (crossterm's reads block); paused while an
/// editor owns the terminal so it does not steal the editor's keys.
fn spawn_input(tx: mpsc::UnboundedSender<TermEvent>, paused: Arc<AtomicBool>) {
    std::thread::spawn(move || loop {
        if tx.is_closed() {
            return;
        }
        if paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match event::poll(Duration::from_millis(50)) {
            Ok(true) if !paused.load(Ordering::Acquire) => match event::read() {
                Ok(ev) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(_) => {}
            Err(_) => return,
        }
    });
}

fn open_editor(
    terminal: &mut DefaultTerminal,
    path: &std::path::Path,
    line: Option<usize>,
    input_paused: &AtomicBool,
) -> anyhow::Result<String> {
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    input_paused.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(80));
    ratatui::restore();
    let mut parts = editor.split_whitespace();
    let program = parts.next().unwrap_or("vi").to_string();
    let mut cmd = std::process::Command::new(&program);
    cmd.args(parts);
    if let Some(l) = line {
        cmd.arg(format!("+{l}"));
    }
    let status = cmd.arg(path).status();
    *terminal = ratatui::try_init()?;
    terminal.clear()?;
    input_paused.store(false, Ordering::Release);
    match status {
        Ok(s) if s.success() => Ok(format!("{program} closed")),
        Ok(s) => Ok(format!("{program} exited with {s}")),
        Err(e) => anyhow::bail!("could not run the editor `{program}` (set $EDITOR): {e}"),
    }
}

/// How the event loop ended.
enum Exit {
    /// The user quit (or SIGTERM): stop the engine.
    Quit,
    /// The terminal went away (SIGHUP, an SSH drop, a failed draw): let training finish.
    HungUp,
}

async fn event_loop(terminal: &mut DefaultTerminal, app: &mut App) -> anyhow::Result<Exit> {
    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let input_paused = Arc::new(AtomicBool::new(false));
    spawn_input(input_tx, input_paused.clone());
    let (watch_tx, mut watch_rx) = mpsc::unbounded_channel();
    let _watcher = match watch::watch(&app.config_files(), app.theme_path.as_deref(), watch_tx) {
        Ok(w) => Some(w),
        Err(e) => {
            app.warn(format!("file watching unavailable ({e}); polling every 2 s instead"));
            None
        }
    };
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Handling SIGHUP at all replaces the default action (exit), so a dropped SSH link
    // no longer kills the training it started.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u64 = 0;
    let mut dirty = true;
    loop {
        if dirty {
            if terminal.draw(|f| view::draw(f, app)).is_err() {
                return Ok(Exit::HungUp);
            }
            dirty = false;
        }
        if app.should_quit {
            return Ok(Exit::Quit);
        }
        tokio::select! {
            biased;
            Some(ev) = input_rx.recv() => {
                dirty = true;
                if let TermEvent::Key(k) = ev {
                    if k.kind != KeyEventKind::Release {
                        if let Effect::OpenEditor { path, line } = app.on_key(k) {
                            match open_editor(terminal, &path, line, &input_paused) {
                                Ok(msg) => app.info(msg),
                                Err(e) => app.error(format!("{e:#}")),
                            }
                            app.reload_config(false);
                        }
                    }
                }
            }
            _ = usr1.recv() => {
                app.info("SIGUSR1: reloading the config");
                app.reload_config(true);
                dirty = true;
            }
            _ = hup.recv() => return Ok(Exit::HungUp),
            _ = term.recv() => {
                app.warn("SIGTERM: stopping");
                app.should_quit = true;
                dirty = true;
            }
            Some(what) = watch_rx.recv() => {
                dirty |= match what {
                    watch::Changed::Config => app.reload_config(false),
                    watch::Changed::Theme => app.check_theme(),
                };
            }
            _ = tick.tick() => {
                ticks += 1;
                dirty |= app.poll();
                if ticks.is_multiple_of(20) {
                    dirty |= app.reload_config(false);
                    dirty |= app.check_theme();
                }
                // Clocks and the loading timer move once a second even without events.
                if ticks.is_multiple_of(10) && (app.run.is_active() || app.foundation.is_loading()) {
                    dirty = true;
                }
            }
        }
    }
}

/// How the workbench begins.
pub enum Begin {
    /// Wait for `s`.
    Idle,
    /// Start a new run at once.
    Start,
    /// Continue this run directory from its last good checkpoint.
    Resume(PathBuf),
}

/// Open the workbench on `config` and run until the user quits.
pub fn run(config: PathBuf, overrides: Vec<String>, options: Options, begin: Begin) -> anyhow::Result<()> {
    let exp = crate::config::Experiment::load(&config, &overrides)?;
    let mut app = App::new(config, overrides, exp, options);
    app.load_foundation();
    match begin {
        Begin::Idle => {}
        Begin::Start => app.start(),
        Begin::Resume(dir) => app.resume(Some(dir)),
    }
    drive(app)
}

/// Show a run directory's run live, read-only, until the user quits.
pub fn attach(run_dir: PathBuf, options: Options) -> anyhow::Result<()> {
    drive(read_only_app(&run_dir, options)?)
}

/// The workbench on a run that trains elsewhere, fed from its `metrics.jsonl`.
fn read_only_app(run_dir: &std::path::Path, options: Options) -> anyhow::Result<App> {
    let config = run_dir.join("config.toml");
    let exp =
        crate::config::Experiment::load(&config, &[]).with_context(|| format!("{} is not a tdmr run directory", run_dir.display()))?;
    let mut app = App::new(config, Vec::new(), exp, options);
    let (session, stop) = follow::attach(run_dir)?;
    app.attach_read_only(session, stop);
    Ok(app)
}

/// Show a sweep directory's points live until the user quits; `enter` opens a sub-run
/// in the read-only workbench, and quitting that comes back to the points.
pub fn attach_sweep(sweep_dir: PathBuf, options: Options) -> anyhow::Result<()> {
    let status = crate::engine::sweep_status::SweepStatus::open(&sweep_dir)?;
    let mut theme = match &options.theme {
        Some(spec) => theme::Theme::load(&theme::Theme::resolve(spec, &options.themes_dir))?,
        None => theme::Theme::built_in(),
    };
    if options.no_color {
        theme = theme.without_color();
    }
    let mut browser = sweep_browser::SweepBrowser::new(status, theme);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    let result = browse(&mut terminal, &rt, &mut browser, &options);
    ratatui::restore();
    result
}

fn browse(
    terminal: &mut DefaultTerminal,
    rt: &tokio::runtime::Runtime,
    browser: &mut sweep_browser::SweepBrowser,
    options: &Options,
) -> anyhow::Result<()> {
    let mut last_refresh = std::time::Instant::now();
    // Drawn only when a sub-run's file grew or the terminal sent something (a key, a
    // resize): an idle sweep costs a poll, not a frame.
    let mut dirty = true;
    loop {
        if last_refresh.elapsed() >= Duration::from_millis(500) {
            dirty |= browser.status.refresh();
            last_refresh = std::time::Instant::now();
        }
        if std::mem::take(&mut dirty) {
            terminal.draw(|f| browser.draw(f))?;
        }
        if !event::poll(Duration::from_millis(250))? {
            continue;
        }
        dirty = true;
        let TermEvent::Key(key) = event::read()? else { continue };
        if key.kind == KeyEventKind::Release {
            continue;
        }
        match browser.on_key(key) {
            sweep_browser::Action::None => {}
            sweep_browser::Action::Quit => return Ok(()),
            sweep_browser::Action::Open(run_dir) => {
                // A sub-run that cannot be shown (its config not written yet, say) is a
                // note on the points screen, not the end of the browser.
                let mut app = match read_only_app(&run_dir, options.clone()) {
                    Ok(app) => app,
                    Err(e) => {
                        browser.note = Some(format!("cannot open {}: {e:#}", run_dir.display()));
                        continue;
                    }
                };
                app.quit_hint = Some("q back to the sweep".into());
                let exit = rt.block_on(event_loop(terminal, &mut app));
                app.shutdown();
                // The workbench's input thread sees its channel closed within one poll:
                // wait for it, so it does not take the next key meant for the points.
                std::thread::sleep(Duration::from_millis(120));
                match exit? {
                    Exit::Quit => terminal.clear()?,
                    Exit::HungUp => return Ok(()),
                }
            }
        }
    }
}

fn drive(mut app: App) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut terminal = ratatui::try_init().context("opening the terminal")?;
    match rt.block_on(event_loop(&mut terminal, &mut app)) {
        Ok(Exit::HungUp) => {
            // No terminal to restore or print to (writing to it could fail or block):
            // finish the run exactly as the headless runner would, then leave.
            app.finish_detached();
            Ok(())
        }
        result => {
            ratatui::restore();
            if app.run.is_active() {
                eprintln!("stopping the engine at its next step…");
            }
            app.shutdown();
            if let Some(dir) = &app.run.dir {
                eprintln!("run directory: {}", dir.display());
            }
            result.map(|_| ())
        }
    }
}
