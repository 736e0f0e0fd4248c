//! The Reprogrammer pane: the hyperparameters of both stages as the session runs them,
//! each marked where a change waits for a restart or was just applied live.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::PaneCtx;
use crate::tui::app::ConfigState;

/// The pane has no state of its own: it shows the config's.
pub struct ReprogrammerPane;

impl ReprogrammerPane {
    pub fn draw(f: &mut Frame, area: Rect, ctx: &PaneCtx, config: &ConfigState) {
        let e = &config.exp;
        let (r, s1, d) = (&e.reprogram, &e.stage1, &e.distill);
        let field = |key: &str, label: &str, value: String| field(ctx, config, key, label, value);
        let lines = vec![
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
            Line::from(Span::styled("e edit · ✓live applied · ⟳ at restart", ctx.theme.muted())),
        ];
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
