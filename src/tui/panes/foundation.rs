//! The Foundation pane: the checkpoint the config names, loaded on a worker thread to
//! show what it is, or as the engine reports it.

use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Instant;

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Wrap};
use ratatui::Frame;

use super::fields::{typed, Choices, Field};
use super::PaneCtx;
use crate::config::stage_edit::Setting;
use crate::config::Experiment;
use crate::engine::describe::Level;
use crate::engine::Event;
use crate::models::foundation::Foundation;

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

pub struct FoundationPane {
    pub state: FoundationState,
    loader: Option<Receiver<Result<FoundationInfo, String>>>,
    /// The selected line, for `enter`.
    pub selected: usize,
}

/// What `enter` does on a line of the pane.
#[derive(Debug, Clone, PartialEq)]
pub enum LineEdit {
    /// Browse to another checkpoint.
    PickFile,
    /// Edit these values in place.
    Values(Vec<Field>),
    /// Browse to another ImageFolder.
    PickData,
}

const LINES: usize = 4;

impl Default for FoundationPane {
    fn default() -> Self {
        FoundationPane {
            state: FoundationState::NotLoaded,
            loader: None,
            selected: 0,
        }
    }
}

impl FoundationPane {
    pub fn move_selection(&mut self, up: bool) {
        self.selected = if up {
            self.selected.saturating_sub(1)
        } else {
            (self.selected + 1).min(LINES - 1)
        };
    }

    /// What the selected line edits.
    pub fn line_edit(&self) -> LineEdit {
        match self.selected {
            0 => LineEdit::PickFile,
            1 => LineEdit::Values(vec![Field {
                at: Setting::Key("foundation", "family"),
                choices: Choices::Family,
            }]),
            2 => LineEdit::Values(vec![typed("foundation", "image_size"), typed("foundation", "inner_size")]),
            _ => LineEdit::PickData,
        }
    }

    /// Load the foundation `exp` names on a worker thread.
    pub fn load(&mut self, exp: &Experiment) {
        let path = exp.foundation_path();
        let family = exp.foundation.family;
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
        self.state = FoundationState::Loading { since: Instant::now() };
        self.loader = Some(rx);
    }

    /// The loader's answer, once it has one: `None` while it is still loading (or
    /// nothing was asked); else the state has changed, with the line to log, if any.
    pub fn poll(&mut self) -> Option<Option<(Level, String)>> {
        let rx = self.loader.as_ref()?;
        let said = match rx.try_recv() {
            Ok(Ok(info)) => {
                let line = (Level::Info, format!("foundation {} loaded", info.variant));
                self.state = FoundationState::Loaded(info);
                Some(line)
            }
            Ok(Err(e)) => {
                let line = (Level::Error, format!("foundation: {e}"));
                self.state = FoundationState::Failed(e);
                Some(line)
            }
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => {
                self.state = FoundationState::Failed("the loader thread stopped".into());
                None
            }
        };
        self.loader = None;
        Some(said)
    }

    pub fn is_loading(&self) -> bool {
        matches!(self.state, FoundationState::Loading { .. })
    }

    pub fn on_event(&mut self, e: &Event) {
        if let Event::FoundationLoaded {
            variant,
            params,
            feature_dim,
            ..
        } = e
        {
            self.state = FoundationState::Loaded(FoundationInfo {
                variant: variant.clone(),
                params: *params,
                feature_dim: *feature_dim,
            })
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx, exp: &Experiment) {
        let t = ctx.theme;
        let fd = &exp.foundation;
        let path = exp.foundation_path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let width = area.width.saturating_sub(10) as usize;
        let (family, sizes) = match &self.state {
            FoundationState::NotLoaded => (Span::styled(format!("{} · f loads", fd.family), t.muted()), String::new()),
            FoundationState::Loading { since } => (
                Span::styled(format!("{} · loading… {:.1}s", fd.family, since.elapsed().as_secs_f64()), t.warn()),
                String::new(),
            ),
            FoundationState::Loaded(i) => (
                Span::styled(format!("✓ {}", i.variant), t.good()),
                format!(" · {:.2}M · d{}", i.params as f64 / 1e6, i.feature_dim),
            ),
            FoundationState::Failed(e) => (Span::styled(format!("✗ {e}"), t.error()), String::new()),
        };
        // Labels only where they fit beside the values (not at 80 columns).
        let labelled = area.width >= 40;
        let label = |k: &str| {
            if labelled {
                Span::styled(format!("{k:<8}"), t.muted())
            } else {
                Span::raw("")
            }
        };
        let width = if labelled { width } else { area.width.saturating_sub(2) as usize };
        let mut lines = vec![
            Line::from(vec![label("file"), Span::styled(shorten(&name, width), t.text())]),
            Line::from(vec![label("family"), family]),
            Line::from(vec![
                label("input"),
                Span::styled(format!("{}² in{sizes}", fd.image_size), t.text()),
            ]),
            Line::from(vec![label("data"), Span::styled(shorten(&data_summary(exp), width), t.text())]),
        ];
        if ctx.focused {
            if let Some(l) = lines.get_mut(self.selected) {
                *l = std::mem::take(l).style(t.selected());
            }
        }
        let mut p = Paragraph::new(lines).block(ctx.block(" Foundation "));
        // An error message is worth its wrapped lines.
        if matches!(self.state, FoundationState::Failed(_)) {
            p = p.wrap(Wrap { trim: true });
        }
        f.render_widget(p, area);
    }
}

/// `clipart · k10`: the data's folder (or kind) and the labelled images per class.
fn data_summary(exp: &Experiment) -> String {
    let path = exp.data_path();
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let name = name.trim_end_matches(".csv.gz");
    format!("{name} · k{} · O picks", exp.data.k)
}

/// `long-file-na…tensors`: keep both ends of a name that does not fit.
fn shorten(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 5 {
        return s.to_string();
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let chars: Vec<char> = s.chars().collect();
    format!(
        "{}…{}",
        chars[..head].iter().collect::<String>(),
        chars[n - tail..].iter().collect::<String>()
    )
}
