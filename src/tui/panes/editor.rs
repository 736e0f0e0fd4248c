//! Editing one config value in place: a one-line input pre-filled with the current
//! value. The new value is checked by the same loader as the file (a copy of the file
//! with the value set is loaded, bases included) before anything is written.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::PaneCtx;

pub struct FieldEditor {
    pub table: &'static str,
    pub key: &'static str,
    pub input: String,
    /// The validator's message for the last value tried; nothing was written.
    pub error: Option<String>,
}

/// What a key did in the editor.
#[derive(Debug, Clone, PartialEq)]
pub enum Edited {
    Typing,
    Cancelled,
    /// The value as typed, to check and write.
    Submitted(String),
}

impl FieldEditor {
    pub fn new(table: &'static str, key: &'static str, current: String) -> Self {
        FieldEditor {
            table,
            key,
            input: current,
            error: None,
        }
    }

    pub fn on_key(&mut self, code: ratatui::crossterm::event::KeyCode) -> Edited {
        use ratatui::crossterm::event::KeyCode::*;
        match code {
            Esc => return Edited::Cancelled,
            Enter => return Edited::Submitted(self.input.trim().to_string()),
            Backspace => {
                self.input.pop();
            }
            Char(c) => self.input.push(c),
            _ => {}
        }
        Edited::Typing
    }

    /// The typed text as a TOML value: a number, boolean or quoted string as written,
    /// anything else as a string (`full`, `cosine`).
    pub fn value(text: &str) -> toml_edit::Value {
        text.parse::<toml_edit::Value>().unwrap_or_else(|_| text.into())
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let height = if self.error.is_some() { 5 } else { 3 };
        let [_, rect] = Layout::vertical([Constraint::Min(0), Constraint::Length(height)]).areas(area);
        f.render_widget(Clear, rect);
        let mut lines = vec![Line::from(vec![
            Span::styled(format!("{}.{} = ", self.table, self.key), t.muted()),
            Span::styled(format!("{}█", self.input), t.text()),
        ])];
        if let Some(e) = &self.error {
            lines.push(Line::from(Span::styled(format!("✗ {e}"), t.error())));
        }
        let block = ctx.block(" Edit · enter saves · esc cancels ");
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block), rect);
    }
}
