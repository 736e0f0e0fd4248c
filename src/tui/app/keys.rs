//! Keys: one action per key in each context (`keymap`), dispatched here.

use super::*;

impl App {
    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        use ratatui::crossterm::event::KeyCode;
        if let Some(editor) = self.editor.as_mut() {
            match editor.on_key(key.code) {
                Edited::Typing => {}
                Edited::Cancelled => self.editor = None,
                Edited::Submitted(text) => self.submit_edit(&text),
                Edited::Undo => {
                    self.undo_edit();
                    let exp = &self.config.exp;
                    if let Some(e) = self.editor.as_mut() {
                        e.refresh(|at| fields::current(exp, at));
                    }
                }
            }
            return Effect::None;
        }
        if let Some(picker) = self.picker.as_mut() {
            match picker.on_key(key.code) {
                Picked::Browsing => {}
                Picked::Closed => self.picker = None,
                Picked::Chosen(path) => {
                    let (browse, family, native) = (picker.browse, picker.detected_family().map(String::from), picker.native_input());
                    self.picker = None;
                    match browse {
                        Browse::Foundation => self.choose_foundation(&path, family.as_deref(), native),
                        Browse::Data { .. } => self.choose_data(&path),
                    }
                }
            }
            return Effect::None;
        }
        if let Overlay::Confirm(what) = self.view.overlay {
            self.view.overlay = Overlay::None;
            if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter) {
                match what {
                    Confirm::Abort => {
                        self.send(Command::Abort);
                        self.info("aborting at the next step…");
                    }
                    Confirm::Quit => {
                        self.should_quit = true;
                        return Effect::Quit;
                    }
                    Confirm::Restart => self.restart(),
                    Confirm::NativeSize(n) => self.set_native_size(n),
                }
            }
            return Effect::None;
        }
        if self.view.overlay == Overlay::Help {
            self.view.overlay = Overlay::None;
            return Effect::None;
        }
        let Some(action) = keymap::lookup(&key) else { return Effect::None };
        if self.run.read_only {
            use Action::*;
            match action {
                Quit if !self.view.zoom => {
                    self.should_quit = true;
                    return Effect::Quit;
                }
                PickFoundation | PickData | Undo | Start | PauseResume | SkipStage | SkipTo | Abort | SaveCheckpoint | ReloadConfig
                | Restart | EditConfig | StageAdd | StageRemove | StageMoveUp | StageMoveDown | EpochMore | EpochLess | LrHalve
                | LrDouble => {
                    self.warn("attached read-only: control the run where it runs");
                    return Effect::None;
                }
                _ => {}
            }
        }
        match action {
            Action::Start => self.start(),
            Action::ResumeRun => self.resume(None),
            Action::PauseResume => self.toggle_pause(),
            Action::SkipStage if self.run.is_active() => {
                self.send(Command::SkipStage);
                self.info("skipping to the next stage…");
            }
            Action::SkipStage => self.warn("nothing is running"),
            Action::SkipTo => self.skip_to_selected(),
            Action::Abort if self.run.is_active() => self.view.overlay = Overlay::Confirm(Confirm::Abort),
            Action::Abort => self.warn("nothing is running"),
            Action::SaveCheckpoint if self.run.is_active() => {
                self.send(Command::Save);
                self.info("checkpoint requested");
            }
            Action::SaveCheckpoint => self.warn("nothing is running"),
            Action::ReloadConfig => {
                self.reload_config(true);
            }
            Action::Restart if self.config.next.is_some() || !self.run.is_active() => {
                self.view.overlay = Overlay::Confirm(Confirm::Restart)
            }
            Action::Restart => self.info("no change waits for a restart"),
            Action::EditConfig => {
                let line = self
                    .schedule
                    .selected_distill()
                    .and_then(|i| stage_edit::stage_line(self.config.text(), i));
                return Effect::OpenEditor {
                    path: self.config.path.clone(),
                    line,
                };
            }
            Action::ReloadFoundation => self.load_foundation(),
            Action::PickFoundation => self.open_picker(Browse::Foundation),
            Action::PickData => self.open_picker(self.data_browse()),
            Action::NextPane => self.cycle_focus(true),
            Action::PrevPane => self.cycle_focus(false),
            // Attached read-only, enter only looks (zooms).
            Action::EditValue if !self.run.read_only && !self.view.zoom && self.edit_selected() => {}
            Action::Zoom | Action::EditValue => self.view.zoom = !self.view.zoom,
            Action::Undo => self.undo_edit(),
            Action::Up => self.move_selection(true),
            Action::Down => self.move_selection(false),
            Action::StageAdd => self.schedule_op(StageOp::Duplicate),
            Action::StageRemove => self.schedule_op(StageOp::Remove),
            Action::StageMoveUp => {
                if let Some(i) = self.schedule.selected_distill() {
                    if i > 0 && self.schedule.selected > 0 {
                        self.schedule.selected -= 1;
                        self.edit_schedule(StageOp::SwapWithNext(i - 1));
                    }
                }
            }
            Action::StageMoveDown => {
                if let Some(i) = self.schedule.selected_distill() {
                    self.edit_schedule(StageOp::SwapWithNext(i));
                    self.schedule.move_selection(false);
                }
            }
            Action::EpochMore => self.steer(Steer::Epochs(1)),
            Action::EpochLess => self.steer(Steer::Epochs(-1)),
            Action::LrHalve => self.steer(Steer::Lr(0.5)),
            Action::LrDouble => self.steer(Steer::Lr(2.0)),
            Action::ToggleWindow => {
                self.view.window = match self.view.window {
                    Window::Full => Window::Recent,
                    Window::Recent => Window::Full,
                }
            }
            Action::ToggleMarker => {
                self.view.marker = match self.view.marker {
                    MarkerKind::Braille => MarkerKind::Block,
                    MarkerKind::Block => MarkerKind::Dot,
                    MarkerKind::Dot => MarkerKind::Braille,
                }
            }
            Action::ToggleRaw => self.view.show_raw = !self.view.show_raw,
            Action::NextTheme => {
                let i = BUNDLED
                    .iter()
                    .position(|n| *n == self.theme.name)
                    .map_or(0, |i| (i + 1) % BUNDLED.len());
                self.set_theme(BUNDLED[i]);
                self.info(format!("theme {}", self.theme.name));
            }
            Action::Help => self.view.overlay = Overlay::Help,
            Action::Quit if self.view.zoom => self.view.zoom = false,
            Action::Quit if self.run.is_active() => self.view.overlay = Overlay::Confirm(Confirm::Quit),
            Action::Quit => {
                self.should_quit = true;
                return Effect::Quit;
            }
        }
        Effect::None
    }

    /// `enter` on the Foundation, Reprogrammer or Schedule pane: edit the selected
    /// line's values, or open the picker it names. `false` where the pane edits nothing.
    fn edit_selected(&mut self) -> bool {
        let fields = match self.view.focus {
            Pane::Reprogrammer => self.reprogrammer.fields(),
            Pane::Schedule => match self.schedule.selected_fields() {
                Ok(f) => f,
                Err(why) => {
                    self.warn(why);
                    return true;
                }
            },
            Pane::Foundation => match self.foundation.line_edit() {
                LineEdit::Values(f) => f,
                LineEdit::PickFile => {
                    self.open_picker(Browse::Foundation);
                    return true;
                }
                LineEdit::PickData => {
                    self.open_picker(self.data_browse());
                    return true;
                }
            },
            _ => return false,
        };
        self.open_editor(fields);
        true
    }

    /// The data picker, checking folders against the config's `k` and hold-outs.
    fn data_browse(&self) -> Browse {
        let d = &self.config.exp.data;
        Browse::Data {
            k: d.k,
            test_fraction: d.test_fraction,
            validation_fraction: d.validation_fraction,
        }
    }

    /// A picker at the directory of what the config names now.
    fn open_picker(&mut self, browse: Browse) {
        let current = match browse {
            Browse::Foundation => self.config.exp.foundation_path(),
            Browse::Data { .. } => self.config.exp.data_path(),
        };
        let dir = current
            .parent()
            .filter(|d| d.is_dir())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        self.picker = Some(Picker::browse(browse, &dir, Some(&current)));
    }

    pub(super) fn schedule_op(&mut self, op: fn(usize) -> StageOp) {
        match self.schedule.selected_distill() {
            Some(i) => self.edit_schedule(op(i)),
            None => self.warn("select a tdmr distillation stage first (↑/↓ in the Schedule pane)"),
        }
    }
}
