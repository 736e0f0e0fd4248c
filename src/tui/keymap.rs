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
    Undo,
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
    // Raw mode swallows SIGINT, so ctrl-c is read as a key and behaves like q.
    ctrl('c', "ctrl-c", Quit, "quit (confirms if running)"),
    ctrl('z', "ctrl-z", Undo, "undo an in-place edit"),
];

const fn ctrl(c: char, label: &'static str, action: Action, help: &'static str) -> Binding {
    Binding {
        key: Char(c),
        mods: KeyModifiers::CONTROL,
        label,
        action,
        help,
    }
}

/// The action bound to a key press, if any.
pub fn lookup(ev: &KeyEvent) -> Option<Action> {
    let ctrl = ev.modifiers.contains(KeyModifiers::CONTROL);
    KEYMAP
        .iter()
        .find(|b| b.key == ev.code && b.mods.contains(KeyModifiers::CONTROL) == ctrl)
        .map(|b| b.action)
}

/// A key that means something inside a popup (the value editor, the file pickers),
/// where the main table does not apply.
pub struct ContextKey<A: 'static> {
    pub keys: &'static [KeyCode],
    pub label: &'static str,
    pub action: A,
    pub help: &'static str,
}

/// One row of a popup's table (the popups' counterpart of [`bind`]).
const fn key_in<A>(keys: &'static [KeyCode], label: &'static str, action: A, help: &'static str) -> ContextKey<A> {
    ContextKey { keys, label, action, help }
}

/// What a key does in the one-line value editor; any other character is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditKey {
    Save,
    Cancel,
    Undo,
    NextValue,
    PrevValue,
    ChoiceNext,
    ChoicePrev,
    Erase,
}

pub const EDITOR_KEYS: &[ContextKey<EditKey>] = &[
    key_in(&[KeyCode::Enter], "enter", EditKey::Save, "check and save"),
    key_in(&[KeyCode::Esc], "esc", EditKey::Cancel, "cancel"),
    key_in(&[KeyCode::Left], "←", EditKey::ChoicePrev, "cycle a choice"),
    key_in(&[KeyCode::Right], "→", EditKey::ChoiceNext, "cycle a choice"),
    key_in(&[KeyCode::Tab], "tab", EditKey::NextValue, "the line's next / previous value"),
    key_in(
        &[KeyCode::BackTab],
        "shift-tab",
        EditKey::PrevValue,
        "the line's next / previous value",
    ),
    key_in(&[Char('u')], "u", EditKey::Undo, "undo"),
    key_in(&[KeyCode::Backspace], "⌫", EditKey::Erase, "erase"),
];

/// What a key does in the foundation and data pickers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickKey {
    Up,
    Down,
    Parent,
    Open,
    Choose,
    Close,
}

pub const PICKER_KEYS: &[ContextKey<PickKey>] = &[
    key_in(&[KeyCode::Up, Char('k')], "↑/k", PickKey::Up, "move"),
    key_in(&[KeyCode::Down, Char('j')], "↓/j", PickKey::Down, "move"),
    key_in(&[KeyCode::Enter], "enter", PickKey::Choose, "choose / open"),
    key_in(&[KeyCode::Right, Char('l')], "→/l", PickKey::Open, "open a folder"),
    key_in(
        &[KeyCode::Left, Char('h'), KeyCode::Backspace],
        "←/h/⌫",
        PickKey::Parent,
        "up a folder",
    ),
    key_in(
        &[KeyCode::Esc, Char('q'), Char('o'), Char('O')],
        "esc/q/o/O",
        PickKey::Close,
        "close",
    ),
];

/// The action `code` has in a popup's table.
pub fn in_context<A: Copy>(table: &[ContextKey<A>], code: KeyCode) -> Option<A> {
    table.iter().find(|k| k.keys.contains(&code)).map(|k| k.action)
}

/// Help rows from `(key label, help)` pairs: keys sharing a help text share a row
/// (`q/ctrl-c`), in the order they first appear.
pub fn help_rows(keys: impl IntoIterator<Item = (&'static str, &'static str)>) -> Vec<(String, &'static str)> {
    let mut rows: Vec<(String, &str)> = Vec::new();
    for (label, help) in keys {
        match rows.iter_mut().find(|(_, h)| *h == help) {
            Some((labels, _)) => {
                labels.push('/');
                labels.push_str(label);
            }
            None => rows.push((label.to_string(), help)),
        }
    }
    rows
}

/// One help line for a popup's table.
pub fn context_help<A>(table: &[ContextKey<A>]) -> String {
    let rows = help_rows(table.iter().map(|k| (k.label, k.help)));
    rows.iter().map(|(k, h)| format!("{k} {h}")).collect::<Vec<_>>().join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_bound_once_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for b in KEYMAP {
            assert!(seen.insert(format!("{:?}{:?}", b.key, b.mods)), "{} is bound twice", b.label);
            assert!(!b.help.is_empty());
            assert_eq!(lookup(&KeyEvent::new(b.key, b.mods)), Some(b.action));
        }
        assert_eq!(lookup(&KeyEvent::new(Char('c'), KeyModifiers::CONTROL)), Some(Quit));
        assert_eq!(lookup(&KeyEvent::new(Char('c'), KeyModifiers::NONE)), Some(SaveCheckpoint));
        assert_eq!(lookup(&KeyEvent::new(Char('z'), KeyModifiers::CONTROL)), Some(Undo));
        assert_eq!(lookup(&KeyEvent::new(Char('z'), KeyModifiers::NONE)), Some(Zoom));
        assert_eq!(lookup(&KeyEvent::new(Char('x'), KeyModifiers::CONTROL)), None);
        assert_eq!(lookup(&KeyEvent::new(Char('J'), KeyModifiers::SHIFT)), Some(StageMoveDown));
    }

    fn bound_once<A: Copy + PartialEq + std::fmt::Debug>(table: &[ContextKey<A>]) {
        let mut seen = std::collections::HashSet::new();
        for k in table {
            assert!(!k.help.is_empty() && !k.keys.is_empty());
            for code in k.keys {
                assert!(seen.insert(format!("{code:?}")), "{code:?} does two things in one popup");
                assert_eq!(in_context(table, *code), Some(k.action));
            }
        }
    }

    #[test]
    fn every_popup_key_is_bound_once_and_documented() {
        bound_once(EDITOR_KEYS);
        bound_once(PICKER_KEYS);
        let editor = context_help(EDITOR_KEYS);
        assert!(
            editor.contains("←/→ cycle a choice") && editor.contains("tab/shift-tab"),
            "{editor}"
        );
        assert_eq!(in_context(EDITOR_KEYS, Char('7')), None, "digits are typed");
    }
}
