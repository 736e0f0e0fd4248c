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
use crate::engine::describe::Described;
use crate::engine::run_dir::RunDir;
use crate::engine::{Command, Event, FailReason, Launch, Session, Summary};
use crate::models::foundation::Foundation;

mod config_sync;
mod engine_events;
mod keys;
mod run;

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

pub use crate::engine::describe::Level;

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

/// The workbench's view toggles: which pane has the keys, which lower pane shows where
/// only one fits, zoom, the overlay, and how the charts draw.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewState {
    pub focus: Pane,
    /// Which of Log / Runs shows where only one fits.
    pub lower: Pane,
    pub zoom: bool,
    pub overlay: Overlay,
    pub window: Window,
    pub marker: MarkerKind,
    pub show_raw: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        ViewState {
            focus: Pane::Schedule,
            lower: Pane::Log,
            zoom: false,
            overlay: Overlay::None,
            window: Window::Full,
            marker: MarkerKind::Braille,
            show_raw: true,
        }
    }
}

/// A checkpoint the run wrote, for the Runs pane.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub method: String,
    pub stage: String,
    pub path: String,
}

/// A finished method, for the Runs pane.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRow {
    pub method: String,
    pub test_acc: f64,
    pub trainable_params: usize,
    pub wall_s: f64,
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
    pub checkpoints: Vec<CheckpointRow>,
    pub results: Vec<MethodRow>,
    /// What is shown and how: focus, zoom, overlays, chart window and style.
    pub view: ViewState,
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
            view: ViewState::default(),
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
        let family = self.exp.foundation.family;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = Foundation::load(&path, family, &candle_core::Device::Cpu)
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
