//! The popups over the panes: the `?` key table and the confirmations (abort, quit or
//! restart while a run goes).

use super::*;

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(h.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::horizontal([Constraint::Length(w.min(area.width))])
        .flex(Flex::Center)
        .areas(v);
    r
}

pub(super) fn draw_help(f: &mut Frame, app: &App, area: Rect) {
    let t = &app.theme;
    let rows = help_rows(KEYMAP.iter().map(|b| (b.label, b.help)));
    let key_w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(4);
    let help_w = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(10);
    let entry = |(k, h): &(String, &str)| {
        vec![
            Span::styled(format!("{k:>key_w$}  "), t.accent()),
            Span::styled(format!("{h:<help_w$}"), t.text()),
        ]
    };
    // Two columns when one does not fit the height with the popups' keys under it
    // (80×24 included).
    let columns = if rows.len() as u16 + 6 > area.height { 2 } else { 1 };
    let per = rows.len().div_ceil(columns);
    let lines: Vec<Line> = (0..per)
        .map(|i| {
            let mut spans = entry(&rows[i]);
            if let Some(r) = rows.get(i + per).filter(|_| columns == 2) {
                spans.push(Span::raw("  "));
                spans.extend(entry(r));
            }
            Line::from(spans)
        })
        .collect();
    let width = (columns * (key_w + help_w + 2) + (columns - 1) * 2 + 2) as u16;
    let inner = width.min(area.width).saturating_sub(2).max(1) as usize;
    // The popups' own keys, one wrapped paragraph under the table.
    let mut context = Vec::new();
    let mut context_height = 0;
    for (name, keys) in [
        ("in the editor", context_help(EDITOR_KEYS)),
        ("in a picker", context_help(PICKER_KEYS)),
    ] {
        context_height += (name.chars().count() + 2 + keys.chars().count()).div_ceil(inner);
        context.push(Line::from(vec![
            Span::styled(format!("{name}: "), t.accent()),
            Span::styled(keys, t.muted()),
        ]));
    }
    let table_height = lines.len() as u16;
    let rect = centered(area, width, table_height + context_height as u16 + 2);
    f.render_widget(Clear, rect);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(t.border(true))
        .title(Span::styled(" Keys (any key closes) ", t.title()));
    let [table, below] = Layout::vertical([Constraint::Length(table_height), Constraint::Min(0)]).areas(block.inner(rect));
    f.render_widget(block, rect);
    f.render_widget(Paragraph::new(lines), table);
    f.render_widget(Paragraph::new(context).wrap(Wrap { trim: true }), below);
}

pub(super) fn draw_confirm(f: &mut Frame, app: &App, area: Rect, what: Confirm) {
    let t = &app.theme;
    let q = match what {
        Confirm::Abort => "Abort the run? Checkpoints and the report so far are kept.".to_string(),
        Confirm::Quit => "Training is running. Stop it and quit? The run directory stays complete.".to_string(),
        Confirm::Restart if app.run.is_active() => {
            format!("Stop this run and start again with {} pending change(s)?", app.config.pending.len())
        }
        Confirm::Restart => "Start a new run with the file's configuration?".to_string(),
        Confirm::NativeSize(n) => format!(
            "The checkpoint's native input is {n}². Set foundation.image_size = {n} (now {})?",
            app.config.exp.foundation.image_size
        ),
    };
    let rect = centered(area, 62, 5);
    f.render_widget(Clear, rect);
    f.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(q, t.text())),
            Line::from(vec![
                Span::styled("y", t.accent()),
                Span::raw(" yes   "),
                Span::styled("n", t.accent()),
                Span::raw(" no"),
            ]),
        ])
        .wrap(Wrap { trim: true })
        .block(
            Block::default()
                .borders(Borders::ALL)
                .border_style(t.border(true))
                .title(Span::styled(" Confirm ", t.title())),
        )
        .style(Style::default()),
        rect,
    );
}
