//! Dotted tensor names built by parts, the way candle's `VarBuilder::pp` builds them:
//! `Prefix::new("target.backbone.").pp("layer1").pp(0).key("conv1")` is
//! `target.backbone.layer1.0.conv1`. Loaders and model builders pass a `Prefix` down
//! instead of formatting strings by hand, so a name cannot lose or double a dot.

use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// The empty prefix: keys are bare leaf names.
    pub fn root() -> Self {
        Prefix(String::new())
    }

    /// From a written prefix, with or without its trailing dot (`"vit."`, `"vit"`, `""`).
    pub fn new(prefix: &str) -> Self {
        Prefix(prefix.trim_end_matches('.').to_string())
    }

    /// One level down: `self.part`.
    pub fn pp(&self, part: impl fmt::Display) -> Self {
        Prefix(self.key(part))
    }

    /// The full name of `leaf` under this prefix.
    pub fn key(&self, leaf: impl fmt::Display) -> String {
        if self.0.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.0)
        }
    }

    /// The prefix as names start with it (`"a.b."`, or `""` at the root): for
    /// `starts_with` and for counting numbered children.
    pub fn dotted(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("{}.", self.0)
        }
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Prefix {
    fn from(prefix: &str) -> Self {
        Prefix::new(prefix)
    }
}

impl From<String> for Prefix {
    fn from(prefix: String) -> Self {
        Prefix::new(&prefix)
    }
}

impl From<&Prefix> for Prefix {
    fn from(prefix: &Prefix) -> Self {
        prefix.clone()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Prefix;

    #[test]
    fn names_join_with_exactly_one_dot() {
        let p = Prefix::new("target.backbone.");
        assert_eq!(p.pp("layer1").pp(0).key("conv1"), "target.backbone.layer1.0.conv1");
        assert_eq!(Prefix::new("target.backbone"), p);
        assert_eq!(Prefix::root().key("cls_token"), "cls_token");
        assert_eq!(Prefix::new("").pp("blocks").dotted(), "blocks.");
        assert_eq!(Prefix::root().dotted(), "");
        assert!(Prefix::new(".").is_root());
    }
}
