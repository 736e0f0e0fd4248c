//! Every key the workbench answers to, in one table: the help overlay is drawn from it
//! and the tests iterate over it, so a key cannot be bound without being documented.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    ResumeRun,
    PauseResume,
    SkipStage,
    SkipTo,
    Abort,
    SaveCheckpoint,
    ReloadConfig,
    Restart,
    EditConfig,
    ReloadFoundation,
    PickFoundation,
    PickData,
    NextPane,
    PrevPane,
    Zoom,
    EditValue,
    Up,
    Down,
    StageAdd,
    StageRemove,
    StageMoveUp,
    StageMoveDown,
    EpochMore,
    EpochLess,
    LrHalve,
    LrDouble,
    ToggleWindow,
    ToggleMarker,
    ToggleRaw,
    NextTheme,
    Help,
    Quit,
}

pub struct Binding {
    pub key: KeyCode,
    pub mods: KeyModifiers,
    pub label: &'static str,
    pub action: Action,
    pub help: &'static str,
}

const fn bind(key: KeyCode, label: &'static str, action: Action, help: &'static str) -> Binding {
    Binding {
        key,
        mods: KeyModifiers::NONE,
        label,
        action,
        help,
    }
}

use Action::*;
use KeyCode::Char;

/// The key table. Upper-case letters are matched with or without the shift flag.
pub const KEYMAP: &[Binding] = &[
    bind(Char('s'), "s", Start, "start a run"),
    bind(Char('u'), "u", ResumeRun, "resume the last run"),
    bind(Char(' '), "space", PauseResume, "pause / resume"),
    bind(Char('p'), "p", PauseResume, "pause / resume"),
    bind(Char('n'), "n", SkipStage, "skip to the next stage"),
    bind(Char('N'), "N", SkipTo, "skip to the selected stage"),
    bind(Char('x'), "x", Abort, "abort the run (confirms)"),
    bind(Char('c'), "c", SaveCheckpoint, "save a checkpoint now"),
    bind(Char('r'), "r", ReloadConfig, "reload the config now"),
    bind(Char('R'), "R", Restart, "restart: pending changes"),
    bind(Char('e'), "e", EditConfig, "edit config in $EDITOR"),
    bind(Char('f'), "f", ReloadFoundation, "(re)load the foundation"),
    bind(Char('o'), "o", PickFoundation, "pick the foundation file"),
    bind(Char('O'), "O", PickData, "pick the data folder"),
    bind(KeyCode::Tab, "tab", NextPane, "focus the next pane"),
    bind(KeyCode::BackTab, "shift-tab", PrevPane, "focus the previous pane"),
    bind(Char('z'), "z", Zoom, "zoom the pane / back"),
    bind(KeyCode::Enter, "enter", EditValue, "edit a value / zoom"),
    bind(KeyCode::Up, "↑", Up, "stage up / scroll log up"),
    bind(Char('k'), "k", Up, "stage up / scroll log up"),
    bind(KeyCode::Down, "↓", Down, "stage down / log down"),
    bind(Char('j'), "j", Down, "stage down / log down"),
    bind(Char('a'), "a", StageAdd, "add a stage (a copy)"),
    bind(Char('d'), "d", StageRemove, "remove a pending stage"),
    bind(Char('K'), "K", StageMoveUp, "move a pending stage up"),
    bind(Char('J'), "J", StageMoveDown, "move a pending stage down"),
    bind(Char('+'), "+", EpochMore, "running stage ±1 epoch"),
    bind(Char('-'), "-", EpochLess, "running stage ±1 epoch"),
    bind(Char('['), "[", LrHalve, "running stage lr ÷2 / ×2"),
    bind(Char(']'), "]", LrDouble, "running stage lr ÷2 / ×2"),
    bind(Char('h'), "h", ToggleWindow, "whole run / recent window"),
    bind(Char('m'), "m", ToggleMarker, "braille/block/dot marks"),
    bind(Char('l'), "l", ToggleRaw, "raw step loss on / off"),
    bind(Char('t'), "t", NextTheme, "next bundled theme"),
    bind(Char('?'), "?", Help, "this help"),
    bind(Char('q'), "q", Quit, "quit (confirms if running)"),
    bind(KeyCode::Esc, "esc", Quit, "close a popup / quit"),
];

/// The action bound to a key press, if any.
pub fn lookup(ev: &KeyEvent) -> Option<Action> {
    if ev.modifiers.contains(KeyModifiers::CONTROL) {
        // Ctrl-C behaves like q: raw mode swallows SIGINT.
        return (ev.code == Char('c')).then_some(Quit);
    }
    KEYMAP.iter().find(|b| b.key == ev.code).map(|b| b.action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_bound_once_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for b in KEYMAP {
            assert!(seen.insert(format!("{:?}", b.key)), "{} is bound twice", b.label);
            assert!(!b.help.is_empty());
            assert_eq!(lookup(&KeyEvent::new(b.key, KeyModifiers::NONE)), Some(b.action));
        }
        assert_eq!(lookup(&KeyEvent::new(Char('c'), KeyModifiers::CONTROL)), Some(Quit));
        assert_eq!(lookup(&KeyEvent::new(Char('J'), KeyModifiers::SHIFT)), Some(StageMoveDown));
    }
}
