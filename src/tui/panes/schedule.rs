//! The Schedule pane: every stage of the run in the engine's order, its progress, and
//! the selected row the stage keys (add, delete, move, edit) act on.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::fields::*;
use super::{pct, PaneCtx};
use crate::config::Experiment;
use crate::config::Method;
use crate::engine::Event;
use crate::tui::plan::{Kind, Plan, RowState};

pub struct SchedulePane {
    pub plan: Plan,
    pub selected: usize,
}

impl SchedulePane {
    pub fn new(exp: &Experiment) -> Self {
        SchedulePane {
            plan: Plan::new(exp),
            selected: 0,
        }
    }

    pub fn on_event(&mut self, e: &Event) {
        self.plan.on_event(e);
    }

    /// Move the selection one row, staying inside the schedule.
    pub fn move_selection(&mut self, up: bool) {
        self.selected = if up {
            self.selected.saturating_sub(1)
        } else {
            (self.selected + 1).min(self.plan.rows.len().saturating_sub(1))
        };
    }

    /// The selected row's index in `distill.stages`, when it is a distillation stage.
    pub fn selected_distill(&self) -> Option<usize> {
        self.plan.rows.get(self.selected).and_then(|r| r.distill_index)
    }

    /// The values `enter` edits on the selected row: a distillation stage's own, or
    /// the settings the other stages train with. `Err` says why a row has none.
    pub fn selected_fields(&self) -> Result<Vec<Field>, String> {
        let Some(r) = self.plan.rows.get(self.selected) else {
            return Err("no stage is selected".into());
        };
        if let Some(i) = r.distill_index {
            return Ok(stage_fields(i));
        }
        Ok(match (r.kind, r.stage.as_str()) {
            (Kind::Probe, "probe-init") => vec![typed("stage1", "probe_init_epochs"), typed("baselines", "linear_probe_lr")],
            (Kind::Probe, _) => vec![typed("baselines", "linear_probe_epochs"), typed("baselines", "linear_probe_lr")],
            (Kind::Foundation, _) => vec![
                typed("stage1", "epochs"),
                typed("stage1", "lr"),
                one_of("stage1", "lr_schedule", SCHEDULES),
                typed("stage1", "warmup_epochs"),
            ],
            _ if r.method == Method::Kd.name() => vec![typed("baselines", "kd_alpha")],
            _ => {
                return Err(format!(
                    "{} trains for the distillation stages' epochs, at their peak lr: edit those rows",
                    r.method
                ))
            }
        })
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let inner_w = area.width.saturating_sub(2) as usize;
        let mut lines = Vec::new();
        for (i, r) in self.plan.rows.iter().enumerate() {
            let (mark, style, tail) = match &r.state {
                RowState::Pending => ("·", t.muted(), format!("{}ep lr {:.0e}", r.epochs, r.lr)),
                RowState::Running { epoch, step } => {
                    let done = epoch.saturating_sub(1) * r.steps_per_epoch + step;
                    let w = inner_w.saturating_sub(r.method.len() + r.stage.len() + 14).clamp(4, 20);
                    ("▶", t.accent(), format!("{epoch}/{} {}", r.epochs, bar(done, r.total_steps(), w)))
                }
                RowState::Done { test_acc } => ("✓", t.good(), test_acc.map(pct).unwrap_or_else(|| "done".into())),
                RowState::Skipped { epoch } => ("»", t.warn(), format!("skipped @{epoch}")),
            };
            let mut spans = vec![
                Span::styled(format!("{mark} "), style),
                Span::styled(
                    format!("{}/{}", r.method, r.stage),
                    if r.state == RowState::Pending { t.text() } else { style },
                ),
                Span::styled(format!(" {tail}"), t.muted()),
            ];
            if r.distill_index.is_some() && inner_w >= 60 {
                spans.push(Span::styled(format!(" [{} · {}]", r.groups, r.weights), t.muted()));
            }
            let mut line = Line::from(spans);
            if i == self.selected && ctx.focused {
                line = line.style(t.selected());
            }
            lines.push(line);
        }
        // Keep the selection visible in short panes.
        let height = area.height.saturating_sub(2) as usize;
        let skip = (self.selected + 1).saturating_sub(height);
        let title = Line::from(vec![
            Span::raw(" Schedule "),
            Span::styled("enter values · a add · d del · K/J move ", t.muted()),
        ]);
        f.render_widget(
            Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>()).block(ctx.block(title)),
            area,
        );
    }
}

/// The values of the `i`-th distillation stage that `enter` edits.
pub fn stage_fields(i: usize) -> Vec<Field> {
    vec![
        stage(i, "epochs", Choices::Typed),
        stage(i, "lr", Choices::Typed),
        stage(i, "lr_schedule", Choices::Of(SCHEDULES)),
        stage(i, "warmup_epochs", Choices::Typed),
        stage(i, "ramp", Choices::Of(SWITCH)),
    ]
}

fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}
