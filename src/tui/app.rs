//! The workbench: a shell that owns its components and routes keys, engine events and
//! file changes to them. The session is a [`RunHandle`], the configuration a
//! [`ConfigState`], and each pane a type in `panes` with its own state, update and
//! draw. The terminal and the event loop are in `mod`, the layout in `view`.

use std::path::{Path, PathBuf};

use ratatui::crossterm::event::KeyEvent;

use super::keymap::{self, Action};
use super::panes::charts::{ChartView, Charts, MarkerKind, Window};
use super::panes::compare::ComparePane;
use super::panes::editor::{Edited, FieldEditor};
use super::panes::fields::{self, Field};
use super::panes::foundation::{FoundationPane, LineEdit};
use super::panes::log::LogPane;
use super::panes::picker::{Browse, Picked, Picker};
use super::panes::reprogrammer::ReprogrammerPane;
use super::panes::runs::RunsPane;
use super::panes::schedule::SchedulePane;
use super::plan::RowState;
use super::theme::{Theme, BUNDLED};
use crate::config::live::Progress;
use crate::config::stage_edit::{self, StageOp};
use crate::config::Experiment;
use crate::engine::describe::Described;
use crate::engine::run_dir::RunDir;
use crate::engine::{Command, Event, Launch, Session};

mod config_state;
mod config_sync;
mod engine_events;
mod keys;
mod run;
mod run_handle;
mod steer;

use steer::Steer;

pub use super::panes::foundation::{FoundationInfo, FoundationState};
pub use super::panes::log::LogLine;
pub use super::panes::runs::{CheckpointRow, MethodRow};
pub use crate::engine::describe::Level;
pub use config_state::{ConfigState, Reload};
pub use run_handle::{RunHandle, RunState};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Foundation,
    Reprogrammer,
    Schedule,
    Charts,
    Log,
    Runs,
    /// Teacher vs target: per-class results of the finished methods.
    Compare,
}

pub const PANES: [Pane; 7] = [
    Pane::Foundation,
    Pane::Reprogrammer,
    Pane::Schedule,
    Pane::Charts,
    Pane::Log,
    Pane::Runs,
    Pane::Compare,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Abort,
    Quit,
    Restart,
    /// Take the chosen checkpoint's native input size for `foundation.image_size`.
    NativeSize(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    None,
    Help,
    Confirm(Confirm),
}

/// What the event loop must do for the app (things that need the terminal).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    OpenEditor { path: PathBuf, line: Option<usize> },
    Quit,
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

impl ViewState {
    pub fn charts(&self) -> ChartView {
        ChartView {
            window: self.window,
            marker: self.marker,
            show_raw: self.show_raw,
        }
    }
}

pub struct App {
    pub config: ConfigState,
    pub run: RunHandle,
    pub foundation: FoundationPane,
    pub schedule: SchedulePane,
    pub charts: Charts,
    pub log: LogPane,
    pub runs: RunsPane,
    pub compare: ComparePane,
    /// What is shown and how: focus, zoom, overlays, chart window and style.
    pub view: ViewState,
    pub theme: Theme,
    pub theme_path: Option<PathBuf>,
    theme_text: String,
    options: Options,
    pub should_quit: bool,
    /// What `q` leads back to, when the workbench was opened from another screen.
    pub quit_hint: Option<String>,
    /// The stage `N` asked to skip to: every stage that starts before it is skipped.
    skip_to: Option<(String, String)>,
    /// The foundation (`o`) or data (`O`) picker, while it is open.
    pub picker: Option<Picker>,
    pub reprogrammer: ReprogrammerPane,
    /// The in-place editor, while a value is being edited.
    pub editor: Option<FieldEditor>,
    /// The config file's texts before each of this session's in-place edits (ctrl-z).
    undo: Vec<String>,
}

impl App {
    pub fn new(config_path: PathBuf, overrides: Vec<String>, exp: Experiment, options: Options) -> App {
        let mut app = App {
            run: RunHandle::new(exp.device.clone()),
            schedule: SchedulePane::new(&exp),
            config: ConfigState::new(config_path, overrides, exp),
            foundation: FoundationPane::default(),
            charts: Charts::default(),
            log: LogPane::default(),
            runs: RunsPane::default(),
            compare: ComparePane::default(),
            view: ViewState::default(),
            theme: Theme::built_in(),
            theme_path: None,
            theme_text: String::new(),
            options,
            should_quit: false,
            quit_hint: None,
            skip_to: None,
            picker: None,
            reprogrammer: ReprogrammerPane::default(),
            editor: None,
            undo: Vec::new(),
        };
        let spec = app.options.theme.clone().unwrap_or_else(|| app.config.exp.theme.clone());
        app.set_theme(&spec);
        app.info(format!("config {} · press s to start, ? for keys", app.config.path.display()));
        app
    }

    // ---- log ----------------------------------------------------------------

    fn push_log(&mut self, level: Level, text: String) {
        self.log.push(level, text);
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
        self.foundation.load(&self.config.exp);
    }

    pub fn config_file(&self) -> &Path {
        self.config.file()
    }

    /// The config file and the bases it extends: every file a reload reads.
    pub fn config_files(&self) -> Vec<PathBuf> {
        self.config.files()
    }

    /// How far the run is, for deciding which config changes can still apply.
    pub fn progress(&self) -> Progress {
        let (stages_started, stage_running) = self.schedule.plan.distill_started();
        Progress {
            running: self.run.is_active(),
            stages_started,
            stage_running,
        }
    }

    pub fn elapsed_s(&self) -> Option<f64> {
        self.run.elapsed_s()
    }
}
