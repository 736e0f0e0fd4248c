//! Editing one config value in place: a one-line input pre-filled with the current
//! value. The new value is checked by the same loader as the file (a copy of the file
//! with the value set is loaded, bases included) before anything is written.
//!
//! A line may stand for several values (`prompt` is its kind and its width): `tab`
//! moves between them. Enums and switches are cycled with `←`/`→`, never typed, and a
//! number never holds a `u`, so `u` is free to undo the session's last edit here.

use ratatui::crossterm::event::KeyCode;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::fields::Field;
use super::PaneCtx;
use crate::config::stage_edit::Setting;
use crate::tui::keymap::{in_context, EditKey, EDITOR_KEYS};

pub struct FieldEditor {
    /// The line's values and what each is now; `at` is the one being edited.
    fields: Vec<(Field, String)>,
    at: usize,
    pub input: String,
    /// The validator's message for the last value tried; nothing was written.
    pub error: Option<String>,
}

/// What a key did in the editor.
#[derive(Debug, Clone, PartialEq)]
pub enum Edited {
    Typing,
    Cancelled,
    /// The value as typed or chosen, to check and write.
    Submitted(String),
    /// `u`: undo the session's last in-place edit.
    Undo,
}

impl FieldEditor {
    /// An editor over a line's `fields`, each with its current value, at the first.
    pub fn new(fields: Vec<(Field, String)>) -> Self {
        let input = fields.first().map(|(_, v)| v.clone()).unwrap_or_default();
        FieldEditor {
            fields,
            at: 0,
            input,
            error: None,
        }
    }

    /// Where the edited value lives in the file.
    pub fn setting(&self) -> &Setting {
        &self.fields[self.at].0.at
    }

    fn choices(&self) -> Vec<&'static str> {
        self.fields[self.at].0.choices.names()
    }

    /// After an undo: the line's values as the file now has them.
    pub fn refresh(&mut self, current: impl Fn(&Setting) -> String) {
        for (f, v) in &mut self.fields {
            *v = current(&f.at);
        }
        self.input = self.fields[self.at].1.clone();
        self.error = None;
    }

    pub fn on_key(&mut self, code: KeyCode) -> Edited {
        let choices = self.choices();
        match (in_context(EDITOR_KEYS, code), code) {
            (Some(EditKey::Cancel), _) => return Edited::Cancelled,
            (Some(EditKey::Save), _) => return Edited::Submitted(self.input.trim().to_string()),
            (Some(EditKey::Undo), _) => return Edited::Undo,
            (Some(step @ (EditKey::NextValue | EditKey::PrevValue)), _) => {
                let n = self.fields.len();
                self.at = if step == EditKey::NextValue {
                    (self.at + 1) % n
                } else {
                    (self.at + n - 1) % n
                };
                self.input = self.fields[self.at].1.clone();
                self.error = None;
            }
            (Some(step @ (EditKey::ChoiceNext | EditKey::ChoicePrev)), _) if !choices.is_empty() => {
                let n = choices.len();
                let i = choices.iter().position(|c| *c == self.input).unwrap_or(0);
                let i = if step == EditKey::ChoiceNext {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                };
                self.input = choices[i].to_string();
                self.error = None;
            }
            (Some(EditKey::Erase), _) if choices.is_empty() => {
                self.input.pop();
            }
            (None, KeyCode::Char(c)) if choices.is_empty() => self.input.push(c),
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
        let height = if self.error.is_some() { 5 } else { 4 };
        let [_, rect] = Layout::vertical([Constraint::Min(0), Constraint::Length(height)]).areas(area);
        f.render_widget(Clear, rect);
        let choices = self.choices();
        let value = match choices.is_empty() {
            true => Span::styled(format!("{}█", self.input), t.text()),
            false => Span::styled(format!("◀ {} ▶", self.input), t.text()),
        };
        let mut lines = vec![Line::from(vec![Span::styled(format!("{} = ", self.setting()), t.muted()), value])];
        if let Some(e) = &self.error {
            lines.push(Line::from(Span::styled(format!("✗ {e}"), t.error())));
        }
        let mut hint = Vec::new();
        if !choices.is_empty() {
            hint.push(format!("←/→ {}", choices.join("·")));
        }
        if self.fields.len() > 1 {
            let names: Vec<String> = self.fields.iter().map(|(f, _)| key_name(&f.at)).collect();
            hint.push(format!("tab {}", names.join("·")));
        }
        hint.push("u undo".into());
        lines.push(Line::from(Span::styled(hint.join(" · "), t.muted())));
        let block = ctx.block(" Edit · enter saves · esc cancels ");
        f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block), rect);
    }
}

fn key_name(at: &Setting) -> String {
    match at {
        Setting::Key(_, key) | Setting::Stage(_, key) => key.to_string(),
    }
}
