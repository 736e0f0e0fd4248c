//! Steering the running stage from the keyboard: one more or one fewer epoch, half or
//! twice the learning rate. Each is an edit of the config file (comments and layout
//! kept) that takes the hot-reload path, so the engine records it as a config change
//! in `metrics.jsonl` and its checkpoints carry it into a resume.

use super::*;
use crate::config::stage_edit::Setting;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Steer {
    /// Add (or, negative, remove) epochs.
    Epochs(i64),
    /// Multiply the learning rate.
    Lr(f64),
}

impl App {
    /// Skip every stage from the running one up to the one selected in the Schedule
    /// pane, which must still be pending and come later in the run.
    pub(super) fn skip_to_selected(&mut self) {
        if !self.run.is_active() {
            self.warn("nothing is running");
            return;
        }
        let rows = &self.schedule.plan.rows;
        let Some(target) = rows.get(self.schedule.selected) else { return };
        let (method, stage) = (target.method.clone(), target.stage.clone());
        let running = rows.iter().position(|r| matches!(r.state, RowState::Running { .. }));
        if target.state != RowState::Pending || running.is_none_or(|r| r > self.schedule.selected) {
            self.warn(format!(
                "{method}/{stage} is not a pending stage after the running one: select one (↑/↓)"
            ));
            return;
        }
        self.info(format!("skipping to {method}/{stage}…"));
        self.skip_to = Some((method, stage));
        self.send(Command::SkipStage);
    }

    /// A stage started while `N` waits for a later one: skip it too.
    pub(super) fn skip_on_the_way(&mut self, e: &Event) {
        let Event::StageStarted { method, stage, .. } = e else { return };
        match &self.skip_to {
            Some((m, s)) if m == method && s == stage => self.skip_to = None,
            Some(_) => self.send(Command::SkipStage),
            None => {}
        }
    }

    pub(super) fn steer(&mut self, how: Steer) {
        if !self.run.is_active() {
            self.warn("nothing is running: + - [ ] steer the running stage");
            return;
        }
        let Some(row) = self.schedule.plan.running() else {
            self.warn("no stage is running yet");
            return;
        };
        let (method, stage, distill, trained_epochs) = (row.method.clone(), row.stage.clone(), row.distill_index, row.epochs);
        let epoch_now = match row.state {
            RowState::Running { epoch, .. } => epoch.max(1),
            _ => 1,
        };
        let exp = &self.config.exp;
        let edit = match (how, distill) {
            (Steer::Epochs(d), Some(i)) => {
                let configured = exp.distill.stages[i].epochs;
                let new = configured as i64 + d;
                // On a transfer set the engine trains fewer, longer epochs than written:
                // compare in its epochs.
                let per = trained_epochs as f64 / configured.max(1) as f64;
                if new < 1 || ((new as f64 * per).ceil() as usize) < epoch_now {
                    self.warn(format!(
                        "{method}/{stage} is in epoch {epoch_now} of {trained_epochs}: it cannot end before that epoch"
                    ));
                    return;
                }
                (Setting::Stage(i, "epochs"), configured.to_string(), toml_edit::Value::from(new))
            }
            (Steer::Epochs(_), None) => {
                self.warn(format!(
                    "{method}/{stage} keeps its length: only the distillation stages' epochs change mid-run"
                ));
                return;
            }
            (Steer::Lr(f), Some(i)) => {
                let lr = exp.distill.stages[i].lr;
                (Setting::Stage(i, "lr"), format!("{lr:e}"), toml_edit::Value::from(lr * f))
            }
            (Steer::Lr(_), None) if method == "scratch" || method == "kd" => {
                self.warn(format!(
                    "the {method} baseline trains at a fixed lr (the schedule's peak): it is the comparison's budget"
                ));
                return;
            }
            (Steer::Lr(f), None) if method == "linear-probe" => {
                let lr = exp.baselines.linear_probe_lr;
                (
                    Setting::Key("baselines", "linear_probe_lr"),
                    format!("{lr:e}"),
                    toml_edit::Value::from(lr * f),
                )
            }
            (Steer::Lr(f), None) => {
                let lr = exp.stage1.lr;
                (Setting::Key("stage1", "lr"), format!("{lr:e}"), toml_edit::Value::from(lr * f))
            }
        };
        let (at, old, new) = edit;
        let path = self.config.path.clone();
        let origin = path.display().to_string();
        let written = std::fs::read_to_string(&path)
            .map_err(|e| crate::Error::io(&path, e))
            .and_then(|t| stage_edit::set(&t, &origin, &at, new.clone()))
            .and_then(|t| crate::engine::run_dir::write_text_atomic(&path, &t));
        match written {
            Ok(()) => {
                self.info(format!(
                    "steered {method}/{stage}: {at} {old} → {} in {origin}",
                    new.to_string().trim()
                ));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("steer {method}/{stage}: {e}")),
        }
    }
}
