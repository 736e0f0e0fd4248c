//! The workbench in ratatui's TestBackend: drawing a frame as text, keys, polling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use tdmr::config::Experiment;
use tdmr::tui::app::{App, Options};
use tdmr::tui::view;

use super::root;

pub fn screen(app: &App, w: u16, h: u16) -> String {
    drawn(w, h, |f| view::draw(f, app))
}

/// The text of one frame drawn by `draw` on a `w`×`h` test terminal.
pub fn drawn(w: u16, h: u16, draw: impl FnOnce(&mut ratatui::Frame)) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(draw).unwrap();
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

pub fn press(app: &mut App, c: char) {
    app.on_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
}

pub fn key(app: &mut App, code: KeyCode) {
    app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
}

/// Poll the app until `done` holds (or fail after `secs`).
pub fn pump(app: &mut App, secs: u64, what: &str, done: impl Fn(&App) -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done(app) {
        assert!(Instant::now() < end, "timed out waiting for: {what}\nlog:\n{}", log_text(app));
        app.poll();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Poll until the Foundation pane has loaded its checkpoint.
pub fn wait_for_foundation(app: &mut App, what: &str) {
    pump(app, 60, what, |a| {
        matches!(a.foundation.state, tdmr::tui::app::FoundationState::Loaded(_))
    });
}

pub fn log_text(app: &App) -> String {
    app.log.lines.iter().map(|l| l.text.clone()).collect::<Vec<_>>().join("\n")
}

pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("exp.toml");
    std::fs::write(&p, text).unwrap();
    p
}

pub fn new_app(dir: &Path, text: &str) -> App {
    open_app(write_config(dir, text), Some(dir.join("run")), None, false)
}

/// The workbench on an existing config file, with the bundled themes.
pub fn open_app(cfg: PathBuf, out: Option<PathBuf>, theme: Option<&str>, no_color: bool) -> App {
    let exp = Experiment::load(&cfg, &[]).unwrap();
    App::new(
        cfg,
        Vec::new(),
        exp,
        Options {
            out,
            themes_dir: root().join("themes"),
            theme: theme.map(String::from),
            no_color,
        },
    )
}

/// Moves the open picker's highlight to `name` with the arrow keys, so the preview is
/// redrawn as the user would see it; panics if `name` is not listed.
pub fn picker_to(app: &mut App, name: &str) {
    let p = app.picker.as_ref().expect("a picker is open");
    let want = p.entries.iter().position(|e| e.name == name).expect(name);
    let step = if want > p.selected { KeyCode::Down } else { KeyCode::Up };
    for _ in 0..want.abs_diff(p.selected) {
        app.on_key(KeyEvent::new(step, KeyModifiers::NONE));
    }
    assert_eq!(app.picker.as_ref().unwrap().selected, want);
}

/// What the engine says once the data is read: an ImageFolder with these classes.
pub fn data_loaded(classes: &[&str]) -> tdmr::engine::Event {
    tdmr::engine::Event::DataLoaded {
        kind: "image-folder".into(),
        root: "data".into(),
        classes: classes.iter().map(|c| c.to_string()).collect(),
        train_images: 50,
        eval_images: 50,
        views: 1,
        skipped: Vec::new(),
        resident_bytes: 0,
        on_disk: 0,
    }
}

/// An ImageFolder under `root` with `counts` images per class.
pub fn image_folder(root: &Path, counts: &[(&str, u8)]) {
    for (class, n) in counts {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..*n {
            image::RgbImage::from_pixel(8, 8, image::Rgb([i * 30, 90, 200]))
                .save(root.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
}
