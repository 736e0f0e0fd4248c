//! The foundation picker (`o`): a file browser over checkpoints, with what `tdmr
//! inspect` finds in the highlighted file beside it, so a checkpoint can be looked at
//! before it is chosen.

use std::path::{Path, PathBuf};

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::PaneCtx;
use crate::models::inspect;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// What the highlighted file holds, as text lines, or why it cannot be read.
type Preview = std::result::Result<Vec<(String, String)>, String>;

pub struct Picker {
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    pub selected: usize,
    preview: Option<(PathBuf, Preview)>,
}

/// What a key did in the picker.
#[derive(Debug, Clone, PartialEq)]
pub enum Picked {
    /// Still browsing.
    Browsing,
    Closed,
    Chosen(PathBuf),
}

/// The checkpoint formats `Foundation::load` reads.
pub fn is_checkpoint(name: &str) -> bool {
    [".safetensors", ".safetensors.index.json", ".pth", ".pt", ".bin"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

impl Picker {
    /// A browser at `dir` (the current foundation's directory), highlighting `current`.
    pub fn open(dir: &Path, current: Option<&Path>) -> Self {
        let mut p = Picker {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
            selected: 0,
            preview: None,
        };
        p.list();
        if let Some(i) = current.and_then(|c| p.entries.iter().position(|e| e.path == c)) {
            p.selected = i;
        }
        p.refresh_preview();
        p
    }

    /// `..`, the sub-directories, then the checkpoints, each group by name.
    fn list(&mut self) {
        let mut dirs = Vec::new();
        let mut files = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('.') {
                    continue;
                }
                let path = e.path();
                if path.is_dir() {
                    dirs.push(Entry { name, path, is_dir: true });
                } else if is_checkpoint(&name) {
                    files.push(Entry { name, path, is_dir: false });
                }
            }
        }
        dirs.sort_by(|a, b| a.name.cmp(&b.name));
        files.sort_by(|a, b| a.name.cmp(&b.name));
        self.entries.clear();
        if let Some(parent) = self.dir.parent() {
            self.entries.push(Entry {
                name: "..".into(),
                path: parent.to_path_buf(),
                is_dir: true,
            });
        }
        self.entries.extend(dirs);
        self.entries.extend(files);
        self.selected = 0;
    }

    fn refresh_preview(&mut self) {
        let Some(e) = self.entries.get(self.selected).filter(|e| !e.is_dir) else {
            self.preview = None;
            return;
        };
        if self.preview.as_ref().is_some_and(|(p, _)| p == &e.path) {
            return;
        }
        let preview = inspect::inspect(&e.path).map_err(|err| err.to_string()).map(|i| {
            let d = &i.detected;
            vec![
                ("family".into(), d.family.clone()),
                ("variant".into(), d.variant.clone()),
                ("params".into(), format!("{:.2}M", i.parameters as f64 / 1e6)),
                ("input".into(), format!("{}²", d.native_input)),
                ("mean".into(), d.mean.map(|v| format!("{v:.3}")).join(" ")),
                ("std".into(), d.std.map(|v| format!("{v:.3}")).join(" ")),
                ("features".into(), format!("d{}", d.feature_dim)),
            ]
        });
        self.preview = Some((e.path.clone(), preview));
    }

    /// The family the preview found for the highlighted file, if it could read one.
    pub fn detected_family(&self) -> Option<&str> {
        match &self.preview {
            Some((_, Ok(lines))) => lines.iter().find(|(k, _)| k == "family").map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    pub fn on_key(&mut self, code: ratatui::crossterm::event::KeyCode) -> Picked {
        use ratatui::crossterm::event::KeyCode::*;
        match code {
            Up | Char('k') => self.selected = self.selected.saturating_sub(1),
            Down | Char('j') => self.selected = (self.selected + 1).min(self.entries.len().saturating_sub(1)),
            Backspace | Left | Char('h') => {
                if let Some(parent) = self.dir.parent().map(Path::to_path_buf) {
                    self.dir = parent;
                    self.list();
                }
            }
            Enter | Right | Char('l') => match self.entries.get(self.selected).cloned() {
                Some(e) if e.is_dir => {
                    self.dir = e.path;
                    self.list();
                }
                Some(e) => return Picked::Chosen(e.path),
                None => {}
            },
            Esc | Char('q') | Char('o') => return Picked::Closed,
            _ => {}
        }
        self.refresh_preview();
        Picked::Browsing
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let [v] = Layout::vertical([Constraint::Percentage(80)]).flex(Flex::Center).areas(area);
        let [rect] = Layout::horizontal([Constraint::Percentage(90)]).flex(Flex::Center).areas(v);
        f.render_widget(Clear, rect);
        let title = Line::from(vec![
            Span::raw(" Foundation: "),
            Span::styled(format!("{} · enter choose · ← up · esc ", self.dir.display()), t.muted()),
        ]);
        let outer = ctx.block(title);
        let inner = outer.inner(rect);
        f.render_widget(outer, rect);
        let [list_area, preview_area] = Layout::horizontal([Constraint::Percentage(50), Constraint::Min(20)]).areas(inner);
        let height = list_area.height as usize;
        let skip = (self.selected + 1).saturating_sub(height);
        let mut lines: Vec<Line> = self
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .take(height)
            .map(|(i, e)| {
                let name = if e.is_dir { format!("{}/", e.name) } else { e.name.clone() };
                let style = if e.is_dir { t.accent() } else { t.text() };
                let line = Line::from(Span::styled(name, style));
                if i == self.selected {
                    line.style(t.selected())
                } else {
                    line
                }
            })
            .collect();
        if self.entries.len() <= usize::from(self.dir.parent().is_some()) {
            lines.push(Line::from(Span::styled("no checkpoints here", t.muted())));
        }
        f.render_widget(Paragraph::new(lines), list_area);
        let preview: Vec<Line> = match &self.preview {
            None => vec![Line::from(Span::styled("a directory: enter opens it", t.muted()))],
            Some((_, Ok(rows))) => rows
                .iter()
                .map(|(k, v)| Line::from(vec![Span::styled(format!("{k:<9}"), t.muted()), Span::styled(v.clone(), t.text())]))
                .collect(),
            Some((_, Err(e))) => vec![Line::from(Span::styled(format!("✗ {e}"), t.error()))],
        };
        f.render_widget(Paragraph::new(preview).wrap(Wrap { trim: true }), preview_area);
    }
}
