//! The workbench's state and everything that changes it: keys, engine events, config
//! and theme reloads. Drawing lives in `view`; the terminal and the event loop in `mod`.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::thread::JoinHandle;
use std::time::Instant;

use ratatui::crossterm::event::KeyEvent;

use super::charts::Charts;
use super::keymap::{self, Action};
use super::plan::{Plan, RowState};
use super::theme::{Theme, BUNDLED};
use crate::config::live::{self, Change, Progress, Verdict};
use crate::config::stage_edit::{self, StageOp};
use crate::config::Experiment;
use crate::engine::run_dir::RunDir;
use crate::engine::{Command, Event, FailReason, Launch, Session, Summary};
use crate::models::foundation::Foundation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Foundation,
    Reprogrammer,
    Schedule,
    Charts,
    Log,
    Runs,
}

pub const PANES: [Pane; 6] = [
    Pane::Foundation,
    Pane::Reprogrammer,
    Pane::Schedule,
    Pane::Charts,
    Pane::Log,
    Pane::Runs,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Abort,
    Quit,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Confirm(Confirm),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FoundationInfo {
    pub variant: String,
    pub params: usize,
    pub feature_dim: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FoundationState {
    NotLoaded,
    Loading { since: Instant },
    Loaded(FoundationInfo),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Idle,
    Running,
    Paused,
    Done,
    Aborted,
    Failed(String),
}

impl RunState {
    pub fn is_active(&self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// What the event loop must do for the app (things that need the terminal).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    OpenEditor { path: PathBuf, line: Option<usize> },
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at_s: f64,
    pub level: Level,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Full,
    Recent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Braille,
    Block,
    Dot,
}

#[derive(Clone)]
pub struct Options {
    /// Where the run directory goes (`runs/<name>-<timestamp>` when `None`).
    pub out: Option<PathBuf>,
    pub themes_dir: PathBuf,
    /// `--theme` (wins over the config's `theme`).
    pub theme: Option<String>,
    pub no_color: bool,
}

pub struct App {
    pub config_path: PathBuf,
    /// The texts of the file and every base it extends: a reload that finds the same
    /// texts is a no-op.
    chain_texts: Vec<String>,
    pub overrides: Vec<String>,
    /// What the session runs (or will run when started).
    pub exp: Experiment,
    /// The file's latest valid version, when some of its changes wait for a restart.
    pub next: Option<Experiment>,
    pub pending: Vec<Change>,
    /// Changes applied live most recently (shown in the Reprogrammer pane).
    pub applied: Vec<Change>,
    pub config_error: Option<String>,
    pub foundation: FoundationState,
    foundation_rx: Option<Receiver<Result<FoundationInfo, String>>>,
    pub run: RunState,
    pub run_dir: Option<PathBuf>,
    /// The device the engine reported (the config's `device` until it does).
    pub device: String,
    run_started: Option<Instant>,
    run_ended: Option<f64>,
    session: Option<Session>,
    /// Engine threads asked to stop (a restart); joined when the app quits.
    stopping: Vec<JoinHandle<crate::Result<Summary>>>,
    pub plan: Plan,
    pub charts: Charts,
    pub log: Vec<LogLine>,
    /// Lines scrolled up from the bottom of the log.
    pub log_scroll: usize,
    pub checkpoints: Vec<(String, String, String)>,
    pub results: Vec<(String, f64, usize, f64)>,
    pub focus: Pane,
    /// Which of Log / Runs shows where only one fits.
    pub lower: Pane,
    pub zoom: bool,
    pub overlay: Overlay,
    pub window: Window,
    pub marker: MarkerKind,
    pub show_raw: bool,
    pub selected: usize,
    pub theme: Theme,
    pub theme_path: Option<PathBuf>,
    theme_text: String,
    options: Options,
    born: Instant,
    pub should_quit: bool,
    /// Attached to a run in another process (`tdmr attach`): nothing here controls it.
    pub read_only: bool,
    /// What `q` leads back to, when the workbench was opened from another screen.
    pub quit_hint: Option<String>,
    follow_stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

const LOG_MAX: usize = 5000;

impl App {
    pub fn new(config_path: PathBuf, overrides: Vec<String>, exp: Experiment, options: Options) -> App {
        let chain = crate::config::inherit::chain(&config_path).unwrap_or_default();
        let mut app = App {
            config_path,
            chain_texts: chain.into_iter().map(|l| l.text).collect(),
            overrides,
            plan: Plan::new(&exp),
            exp,
            next: None,
            pending: Vec::new(),
            applied: Vec::new(),
            config_error: None,
            foundation: FoundationState::NotLoaded,
            foundation_rx: None,
            run: RunState::Idle,
            run_dir: None,
            device: String::new(),
            run_started: None,
            run_ended: None,
            session: None,
            stopping: Vec::new(),
            charts: Charts::default(),
            log: Vec::new(),
            log_scroll: 0,
            checkpoints: Vec::new(),
            results: Vec::new(),
            focus: Pane::Schedule,
            lower: Pane::Log,
            zoom: false,
            overlay: Overlay::None,
            window: Window::Full,
            marker: MarkerKind::Braille,
            show_raw: true,
            selected: 0,
            theme: Theme::built_in(),
            theme_path: None,
            theme_text: String::new(),
            options,
            born: Instant::now(),
            should_quit: false,
            read_only: false,
            quit_hint: None,
            follow_stop: None,
        };
        app.device = app.exp.device.clone();
        let spec = app.options.theme.clone().unwrap_or_else(|| app.exp.theme.clone());
        app.set_theme(&spec);
        app.info(format!("config {} · press s to start, ? for keys", app.config_path.display()));
        app
    }

    // ---- log ----------------------------------------------------------------

    fn push_log(&mut self, level: Level, text: String) {
        self.log.push(LogLine {
            at_s: self.born.elapsed().as_secs_f64(),
            level,
            text,
        });
        if self.log.len() > LOG_MAX {
            self.log.drain(..self.log.len() - LOG_MAX);
        }
    }
    pub fn info(&mut self, t: impl Into<String>) {
        self.push_log(Level::Info, t.into());
    }
    pub fn warn(&mut self, t: impl Into<String>) {
        self.push_log(Level::Warn, t.into());
    }
    pub fn error(&mut self, t: impl Into<String>) {
        self.push_log(Level::Error, t.into());
    }

    // ---- theme --------------------------------------------------------------

    fn set_theme(&mut self, spec: &str) {
        let path = Theme::resolve(spec, &self.options.themes_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => match Theme::parse(&text, &path.display().to_string()) {
                Ok(t) => {
                    self.theme = if self.options.no_color { t.without_color() } else { t };
                    self.theme_text = text;
                }
                Err(e) => self.error(format!("theme: {e} (keeping {})", self.theme.name)),
            },
            Err(e) => self.error(format!("theme {}: {e} (keeping {})", path.display(), self.theme.name)),
        }
        self.theme_path = Some(path);
    }

    /// Re-read the theme file if it changed on disk.
    pub fn check_theme(&mut self) -> bool {
        let Some(path) = self.theme_path.clone() else { return false };
        match std::fs::read_to_string(&path) {
            Ok(text) if text != self.theme_text => {
                self.theme_text = text.clone();
                match Theme::parse(&text, &path.display().to_string()) {
                    Ok(t) => {
                        self.theme = if self.options.no_color { t.without_color() } else { t };
                        self.info(format!("theme {} reloaded", path.display()));
                    }
                    Err(e) => self.error(format!("theme: {e} (keeping the current colours)")),
                }
                true
            }
            _ => false,
        }
    }

    // ---- foundation -----------------------------------------------------------

    /// Load the foundation model on a worker thread to show what it is.
    pub fn load_foundation(&mut self) {
        let path = self.exp.foundation_path();
        let family = self.exp.foundation.family.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = Foundation::load(&path, &family, &candle_core::Device::Cpu)
                .map(|m| FoundationInfo {
                    variant: m.variant().to_string(),
                    params: m.param_count(),
                    feature_dim: m.feature_dim(),
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(r);
        });
        self.foundation = FoundationState::Loading { since: Instant::now() };
        self.foundation_rx = Some(rx);
    }

    // ---- the run ------------------------------------------------------------------

    pub fn progress(&self) -> Progress {
        let (stages_started, stage_running) = self.plan.distill_started();
        Progress {
            running: self.run.is_active(),
            stages_started,
            stage_running,
        }
    }

    pub fn elapsed_s(&self) -> Option<f64> {
        self.run_ended.or_else(|| self.run_started.map(|t| t.elapsed().as_secs_f64()))
    }

    pub fn start(&mut self) {
        if self.run.is_active() {
            self.warn("a run is already going: pause (space), abort (x) or restart (R)");
            return;
        }
        let out = self.options.out.clone().map(|o| {
            // A second run in the same session must not reuse the first one's directory.
            if o.join("metrics.jsonl").exists() {
                o.join(crate::engine::run_dir::timestamp())
            } else {
                o
            }
        });
        match RunDir::create(out.as_deref(), &self.exp.name) {
            Ok(dir) => {
                self.run_dir = Some(dir.root.clone());
                self.info(format!("run started → {}", dir.root.display()));
                let launch = Launch {
                    resume: None,
                    attended: true,
                };
                self.session = Some(Session::launch(self.exp.clone(), dir, launch));
                self.run = RunState::Running;
                self.run_started = Some(Instant::now());
                self.run_ended = None;
                self.charts = Charts::default();
                self.plan = Plan::new(&self.exp);
                self.checkpoints.clear();
                self.results.clear();
            }
            Err(e) => self.error(format!("cannot start: {e}")),
        }
    }

    /// Continue `dir` (the last run, by default) from its last good checkpoint: the
    /// history up to that checkpoint is replayed from its `metrics.jsonl` into the panes,
    /// then the engine picks up there. The open config's changes apply as on `tdmr run
    /// --resume`: what a running session could take, nothing else.
    pub fn resume(&mut self, dir: Option<PathBuf>) {
        if self.run.is_active() {
            self.warn("a run is going: abort it (x) before resuming another");
            return;
        }
        let Some(dir) = dir.or_else(|| self.run_dir.clone()) else {
            self.warn("no run to resume yet: start one (s), or open one with `tdmr tui --resume RUN_DIR`");
            return;
        };
        let (exp, run, resume) = match crate::engine::prepare_resume(&dir, Some(self.exp.clone())) {
            Ok(r) => r,
            Err(e) => return self.error(format!("cannot resume: {e}")),
        };
        self.stop_session();
        self.charts = Charts::default();
        self.plan = Plan::new(&exp);
        self.checkpoints.clear();
        self.results.clear();
        let offset = resume.restore.as_ref().map_or(0, |r| r.manifest.metrics_offset) as usize;
        let history = std::fs::read(run.file("metrics.jsonl")).unwrap_or_default();
        for line in String::from_utf8_lossy(&history[..offset.min(history.len())]).lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                self.on_engine(e);
            }
        }
        self.run_dir = Some(run.root.clone());
        let launch = Launch {
            resume: Some(resume),
            attended: true,
        };
        self.session = Some(Session::launch(exp, run, launch));
        self.read_only = false;
        self.run = RunState::Running;
        self.run_started = Some(Instant::now());
        self.run_ended = None;
    }

    /// Drive the app from a session started elsewhere (tests attach a scripted engine).
    pub fn attach(&mut self, session: Session) {
        self.run_dir = Some(session.run_dir.clone());
        self.session = Some(session);
        self.run = RunState::Running;
        self.run_started = Some(Instant::now());
        self.run_ended = None;
    }

    /// Show a run that trains in another process, from its run directory (read-only).
    pub fn attach_read_only(&mut self, session: Session, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.info(format!(
            "attached to {} (read-only: control the run where it runs)",
            session.run_dir.display()
        ));
        self.attach(session);
        self.read_only = true;
        self.follow_stop = Some(stop);
    }

    fn stop_following(&mut self) {
        if let Some(stop) = self.follow_stop.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn send(&mut self, cmd: Command) {
        if let Some(s) = &self.session {
            if s.commands.send(cmd).is_err() {
                self.warn("the engine has stopped");
            }
        }
    }

    fn toggle_pause(&mut self) {
        match self.run {
            RunState::Running => self.send(Command::Pause),
            RunState::Paused => self.send(Command::Resume),
            _ => self.warn("nothing is running"),
        }
    }

    /// Stop the engine (it finishes its step and writes its report) and forget it.
    fn stop_session(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.commands.send(Command::Abort);
            // Dropping the event receiver makes the engine stop sending (it never
            // blocks on a view); Abort stops it at its next step.
            self.stopping.push(s.handle);
        }
    }

    fn restart(&mut self) {
        if let Some(next) = self.next.take() {
            self.exp = next;
        }
        self.pending.clear();
        self.stop_session();
        self.run = RunState::Idle;
        self.info("restarting with the file's configuration");
        self.start();
    }

    /// The terminal is gone: let the running session train to the end (its events are
    /// no longer read; the engine records everything in the run directory and never
    /// waits for a view), then wait for every engine thread.
    pub fn finish_detached(&mut self) {
        self.stop_following();
        if let Some(Session {
            events, commands, handle, ..
        }) = self.session.take()
        {
            // Without a command sender a paused engine resumes by itself (nobody is left
            // to resume it); without an event receiver it stops sending.
            drop(commands);
            drop(events);
            let _ = handle.join();
        }
        for h in self.stopping.drain(..) {
            let _ = h.join();
        }
    }

    /// Wait for every engine thread (on quit): each stops at its next step.
    pub fn shutdown(&mut self) {
        self.stop_following();
        self.stop_session();
        for h in self.stopping.drain(..) {
            let _ = h.join();
        }
    }

    // ---- events from the engine ---------------------------------------------------------

    /// Drain the engine's and the loader's channels; `true` if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        if let Some(rx) = &self.foundation_rx {
            match rx.try_recv() {
                Ok(r) => {
                    self.foundation_rx = None;
                    match r {
                        Ok(info) => {
                            self.info(format!("foundation {} loaded", info.variant));
                            self.foundation = FoundationState::Loaded(info);
                        }
                        Err(e) => {
                            self.error(format!("foundation: {e}"));
                            self.foundation = FoundationState::Failed(e);
                        }
                    }
                    changed = true;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.foundation_rx = None;
                    self.foundation = FoundationState::Failed("the loader thread stopped".into());
                    changed = true;
                }
            }
        }
        let mut events = Vec::new();
        let mut finished = false;
        if let Some(s) = &self.session {
            // Bounded per poll so a flood of events cannot starve the keyboard.
            while events.len() < 4096 {
                match s.events.try_recv() {
                    Ok(e) => events.push(e),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        finished = true;
                        break;
                    }
                }
            }
        }
        changed |= !events.is_empty() || finished;
        for e in events {
            self.on_engine(e);
        }
        if finished {
            if let Some(s) = self.session.take() {
                self.stopping.push(s.handle);
            }
            if self.run.is_active() {
                self.run = RunState::Failed("the engine stopped without a final event".into());
                self.error("the engine thread stopped without a final event");
            }
        }
        changed
    }

    pub fn on_engine(&mut self, e: Event) {
        self.plan.on_event(&e);
        self.charts.on_event(&e);
        match &e {
            Event::RunStarted { run_dir, seed, device, .. } => {
                self.device = device.clone();
                self.info(format!("seed {seed} on {device}, writing to {run_dir}"));
            }
            Event::FoundationLoaded {
                variant,
                params,
                feature_dim,
                ..
            } => {
                self.foundation = FoundationState::Loaded(FoundationInfo {
                    variant: variant.clone(),
                    params: *params,
                    feature_dim: *feature_dim,
                })
            }
            Event::StageStarted {
                method,
                stage,
                epochs,
                steps_per_epoch,
                trainable_params,
            } => self.info(format!(
                "{method}/{stage}: {epochs} epochs × {steps_per_epoch} steps, {trainable_params} trainable"
            )),
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                loss,
                test_acc,
                ..
            } => {
                let t = test_acc.map(|a| format!(" test {:.1}%", 100.0 * a)).unwrap_or_default();
                self.info(format!("{method}/{stage} epoch {epoch}/{epochs} loss {:.4}{t}", loss.total));
            }
            Event::StageSkipped { method, stage, epoch } => self.warn(format!("{method}/{stage} skipped at epoch {epoch}")),
            Event::CacheBuilt { .. } | Event::DataLoaded { .. } | Event::TargetBuilt { .. } => self.info(e.describe().unwrap_or_default()),
            Event::Paused => {
                self.run = RunState::Paused;
                self.info("paused");
            }
            Event::Resumed => {
                self.run = RunState::Running;
                self.info("resumed");
            }
            Event::ConfigApplied { changes } => self.info(format!("config applied: {}", changes.join("; "))),
            Event::Checkpoint { method, stage, path } => {
                self.checkpoints.push((method.clone(), stage.clone(), path.clone()));
            }
            Event::Log { message } => self.info(message.clone()),
            Event::MethodDone {
                method,
                test_acc,
                trainable_params,
                wall_s,
                ..
            } => {
                self.results.push((method.clone(), *test_acc, *trainable_params, *wall_s));
                self.info(format!("{method} done: test {:.2}%", 100.0 * test_acc));
            }
            Event::Done { wall_s, .. } => {
                self.run = RunState::Done;
                self.run_ended = Some(*wall_s);
                self.info(format!("run complete in {:.1} min", wall_s / 60.0));
            }
            Event::Failed { message, reason } => {
                self.run_ended = self.elapsed_s();
                if *reason == FailReason::Aborted {
                    self.run = RunState::Aborted;
                    self.warn("run aborted; the run directory keeps its report and checkpoints");
                } else {
                    self.run = RunState::Failed(message.clone());
                    self.error(format!("run failed: {message}"));
                }
            }
            Event::RunResumed {
                checkpoint,
                position,
                changes,
            } => {
                self.run = RunState::Running;
                let from = checkpoint.as_deref().unwrap_or("no checkpoint");
                self.info(format!("resumed at {position} ({from})"));
                if !changes.is_empty() {
                    self.info(format!("taken on resuming: {}", changes.join("; ")));
                }
            }
            Event::Diverged { message, checkpoint } => {
                let last = checkpoint.as_deref().unwrap_or("none yet");
                self.error(format!(
                    "diverged: {message}. Last good checkpoint: {last}. Lower the lr in the config, then resume (space) to continue from it"
                ));
            }
            Event::CheckpointFailed { message, last_good, .. } => {
                let last = last_good.as_deref().unwrap_or("none yet");
                self.error(format!(
                    "checkpoint not written: {message}. The last good one is {last}. Free space or fix the directory, then resume (space)"
                ));
            }
            Event::Step { .. } => {}
        }
    }

    // ---- configuration ---------------------------------------------------------------

    /// Re-read the config file. Unchanged text is ignored unless `forced` (the reload key
    /// and SIGUSR1 re-report). An invalid file never changes the session.
    pub fn reload_config(&mut self, forced: bool) -> bool {
        if self.read_only {
            return false;
        }
        let chain = match crate::config::inherit::chain(&self.config_path) {
            Ok(c) => c,
            // Mid-rename, or deleted: keep everything, say so only when asked.
            Err(e) => {
                if forced {
                    self.error(e.to_string());
                }
                return forced;
            }
        };
        let texts: Vec<String> = chain.iter().map(|l| l.text.clone()).collect();
        if texts == self.chain_texts && !forced {
            return false;
        }
        self.chain_texts = texts;
        let parsed = Experiment::from_chain(&chain, &self.overrides);
        let new = match parsed {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                self.error(format!("{msg} — the session keeps its configuration"));
                self.config_error = Some(msg);
                return true;
            }
        };
        self.config_error = None;
        let progress = self.progress();
        let changes = live::diff(&self.exp, &new, &progress);
        if changes.is_empty() {
            self.pending.clear();
            self.next = None;
            if forced {
                self.info("config reloaded: no changes");
            }
            return true;
        }
        let (mut now, mut later) = (Vec::new(), Vec::new());
        for c in changes {
            match &c.verdict {
                Verdict::Live => now.push(c),
                Verdict::Restart => later.push(c),
                Verdict::Refused(why) => self.warn(format!("not applied: {c} ({why})")),
            }
        }
        let old_theme = self.exp.theme.clone();
        let merged = live::merge(&self.exp, &new, &progress);
        if !now.is_empty() {
            let list: Vec<String> = now.iter().map(|c| c.to_string()).collect();
            if self.run.is_active() {
                // The engine logs ConfigApplied when it takes them, at its next step.
                self.send(Command::Apply {
                    config: Box::new(merged.clone()),
                    changes: list,
                });
            } else {
                self.info(format!("config: {}", list.join("; ")));
            }
        }
        self.exp = merged;
        self.plan.rebuild(&self.exp);
        if self.exp.theme != old_theme && self.options.theme.is_none() {
            let t = self.exp.theme.clone();
            self.set_theme(&t);
        }
        self.applied = now;
        if !later.is_empty() {
            self.warn(format!(
                "{} change(s) wait for a restart (R): {}",
                later.len(),
                later.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
            ));
            self.next = Some(new);
        } else {
            self.next = None;
        }
        self.pending = later;
        true
    }

    fn edit_schedule(&mut self, op: StageOp) {
        let Some(row) = self.plan.rows.get(self.selected) else { return };
        let Some(i) = row.distill_index else {
            self.warn("only the tdmr distillation stages can be edited here (e edits the whole file)");
            return;
        };
        if row.state != RowState::Pending {
            self.warn(format!("{} has started: only pending stages change", row.stage));
            return;
        }
        let next_pending = self
            .plan
            .rows
            .get(self.selected + 1)
            .is_some_and(|r| r.distill_index.is_some() && r.state == RowState::Pending);
        if op == StageOp::SwapWithNext(i) && !next_pending {
            self.warn("the next stage is not a pending distillation stage");
            return;
        }
        let origin = self.config_path.display().to_string();
        let edited = std::fs::read_to_string(&self.config_path)
            .map_err(|e| crate::Error::io(&self.config_path, e))
            .and_then(|t| stage_edit::edit(&t, &origin, op))
            .and_then(|t| crate::engine::run_dir::write_text_atomic(&self.config_path, &t));
        match edited {
            Ok(()) => {
                self.info(format!("schedule edited in {origin}"));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("schedule edit: {e}")),
        }
    }

    fn move_selection(&mut self, up: bool) {
        match (self.focus, up) {
            (Pane::Log, true) => self.log_scroll = (self.log_scroll + 1).min(self.log.len().saturating_sub(1)),
            (Pane::Log, false) => self.log_scroll = self.log_scroll.saturating_sub(1),
            (_, true) => self.selected = self.selected.saturating_sub(1),
            (_, false) => self.selected = (self.selected + 1).min(self.plan.rows.len().saturating_sub(1)),
        }
    }

    fn cycle_focus(&mut self, forward: bool) {
        let i = PANES.iter().position(|p| *p == self.focus).unwrap_or(0);
        let n = PANES.len();
        self.focus = PANES[if forward { (i + 1) % n } else { (i + n - 1) % n }];
        if matches!(self.focus, Pane::Log | Pane::Runs) {
            self.lower = self.focus;
        }
    }

    // ---- keys ---------------------------------------------------------------

    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        use ratatui::crossterm::event::KeyCode;
        if let Overlay::Confirm(what) = self.overlay {
            self.overlay = Overlay::None;
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
                match what {
                    Confirm::Abort => {
                        self.send(Command::Abort);
                        self.info("aborting at the next step…");
                    }
                    Confirm::Quit => {
                        self.should_quit = true;
                        return Effect::Quit;
                    }
                    Confirm::Restart => self.restart(),
                }
            }
            return Effect::None;
        }
        if self.overlay == Overlay::Help {
            self.overlay = Overlay::None;
            return Effect::None;
        }
        let Some(action) = keymap::lookup(&key) else { return Effect::None };
        if self.read_only {
            use Action::*;
            match action {
                Quit if !self.zoom => {
                    self.should_quit = true;
                    return Effect::Quit;
                }
                Start | PauseResume | SkipStage | Abort | SaveCheckpoint | ReloadConfig | Restart | EditConfig | StageAdd | StageRemove
                | StageMoveUp | StageMoveDown => {
                    self.warn("attached read-only: control the run where it runs");
                    return Effect::None;
                }
                _ => {}
            }
        }
        match action {
            Action::Start => self.start(),
            Action::ResumeRun => self.resume(None),
            Action::PauseResume => self.toggle_pause(),
            Action::SkipStage if self.run.is_active() => {
                self.send(Command::SkipStage);
                self.info("skipping to the next stage…");
            }
            Action::SkipStage => self.warn("nothing is running"),
            Action::Abort if self.run.is_active() => self.overlay = Overlay::Confirm(Confirm::Abort),
            Action::Abort => self.warn("nothing is running"),
            Action::SaveCheckpoint if self.run.is_active() => {
                self.send(Command::Save);
                self.info("checkpoint requested");
            }
            Action::SaveCheckpoint => self.warn("nothing is running"),
            Action::ReloadConfig => {
                self.reload_config(true);
            }
            Action::Restart if self.next.is_some() || !self.run.is_active() => self.overlay = Overlay::Confirm(Confirm::Restart),
            Action::Restart => self.info("no change waits for a restart"),
            Action::EditConfig => {
                let line = self
                    .plan
                    .rows
                    .get(self.selected)
                    .and_then(|r| r.distill_index)
                    .and_then(|i| stage_edit::stage_line(self.config_text(), i));
                return Effect::OpenEditor {
                    path: self.config_path.clone(),
                    line,
                };
            }
            Action::ReloadFoundation => self.load_foundation(),
            Action::NextPane => self.cycle_focus(true),
            Action::PrevPane => self.cycle_focus(false),
            Action::Zoom => self.zoom = !self.zoom,
            Action::Up => self.move_selection(true),
            Action::Down => self.move_selection(false),
            Action::StageAdd => self.schedule_op(StageOp::Duplicate),
            Action::StageRemove => self.schedule_op(StageOp::Remove),
            Action::StageMoveUp => {
                if let Some(i) = self.selected_distill() {
                    if i > 0 && self.selected > 0 {
                        self.selected -= 1;
                        self.edit_schedule(StageOp::SwapWithNext(i - 1));
                    }
                }
            }
            Action::StageMoveDown => {
                if let Some(i) = self.selected_distill() {
                    self.edit_schedule(StageOp::SwapWithNext(i));
                    self.selected = (self.selected + 1).min(self.plan.rows.len().saturating_sub(1));
                }
            }
            Action::ToggleWindow => {
                self.window = match self.window {
                    Window::Full => Window::Recent,
                    Window::Recent => Window::Full,
                }
            }
            Action::ToggleMarker => {
                self.marker = match self.marker {
                    MarkerKind::Braille => MarkerKind::Block,
                    MarkerKind::Block => MarkerKind::Dot,
                    MarkerKind::Dot => MarkerKind::Braille,
                }
            }
            Action::ToggleRaw => self.show_raw = !self.show_raw,
            Action::NextTheme => {
                let i = BUNDLED
                    .iter()
                    .position(|n| *n == self.theme.name)
                    .map_or(0, |i| (i + 1) % BUNDLED.len());
                self.set_theme(BUNDLED[i]);
                self.info(format!("theme {}", self.theme.name));
            }
            Action::Help => self.overlay = Overlay::Help,
            Action::Quit if self.zoom => self.zoom = false,
            Action::Quit if self.run.is_active() => self.overlay = Overlay::Confirm(Confirm::Quit),
            Action::Quit => {
                self.should_quit = true;
                return Effect::Quit;
            }
        }
        Effect::None
    }

    fn selected_distill(&self) -> Option<usize> {
        self.plan.rows.get(self.selected).and_then(|r| r.distill_index)
    }

    fn schedule_op(&mut self, op: fn(usize) -> StageOp) {
        match self.selected_distill() {
            Some(i) => self.edit_schedule(op(i)),
            None => self.warn("select a tdmr distillation stage first (↑/↓ in the Schedule pane)"),
        }
    }

    pub fn config_file(&self) -> &Path {
        &self.config_path
    }

    /// The text the session's config came from (the file itself, not its bases).
    fn config_text(&self) -> &str {
        self.chain_texts.first().map_or("", String::as_str)
    }

    /// The config file and the bases it extends: every file a reload reads.
    pub fn config_files(&self) -> Vec<PathBuf> {
        std::iter::once(self.config_path.clone())
            .chain(self.exp.bases.iter().cloned())
            .collect()
    }
}
