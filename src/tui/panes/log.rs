//! The Log pane: every line the engine and the workbench said, scrollable.

use std::time::Instant;

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{clock, PaneCtx};
use crate::engine::describe::Level;

const LOG_MAX: usize = 5000;

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at_s: f64,
    pub level: Level,
    pub text: String,
}

pub struct LogPane {
    pub lines: Vec<LogLine>,
    /// Lines scrolled up from the bottom.
    pub scroll: usize,
    born: Instant,
}

impl Default for LogPane {
    fn default() -> Self {
        LogPane {
            lines: Vec::new(),
            scroll: 0,
            born: Instant::now(),
        }
    }
}

impl LogPane {
    /// Add a line stamped with the workbench's clock; the oldest go past `LOG_MAX`.
    pub fn push(&mut self, level: Level, text: String) {
        self.lines.push(LogLine {
            at_s: self.born.elapsed().as_secs_f64(),
            level,
            text,
        });
        if self.lines.len() > LOG_MAX {
            self.lines.drain(..self.lines.len() - LOG_MAX);
        }
    }

    /// Scroll one line towards older lines (`up`) or back towards the newest.
    pub fn scroll(&mut self, up: bool) {
        self.scroll = if up {
            (self.scroll + 1).min(self.lines.len().saturating_sub(1))
        } else {
            self.scroll.saturating_sub(1)
        };
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let height = area.height.saturating_sub(2) as usize;
        let end = self.lines.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(height);
        let lines: Vec<Line> = self.lines[start..end]
            .iter()
            .map(|l| {
                let style = match l.level {
                    Level::Info => t.text(),
                    Level::Warn => t.warn(),
                    Level::Error => t.error(),
                };
                Line::from(vec![
                    Span::styled(format!("{} ", clock(l.at_s)), t.muted()),
                    Span::styled(l.text.clone(), style),
                ])
            })
            .collect();
        let scrolled = if self.scroll > 0 {
            format!("↑{} ", self.scroll)
        } else {
            String::new()
        };
        let title = Line::from(vec![Span::raw(" Log "), Span::styled(format!("{scrolled}tab: Runs "), t.muted())]);
        f.render_widget(Paragraph::new(lines).block(ctx.block(title)), area);
    }
}
