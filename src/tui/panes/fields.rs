//! The config values a pane line edits in place: where each lives in the file, and, for
//! an enum or a switch, the values `←`/`→` cycle through.

use crate::config::stage_edit::Setting;
use crate::config::Experiment;
use crate::models::foundation::Family;

/// What a value may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choices {
    /// Typed: a number.
    Typed,
    /// One of these names, cycled, never typed.
    Of(&'static [&'static str]),
    /// A foundation family (`auto` or a known layout).
    Family,
}

pub const PROMPTS: &[&str] = &["padding", "full", "none"];
pub const PROJECTORS: &[&str] = &["linear", "mlp"];
pub const OPTIMIZERS: &[&str] = &["adamw", "sgd"];
pub const SCHEDULES: &[&str] = &["constant", "cosine", "step"];
pub const ALIGN_LOSSES: &[&str] = &["cosine", "mse"];
pub const SWITCH: &[&str] = &["true", "false"];

impl Choices {
    /// The names to cycle through; empty for a typed value.
    pub fn names(self) -> Vec<&'static str> {
        match self {
            Choices::Typed => Vec::new(),
            Choices::Of(names) => names.to_vec(),
            Choices::Family => std::iter::once(Family::Auto).chain(Family::KNOWN).map(Family::name).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub at: Setting,
    pub choices: Choices,
}

pub const fn typed(table: &'static str, key: &'static str) -> Field {
    Field {
        at: Setting::Key(table, key),
        choices: Choices::Typed,
    }
}

pub const fn one_of(table: &'static str, key: &'static str, names: &'static [&'static str]) -> Field {
    Field {
        at: Setting::Key(table, key),
        choices: Choices::Of(names),
    }
}

/// A field of the `i`-th distillation stage.
pub fn stage(i: usize, key: &'static str, choices: Choices) -> Field {
    Field {
        at: Setting::Stage(i, key),
        choices,
    }
}

/// The value `exp` has at `at`, as it would be typed: `0.01`, `cosine`, `true`.
pub fn current(exp: &Experiment, at: &Setting) -> String {
    let Ok(v) = toml::Value::try_from(exp) else { return String::new() };
    let item = match at {
        Setting::Key(table, key) => v.get(table).and_then(|t| t.get(key)),
        Setting::Stage(i, key) => v
            .get("distill")
            .and_then(|d| d.get("stages"))
            .and_then(|s| s.get(*i))
            .and_then(|s| s.get(key)),
    };
    match item {
        Some(toml::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Every name a field cycles through is one the config accepts there, so the lists
    /// cannot drift from the enums they stand for.
    #[test]
    fn every_choice_is_a_value_the_config_reads() {
        let exp = Experiment::default();
        let mut fields = crate::tui::panes::reprogrammer::all_fields();
        fields.push(Field {
            at: Setting::Key("foundation", "family"),
            choices: Choices::Family,
        });
        fields.extend(crate::tui::panes::schedule::stage_fields(0));
        let mut checked = 0;
        for f in fields.iter().filter(|f| f.choices != Choices::Typed) {
            assert!(!current(&exp, &f.at).is_empty(), "{} has a current value", f.at);
            for name in f.choices.names() {
                let mut v = toml::Value::try_from(&exp).unwrap();
                let value = match name {
                    "true" | "false" => toml::Value::Boolean(name == "true"),
                    _ => toml::Value::String(name.into()),
                };
                let slot = match &f.at {
                    Setting::Key(t, k) => v.get_mut(t).unwrap().as_table_mut().unwrap().entry(k.to_string()),
                    Setting::Stage(i, k) => v["distill"]["stages"][*i].as_table_mut().unwrap().entry(k.to_string()),
                };
                *slot.or_insert(toml::Value::Boolean(false)) = value;
                let read = Experiment::deserialize(v).map(|e| current(&e, &f.at));
                assert_eq!(read.ok().as_deref(), Some(name), "{} = {name}", f.at);
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked}");
    }
}
