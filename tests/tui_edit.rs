//! The workbench managing what it shows: every pane's values edited in place (typed
//! numbers, cycled enums, `tab` along a line, `u` undo) and the data picker, with the
//! screens checked at 80×24 and 160×48.

mod common;

use common::workbench::*;
use common::*;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tdmr::config::DataKind;
use tdmr::tui::app::{App, Pane};
use tdmr::tui::panes::picker::Browse;

fn focus(app: &mut App, pane: Pane) {
    for _ in 0..8 {
        if app.view.focus == pane {
            return;
        }
        key(app, KeyCode::Tab);
    }
    panic!("{pane:?} never took the keys");
}

fn editing(app: &App) -> (String, String) {
    let e = app.editor.as_ref().expect("an editor is open");
    (e.setting().to_string(), e.input.clone())
}

fn on_disk(app: &App) -> String {
    std::fs::read_to_string(&app.config.path).unwrap()
}

fn row(app: &App, method: &str, stage: &str) -> usize {
    let rows = &app.schedule.plan.rows;
    rows.iter()
        .position(|r| r.method == method && r.stage == stage)
        .unwrap_or_else(|| panic!("no {method}/{stage}"))
}

#[test]
fn enums_cycle_a_lines_values_are_tabbed_and_u_undoes_inside_the_editor() {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny_text().replace("[reprogram]\npad = 4", "[reprogram] # the prompt\npad = 4 # px");
    let mut app = new_app(dir.path(), &text);
    focus(&mut app, Pane::Reprogrammer);
    key(&mut app, KeyCode::Enter);
    assert_eq!(editing(&app), ("reprogram.prompt".into(), "padding".into()));
    // An enum is chosen, never typed.
    press(&mut app, 'x');
    key(&mut app, KeyCode::Backspace);
    assert_eq!(editing(&app).1, "padding");
    key(&mut app, KeyCode::Right);
    assert_eq!(editing(&app).1, "full");
    key(&mut app, KeyCode::Left);
    key(&mut app, KeyCode::Left);
    assert_eq!(editing(&app).1, "none", "← wraps round");
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Right);
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("reprogram.prompt = ◀ full ▶"), "{w}×{h}:\n{s}");
    }
    key(&mut app, KeyCode::Enter);
    assert!(app.editor.is_none());
    assert_eq!(app.config.exp.reprogram.prompt, tdmr::config::PromptKind::Full);
    let edited = on_disk(&app);
    assert!(edited.contains("prompt = \"full\"") && edited.contains("pad = 4 # px"), "{edited}");
    // Tab moves along the line; u, inside the editor, undoes the last edit.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Tab);
    assert_eq!(editing(&app), ("reprogram.pad".into(), "4".into()));
    press(&mut app, 'u');
    assert_eq!(on_disk(&app), text, "byte-identical after the undo");
    assert_eq!(app.config.exp.reprogram.prompt, tdmr::config::PromptKind::Padding);
    assert_eq!(editing(&app), ("reprogram.pad".into(), "4".into()), "the editor stays, refreshed");
    key(&mut app, KeyCode::BackTab);
    assert_eq!(editing(&app), ("reprogram.prompt".into(), "padding".into()));
    key(&mut app, KeyCode::Esc);
    // A switch cycles too: the proxy line's third value.
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(editing(&app), ("reprogram.normalize".into(), "true".into()));
    key(&mut app, KeyCode::Right);
    key(&mut app, KeyCode::Enter);
    assert!(!app.config.exp.reprogram.normalize);
    assert!(on_disk(&app).contains("normalize = false"));
}

