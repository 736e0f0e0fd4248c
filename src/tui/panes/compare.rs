//! The Teacher vs target pane: per class, the test accuracy of the TDMR teacher, the
//! linear probe and each finished target side by side as bars; how often the `tdmr`
//! target agrees with its teacher; and the classes it confuses most. What the target
//! learned from the foundation, and where it still falls short, at a glance.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{pct, PaneCtx};
use crate::engine::class_report::{Confusion, During};
use crate::engine::Event;

/// One finished method's report.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodClasses {
    pub method: String,
    pub per_class: Vec<f64>,
    pub agreement: Option<f64>,
    pub confused: Vec<Confusion>,
    /// Where the method stood, while it still trains.
    pub during: Option<During>,
}

#[derive(Debug, Default)]
pub struct ComparePane {
    /// Class names, as the engine loaded them.
    pub classes: Vec<String>,
    pub reports: Vec<MethodClasses>,
}

/// Columns in this order first (teacher, probe, the distilled target, its baselines);
/// other methods follow in the order they finished.
const ORDER: [&str; 5] = ["tdmr-teacher", "linear-probe", "tdmr", "kd", "scratch"];

fn short(method: &str) -> &str {
    match method {
        "tdmr-teacher" => "teacher",
        "linear-probe" => "probe",
        m => m,
    }
}

impl ComparePane {
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::DataLoaded { classes, .. } => self.classes = classes.clone(),
            Event::ClassReport {
                method,
                per_class,
                agreement,
                confused,
                during,
            } => {
                self.reports.retain(|r| &r.method != method);
                self.reports.push(MethodClasses {
                    method: method.clone(),
                    per_class: per_class.clone(),
                    agreement: *agreement,
                    confused: confused.clone(),
                    during: during.clone(),
                });
                let rank = |m: &str| ORDER.iter().position(|o| *o == m).unwrap_or(ORDER.len());
                self.reports.sort_by_key(|r| rank(&r.method));
            }
            _ => {}
        }
    }

    fn class_name(&self, i: usize) -> String {
        self.classes.get(i).cloned().unwrap_or_else(|| format!("class {i}"))
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx) {
        let t = ctx.theme;
        let block = ctx.block(" Teacher vs target ");
        if self.reports.is_empty() {
            let msg = Line::from(Span::styled("no method finished yet: per-class results come here", t.muted()));
            f.render_widget(Paragraph::new(msg).block(block), area);
            return;
        }
        let inner_w = area.width.saturating_sub(2) as usize;
        let mut lines = Vec::new();
        for r in self.reports.iter().filter(|r| r.during.is_some()) {
            if let Some(d) = &r.during {
                lines.push(Line::from(Span::styled(
                    format!("{} live: {} epoch {}", r.method, d.stage, d.epoch),
                    t.warn(),
                )));
            }
        }
        if let Some(target) = self.reports.iter().find(|r| r.method == "tdmr") {
            if let Some(a) = target.agreement {
                lines.push(Line::from(Span::styled(
                    format!("tdmr agrees with its teacher on {}", pct(a)),
                    t.accent(),
                )));
            }
            let confused: Vec<String> = target
                .confused
                .iter()
                .map(|c| format!("{}→{} ({})", self.class_name(c.truth), self.class_name(c.predicted), c.count))
                .collect();
            if !confused.is_empty() {
                lines.push(Line::from(Span::styled(format!("confuses {}", confused.join(", ")), t.text())));
            }
        }
        let classes = self.reports.iter().map(|r| r.per_class.len()).max().unwrap_or(0);
        let name_w = (0..classes)
            .map(|i| self.class_name(i).chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 12);
        let n = self.reports.len();
        let col_w = (inner_w.saturating_sub(name_w + 1) / n.max(1)).max(5);
        // Each column: a bar, then the percentage (4 wide), then a space.
        let bar_w = col_w.saturating_sub(5);
        let mut header = vec![Span::styled(format!("{:<name_w$} ", "class"), t.muted())];
        for r in &self.reports {
            let name: String = short(&r.method).chars().take(col_w - 1).collect();
            header.push(Span::styled(format!("{name:<col_w$}"), t.muted()));
        }
        lines.push(Line::from(header));
        for c in 0..classes {
            let name: String = self.class_name(c).chars().take(name_w).collect();
            let mut spans = vec![Span::styled(format!("{name:<name_w$} "), t.text())];
            for (k, r) in self.reports.iter().enumerate() {
                let acc = r.per_class.get(c).copied().unwrap_or(0.0);
                let filled = ((acc * bar_w as f64).round() as usize).min(bar_w);
                spans.push(Span::styled("█".repeat(filled), t.series(k)));
                spans.push(Span::styled("░".repeat(bar_w - filled), t.muted()));
                spans.push(Span::styled(format!("{:>3.0}% ", 100.0 * acc), t.text()));
            }
            lines.push(Line::from(spans));
        }
        // Keep the summary and the header; the classes scroll off the bottom.
        f.render_widget(Paragraph::new(lines).block(block), area);
    }
}
