//! The live diff: what changed between the experiment a session runs and the file on
//! disk, and which of those changes a running session may take.
//!
//! Learning rates, loss weights, the temperature and stages not yet started change
//! live; the running stage takes only its lr and loss weights; everything else (model,
//! data, proxy dim, sizes, seed...) needs a restart.

use std::collections::BTreeMap;

use super::Experiment;

/// Keys (dotted paths) that change live whatever the progress.
const LIVE_KEYS: &[&str] = &["stage1.lr", "baselines.linear_probe_lr", "distill.temperature", "theme"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Taken by the running session at its next step.
    Live,
    /// Shown as pending; takes effect when the session restarts.
    Restart,
    /// Cannot apply to this session at all (the stage has already run).
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
    pub verdict: Verdict,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} → {}", self.key, self.old, self.new)
    }
}

/// How far the session's distillation schedule (the `tdmr` method's stage 2) has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Is a session running at all? If not, every change simply applies.
    pub running: bool,
    /// Distillation stages started so far (the last of them may be running).
    pub stages_started: usize,
    /// Whether the last started stage is still running.
    pub stage_running: bool,
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(|x| x.is_table()) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}.{i}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn flat(exp: &Experiment) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(exp) {
        flatten("", &v, &mut out);
    }
    out
}

/// `distill.stages.N.field` → (N, field).
fn stage_key(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("distill.stages.")?;
    let (n, field) = rest.split_once('.')?;
    Some((n.parse().ok()?, field))
}

fn verdict(key: &str, p: &Progress) -> Verdict {
    if !p.running || LIVE_KEYS.contains(&key) {
        return Verdict::Live;
    }
    let Some((n, field)) = stage_key(key) else {
        return Verdict::Restart;
    };
    let running = p.stage_running.then(|| p.stages_started.saturating_sub(1));
    if n >= p.stages_started {
        Verdict::Live
    } else if Some(n) == running {
        if field == "lr" || field.starts_with("weights") {
            Verdict::Live
        } else {
            Verdict::Refused(format!("stage {} is running: only its lr and loss weights change mid-stage", n + 1))
        }
    } else {
        Verdict::Refused(format!("stage {} has already run", n + 1))
    }
}

/// Every changed key, old and new values, and what the session can do with it.
pub fn diff(old: &Experiment, new: &Experiment, progress: &Progress) -> Vec<Change> {
    let (a, b) = (flat(old), flat(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Change {
            key: k.clone(),
            old: a.get(k).cloned().unwrap_or_else(|| "—".into()),
            new: b.get(k).cloned().unwrap_or_else(|| "—".into()),
            verdict: verdict(k, progress),
        })
        .collect()
}

/// `old` with the changes of `new` that the session may take now.
pub fn merge(old: &Experiment, new: &Experiment, p: &Progress) -> Experiment {
    if !p.running {
        let mut e = new.clone();
        e.source = old.source.clone().or(e.source);
        return e;
    }
    let mut m = old.clone();
    m.stage1.lr = new.stage1.lr;
    m.baselines.linear_probe_lr = new.baselines.linear_probe_lr;
    m.distill.temperature = new.distill.temperature;
    m.theme = new.theme.clone();
    let started = p.stages_started.min(old.distill.stages.len());
    let mut stages = old.distill.stages[..started].to_vec();
    if p.stage_running && started > 0 {
        if let (Some(cur), Some(upd)) = (stages.last_mut(), new.distill.stages.get(started - 1)) {
            cur.lr = upd.lr;
            cur.weights = upd.weights;
        }
    }
    stages.extend(new.distill.stages.iter().skip(started).cloned());
    m.distill.stages = stages;
    m
}
