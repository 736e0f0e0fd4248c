//! Colour themes from `themes/*.toml`: a partial file overrides the built-in dark theme,
//! and `NO_COLOR` turns every colour off (emphasis then comes from modifiers only).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

use crate::{Error, Result};

const BUILT_IN: &str = include_str!("../../themes/dark.toml");
/// The bundled themes, in the order `t` cycles through them.
pub const BUNDLED: &[&str] = &["dark", "light", "high-contrast"];

#[derive(Debug, Clone, PartialEq)]
pub struct Theme {
    pub name: String,
    pub foreground: Color,
    pub muted: Color,
    pub border: Color,
    pub border_focused: Color,
    pub title: Color,
    pub accent: Color,
    pub good: Color,
    pub warn: Color,
    pub error: Color,
    pub selection: Color,
    pub series: [Color; 7],
    /// `NO_COLOR`: every colour is `Reset`.
    pub monochrome: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    #[serde(default)]
    colors: Colors,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Colors {
    foreground: Option<String>,
    muted: Option<String>,
    border: Option<String>,
    border_focused: Option<String>,
    title: Option<String>,
    accent: Option<String>,
    good: Option<String>,
    warn: Option<String>,
    error: Option<String>,
    selection: Option<String>,
    series: Option<Vec<String>>,
}

fn color(origin: &str, key: &str, v: &str) -> Result<Color> {
    Color::from_str(v).map_err(|_| Error::config(origin, format!("colors.{key}: `{v}` is not a colour name or #rrggbb")))
}

impl Theme {
    /// The built-in dark theme.
    pub fn built_in() -> Theme {
        let mut t = Theme {
            name: "dark".into(),
            foreground: Color::Reset,
            muted: Color::DarkGray,
            border: Color::DarkGray,
            border_focused: Color::Cyan,
            title: Color::Reset,
            accent: Color::Cyan,
            good: Color::Green,
            warn: Color::Yellow,
            error: Color::Red,
            selection: Color::DarkGray,
            series: [
                Color::DarkGray,
                Color::White,
                Color::Magenta,
                Color::LightRed,
                Color::Blue,
                Color::Green,
                Color::Yellow,
            ],
            monochrome: false,
        };
        // The bundled file is tested to parse; fall back to the table above regardless.
        let _ = t.overlay(BUILT_IN, "themes/dark.toml");
        t
    }

    /// Parse a theme file's text over the built-in theme.
    pub fn parse(text: &str, origin: &str) -> Result<Theme> {
        let mut t = Theme::built_in();
        t.overlay(text, origin)?;
        Ok(t)
    }

