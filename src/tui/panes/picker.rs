//! The pickers: a browser over checkpoints (`o`), with what `tdmr inspect` finds in
//! the highlighted file beside it, and over folders for the data (`O`), with the
//! highlighted ImageFolder's classes and images per class, so either can be looked at
//! before it is chosen.

use std::path::{Path, PathBuf};

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::PaneCtx;
use crate::data::image_folder;
use crate::models::inspect;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// What the highlighted file holds, as text lines, or why it cannot be read.
type Preview = std::result::Result<Vec<(String, String)>, String>;

/// What is being picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Browse {
    /// A foundation checkpoint file.
    Foundation,
    /// An ImageFolder root that can give `k` labelled images of every class, after the
    /// test and validation fractions are held out.
    Data {
        k: usize,
        test_fraction: f64,
        validation_fraction: f64,
    },
}

pub struct Picker {
    pub browse: Browse,
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    pub selected: usize,
    preview: Option<(PathBuf, Preview)>,
    /// Why the highlighted folder cannot be the data (its smallest class is too small).
    pub refusal: Option<String>,
    /// The highlighted checkpoint's native input side, where inspect finds one.
    native: Option<usize>,
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
    /// A checkpoint browser at `dir` (the current foundation's directory), highlighting
    /// `current`.
    pub fn open(dir: &Path, current: Option<&Path>) -> Self {
        Self::browse(Browse::Foundation, dir, current)
    }

