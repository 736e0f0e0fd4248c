//! The config file and the session: what a reload found, said in the log and sent to
//! a running engine, and the workbench's edits (the schedule, the chosen foundation)
//! written back to the file.

use super::*;
use crate::config::stage_edit::Setting;

impl App {
    /// Re-read the config file. Unchanged text is ignored unless `forced` (the reload key
    /// and SIGUSR1 re-report). An invalid file never changes the session.
    pub fn reload_config(&mut self, forced: bool) -> bool {
        if self.run.read_only {
            return false;
        }
        let old_theme = self.config.exp.theme.clone();
        let progress = self.progress();
        match self.config.reload(forced, &progress) {
            Reload::Unchanged => false,
            // Mid-rename, or deleted: keep everything, say so only when asked.
            Reload::Unreadable(e) => {
                if forced {
                    self.error(e);
                }
                forced
            }
            Reload::Invalid(msg) => {
                self.error(format!("{msg} — the session keeps its configuration"));
                true
            }
            Reload::NoChanges => {
                if forced {
                    self.info("config reloaded: no changes");
                }
                true
            }
            Reload::Changed { live, restart, refused } => {
                for (c, why) in refused {
                    self.warn(format!("not applied: {c} ({why})"));
                }
                if !live.is_empty() {
                    let list: Vec<String> = live.iter().map(|c| c.to_string()).collect();
                    if self.run.is_active() {
                        // The engine logs ConfigApplied when it takes them, at its next step.
                        self.send(Command::Apply {
                            config: Box::new(self.config.exp.clone()),
                            changes: list,
                        });
                    } else {
                        self.info(format!("config: {}", list.join("; ")));
                    }
                }
                self.schedule.plan.rebuild(&self.config.exp);
                if self.config.exp.theme != old_theme && self.options.theme.is_none() {
                    let t = self.config.exp.theme.clone();
                    self.set_theme(&t);
                }
                if !restart.is_empty() {
                    self.warn(format!(
                        "{} change(s) wait for a restart (R): {}",
                        restart.len(),
                        restart.iter().map(|c| c.to_string()).collect::<Vec<_>>().join("; ")
                    ));
                }
                true
            }
        }
    }

    /// Point `foundation.path` at `path` (as an absolute path) in the config file; a
    /// `foundation.family` that names another family becomes `auto`. The reload then
    /// applies it (or shows it pending while a run goes), and an idle workbench loads
    /// the new foundation into its pane. Where the checkpoint's native input differs
    /// from `foundation.image_size`, the workbench offers to take it.
    pub(super) fn choose_foundation(&mut self, path: &Path, detected: Option<&str>, native: Option<usize>) {
        let chosen = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let named = self.config.exp.foundation.family;
        let conflicting = named != crate::models::foundation::Family::Auto && detected.is_some_and(|d| d != named.name());
        let mut settings = vec![(
            Setting::Key("foundation", "path"),
            toml_edit::Value::from(chosen.display().to_string()),
        )];
        if conflicting {
            settings.push((Setting::Key("foundation", "family"), "auto".into()));
        }
        match self.write_checked(&settings) {
            Ok(_) => {
                self.info(format!("foundation.path = {} in {}", chosen.display(), self.config.path.display()));
                self.reload_config(false);
                if !self.run.is_active() {
                    self.load_foundation();
                }
                if let Some(n) = native.filter(|n| *n != self.config.exp.foundation.image_size) {
                    self.view.overlay = Overlay::Confirm(Confirm::NativeSize(n));
                }
            }
            Err(e) => self.error(format!("foundation picker: {e}")),
        }
    }

    /// `foundation.image_size = n`, the chosen checkpoint's native input (accepted).
    pub(super) fn set_native_size(&mut self, n: usize) {
        match self.write_checked(&[(Setting::Key("foundation", "image_size"), (n as i64).into())]) {
            Ok(old) => {
                self.undo.push(old);
                self.info(format!("foundation.image_size = {n} (ctrl-z undoes)"));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("foundation.image_size = {n} not taken: {e}")),
        }
    }

    /// Point the data at the ImageFolder `root` (as an absolute path).
    pub(super) fn choose_data(&mut self, root: &Path) {
        let chosen = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let settings = [
            (Setting::Key("data", "kind"), "image-folder".into()),
            (Setting::Key("data", "path"), chosen.display().to_string().into()),
        ];
        match self.write_checked(&settings) {
            Ok(old) => {
                self.undo.push(old);
                self.info(format!("data.path = {} (ctrl-z undoes)", chosen.display()));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("data picker: {e}")),
        }
    }