    fn overlay(&mut self, text: &str, origin: &str) -> Result<()> {
        let f: ThemeFile = toml::from_str(text).map_err(|e| Error::config(origin, e.to_string().trim_end().to_string()))?;
        let c = f.colors;
        let set = |slot: &mut Color, key: &str, v: Option<String>| -> Result<()> {
            if let Some(v) = v {
                *slot = color(origin, key, &v)?;
            }
            Ok(())
        };
        set(&mut self.foreground, "foreground", c.foreground)?;
        set(&mut self.muted, "muted", c.muted)?;
        set(&mut self.border, "border", c.border)?;
        set(&mut self.border_focused, "border_focused", c.border_focused)?;
        set(&mut self.title, "title", c.title)?;
        set(&mut self.accent, "accent", c.accent)?;
        set(&mut self.good, "good", c.good)?;
        set(&mut self.warn, "warn", c.warn)?;
        set(&mut self.error, "error", c.error)?;
        set(&mut self.selection, "selection", c.selection)?;
        if let Some(series) = c.series {
            if series.len() != self.series.len() {
                return Err(Error::config(
                    origin,
                    format!("colors.series: expected {} colours, found {}", self.series.len(), series.len()),
                ));
            }
            for (slot, v) in self.series.iter_mut().zip(series) {
                *slot = color(origin, "series", &v)?;
            }
        }
        if let Some(n) = f.name {
            self.name = n;
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Theme> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Theme::parse(&text, &path.display().to_string())
    }

    /// `dark`, `light`... (a bundled name, looked up under `themes_dir`) or a path.
    pub fn resolve(spec: &str, themes_dir: &Path) -> PathBuf {
        let p = Path::new(spec);
        if spec.ends_with(".toml") || p.components().count() > 1 {
            p.to_path_buf()
        } else {
            themes_dir.join(format!("{spec}.toml"))
        }
    }

    /// Drop every colour (the `NO_COLOR` convention).
    pub fn without_color(mut self) -> Theme {
        for c in [
            &mut self.foreground,
            &mut self.muted,
            &mut self.border,
            &mut self.border_focused,
            &mut self.title,
            &mut self.accent,
            &mut self.good,
            &mut self.warn,
            &mut self.error,
            &mut self.selection,
        ] {
            *c = Color::Reset;
        }
        self.series = [Color::Reset; 7];
        self.monochrome = true;
        self
    }

    pub fn text(&self) -> Style {
        Style::default().fg(self.foreground)
    }
    pub fn muted(&self) -> Style {
        let s = Style::default().fg(self.muted);
        if self.monochrome {
            s.add_modifier(Modifier::DIM)
        } else {
            s
        }
    }
    pub fn accent(&self) -> Style {
        Style::default().fg(self.accent).add_modifier(Modifier::BOLD)
    }
    pub fn good(&self) -> Style {
        Style::default().fg(self.good)
    }
    pub fn warn(&self) -> Style {
        let s = Style::default().fg(self.warn);
        if self.monochrome {
            s.add_modifier(Modifier::BOLD)
        } else {
            s
        }
    }
    pub fn error(&self) -> Style {
        let s = Style::default().fg(self.error).add_modifier(Modifier::BOLD);
        if self.monochrome {
            s.add_modifier(Modifier::UNDERLINED)
        } else {
            s
        }
    }
    pub fn border(&self, focused: bool) -> Style {
        if focused {
            Style::default().fg(self.border_focused).add_modifier(Modifier::BOLD)
        } else {
            Style::default().fg(self.border)
        }
    }
    pub fn title(&self) -> Style {
        Style::default().fg(self.title).add_modifier(Modifier::BOLD)
    }
    pub fn selected(&self) -> Style {
        if self.monochrome {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default().bg(self.selection)
        }
    }
    pub fn series(&self, i: usize) -> Style {
        Style::default().fg(self.series[i % self.series.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_themes_parse_and_differ() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("themes");
        let themes: Vec<Theme> = BUNDLED.iter().map(|n| Theme::load(&Theme::resolve(n, &dir)).unwrap()).collect();
        assert_eq!(themes[0], Theme::built_in());
        assert_ne!(themes[0].foreground, themes[1].foreground);
        assert_eq!(themes[2].border_focused, Color::Yellow);
    }

    #[test]
    fn partial_theme_overrides_and_bad_colour_is_named() {
        let t = Theme::parse("[colors]\naccent = \"red\"\n", "mine.toml").unwrap();
        assert_eq!(t.accent, Color::Red);
        assert_eq!(t.good, Theme::built_in().good);
        let e = Theme::parse("[colors]\ngood = \"grene\"\n", "mine.toml").unwrap_err().to_string();
        assert!(e.contains("mine.toml") && e.contains("colors.good") && e.contains("grene"), "{e}");
        let e = Theme::parse("[colours]\n", "mine.toml").unwrap_err().to_string();
        assert!(e.contains("colours"), "{e}");
    }

    #[test]
    fn no_color_drops_every_colour() {
        let t = Theme::built_in().without_color();
        assert_eq!(t.accent, Color::Reset);
        assert!(t.series.iter().all(|c| *c == Color::Reset));
        assert!(t.selected().add_modifier.contains(Modifier::REVERSED));
    }
}
