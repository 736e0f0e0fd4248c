//! The live diff: what changed between the experiment a session runs and the file on
//! disk, and which of those changes a running session may take.
//!
//! Learning rates, loss weights, the temperature and stages not yet started change
//! live; the running stage takes only its lr, loss weights and epochs (the trainer
//! never ends it before the epoch in progress); everything else (model, data, proxy
//! dim, sizes, seed...) needs a restart.

use std::collections::BTreeMap;

use super::{Experiment, Stage};

/// Keys (dotted paths) that change live whatever the progress.
const LIVE_KEYS: &[&str] = &[
    "stage1.lr",
    "baselines.linear_probe_lr",
    "distill.temperature",
    "theme",
    "checkpoint.every_epochs",
    "checkpoint.every_steps",
    "checkpoint.keep",
    "checkpoint.lr_backoff",
    "checkpoint.max_backoffs",
];

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

/// `v` as dotted keys (`distill.stages.0.lr`) and their TOML values.
pub fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
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

/// Every key but the stages (compared by name, below).
fn flat(exp: &Experiment) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(mut v) = toml::Value::try_from(exp) {
        if let Some(d) = v.get_mut("distill").and_then(|d| d.as_table_mut()) {
            d.remove("stages");
        }
        flatten("", &v, &mut out);
    }
    out
}

fn flat_stage(s: &Stage) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(s) {
        flatten("", &v, &mut out);
    }
    out
}

fn names(stages: &[Stage]) -> Vec<&str> {
    stages.iter().map(|s| s.name.as_str()).collect()
}

/// Stages are matched by name, so adding, removing or moving one reads as one change
/// of the list plus the fields that changed within each stage.
fn stage_changes(old: &[Stage], new: &[Stage], p: &Progress, out: &mut Vec<Change>) {
    let started = if p.running { p.stages_started.min(old.len()) } else { 0 };
    let running = (p.running && p.stage_running && started > 0).then(|| started - 1);
    let (on, nn) = (names(old), names(new));
    if on != nn {
        let kept = nn.len() >= started && nn[..started] == on[..started];
        out.push(Change {
            key: "distill.stages".into(),
            old: on.join(", "),
            new: nn.join(", "),
            verdict: if kept {
                Verdict::Live
            } else {
                Verdict::Refused("stages that have started keep their place; only later ones can be added, removed or moved".into())
            },
        });
    }
    for (i, s) in old.iter().enumerate() {
        let Some(n) = new.iter().find(|n| n.name == s.name) else { continue };
        let (a, b) = (flat_stage(s), flat_stage(n));
        for (field, va) in &a {
            let vb = b.get(field).cloned().unwrap_or_else(|| "—".into());
            if *va == vb {
                continue;
            }
            let steerable = field == "lr" || field == "epochs" || field.starts_with("weights");
            let verdict = if i >= started || (Some(i) == running && steerable) {
                Verdict::Live
            } else if Some(i) == running {
                Verdict::Refused(format!(
                    "stage `{}` is running: only its lr, loss weights and epochs change mid-stage",
                    s.name
                ))
            } else {
                Verdict::Refused(format!("stage `{}` has already run", s.name))
            };
            out.push(Change {
                key: format!("distill.stages.{}.{field}", s.name),
                old: va.clone(),
                new: vb,
                verdict,
            });
        }
    }
}

fn verdict(key: &str, p: &Progress) -> Verdict {
    if !p.running || LIVE_KEYS.contains(&key) {
        Verdict::Live
    } else {
        Verdict::Restart
    }
}

/// Every changed key, old and new values, and what the session can do with it.
pub fn diff(old: &Experiment, new: &Experiment, progress: &Progress) -> Vec<Change> {
    let (a, b) = (flat(old), flat(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out: Vec<Change> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| Change {
            key: k.clone(),
            old: a.get(k).cloned().unwrap_or_else(|| "—".into()),
            new: b.get(k).cloned().unwrap_or_else(|| "—".into()),
            verdict: verdict(k, progress),
        })
        .collect();
    stage_changes(&old.distill.stages, &new.distill.stages, progress, &mut out);
    out
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
    m.checkpoint = new.checkpoint.clone();
    let started = p.stages_started.min(old.distill.stages.len());
    let mut stages = old.distill.stages[..started].to_vec();
    if p.stage_running {
        if let Some(cur) = stages.last_mut() {
            if let Some(upd) = new.distill.stages.iter().find(|s| s.name == cur.name) {
                cur.lr = upd.lr;
                cur.weights = upd.weights;
                cur.epochs = upd.epochs;
            }
        }
    }
    let ran: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    stages.extend(new.distill.stages.iter().filter(|s| !ran.contains(&s.name)).cloned());
    m.distill.stages = stages;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp() -> Experiment {
        Experiment::default()
    }

    #[test]
    fn idle_sessions_take_everything() {
        let mut new = exp();
        new.reprogram.proxy_dim = 64;
        let d = diff(&exp(), &new, &Progress::default());
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].key.as_str(), d[0].verdict.clone()), ("reprogram.proxy_dim", Verdict::Live));
        assert_eq!(merge(&exp(), &new, &Progress::default()).reprogram.proxy_dim, 64);
    }

    #[test]
    fn running_sessions_split_live_restart_and_refused() {
        // Stage 1 of 3 ("align") is running.
        let p = Progress {
            running: true,
            stages_started: 1,
            stage_running: true,
        };
        let mut new = exp();
        new.stage1.lr = 3e-3;
        new.reprogram.proxy_dim = 64;
        new.distill.stages[0].lr = 1e-4; // running: live
        new.distill.stages[0].epochs = 5; // running: live (steered)
        new.distill.stages[0].warmup_epochs = 1; // running: refused
        new.distill.stages[2].weights.ce = 0.5; // pending: live
        new.distill.stages.swap(1, 2); // pending order: live
        let d = diff(&exp(), &new, &p);
        let v = |k: &str| {
            d.iter()
                .find(|c| c.key == k)
                .map(|c| c.verdict.clone())
                .unwrap_or_else(|| panic!("{k}: {d:?}"))
        };
        assert_eq!(v("stage1.lr"), Verdict::Live);
        assert_eq!(v("reprogram.proxy_dim"), Verdict::Restart);
        assert_eq!(v("distill.stages.align.lr"), Verdict::Live);
        assert_eq!(v("distill.stages.align.epochs"), Verdict::Live);
        assert!(matches!(v("distill.stages.align.warmup_epochs"), Verdict::Refused(_)));
        assert_eq!(v("distill.stages.task.weights.ce"), Verdict::Live);
        assert_eq!(v("distill.stages"), Verdict::Live);
        let m = merge(&exp(), &new, &p);
        assert_eq!((m.stage1.lr, m.reprogram.proxy_dim), (3e-3, 128));
        assert_eq!((m.distill.stages[0].lr, m.distill.stages[0].epochs), (1e-4, 5));
        assert_eq!(m.distill.stages[0].warmup_epochs, exp().distill.stages[0].warmup_epochs);
        assert_eq!(names(&m.distill.stages), ["align", "task", "align+kd"]);
        assert_eq!(m.distill.stages[1].weights.ce, 0.5);

        // Moving a stage that already ran is refused, and merge keeps the prefix.
        let mut moved = exp();
        moved.distill.stages.swap(0, 1);
        let d = diff(&exp(), &moved, &p);
        assert!(matches!(
            d.iter().find(|c| c.key == "distill.stages").unwrap().verdict,
            Verdict::Refused(_)
        ));
        assert_eq!(names(&merge(&exp(), &moved, &p).distill.stages), ["align", "align+kd", "task"]);
    }
}