    /// A browser for `what` at `dir`, highlighting `current`.
    pub fn browse(what: Browse, dir: &Path, current: Option<&Path>) -> Self {
        let mut p = Picker {
            browse: what,
            dir: dir.to_path_buf(),
            entries: Vec::new(),
            selected: 0,
            preview: None,
            refusal: None,
            native: None,
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
                } else if self.browse == Browse::Foundation && is_checkpoint(&name) {
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
        let highlighted = self.entries.get(self.selected).filter(|e| e.name != "..");
        let Some(e) = highlighted.filter(|e| !e.is_dir || self.browse != Browse::Foundation) else {
            self.preview = None;
            self.refusal = None;
            self.native = None;
            return;
        };
        if self.preview.as_ref().is_some_and(|(p, _)| p == &e.path) {
            return;
        }
        let path = e.path.clone();
        let preview = match self.browse {
            Browse::Foundation => {
                let (preview, native) = checkpoint_preview(&path);
                self.native = native;
                preview
            }
            Browse::Data {
                k,
                test_fraction,
                validation_fraction,
            } => {
                let (preview, refusal) = data_preview(&path, k, test_fraction, validation_fraction);
                self.refusal = refusal;
                preview
            }
        };
        self.preview = Some((path, preview));
    }

    /// The native input side the preview found for the highlighted checkpoint.
    pub fn native_input(&self) -> Option<usize> {
        self.native
    }

    /// The family the preview found for the highlighted file, if it could read one.
    pub fn detected_family(&self) -> Option<&str> {
        match &self.preview {
            Some((_, Ok(lines))) => lines.iter().find(|(k, _)| k == "family").map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    /// Whether the highlighted folder reads as an ImageFolder (the data picker chooses
    /// it with `enter`; any other folder opens).
    fn data_here(&self) -> bool {
        matches!(self.browse, Browse::Data { .. })
            && self
                .preview
                .as_ref()
                .is_some_and(|(p, r)| r.is_ok() && Some(p) == self.entries.get(self.selected).map(|e| &e.path))
    }

    pub fn on_key(&mut self, code: ratatui::crossterm::event::KeyCode) -> Picked {
        use crate::tui::keymap::{in_context, PickKey, PICKER_KEYS};
        match in_context(PICKER_KEYS, code) {
            Some(PickKey::Up) => self.selected = self.selected.saturating_sub(1),
            Some(PickKey::Down) => self.selected = (self.selected + 1).min(self.entries.len().saturating_sub(1)),
            Some(PickKey::Parent) => {
                if let Some(parent) = self.dir.parent().map(Path::to_path_buf) {
                    self.dir = parent;
                    self.list();
                }
            }
            Some(PickKey::Choose) if self.data_here() && self.refusal.is_none() => {
                return Picked::Chosen(self.entries[self.selected].path.clone());
            }
            // A refused folder keeps the picker open: the preview already says why.
            Some(PickKey::Choose) if self.data_here() => {}
            Some(PickKey::Choose | PickKey::Open) => match self.entries.get(self.selected).cloned() {
                Some(e) if e.is_dir => {
                    self.dir = e.path;
                    self.list();
                }
                Some(e) => return Picked::Chosen(e.path),
                None => {}
            },
            Some(PickKey::Close) => return Picked::Closed,
            None => {}
        }
        self.refresh_preview();
        Picked::Browsing
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let [v] = Layout::vertical([Constraint::Percentage(80)]).flex(Flex::Center).areas(area);
        let [rect] = Layout::horizontal([Constraint::Percentage(90)]).flex(Flex::Center).areas(v);
        f.render_widget(Clear, rect);
        let (what, keys) = match self.browse {
            Browse::Foundation => (" Foundation: ", "enter choose · ← up · esc"),
            Browse::Data { .. } => (" Data: ", "enter choose · → open · ← up · esc"),
        };
        let title = Line::from(vec![
            Span::raw(what),
            Span::styled(format!("{} · {keys} ", self.dir.display()), t.muted()),
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
            let none = match self.browse {
                Browse::Foundation => "no checkpoints here",
                Browse::Data { .. } => "no folders here",
            };
            lines.push(Line::from(Span::styled(none, t.muted())));
        }
        f.render_widget(Paragraph::new(lines), list_area);
        let mut preview: Vec<Line> = match &self.preview {
            None => vec![Line::from(Span::styled("a directory: enter opens it", t.muted()))],
            Some((_, Ok(rows))) => rows
                .iter()
                .map(|(k, v)| Line::from(vec![Span::styled(format!("{k:<9}"), t.muted()), Span::styled(v.clone(), t.text())]))
                .collect(),
            Some((_, Err(e))) => vec![Line::from(Span::styled(format!("✗ {e}"), t.error()))],
        };
        if let Some(why) = &self.refusal {
            preview.insert(0, Line::from(Span::styled(format!("✗ {why}"), t.error())));
        }
        f.render_widget(Paragraph::new(preview).wrap(Wrap { trim: true }), preview_area);
    }
}

/// What `tdmr inspect` finds in a checkpoint.
fn checkpoint_preview(path: &Path) -> (Preview, Option<usize>) {
    let inspected = inspect::inspect(path);
    let native = inspected.as_ref().ok().map(|i| i.detected.native_input);
    let preview = inspected.map_err(|err| err.to_string()).map(|i| {
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
    (preview, native)
}

/// An ImageFolder's classes with their image counts, and why it cannot give `k`
/// labelled images of every class, if it cannot.
fn data_preview(root: &Path, k: usize, test_fraction: f64, validation_fraction: f64) -> (Preview, Option<String>) {
    let counts = match image_folder::class_counts(root) {
        Ok(c) => c,
        Err(e) => return (Err(e.to_string()), None),
    };
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    let smallest = counts.iter().min_by_key(|(_, n)| *n).cloned().unwrap_or_default();
    let (n_test, n_val, pool) = image_folder::held_out(smallest.1, test_fraction, validation_fraction);
    let refusal = (k == 0 || k > pool).then(|| {
        format!(
            "data.k = {k} does not fit: class `{}` has {} images, {n_test} held out for testing and {n_val} for validation, leaving {pool}",
            smallest.0, smallest.1
        )
    });
    let mut rows = vec![("classes".to_string(), format!("{} · {total} images", counts.len()))];
    rows.extend(counts.into_iter().map(|(name, n)| (name, n.to_string())));
    (Ok(rows), refusal)
}
