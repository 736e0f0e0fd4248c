//! Drawing: a pure function of the app state, so tests render it into a `TestBackend`.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{App, Confirm, Overlay, Pane, RunState};
use super::keymap::{context_help, help_rows, EDITOR_KEYS, KEYMAP, PICKER_KEYS};
use super::panes::PaneCtx;
use crate::config::live::Change;

pub use super::panes::clock;

mod overlays;
use overlays::{draw_confirm, draw_help};

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
            // The teacher-vs-target comparison, once chosen, takes the wider half.
            if app.view.lower == Pane::Compare {
                draw_pane(f, app, Pane::Compare, l);
                draw_pane(f, app, Pane::Log, r);
            } else {
                draw_pane(f, app, Pane::Log, l);
                draw_pane(f, app, Pane::Runs, r);
            }
        } else {
            draw_pane(f, app, app.view.lower, lower);
        }
    }
    draw_status(f, app, status);
    if let Some(e) = &app.editor {
        let ctx = PaneCtx {
            theme: &app.theme,
            focused: true,
        };
        e.draw(f, area, &ctx);
    }
    if let Some(p) = &app.picker {
        let ctx = PaneCtx {
            theme: &app.theme,
            focused: true,
        };
        p.draw(f, area, &ctx);
    }
    match app.view.overlay {
        Overlay::None => {}
        Overlay::Help => draw_help(f, app, area),
        Overlay::Confirm(c) => draw_confirm(f, app, area, c),
    }
}

fn draw_pane(f: &mut Frame, app: &App, pane: Pane, area: Rect) {
    let ctx = PaneCtx {
        theme: &app.theme,
        focused: app.view.focus == pane,
    };
    match pane {
        Pane::Foundation => app.foundation.draw(f, area, &ctx, &app.config.exp),
        Pane::Reprogrammer => app.reprogrammer.draw(f, area, &ctx, &app.config),
        Pane::Schedule => app.schedule.draw(f, area, &ctx),
        Pane::Charts => app.charts.draw(f, area, &ctx, &app.view.charts(), app.run.is_active()),
        Pane::Log => app.log.draw(f, area, &ctx),
        Pane::Runs => app.runs.draw(f, area, &ctx),
        Pane::Compare => app.compare.draw(f, area, &ctx),
    }
}

fn state_span(app: &App) -> Span<'static> {
    let t = &app.theme;
    match &app.run.state {
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
        Span::styled(app.config.exp.name.clone(), t.title()),
        Span::styled(format!(" · {file} · seed {} · ", app.config.exp.seed), t.muted()),
        state_span(app),
        // Said where it cannot scroll away: keys that steer a run do nothing here.
        Span::styled(if app.run.read_only { " · read-only" } else { "" }, t.warn()),
        Span::styled(
            app.run.dir.as_ref().map(|d| format!(" · {}", d.display())).unwrap_or_default(),
            t.muted(),
        ),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn banner_lines(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut v = Vec::new();
    if let Some(e) = &app.config.error {
        v.push(Line::from(vec![
            Span::styled(" config error ", t.error().add_modifier(Modifier::REVERSED)),
            Span::styled(format!(" {} ", e.lines().next().unwrap_or_default()), t.error()),
            Span::styled("(the session keeps its configuration)", t.muted()),
        ]));
    }
    if !app.config.pending.is_empty() {
        let list: Vec<String> = app.config.pending.iter().map(Change::to_string).collect();
        v.push(Line::from(vec![
            Span::styled(" restart pending ", t.warn().add_modifier(Modifier::REVERSED)),
            Span::styled(format!(" {} · R to restart", list.join("; ")), t.warn()),
        ]));
    }
    v
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
    if let Some(r) = app.schedule.plan.running() {
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
        let stage = app.schedule.plan.stage_eta().map(clock).unwrap_or_else(|| "…".into());
        let run = match app.schedule.plan.run_eta() {
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
    parts.push(Span::styled(app.run.device.clone(), t.muted()));
    if let Some(m) = c.gpu_memory_mib {
        parts.push(Span::styled(format!(" {:.1} GiB", m / 1024.0), t.muted()));
    }
    f.render_widget(Paragraph::new(Line::from(parts)), area);
}
