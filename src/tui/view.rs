//! Drawing: a pure function of the app state, so tests render it into a `TestBackend`.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Clear, Dataset, GraphType, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Confirm, FoundationState, Level, MarkerKind, Overlay, Pane, RunState, Window};
use super::keymap::KEYMAP;
use super::plan::RowState;
use super::series::Series;
use crate::config::live::Change;

mod chart_pane;
mod overlays;
use chart_pane::draw_charts;
use overlays::{draw_confirm, draw_help};

/// `1:02:03`, `4:05`.
pub fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn block<'a>(app: &App, pane: Pane, title: impl Into<Line<'a>>) -> Block<'a> {
    let focused = app.view.focus == pane;
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.border(focused))
        .title(title.into().style(app.theme.title()))
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    let banner = banner_lines(app);
    let [top, banner_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner.len() as u16),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(f, app, top);
    f.render_widget(Paragraph::new(banner).wrap(Wrap { trim: true }), banner_area);
    if app.view.zoom {
        draw_pane(f, app, app.view.focus, body);
    } else {
        let left_w = (area.width * 34 / 100).clamp(28, 52);
        let [left, right] = Layout::horizontal([Constraint::Length(left_w), Constraint::Min(30)]).areas(body);
        let [fa, ra, sa] = Layout::vertical([Constraint::Length(6), Constraint::Length(8), Constraint::Min(4)]).areas(left);
        draw_pane(f, app, Pane::Foundation, fa);
        draw_pane(f, app, Pane::Reprogrammer, ra);
        draw_pane(f, app, Pane::Schedule, sa);
        let [charts, lower] = Layout::vertical([Constraint::Percentage(62), Constraint::Min(5)]).areas(right);
        draw_pane(f, app, Pane::Charts, charts);
        if lower.width >= 100 {
            let [l, r] = Layout::horizontal([Constraint::Percentage(58), Constraint::Min(30)]).areas(lower);
            draw_pane(f, app, Pane::Log, l);
            draw_pane(f, app, Pane::Runs, r);
        } else {
            draw_pane(f, app, app.view.lower, lower);
        }
    }
    draw_status(f, app, status);
    match app.view.overlay {
        Overlay::None => {}
        Overlay::Help => draw_help(f, app, area),
        Overlay::Confirm(c) => draw_confirm(f, app, area, c),
    }
}

fn draw_pane(f: &mut Frame, app: &App, pane: Pane, area: Rect) {
    match pane {
        Pane::Foundation => draw_foundation(f, app, area),
        Pane::Reprogrammer => draw_reprogrammer(f, app, area),
        Pane::Schedule => draw_schedule(f, app, area),
        Pane::Charts => draw_charts(f, app, area),
        Pane::Log => draw_log(f, app, area),
        Pane::Runs => draw_runs(f, app, area),
    }
}

fn state_span(app: &App) -> Span<'static> {
    let t = &app.theme;
    match &app.run {
        RunState::Idle => Span::styled("idle", t.muted()),
        RunState::Running => Span::styled("▶ running", t.good().add_modifier(Modifier::BOLD)),
        RunState::Paused => Span::styled("⏸ paused", t.warn().add_modifier(Modifier::BOLD)),
        RunState::Done => Span::styled("✓ done", t.good()),
        RunState::Aborted => Span::styled("■ aborted", t.warn()),
        RunState::Failed(_) => Span::styled("✗ failed", t.error()),
    }
}

