//! The Reprogrammer pane: the hyperparameters of both stages as the session runs them,
//! each marked where a change waits for a restart or was just applied live.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::PaneCtx;
use crate::tui::app::ConfigState;

/// The value each line edits (`enter` while the pane has the keys), by line.
pub const FIELDS: [(&str, &str); 5] = [
    ("reprogram", "pad"),
    ("reprogram", "proxy_dim"),
    ("reprogram", "logit_scale"),
    ("stage1", "lr"),
    ("distill", "temperature"),
];

/// The pane shows the config's values; its own state is which line is selected.
#[derive(Debug, Default)]
pub struct ReprogrammerPane {
    pub selected: usize,
}

impl ReprogrammerPane {
    pub fn move_selection(&mut self, up: bool) {
        self.selected = if up {
            self.selected.saturating_sub(1)
        } else {
            (self.selected + 1).min(FIELDS.len() - 1)
        };
    }

    /// The selected line's (table, key).
    pub fn field(&self) -> (&'static str, &'static str) {
        FIELDS[self.selected.min(FIELDS.len() - 1)]
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx, config: &ConfigState) {
        let e = &config.exp;
        let (r, s1, d) = (&e.reprogram, &e.stage1, &e.distill);
        let field = |key: &str, label: &str, value: String| field(ctx, config, key, label, value);
        let mut lines = vec![
            field(
                "reprogram.pad",
                "prompt",
                format!("{:?} {}px {}→{}", r.prompt, r.pad, e.foundation.inner_size, e.foundation.image_size).to_lowercase(),
            ),
            field(
                "reprogram.proxy_dim",
                "proxy",
                format!("{} · {:?}{}", r.proxy_dim, r.projector, if r.normalize { " · L2" } else { "" }).to_lowercase(),
            ),
            field("reprogram.logit_scale", "head", format!("cosine ×{}", r.logit_scale)),
            field(
                "stage1.lr",
                "stage1",
                format!("lr {:.0e} · {}ep · {:?} · {:?}", s1.lr, s1.epochs, s1.lr_schedule, s1.optimizer).to_lowercase(),
            ),
            field(
                "distill.temperature",
                "distill",
                format!("T {} · {:?} · b{}", d.temperature, d.align_loss, d.batch_size).to_lowercase(),
            ),
            Line::from(Span::styled("enter edit · ✓live applied · ⟳ at restart", ctx.theme.muted())),
        ];
        if ctx.focused {
            if let Some(l) = lines.get_mut(self.selected) {
                *l = std::mem::take(l).style(ctx.theme.selected());
            }
        }
        f.render_widget(Paragraph::new(lines).block(ctx.block(" Reprogrammer ")), area);
    }
}

/// A field's value, with its pending (restart) or just-applied (live) change marked.
fn field(ctx: &PaneCtx, config: &ConfigState, key: &str, label: &str, value: String) -> Line<'static> {
    let t = ctx.theme;
    let mut spans = vec![Span::styled(format!("{label:<8}"), t.muted()), Span::styled(value, t.text())];
    if let Some(c) = config.pending.iter().find(|c| c.key == key) {
        spans.push(Span::styled(format!(" → {} ⟳", c.new), t.warn()));
    } else if config.applied.iter().any(|c| c.key == key) {
        spans.push(Span::styled(" ✓live", t.good()));
    }
    Line::from(spans)
}
