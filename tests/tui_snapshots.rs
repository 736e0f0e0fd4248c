//! Snapshots of the workbench's popups and the teacher-vs-target pane at 80×24 and
//! 160×48, drawn on ratatui's TestBackend: the value editor (a number with the
//! validator's message, a cycled enum), the foundation picker (a checkpoint's preview,
//! an unreadable file), the data picker (a folder that fits, one refused), the
//! native-size question, the key help and the class-by-class comparison.
//!
//! Every file lives under one fixed folder in the system temp dir, so the screens hold
//! the same paths on every machine. `cargo insta review` (or `INSTA_UPDATE=always`)
//! accepts a deliberate change; CI (`CI=true`) fails on any difference.

mod common;

use std::path::{Path, PathBuf};

use common::workbench::*;
use common::*;
use ratatui::crossterm::event::KeyCode;
use tdmr::engine::class_report::{Confusion, During};
use tdmr::engine::Event;
use tdmr::tui::app::{App, Pane};
use tdmr::tui::panes::picker::{Browse, Picker};

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

/// A fresh folder named after the test, the same path on every machine.
fn fixed_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("tdmr-snapshots").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The workbench on the tiny experiment, its foundation loaded with `f` and waited
/// for (the pane would otherwise show whatever the loader thread had reached).
fn loaded_app(dir: &Path) -> App {
    app_on(dir, &tiny_text())
}

fn app_on(dir: &Path, config: &str) -> App {
    let mut app = new_app(dir, config);
    press(&mut app, 'f');
    wait_for_foundation(&mut app, "the foundation to load");
    app
}

/// Asserts the screen at both sizes against `name@80x24` and `name@160x48`.
fn snapshot(app: &App, name: &str) {
    for (w, h) in SIZES {
        let s = screen(app, w, h);
        // The log's clock counts from the app's start; every other figure is fixed.
        insta::with_settings!({ filters => vec![(r"\b\d+:\d\d ", "m:ss ")] }, {
            insta::assert_snapshot!(format!("{name}@{w}x{h}"), s);
        });
    }
}

#[test]
fn the_value_editor_with_a_refused_number_and_a_cycled_enum() {
    let dir = fixed_dir("editor");
    let mut app = loaded_app(&dir);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.view.focus, Pane::Reprogrammer);
    for _ in 0..3 {
        key(&mut app, KeyCode::Down);
    }
    key(&mut app, KeyCode::Enter);
    snapshot(&app, "editor-number");
    while !app.editor.as_ref().unwrap().input.is_empty() {
        key(&mut app, KeyCode::Backspace);
    }
    press(&mut app, '-');
    press(&mut app, '1');
    key(&mut app, KeyCode::Enter);
    assert!(app.editor.as_ref().unwrap().error.is_some());
    snapshot(&app, "editor-refused");
    key(&mut app, KeyCode::Esc);
    for _ in 0..3 {
        key(&mut app, KeyCode::Up);
    }
    key(&mut app, KeyCode::Enter);
    key(&mut app, KeyCode::Right);
    assert_eq!(app.editor.as_ref().unwrap().input, "full");
    snapshot(&app, "editor-enum");
}

#[test]
fn the_foundation_picker_previews_a_checkpoint_and_an_unreadable_file() {
    let dir = fixed_dir("foundation-picker");
    let models = dir.join("models");
    std::fs::create_dir_all(models.join("more")).unwrap();
    std::fs::copy(root().join(WEIGHTS), models.join("lite.safetensors")).unwrap();
    std::fs::write(models.join("broken.safetensors"), b"not a checkpoint").unwrap();
    // The log names the previous foundation when it changes: one under the fixed folder.
    let start = dir.join("start.safetensors");
    std::fs::copy(root().join(WEIGHTS), &start).unwrap();
    let text = tiny_text().replace(
        &format!("{:?}", root().join(WEIGHTS).display().to_string()),
        &format!("{:?}", start.display().to_string()),
    );
    assert!(text.contains("start.safetensors"));
    let mut app = app_on(&dir, &text);
    press(&mut app, 'o');
    app.picker = Some(Picker::open(&models, None));
    picker_to(&mut app, "lite.safetensors");
    snapshot(&app, "foundation-picker");
    picker_to(&mut app, "broken.safetensors");
    snapshot(&app, "foundation-picker-error");
    picker_to(&mut app, "lite.safetensors");
    key(&mut app, KeyCode::Enter);
    wait_for_foundation(&mut app, "the chosen foundation to load");
    snapshot(&app, "native-size");
}

#[test]
fn the_data_picker_shows_a_folder_that_fits_and_one_it_refuses() {
    let dir = fixed_dir("data-picker");
    let data = dir.join("data");
    image_folder(&data.join("good"), &[("ant", 6), ("bee", 6), ("cat", 6)]);
    image_folder(&data.join("small"), &[("ant", 6), ("bee", 6), ("cat", 2)]);
    let mut app = loaded_app(&dir);
    press(&mut app, 'O');
    let browse = app.picker.as_ref().expect("O opens the data picker").browse;
    assert!(matches!(browse, Browse::Data { k: 2, .. }));
    app.picker = Some(Picker::browse(browse, &data, None));
    picker_to(&mut app, "good");
    snapshot(&app, "data-picker");
    picker_to(&mut app, "small");
    snapshot(&app, "data-picker-refused");
}

#[test]
fn the_key_help_lists_the_popups_keys() {
    let dir = fixed_dir("help");
    let mut app = loaded_app(&dir);
    press(&mut app, '?');
    for (w, h) in SIZES {
        let s = screen(&app, w, h);
        for want in [
            "ctrl-z",
            "undo an in-place edit",
            "in the editor:",
            "in a picker:",
            "cycle a choice",
        ] {
            assert!(s.contains(want), "{w}×{h}: help lacks `{want}`:\n{s}");
        }
    }
    snapshot(&app, "help");
}

#[test]
fn the_teacher_vs_target_pane_live_finished_and_zoomed() {
    let dir = fixed_dir("compare");
    let mut app = loaded_app(&dir);
    app.on_engine(data_loaded(&["airplane", "bicycle", "cat", "dog", "guitar"]));
    let report = |method: &str, base: f64, agreement: Option<f64>, during: Option<During>| Event::ClassReport {
        method: method.into(),
        per_class: (0..5).map(|c| base - 0.1 * c as f64).collect(),
        agreement,
        confused: vec![
            Confusion {
                truth: 3,
                predicted: 2,
                count: 4,
            },
            Confusion {
                truth: 1,
                predicted: 0,
                count: 2,
            },
        ],
        during,
    };
    while app.view.focus != Pane::Compare {
        key(&mut app, KeyCode::Tab);
    }
    app.on_engine(report("tdmr-teacher", 0.9, None, None));
    app.on_engine(report("linear-probe", 0.8, None, None));
    let during = During {
        stage: "align".into(),
        epoch: 4,
    };
    app.on_engine(report("tdmr", 0.3, Some(0.4), Some(during)));
    snapshot(&app, "compare-live");
    for (m, base, agree) in [("tdmr", 0.7, Some(0.825)), ("scratch", 0.5, None), ("kd", 0.6, None)] {
        app.on_engine(report(m, base, agree, None));
    }
    snapshot(&app, "compare");
    press(&mut app, 'z');
    snapshot(&app, "compare-zoomed");
}
