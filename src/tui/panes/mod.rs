//! The workbench's panes, one type each: the state it shows, how events and keys
//! change it, and how it draws. The layout around them is in `view`.

use ratatui::text::Line;
use ratatui::widgets::{Block, Borders};

use super::theme::Theme;

pub mod charts;
pub mod compare;
pub mod editor;
pub mod fields;
pub mod foundation;
pub mod log;
pub mod picker;
pub mod reprogrammer;
pub mod runs;
pub mod schedule;

/// What every pane draws with: the colours, and whether it has the keys.
pub struct PaneCtx<'a> {
    pub theme: &'a Theme,
    pub focused: bool,
}

impl PaneCtx<'_> {
    /// The pane's border and title, highlighted when it has the keys.
    pub fn block<'b>(&self, title: impl Into<Line<'b>>) -> Block<'b> {
        Block::default()
            .borders(Borders::ALL)
            .border_style(self.theme.border(self.focused))
            .title(title.into().style(self.theme.title()))
    }
}

/// `1:02:03`, `4:05`.
pub fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