    /// Edit the selected line's `fields` in place.
    pub(super) fn open_editor(&mut self, fields: Vec<Field>) {
        let exp = &self.config.exp;
        let fields = fields
            .into_iter()
            .map(|f| {
                let now = fields::current(exp, &f.at);
                (f, now)
            })
            .collect();
        self.editor = Some(FieldEditor::new(fields));
    }

    /// Set `settings` in the config file, keeping its comments, if the result loads the
    /// way the file is loaded (a copy beside it, so bases, relative paths and `--set`
    /// overrides apply as for the file). Returns the text it replaced; on an error
    /// nothing is written.
    fn write_checked(&self, settings: &[(Setting, toml_edit::Value)]) -> std::result::Result<String, String> {
        let path = &self.config.path;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let probe_name = format!(".{name}.tdmr-edit.toml");
        let written = (|| {
            let origin = path.display().to_string();
            let old = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
            let mut new = old.clone();
            for (at, value) in settings {
                new = stage_edit::set(&new, &origin, at, value.clone())?;
            }
            let probe = path.with_file_name(&probe_name);
            std::fs::write(&probe, &new).map_err(|e| crate::Error::io(&probe, e))?;
            let loaded = Experiment::load(&probe, &self.config.overrides);
            let _ = std::fs::remove_file(&probe);
            loaded?;
            crate::engine::run_dir::write_text_atomic(path, &new)?;
            Ok::<_, crate::Error>(old)
        })();
        // A message names the probe copy; say the file instead.
        written.map_err(|e| e.to_string().replace(&probe_name, &name))
    }

    /// The edited value, checked and written; the old text is kept for ctrl-z and `u`.
    pub(super) fn submit_edit(&mut self, typed: &str) {
        let Some(at) = self.editor.as_ref().map(|e| e.setting().clone()) else {
            return;
        };
        match self.write_checked(&[(at.clone(), FieldEditor::value(typed))]) {
            Ok(old) => {
                self.editor = None;
                self.undo.push(old);
                self.info(format!("{at} = {typed} in {} (ctrl-z undoes)", self.config.path.display()));
                self.reload_config(false);
            }
            Err(e) => {
                if let Some(editor) = self.editor.as_mut() {
                    editor.error = Some(e);
                }
            }
        }
    }

    /// Put the config file back as it was before the session's last in-place edit.
    pub(super) fn undo_edit(&mut self) {
        let Some(text) = self.undo.pop() else {
            self.warn("nothing to undo: ctrl-z undoes this session's in-place edits");
            return;
        };
        match crate::engine::run_dir::write_text_atomic(&self.config.path, &text) {
            Ok(()) => {
                self.info(format!("undone: {} as before the last edit", self.config.path.display()));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("undo: {e}")),
        }
    }

    pub(super) fn edit_schedule(&mut self, op: StageOp) {
        let selected = self.schedule.selected;
        let Some(row) = self.schedule.plan.rows.get(selected) else { return };
        let Some(i) = row.distill_index else {
            self.warn("only the tdmr distillation stages can be edited here (e edits the whole file)");
            return;
        };
        if row.state != RowState::Pending {
            let msg = format!("{} has started: only pending stages change", row.stage);
            self.warn(msg);
            return;
        }
        let next_pending = self
            .schedule
            .plan
            .rows
            .get(selected + 1)
            .is_some_and(|r| r.distill_index.is_some() && r.state == RowState::Pending);
        if op == StageOp::SwapWithNext(i) && !next_pending {
            self.warn("the next stage is not a pending distillation stage");
            return;
        }
        let path = self.config.path.clone();
        let origin = path.display().to_string();
        let edited = std::fs::read_to_string(&path)
            .map_err(|e| crate::Error::io(&path, e))
            .and_then(|t| stage_edit::edit(&t, &origin, op))
            .and_then(|t| crate::engine::run_dir::write_text_atomic(&path, &t));
        match edited {
            Ok(()) => {
                self.info(format!("schedule edited in {origin}"));
                self.reload_config(false);
            }
            Err(e) => self.error(format!("schedule edit: {e}")),
        }
    }

    pub(super) fn move_selection(&mut self, up: bool) {
        match self.view.focus {
            Pane::Log => self.log.scroll(up),
            Pane::Reprogrammer => self.reprogrammer.move_selection(up),
            Pane::Foundation => self.foundation.move_selection(up),
            _ => self.schedule.move_selection(up),
        }
    }

    pub(super) fn cycle_focus(&mut self, forward: bool) {
        let i = PANES.iter().position(|p| *p == self.view.focus).unwrap_or(0);
        let n = PANES.len();
        self.view.focus = PANES[if forward { (i + 1) % n } else { (i + n - 1) % n }];
        if matches!(self.view.focus, Pane::Log | Pane::Runs | Pane::Compare) {
            self.view.lower = self.view.focus;
        }
    }
}
