//! What a run trains, in order: the jobs [`super::methods::Lab::run_all`] executes,
//! and their stages with epochs, steps per epoch and trained groups, which the
//! workbench's Schedule pane draws before and while the run goes (`tests/engine.rs`
//! holds a real run's stages to this plan).

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

/// One unit of a run: a model trained through one or more stages. [`jobs`] orders
/// them; `Lab::run_all` executes that order and [`plan`] lists their stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The linear probe on frozen features: the `linear-probe` baseline, and the
    /// teacher whose logits `kd` and `kd-transfer` distil.
    LinearProbe,
    /// Stage 1 on the frozen foundation: `vp` on its own (`teacher: false`), or the
    /// TDMR teacher with its proxy projector that the TDMR targets learn from.
    Reprogram { teacher: bool },
    /// A target network, trained by `method` (scratch, a KD baseline or TDMR's
    /// progressive distillation).
    Target(Method),
}

/// Methods that distil from the stage-1 TDMR teacher.
pub const TEACHER_METHODS: [Method; 3] = [Method::Tdmr, Method::KdTdmrTeacher, Method::TdmrTransfer];
/// Methods that distil from the linear probe (or are it).
pub const PROBE_METHODS: [Method; 3] = [Method::LinearProbe, Method::Kd, Method::KdTransfer];
/// Target methods, in run order.
const TARGET_ORDER: [Method; 6] = [
    Method::Tdmr,
    Method::KdTdmrTeacher,
    Method::TdmrTransfer,
    Method::Scratch,
    Method::Kd,
    Method::KdTransfer,
];

/// The jobs `methods` need, in run order: every teacher before its students.
pub fn jobs(methods: &[Method]) -> Vec<Job> {
    let wants = |m: &Method| methods.contains(m);
    let mut out = Vec::new();
    if PROBE_METHODS.iter().any(wants) {
        out.push(Job::LinearProbe);
    }
    if wants(&Method::Vp) {
        out.push(Job::Reprogram { teacher: false });
    }
    if TEACHER_METHODS.iter().any(wants) {
        out.push(Job::Reprogram { teacher: true });
    }
    out.extend(TARGET_ORDER.iter().filter(|m| wants(m)).map(|&m| Job::Target(m)));
    out
}

/// Every stage `exp` trains on data of `classes` classes, in run order.
pub fn plan(exp: &Experiment, classes: usize) -> Vec<PlannedStage> {
    let items = exp.data.k * classes;
    let s1 = batch_bounds(items, exp.stage1.batch_size).len();
    let s2 = batch_bounds(items, exp.distill.batch_size).len();
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
    let mut out = Vec::new();
    for job in jobs(&exp.methods) {
        match job {
            Job::LinearProbe => out.push(stage(
                Method::LinearProbe.name(),
                "probe",
                exp.baselines.linear_probe_epochs,
                s1,
                Kind::Probe,
                exp.baselines.linear_probe_lr,
            )),
            Job::Reprogram { teacher: false } => out.push(stage(
                Method::Vp.name(),
                "reprogram",
                exp.stage1.epochs,
                s1,
                Kind::Foundation,
                exp.stage1.lr,
            )),
            Job::Reprogram { teacher: true } => {
                if exp.stage1.probe_init_epochs > 0 {
                    out.push(stage(
                        TEACHER,
                        "probe-init",
                        exp.stage1.probe_init_epochs,
                        s1,
                        Kind::Probe,
                        exp.baselines.linear_probe_lr,
                    ));
                }
                out.push(stage(TEACHER, "reprogram", exp.stage1.epochs, s1, Kind::Foundation, exp.stage1.lr));
            }
            Job::Target(m @ (Method::Tdmr | Method::TdmrTransfer)) => distill(m.name(), &mut out),
            Job::Target(m) => out.push(stage(m.name(), "train", exp.target_epochs(), s2, Kind::Target, peak)),
        }
    }
    out
}

/// The stage-1 TDMR teacher's name in events, checkpoints and the Schedule pane.
pub const TEACHER: &str = "tdmr-teacher";
