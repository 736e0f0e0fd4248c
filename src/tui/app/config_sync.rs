//! The config file and the session: hot reload (live changes, pending ones, errors)
//! and the Schedule pane's edits written back to the file.

use super::*;

impl App {
    /// Re-read the config file. Unchanged text is ignored unless `forced` (the reload key
    /// and SIGUSR1 re-report). An invalid file never changes the session.
    pub fn reload_config(&mut self, forced: bool) -> bool {
        if self.read_only {
            return false;
        }
        let chain = match crate::config::inherit::chain(&self.config_path) {
            Ok(c) => c,
            // Mid-rename, or deleted: keep everything, say so only when asked.
            Err(e) => {
                if forced {
                    self.error(e.to_string());
                }
                return forced;
            }
        };
        let texts: Vec<String> = chain.iter().map(|l| l.text.clone()).collect();
        if texts == self.chain_texts && !forced {
            return false;
        }
        self.chain_texts = texts;
        let parsed = Experiment::from_chain(&chain, &self.overrides);
        let new = match parsed {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                self.error(format!("{msg} — the session keeps its configuration"));
                self.config_error = Some(msg);
                return true;
            }
        };
        self.config_error = None;
        let progress = self.progress();
        let changes = live::diff(&self.exp, &new, &progress);
        if changes.is_empty() {
            self.pending.clear();
            self.next = None;
            if forced {
                self.info("config reloaded: no changes");
            }
            return true;
        }
        let (mut now, mut later) = (Vec::new(), Vec::new());
        for c in changes {
            match &c.verdict {
                Verdict::Live => now.push(c),
                Verdict::Restart => later.push(c),
                Verdict::Refused(why) => self.warn(format!("not applied: {c} ({why})")),
            }
        }
        let old_theme = self.exp.theme.clone();
        let merged = live::merge(&self.exp, &new, &progress);
        if !now.is_empty() {
            let list: Vec<String> = now.iter().map(|c| c.to_string()).collect();
            if self.run.is_active() {
                // The engine logs ConfigApplied when it takes them, at its next step.
                self.send(Command::Apply {
                    config: Box::new(merged.clone()),
                    changes: list,
                });
            } else {
                self.info(format!("config: {}", list.join("; ")));
            }
        }
        self.exp = merged;
        self.plan.rebuild(&self.exp);
        if self.exp.theme != old_theme && self.options.theme.is_none() {
            let t = self.exp.theme.clone();
            self.set_theme(&t);
        }
        self.applied = now;
        if !later.is_empty() {
            self.warn(format!(
                "{} change(s) wait for a restart (R): {}",
                later.len(),
                later.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
            ));
            self.next = Some(new);
        } else {
            self.next = None;
        }
        self.pending = later;
        true
    }

    pub(super) fn edit_schedule(&mut self, op: StageOp) {
        let Some(row) = self.plan.rows.get(self.selected) else { return };
        let Some(i) = row.distill_index else {
            self.warn("only the tdmr distillation stages can be edited here (e edits the whole file)");
            return;
        };
        if row.state != RowState::Pending {
            self.warn(format!("{} has started: only pending stages change", row.stage));
            return;
        }
        let next_pending = self
            .plan
            .rows
            .get(self.selected + 1)
            .is_some_and(|r| r.distill_index.is_some() && r.state == RowState::Pending);
        if op == StageOp::SwapWithNext(i) && !next_pending {
            self.warn("the next stage is not a pending distillation stage");
            return;
        }
        let origin = self.config_path.display().to_string();
        let edited = std::fs::read_to_string(&self.config_path)
            .map_err(|e| crate::Error::io(&self.config_path, e))
            .and_then(|t| stage_edit::edit(&t, &origin, op))
            .and_then(|t| crate::engine::run_dir::write_text_atomic(&self.config_path, &t));
        match edited {
            Ok(()) => {
                self.info(format!("schedule edited in {origin}"));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("schedule edit: {e}")),
        }
    }

    pub(super) fn move_selection(&mut self, up: bool) {
        match (self.view.focus, up) {
            (Pane::Log, true) => self.log_scroll = (self.log_scroll + 1).min(self.log.len().saturating_sub(1)),
            (Pane::Log, false) => self.log_scroll = self.log_scroll.saturating_sub(1),
            (_, true) => self.selected = self.selected.saturating_sub(1),
            (_, false) => self.selected = (self.selected + 1).min(self.plan.rows.len().saturating_sub(1)),
        }
    }

    pub(super) fn cycle_focus(&mut self, forward: bool) {
        let i = PANES.iter().position(|p| *p == self.view.focus).unwrap_or(0);
        let n = PANES.len();
        self.view.focus = PANES[if forward { (i + 1) % n } else { (i + n - 1) % n }];
        if matches!(self.view.focus, Pane::Log | Pane::Runs) {
            self.view.lower = self.view.focus;
        }
    }
}
