//! The stages a run trains, in the order [`super::methods::Lab::run_all`] runs them,
//! with their epochs, steps per epoch and trained groups: what the workbench's
//! Schedule pane draws before and while the run goes (`tests/engine.rs` holds the two
//! to the same order on a real run).

use crate::config::{Experiment, Method};
use crate::engine::trainer::batch_bounds;

/// What dominates a step's cost, for ETAs: stages of one kind run at similar speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Back-propagation through the frozen foundation (stage 1, `vp`).
    Foundation,
    /// A linear head on cached features.
    Probe,
    /// The small target network (stage 2, `scratch`, `kd`).
    Target,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedStage {
    pub method: String,
    pub stage: String,
    pub epochs: usize,
    /// From the labelled set's size (k per class); the transfer-set methods' real count
    /// is known once the data is split, and `stage-started` reports it.
    pub steps_per_epoch: usize,
    pub kind: Kind,
    /// Index into `distill.stages` for the progressive-distillation stages.
    pub distill_index: Option<usize>,
    pub lr: f64,
    /// The trained parameter groups (`backbone+projector`) and loss weights
    /// (`a1 k0 c0`) of a distillation stage; empty for the others.
    pub groups: String,
    pub weights: String,
}

fn stage(method: &str, stage: &str, epochs: usize, steps: usize, kind: Kind, lr: f64) -> PlannedStage {
    PlannedStage {
        method: method.into(),
        stage: stage.into(),
        epochs,
        steps_per_epoch: steps,
        kind,
        distill_index: None,
        lr,
        groups: String::new(),
        weights: String::new(),
    }
}

/// Every stage `exp` trains on data of `classes` classes, in run order.
pub fn plan(exp: &Experiment, classes: usize) -> Vec<PlannedStage> {
    let items = exp.data.k * classes;
    let s1 = batch_bounds(items, exp.stage1.batch_size).len();
    let s2 = batch_bounds(items, exp.distill.batch_size).len();
    let wants = |m: Method| exp.methods.contains(&m);
    let mut out = Vec::new();
    if wants(Method::LinearProbe) || wants(Method::Kd) || wants(Method::KdTransfer) {
        out.push(stage(
            "linear-probe",
            "probe",
            exp.baselines.linear_probe_epochs,
            s1,
            Kind::Probe,
            exp.baselines.linear_probe_lr,
        ));
    }
    if wants(Method::Vp) {
        out.push(stage("vp", "reprogram", exp.stage1.epochs, s1, Kind::Foundation, exp.stage1.lr));
    }
    let peak = exp.distill.stages.iter().map(|s| s.lr).fold(0.0, f64::max);
    let distill = |method: &str, out: &mut Vec<PlannedStage>| {
        for (i, s) in exp.distill.stages.iter().enumerate() {
            let mut r = stage(method, &s.name, s.epochs, s2, Kind::Target, s.lr);
            r.distill_index = Some(i);
            r.groups = s
                .train
                .iter()
                .map(|g| format!("{g:?}").to_lowercase())
                .collect::<Vec<_>>()
                .join("+");
            r.weights = format!("a{} k{} c{}", s.weights.align, s.weights.kd, s.weights.ce);
            out.push(r);
        }
    };
    if [Method::Tdmr, Method::KdTdmrTeacher, Method::TdmrTransfer]
        .iter()
        .any(|&m| wants(m))
    {
        if exp.stage1.probe_init_epochs > 0 {
            out.push(stage(
                "tdmr-teacher",
                "probe-init",
                exp.stage1.probe_init_epochs,
                s1,
                Kind::Probe,
                exp.baselines.linear_probe_lr,
            ));
        }
        out.push(stage(
            "tdmr-teacher",
            "reprogram",
            exp.stage1.epochs,
            s1,
            Kind::Foundation,
            exp.stage1.lr,
        ));
    }
    if wants(Method::Tdmr) {
        distill("tdmr", &mut out);
    }
    if wants(Method::KdTdmrTeacher) {
        out.push(stage("kd-tdmr-teacher", "train", exp.target_epochs(), s2, Kind::Target, peak));
    }
    if wants(Method::TdmrTransfer) {
        distill("tdmr-transfer", &mut out);
    }
    for m in [Method::Scratch, Method::Kd, Method::KdTransfer] {
        if wants(m) {
            out.push(stage(m.name(), "train", exp.target_epochs(), s2, Kind::Target, peak));
        }
    }
    out
}
