//! `tdmr attach SWEEP_DIR`: the sweep's points and their sub-runs, live, with the
//! ranking by validation so far. `enter` opens a sub-run in the read-only workbench;
//! quitting it comes back here.

use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::theme::Theme;
use crate::engine::sweep_status::{Progress, Split, SweepStatus};

pub struct SweepBrowser {
    pub status: SweepStatus,
    pub selected: usize,
    pub theme: Theme,
    /// Why the last `enter` did nothing.
    pub note: Option<String>,
}

/// What a key asks of the loop that owns the terminal.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    Quit,
    /// Show this sub-run in the workbench.
    Open(PathBuf),
}

impl SweepBrowser {
    pub fn new(status: SweepStatus, theme: Theme) -> SweepBrowser {
        SweepBrowser {
            status,
            selected: 0,
            theme,
            note: None,
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        let last = self.status.runs.len().saturating_sub(1);
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Action::Quit,
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = last,
            KeyCode::Enter => {
                let Some(run) = self.status.runs.get(self.selected) else {
                    return Action::None;
                };
                if run.progress == Progress::Pending {
                    self.note = Some(format!("{} has not started yet", run.dir.display()));
                    return Action::None;
                }
                self.note = None;
                return Action::Open(run.dir.clone());
            }
            _ => {}
        }
        Action::None
    }

    pub fn draw(&self, f: &mut Frame) {
        let t = &self.theme;
        let ranking = self.status.ranking();
        let [title, table_area, rank_area, help] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(4),
            Constraint::Length(3),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let (done, all) = self.status.done();
        f.render_widget(
            Paragraph::new(Line::from(vec![
                Span::styled("tdmr sweep ", t.title()),
                Span::styled(self.status.root.display().to_string(), t.text()),
                Span::styled(format!("  {done}/{all} sub-runs done"), t.muted()),
            ])),
            title,
        );

        let rank_of = |point: &str| ranking.iter().position(|r| r.0 == point).map(|i| (i + 1).to_string());
        let header = Row::new(
            [
                "rank",
                "point",
                "seed",
                "split",
                "state",
                &format!("{} %", self.status.rank_by),
                "methods done",
            ]
            .map(|h| Cell::from(h.to_string())),
        )
        .style(t.accent());
        let rows: Vec<Row> = self
            .status
            .runs
            .iter()
            .map(|r| {
                let (state, style) = match &r.progress {
                    Progress::Pending => ("pending".to_string(), t.muted()),
                    Progress::Started {
                        method,
                        stage,
                        epoch,
                        epochs,
                    } if !method.is_empty() => (format!("▶ {method}/{stage} {epoch}/{epochs}"), t.warn()),
                    Progress::Started { .. } => ("▶ starting".to_string(), t.warn()),
                    Progress::Done => ("✓ done".to_string(), t.good()),
                    Progress::Failed(m) => (format!("✗ {m}"), t.error()),
                };
                let (rank, split) = match r.split {
                    Split::Validation => (rank_of(&r.point).unwrap_or_default(), "validation"),
                    // The test figure is the sweep's one use of the test split: never ranked.
                    Split::Test => (String::new(), "test"),
                };
                let acc = r
                    .results
                    .get(&self.status.rank_by)
                    .map(|a| format!("{:.2}", 100.0 * a))
                    .unwrap_or_else(|| "–".into());
                Row::new(vec![
                    Cell::from(rank),
                    Cell::from(r.point.clone()),
                    Cell::from(r.seed.to_string()),
                    Cell::from(split),
                    Cell::from(state).style(style),
                    Cell::from(acc),
                    Cell::from(r.results.len().to_string()),
                ])
            })
            .collect();
        let table = Table::new(
            rows,
            [
                Constraint::Length(4),
                Constraint::Min(16),
                Constraint::Length(5),
                Constraint::Length(10),
                Constraint::Min(18),
                Constraint::Length(8),
                Constraint::Length(12),
            ],
        )
        .header(header)
        .row_highlight_style(t.selected())
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(t.border(true))
                .title(Line::from(" Points ").style(t.title())),
        );
        let mut state = TableState::default().with_selected(Some(self.selected));
        f.render_stateful_widget(table, table_area, &mut state);

        let overrides = self
            .status
            .runs
            .get(self.selected)
            .map(|r| r.overrides.join(" "))
            .filter(|o| !o.is_empty());
        let best = match ranking.first() {
            Some((name, mean, n)) => format!(
                "best so far on validation: {name} ({:.2}%, {n} seed{})",
                100.0 * mean,
                if *n == 1 { "" } else { "s" }
            ),
            None => "no point has finished on validation yet".into(),
        };
        let mut lines = vec![Line::styled(best, t.text())];
        lines.push(match (&self.note, overrides) {
            (Some(n), _) => Line::styled(n.clone(), t.warn()),
            (None, Some(o)) => Line::styled(format!("overrides: {o}"), t.muted()),
            (None, None) => Line::default(),
        });
        f.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::TOP).border_style(t.border(false))),
            rank_area,
        );
        f.render_widget(
            Paragraph::new(Line::styled(
                "↑/↓ select · enter open the sub-run (q there comes back) · q quit",
                t.muted(),
            )),
            help,
        );
    }
}