#[test]
fn schedule_and_foundation_values_edit_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let text = tiny_text().replace("name = \"align\"\nepochs = 1", "name = \"align\" # first\nepochs = 1 # one pass");
    let mut app = new_app(dir.path(), &text);
    focus(&mut app, Pane::Schedule);
    app.schedule.selected = row(&app, "tdmr", "align");
    key(&mut app, KeyCode::Enter);
    assert_eq!(editing(&app), ("distill.stages[0].epochs".into(), "1".into()));
    key(&mut app, KeyCode::Backspace);
    press(&mut app, '3');
    key(&mut app, KeyCode::Enter);
    assert!(on_disk(&app).contains("epochs = 3 # one pass"), "{}", on_disk(&app));
    assert_eq!(app.schedule.plan.rows[row(&app, "tdmr", "align")].epochs, 3);
    // The stage's lr schedule is an enum on the same line.
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(editing(&app), ("distill.stages[0].lr_schedule".into(), "cosine".into()));
    key(&mut app, KeyCode::Esc);
    // Stage 1's row edits stage1; the probe's the probe's; scratch says where its budget is.
    app.schedule.selected = row(&app, "tdmr-teacher", "reprogram");
    key(&mut app, KeyCode::Enter);
    assert_eq!(editing(&app), ("stage1.epochs".into(), "2".into()));
    key(&mut app, KeyCode::Esc);
    app.schedule.selected = row(&app, "linear-probe", "probe");
    key(&mut app, KeyCode::Enter);
    assert_eq!(editing(&app), ("baselines.linear_probe_epochs".into(), "3".into()));
    key(&mut app, KeyCode::Esc);
    app.schedule.selected = row(&app, "scratch", "train");
    key(&mut app, KeyCode::Enter);
    assert!(app.editor.is_none() && !app.view.zoom);
    assert!(log_text(&app).contains("edit those rows"), "{}", log_text(&app));

    // Foundation: the family cycles; an input size that does not fit is refused in place.
    focus(&mut app, Pane::Foundation);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    assert_eq!(editing(&app), ("foundation.family".into(), "auto".into()));
    key(&mut app, KeyCode::Right);
    assert_eq!(editing(&app).1, "efficientnet-lite");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.config.exp.foundation.family, tdmr::models::foundation::Family::EfficientnetLite);
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Tab);
    assert_eq!(editing(&app), ("foundation.inner_size".into(), "24".into()));
    let before = on_disk(&app);
    key(&mut app, KeyCode::Backspace);
    key(&mut app, KeyCode::Backspace);
    for c in "40".chars() {
        press(&mut app, c);
    }
    key(&mut app, KeyCode::Enter);
    let e = app.editor.as_ref().expect("still editing").error.clone().expect("refused");
    assert!(e.contains("inner_size"), "{e}");
    assert_eq!(on_disk(&app), before, "nothing written");
    key(&mut app, KeyCode::Esc);
    // The file and data lines open their pickers.
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Up);
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.picker.as_ref().map(|p| p.browse), Some(Browse::Foundation));
    key(&mut app, KeyCode::Esc);
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    assert!(matches!(app.picker.as_ref().map(|p| p.browse), Some(Browse::Data { k: 2, .. })));
}

#[test]
fn the_data_picker_shows_classes_refuses_a_k_they_cannot_give_and_chooses_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    image_folder(&data.join("good"), &[("ant", 6), ("bee", 6), ("cat", 6)]);
    image_folder(&data.join("small"), &[("ant", 6), ("bee", 6), ("cat", 2)]);
    std::fs::create_dir_all(data.join("empty")).unwrap();
    let text = tiny_text().replace("k = 2\n", "k = 2\ntest_fraction = 0.25\nvalidation_fraction = 0.0\n");
    let mut app = new_app(dir.path(), &text);
    press(&mut app, 'O');
    let opened = app.picker.as_ref().expect("O opens the data picker");
    assert_eq!(
        opened.browse,
        Browse::Data {
            k: 2,
            test_fraction: 0.25,
            validation_fraction: 0.0
        }
    );
    app.picker = Some(tdmr::tui::panes::picker::Picker::browse(opened.browse, &data, None));
    let names: Vec<String> = app.picker.as_ref().unwrap().entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, ["..", "empty", "good", "small"], "folders only");
    picker_to(&mut app, "empty");
    assert!(screen(&app, 160, 48).contains("class folder"), "{}", screen(&app, 160, 48));
    // `cat` has 2 images, one held out for testing: k = 2 cannot be taken from it.
    picker_to(&mut app, "small");
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(s.contains("does not fit") && s.contains("cat"), "{w}×{h}:\n{s}");
    }
    key(&mut app, KeyCode::Enter);
    assert!(app.picker.is_some(), "refused: the picker stays");
    assert_eq!(on_disk(&app), text);
    picker_to(&mut app, "good");
    for (w, h) in [(80, 24), (160, 48)] {
        let s = screen(&app, w, h);
        assert!(
            s.contains("3 · 18 images") && s.contains("bee") && !s.contains("does not fit"),
            "{w}×{h}:\n{s}"
        );
    }
    key(&mut app, KeyCode::Enter);
    assert!(app.picker.is_none(), "chosen");
    let chosen = std::fs::canonicalize(data.join("good")).unwrap();
    assert_eq!(
        (app.config.exp.data.kind, app.config.exp.data_path()),
        (DataKind::ImageFolder, chosen)
    );
    assert!(on_disk(&app).contains("kind = \"image-folder\""));
    // The schedule is sized by the new data: 3 classes × k 2 = 6 images, one batch of 8.
    assert_eq!(app.schedule.plan.rows[row(&app, "tdmr-teacher", "reprogram")].steps_per_epoch, 1);
    app.on_key(KeyEvent::new(KeyCode::Char('z'), KeyModifiers::CONTROL));
    assert_eq!(on_disk(&app), text, "ctrl-z puts the data back");
    assert_eq!(app.config.exp.data.kind, DataKind::Digits);
}