fn draw_title(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let file = app
        .config_file()
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let line = Line::from(vec![
        Span::styled(" tdmr ", t.accent().add_modifier(Modifier::REVERSED)),
        Span::raw(" "),
        Span::styled(app.exp.name.clone(), t.title()),
        Span::styled(format!(" · {file} · seed {} · ", app.exp.seed), t.muted()),
        state_span(app),
        // Said where it cannot scroll away: keys that steer a run do nothing here.
        Span::styled(if app.read_only { " · read-only" } else { "" }, t.warn()),
        Span::styled(
            app.run_dir.as_ref().map(|d| format!(" · {}", d.display())).unwrap_or_default(),
            t.muted(),
        ),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn banner_lines(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut v = Vec::new();
    if let Some(e) = &app.config_error {
        v.push(Line::from(vec![
            Span::styled(" config error ", t.error().add_modifier(Modifier::REVERSED)),
            Span::styled(format!(" {} ", e.lines().next().unwrap_or_default()), t.error()),
            Span::styled("(the session keeps its configuration)", t.muted()),
        ]));
    }
    if !app.pending.is_empty() {
        let list: Vec<String> = app.pending.iter().map(Change::to_string).collect();
        v.push(Line::from(vec![
            Span::styled(" restart pending ", t.warn().add_modifier(Modifier::REVERSED)),
            Span::styled(format!(" {} · R to restart", list.join("; ")), t.warn()),
        ]));
    }
    v
}

fn draw_foundation(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let fd = &app.exp.foundation;
    let path = app.exp.foundation_path();
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let width = area.width.saturating_sub(10) as usize;
    let (family, sizes) = match &app.foundation {
        FoundationState::NotLoaded => (Span::styled(format!("{} · f loads", fd.family), t.muted()), String::new()),
        FoundationState::Loading { since } => (
            Span::styled(format!("{} · loading… {:.1}s", fd.family, since.elapsed().as_secs_f64()), t.warn()),
            String::new(),
        ),
        FoundationState::Loaded(i) => (
            Span::styled(format!("✓ {}", i.variant), t.good()),
            format!(" · {:.2}M · d{}", i.params as f64 / 1e6, i.feature_dim),
        ),
        FoundationState::Failed(e) => (Span::styled(format!("✗ {e}"), t.error()), String::new()),
    };
    // Labels only where they fit beside the values (not at 80 columns).
    let labelled = area.width >= 40;
    let label = |k: &str| {
        if labelled {
            Span::styled(format!("{k:<8}"), t.muted())
        } else {
            Span::raw("")
        }
    };
    let width = if labelled { width } else { area.width.saturating_sub(2) as usize };
    let lines = vec![
        Line::from(vec![label("file"), Span::styled(shorten(&name, width), t.text())]),
        Line::from(vec![label("family"), family]),
        Line::from(vec![
            label("input"),
            Span::styled(format!("{}² in{sizes}", fd.image_size), t.text()),
        ]),
        Line::from(vec![label("norm"), Span::styled("imagenet mean/std", t.text())]),
    ];
    let mut p = Paragraph::new(lines).block(block(app, Pane::Foundation, " Foundation "));
    // An error message is worth its wrapped lines.
    if matches!(app.foundation, FoundationState::Failed(_)) {
        p = p.wrap(Wrap { trim: true });
    }
    f.render_widget(p, area);
}

/// `long-file-na…tensors`: keep both ends of a name that does not fit.
fn shorten(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width || width < 5 {
        return s.to_string();
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let chars: Vec<char> = s.chars().collect();
    format!(
        "{}…{}",
        chars[..head].iter().collect::<String>(),
        chars[n - tail..].iter().collect::<String>()
    )
}

/// A field's value, with its pending (restart) or just-applied (live) change marked.
fn field(app: &App, key: &str, label: &str, value: String) -> Line<'static> {
    let t = &app.theme;
    let mut spans = vec![Span::styled(format!("{label:<8}"), t.muted()), Span::styled(value, t.text())];
    if let Some(c) = app.pending.iter().find(|c| c.key == key) {
        spans.push(Span::styled(format!(" → {} ⟳", c.new), t.warn()));
    } else if app.applied.iter().any(|c| c.key == key) {
        spans.push(Span::styled(" ✓live", t.good()));
    }
    Line::from(spans)
}

fn draw_reprogrammer(f: &mut Frame, app: &App, area: Rect) {
    let e = &app.exp;
    let (r, s1, d) = (&e.reprogram, &e.stage1, &e.distill);
    let lines = vec![
        field(
            app,
            "reprogram.pad",
            "prompt",
            format!("{:?} {}px {}→{}", r.prompt, r.pad, e.foundation.inner_size, e.foundation.image_size).to_lowercase(),
        ),
        field(
            app,
            "reprogram.proxy_dim",
            "proxy",
            format!("{} · {:?}{}", r.proxy_dim, r.projector, if r.normalize { " · L2" } else { "" }).to_lowercase(),
        ),
        field(app, "reprogram.logit_scale", "head", format!("cosine ×{}", r.logit_scale)),
        field(
            app,
            "stage1.lr",
            "stage1",
            format!("lr {:.0e} · {}ep · {:?} · {:?}", s1.lr, s1.epochs, s1.lr_schedule, s1.optimizer).to_lowercase(),
        ),
        field(
            app,
            "distill.temperature",
            "distill",
            format!("T {} · {:?} · b{}", d.temperature, d.align_loss, d.batch_size).to_lowercase(),
        ),
        Line::from(Span::styled("e edit · ✓live applied · ⟳ at restart", app.theme.muted())),
    ];
    f.render_widget(Paragraph::new(lines).block(block(app, Pane::Reprogrammer, " Reprogrammer ")), area);
}

fn bar(done: usize, total: usize, width: usize) -> String {
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

fn draw_schedule(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let inner_w = area.width.saturating_sub(2) as usize;
    let mut lines = Vec::new();
    for (i, r) in app.plan.rows.iter().enumerate() {
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
        if i == app.selected && app.view.focus == Pane::Schedule {
            line = line.style(t.selected());
        }
        lines.push(line);
    }
    // Keep the selection visible in short panes.
    let height = area.height.saturating_sub(2) as usize;
    let skip = (app.selected + 1).saturating_sub(height);
    let title = Line::from(vec![
        Span::raw(" Schedule "),
        Span::styled("a add · d del · K/J move · e edit ", t.muted()),
    ]);
    f.render_widget(
        Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>()).block(block(app, Pane::Schedule, title)),
        area,
    );
}

fn draw_log(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let height = area.height.saturating_sub(2) as usize;
    let end = app.log.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = app.log[start..end]
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
    let scrolled = if app.log_scroll > 0 {
        format!("↑{} ", app.log_scroll)
    } else {
        String::new()
    };
    let title = Line::from(vec![Span::raw(" Log "), Span::styled(format!("{scrolled}tab: Runs "), t.muted())]);
    f.render_widget(Paragraph::new(lines).block(block(app, Pane::Log, title)), area);
}

fn draw_runs(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let mut lines = Vec::new();
    if app.results.is_empty() {
        lines.push(Line::from(Span::styled("no method finished yet", t.muted())));
    } else {
        lines.push(Line::from(Span::styled(
            format!("{:<14}{:>8}{:>10}{:>8}", "method", "test", "params", "time"),
            t.muted(),
        )));
        let best = app.results.iter().map(|r| r.test_acc).fold(f64::MIN, f64::max);
        for r in &app.results {
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
        format!("checkpoints ({})", app.checkpoints.len()),
        t.muted(),
    )));
    for c in app.checkpoints.iter().rev() {
        let file = std::path::Path::new(&c.path)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        lines.push(Line::from(Span::styled(format!("  {}/{} {file}", c.method, c.stage), t.text())));
    }
    f.render_widget(Paragraph::new(lines).block(block(app, Pane::Runs, " Runs / checkpoints ")), area);
}

fn draw_status(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let c = &app.charts;
    // The run state is in the title bar; this line is for figures.
    let sep = || Span::styled(" · ", t.muted());
    let mut parts = vec![Span::styled("? keys", t.accent())];
    if let Some(hint) = &app.quit_hint {
        parts.push(sep());
        parts.push(Span::styled(hint.clone(), t.accent()));
    }
    if let Some(r) = app.plan.running() {
        parts.push(sep());
        parts.push(Span::styled(format!("{}/{}", r.method, r.stage), t.text()));
    }
    if app.run.is_active() {
        if let Some(ips) = c.images_per_s.get() {
            parts.push(sep());
            parts.push(Span::styled(format!("{ips:.0} img/s"), t.text()));
        }
        if let Some(w) = c.wait_share.get() {
            parts.push(sep());
            parts.push(Span::styled(format!("wait {:.0}%", 100.0 * w), t.text()));
        }
        let stage = app.plan.stage_eta().map(clock).unwrap_or_else(|| "…".into());
        let run = match app.plan.run_eta() {
            Some((eta, false)) => clock(eta),
            Some((eta, true)) if eta > 0.0 => format!("≥{}", clock(eta)),
            _ => "…".into(),
        };
        parts.push(sep());
        parts.push(Span::styled(format!("eta stage {stage} run {run}"), t.text()));
    }
    if let Some(e) = app.elapsed_s() {
        parts.push(sep());
        parts.push(Span::styled(format!("⏱ {}", clock(e)), t.muted()));
    }
    parts.push(sep());
    parts.push(Span::styled(app.device.clone(), t.muted()));
    if let Some(m) = c.gpu_memory_mib {
        parts.push(Span::styled(format!(" {:.1} GiB", m / 1024.0), t.muted()));
    }
    f.render_widget(Paragraph::new(Line::from(parts)), area);
}
