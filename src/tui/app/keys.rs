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
            }
            return Effect::None;
        }
        if key.modifiers.contains(ratatui::crossterm::event::KeyModifiers::CONTROL) && key.code == KeyCode::Char('z') {
            self.undo_edit();
            return Effect::None;
        }
        if let Some(picker) = self.picker.as_mut() {
            match picker.on_key(key.code) {
                Picked::Browsing => {}
                Picked::Closed => self.picker = None,
                Picked::Chosen(path) => {
                    let family = picker.detected_family().map(String::from);
                    self.picker = None;
                    self.choose_foundation(&path, family.as_deref());
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
                PickFoundation | Start | PauseResume | SkipStage | SkipTo | Abort | SaveCheckpoint | ReloadConfig | Restart
                | EditConfig | StageAdd | StageRemove | StageMoveUp | StageMoveDown | EpochMore | EpochLess | LrHalve | LrDouble => {
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
            Action::PickFoundation => {
                let current = self.config.exp.foundation_path();
                let dir = current
                    .parent()
                    .filter(|d| d.is_dir())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                self.picker = Some(Picker::open(&dir, Some(&current)));
            }
            Action::NextPane => self.cycle_focus(true),
            Action::PrevPane => self.cycle_focus(false),
            Action::EditValue if self.view.focus == Pane::Reprogrammer && self.run.read_only => {
                self.warn("attached read-only: control the run where it runs")
            }
            Action::EditValue if self.view.focus == Pane::Reprogrammer => self.open_editor(),
            Action::Zoom | Action::EditValue => self.view.zoom = !self.view.zoom,
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

    pub(super) fn schedule_op(&mut self, op: fn(usize) -> StageOp) {
        match self.schedule.selected_distill() {
            Some(i) => self.edit_schedule(op(i)),
            None => self.warn("select a tdmr distillation stage first (↑/↓ in the Schedule pane)"),
        }
    }
}
