//! The session's configuration: the file (and the bases it extends) as last read, what
//! the session runs, and the changes that wait for a restart or were just applied.

use std::path::{Path, PathBuf};

use crate::config::live::{self, Change, Progress, Verdict};
use crate::config::Experiment;

pub struct ConfigState {
    pub path: PathBuf,
    /// The texts of the file and every base it extends: a reload that finds the same
    /// texts is a no-op.
    chain_texts: Vec<String>,
    pub overrides: Vec<String>,
    /// What the session runs (or will run when started).
    pub exp: Experiment,
    /// The file's latest valid version, when some of its changes wait for a restart.
    pub next: Option<Experiment>,
    pub pending: Vec<Change>,
    /// Changes applied live most recently (shown in the Reprogrammer pane).
    pub applied: Vec<Change>,
    pub error: Option<String>,
}

/// What a reload found.
pub enum Reload {
    /// The same texts as last time.
    Unchanged,
    /// The file cannot be read now (mid-rename, or deleted).
    Unreadable(String),
    /// The file does not parse or validate: the session keeps its configuration.
    Invalid(String),
    /// Valid, and no different from what the session runs.
    NoChanges,
    /// The session now runs `exp` with the live changes merged in.
    Changed {
        /// Taken now (a running engine is sent them).
        live: Vec<Change>,
        /// Waiting for a restart (in `pending`; the file's version is in `next`).
        restart: Vec<Change>,
        /// Changes that cannot apply at this point of the run, with why.
        refused: Vec<(Change, String)>,
    },
}

impl ConfigState {
    pub fn new(path: PathBuf, overrides: Vec<String>, exp: Experiment) -> Self {
        let chain = crate::config::inherit::chain(&path).unwrap_or_default();
        ConfigState {
            path,
            chain_texts: chain.into_iter().map(|l| l.text).collect(),
            overrides,
            exp,
            next: None,
            pending: Vec::new(),
            applied: Vec::new(),
            error: None,
        }
    }

    pub fn file(&self) -> &Path {
        &self.path
    }

    /// The text the session's config came from (the file itself, not its bases).
    pub fn text(&self) -> &str {
        self.chain_texts.first().map_or("", String::as_str)
    }

    /// The config file and the bases it extends: every file a reload reads.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.path.clone()).chain(self.exp.bases.iter().cloned()).collect()
    }

    /// Re-read the file. Unchanged texts are skipped unless `forced`; an invalid file
    /// never changes the session; changes are sorted by what `progress` allows.
    pub fn reload(&mut self, forced: bool, progress: &Progress) -> Reload {
        let chain = match crate::config::inherit::chain(&self.path) {
            Ok(c) => c,
            Err(e) => return Reload::Unreadable(e.to_string()),
        };
        let texts: Vec<String> = chain.iter().map(|l| l.text.clone()).collect();
        if texts == self.chain_texts && !forced {
            return Reload::Unchanged;
        }
        self.chain_texts = texts;
        let new = match Experiment::from_chain(&chain, &self.overrides) {
            Ok(e) => e,
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(msg.clone());
                return Reload::Invalid(msg);
            }
        };
        self.error = None;
        let changes = live::diff(&self.exp, &new, progress);
        if changes.is_empty() {
            self.pending.clear();
            self.next = None;
            return Reload::NoChanges;
        }
        let (mut now, mut later, mut refused) = (Vec::new(), Vec::new(), Vec::new());
        for c in changes {
            match &c.verdict {
                Verdict::Live => now.push(c),
                Verdict::Restart => later.push(c),
                Verdict::Refused(why) => {
                    let why = why.clone();
                    refused.push((c, why));
                }
            }
        }
        self.exp = live::merge(&self.exp, &new, progress);
        self.applied = now.clone();
        self.next = (!later.is_empty()).then_some(new);
        self.pending = later.clone();
        Reload::Changed {
            live: now,
            restart: later,
            refused,
        }
    }

    /// Take the file's version (a restart): nothing waits any more.
    pub fn take_next(&mut self) {
        if let Some(next) = self.next.take() {
            self.exp = next;
        }
        self.pending.clear();
    }
}
