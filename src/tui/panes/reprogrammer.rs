//! The Reprogrammer pane: the hyperparameters of both stages as the session runs them,
//! each marked where a change waits for a restart or was just applied live.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::fields::*;
use super::PaneCtx;
use crate::tui::app::ConfigState;

/// The values each line edits (`enter`; `tab` moves between a line's values), by line.
fn line_fields(line: usize) -> Vec<Field> {
    match line {
        0 => vec![one_of("reprogram", "prompt", PROMPTS), typed("reprogram", "pad")],
        1 => vec![
            typed("reprogram", "proxy_dim"),
            one_of("reprogram", "projector", PROJECTORS),
            one_of("reprogram", "normalize", SWITCH),
        ],
        2 => vec![typed("reprogram", "logit_scale"), typed("reprogram", "label_smoothing")],
        3 => vec![
            typed("stage1", "lr"),
            typed("stage1", "epochs"),
            one_of("stage1", "lr_schedule", SCHEDULES),
            one_of("stage1", "optimizer", OPTIMIZERS),
        ],
        _ => vec![
            typed("distill", "temperature"),
            one_of("distill", "align_loss", ALIGN_LOSSES),
            typed("distill", "batch_size"),
        ],
    }
}

const LINES: usize = 5;

/// Every value the pane edits.
pub fn all_fields() -> Vec<Field> {
    (0..LINES).flat_map(line_fields).collect()
}

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
            (self.selected + 1).min(LINES - 1)
        };
    }

    /// The selected line's values.
    pub fn fields(&self) -> Vec<Field> {
        line_fields(self.selected)
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx, config: &ConfigState) {
        let e = &config.exp;
        let (r, s1, d) = (&e.reprogram, &e.stage1, &e.distill);
        let field = |line: usize, label: &str, value: String| field(ctx, config, line, label, value);
        let mut lines = vec![
            field(
                0,
                "prompt",
                format!("{:?} {}px {}→{}", r.prompt, r.pad, e.foundation.inner_size, e.foundation.image_size).to_lowercase(),
            ),
            field(
                1,
                "proxy",
                format!("{} · {:?}{}", r.proxy_dim, r.projector, if r.normalize { " · L2" } else { "" }).to_lowercase(),
            ),
            field(2, "head", format!("cosine ×{}", r.logit_scale)),
            field(
                3,
                "stage1",
                format!("lr {:.0e} · {}ep · {:?} · {:?}", s1.lr, s1.epochs, s1.lr_schedule, s1.optimizer).to_lowercase(),
            ),
            field(
                4,
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

/// A line's values, with a pending (restart) or just-applied (live) change of any of
/// them marked.
fn field(ctx: &PaneCtx, config: &ConfigState, line: usize, label: &str, value: String) -> Line<'static> {
    let keys: Vec<String> = line_fields(line).iter().map(|f| f.at.to_string()).collect();
    let ours = |key: &String| keys.contains(key);
    let t = ctx.theme;
    let mut spans = vec![Span::styled(format!("{label:<8}"), t.muted()), Span::styled(value, t.text())];
    if let Some(c) = config.pending.iter().find(|c| ours(&c.key)) {
        spans.push(Span::styled(format!(" → {} ⟳", c.new), t.warn()));
    } else if config.applied.iter().any(|c| ours(&c.key)) {
        spans.push(Span::styled(" ✓live", t.good()));
    }
    Line::from(spans)
}
