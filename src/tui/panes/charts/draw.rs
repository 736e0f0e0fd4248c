//! The Charts pane: loss and accuracy against epochs, stage boundaries as rules, the
//! chosen window (whole run or recent) and marker style.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::Charts;
use crate::tui::panes::{pct, PaneCtx};
use crate::tui::series::Series;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Full,
    Recent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Braille,
    Block,
    Dot,
}

/// How the charts draw: the whole run or its recent part, the marker, and whether
/// the raw per-step loss shows beside its moving average.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartView {
    pub window: Window,
    pub marker: MarkerKind,
    pub show_raw: bool,
}

fn points(view: &ChartView, s: &Series) -> Vec<(f64, f64)> {
    match view.window {
        Window::Full => s.full(),
        Window::Recent => s.recent(),
    }
}

fn bounds(sets: &[&[(f64, f64)]]) -> Option<([f64; 2], [f64; 2])> {
    let mut it = sets.iter().flat_map(|s| s.iter());
    let first = it.next()?;
    let (mut x0, mut x1, mut y0, mut y1) = (first.0, first.0, first.1, first.1);
    for p in it {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y0 = y0.min(p.1);
        y1 = y1.max(p.1);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-6 {
        y1 = y0 + 1e-3;
    }
    Some(([x0, x1], [y0, y1]))
}

fn marker(view: &ChartView) -> Marker {
    match view.marker {
        MarkerKind::Braille => Marker::Braille,
        MarkerKind::Block => Marker::HalfBlock,
        MarkerKind::Dot => Marker::Dot,
    }
}

/// Vertical rules at stage starts and live LR changes inside `x`.
/// Vertical segments at each of `xs` inside the x range `x`, spanning `y`.
fn rules(xs: impl Iterator<Item = f64>, x: [f64; 2], y: [f64; 2]) -> Vec<Vec<(f64, f64)>> {
    xs.filter(|v| *v > x[0] && *v <= x[1]).map(|v| vec![(v, y[0]), (v, y[1])]).collect()
}

/// A polyline through `data`; `.name(...)` on the result puts it in the legend.
fn line<'a>(data: &'a [(f64, f64)], marker: Marker, style: Style) -> Dataset<'a> {
    Dataset::default()
        .data(data)
        .graph_type(GraphType::Line)
        .marker(marker)
        .style(style)
}

impl Charts {
    /// `running`: a run is going (an empty chart then waits for its first step).
    pub fn draw(&self, f: &mut Frame, area: Rect, ctx: &PaneCtx, view: &ChartView, running: bool) {
        let t = ctx.theme;
        let c = self;
        let win = match view.window {
            Window::Full => "whole run",
            Window::Recent => "recent",
        };
        let mk = match view.marker {
            MarkerKind::Braille => "braille",
            MarkerKind::Block => "block",
            MarkerKind::Dot => "dot",
        };
        let title = Line::from(vec![
            Span::raw(" Charts "),
            Span::styled(format!("{win} (h) · {mk} (m) · lr {:.1e} ", c.lr), t.muted()),
        ]);
        let outer = ctx.block(title);
        let inner = outer.inner(area);
        f.render_widget(outer, area);
        if c.step_loss.is_empty() {
            let msg = if running {
                "waiting for the first step…"
            } else {
                "no training yet: s starts the run"
            };
            f.render_widget(Paragraph::new(Span::styled(msg, t.muted())), inner);
            return;
        }
        let [loss_area, acc_area] = Layout::vertical([Constraint::Percentage(60), Constraint::Min(3)]).areas(inner);

        let raw = points(view, &c.step_loss);
        let ema = points(view, &c.loss_ema);
        let terms = [&c.align, &c.kd, &c.ce].map(|s| points(view, s));
        let mut all: Vec<&[(f64, f64)]> = vec![&ema];
        if view.show_raw {
            all.push(&raw);
        }
        let Some((xb, yb)) = bounds(&all.iter().copied().chain(terms.iter().map(|v| v.as_slice())).collect::<Vec<_>>()) else {
            return;
        };
        let stage_rules = rules(c.boundaries.iter().map(|b| b.0), xb, yb);
        // LR changes are short ticks from the top, so they read apart from stage starts.
        let lr_rules = rules(c.lr_marks.iter().copied(), xb, [yb[1] - (yb[1] - yb[0]) * 0.25, yb[1]]);
        let mut sets: Vec<Dataset> = stage_rules.iter().map(|r| line(r, Marker::Dot, t.muted())).collect();
        sets.extend(lr_rules.iter().map(|r| line(r, Marker::Dot, t.warn())));
        if view.show_raw {
            sets.push(Dataset::default().name("loss").data(&raw).marker(marker(view)).style(t.series(0)));
        }
        sets.push(line(&ema, marker(view), t.series(1)).name("ema"));
        for (i, (name, pts)) in ["align", "kd", "ce"].iter().zip(&terms).enumerate() {
            if pts.iter().any(|p| p.1 > 0.0) {
                sets.push(line(pts, marker(view), t.series(2 + i)).name(*name));
            }
        }
        let axis_label = |v: f64| Span::styled(format!("{v:.3}"), t.muted());
        let chart = Chart::new(sets)
            .x_axis(Axis::default().bounds(xb).style(t.muted()))
            .y_axis(
                Axis::default()
                    .bounds(yb)
                    .labels([axis_label(yb[0]), axis_label(yb[1])])
                    .style(t.muted()),
            )
            .legend_position(Some(ratatui::widgets::LegendPosition::TopRight))
            .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(80)));
        f.render_widget(chart, loss_area);

        let train = points(view, &c.train_acc);
        let test = points(view, &c.test_acc);
        let acc_rules = rules(c.boundaries.iter().map(|b| b.0), xb, [0.0, 1.0]);
        let mut acc_sets: Vec<Dataset> = acc_rules.iter().map(|r| line(r, Marker::Dot, t.muted())).collect();
        acc_sets.push(line(&train, marker(view), t.series(5)).name("train"));
        acc_sets.push(line(&test, marker(view), t.series(6)).name("test"));
        let last = |s: &Series| s.last.map(|p| pct(p.1)).unwrap_or_else(|| "-".into());
        let acc = Chart::new(acc_sets)
            .x_axis(
                Axis::default()
                    .bounds(xb)
                    .labels([
                        Span::styled(format!("step {:.0}", xb[0]), t.muted()),
                        Span::styled(format!("{:.0}", xb[1]), t.muted()),
                    ])
                    .title(Span::styled(
                        format!("train {} test {}", last(&c.train_acc), last(&c.test_acc)),
                        t.text(),
                    ))
                    .style(t.muted()),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, 1.0])
                    .labels([Span::styled("0%", t.muted()), Span::styled("100%", t.muted())])
                    .style(t.muted()),
            )
            .legend_position(Some(ratatui::widgets::LegendPosition::BottomRight))
            .hidden_legend_constraints((Constraint::Percentage(50), Constraint::Percentage(90)));
        f.render_widget(acc, acc_area);
    }
}
