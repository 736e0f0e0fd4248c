//! The Runs pane: each finished method's result and the checkpoints written so far.

use ratatui::layout::Rect;
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{clock, pct, PaneCtx};
use crate::engine::Event;

/// A checkpoint the run wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointRow {
    pub method: String,
    pub stage: String,
    pub path: String,
}

/// A finished method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodRow {
    pub method: String,
    pub test_acc: f64,
    pub trainable_params: usize,
    pub wall_s: f64,
}

#[derive(Debug, Default)]
pub struct RunsPane {
    pub results: Vec<MethodRow>,
    pub checkpoints: Vec<CheckpointRow>,
}

impl RunsPane {
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::Checkpoint { method, stage, path } => self.checkpoints.push(CheckpointRow {
                method: method.clone(),
                stage: stage.clone(),
                path: path.clone(),
            }),
            Event::MethodDone {
                method,
                test_acc,
                trainable_params,
                wall_s,
                ..
            } => self.results.push(MethodRow {
                method: method.clone(),
                test_acc: *test_acc,
                trainable_params: *trainable_params,
                wall_s: *wall_s,
            }),
            _ => {}
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let mut lines = Vec::new();
        if self.results.is_empty() {
            lines.push(Line::from(Span::styled("no method finished yet", t.muted())));
        } else {
            lines.push(Line::from(Span::styled(
                format!("{:<14}{:>8}{:>10}{:>8}", "method", "test", "params", "time"),
                t.muted(),
            )));
            let best = self.results.iter().map(|r| r.test_acc).fold(f64::MIN, f64::max);
            for r in &self.results {
                let style = if r.test_acc == best {
                    t.good().add_modifier(Modifier::BOLD)
                } else {
                    t.text()
                };
                lines.push(Line::from(Span::styled(
                    format!(
                        "{:<14}{:>8}{:>10}{:>8}",
                        r.method,
                        pct(r.test_acc),
                        r.trainable_params,
                        clock(r.wall_s)
                    ),
                    style,
                )));
            }
        }
        lines.push(Line::from(Span::styled(
            format!("checkpoints ({})", self.checkpoints.len()),
            t.muted(),
        )));
        for c in self.checkpoints.iter().rev() {
            let file = std::path::Path::new(&c.path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            lines.push(Line::from(Span::styled(format!("  {}/{} {file}", c.method, c.stage), t.text())));
        }
        f.render_widget(Paragraph::new(lines).block(ctx.block(" Runs / checkpoints ")), area);
    }
}
