use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Scratch,
    LinearProbe,
    Vp,
    Kd,
    Tdmr,
    /// Hinton KD from the stage-1 TDMR teacher's logits, without the proxy space: how
    /// much of `tdmr` is the teacher and how much the proxy alignment.
    KdTdmrTeacher,
    /// `tdmr` whose stage 2 also distils on the unlabelled transfer set (`data.unlabeled`).
    TdmrTransfer,
    /// `kd` (linear-probe teacher) that also distils on the unlabelled transfer set.
    KdTransfer,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Scratch => "scratch",
            Method::LinearProbe => "linear-probe",
            Method::Vp => "vp",
            Method::Kd => "kd",
            Method::Tdmr => "tdmr",
            Method::KdTdmrTeacher => "kd-tdmr-teacher",
            Method::TdmrTransfer => "tdmr-transfer",
            Method::KdTransfer => "kd-transfer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptKind {
    Padding,
    Full,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProjectorKind {
    Linear,
    Mlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimizerKind {
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    Constant,
    Cosine,
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlignLoss {
    Cosine,
    Mse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeadMode {
    /// A trainable copy of the teacher's head.
    Copy,
    /// The teacher's head, frozen.
    Frozen,
    /// A freshly initialised head.
    Own,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    Backbone,
    Projector,
    Head,
}

/// Upper bounds for [`Experiment::validate`]: far above any sensible run, far below
/// what would exhaust memory or never finish.
const MAX_EPOCHS: usize = 100_000;
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    pub name: String,
    pub seed: u64,
    pub device: String,
    /// `f32`, or `bf16` for the frozen foundation model's forward and backward on CUDA
    /// (trained parameters stay f32). On CPU the foundation always computes in f32.
    pub precision: Precision,
    pub methods: Vec<Method>,
    pub data: Data,
    pub foundation: Foundation,
    pub reprogram: Reprogram,
    pub stage1: Optim,
    pub target: Target,
    pub distill: Distill,
    pub baselines: Baselines,
    pub checkpoint: Checkpointing,
    /// The workbench's colour theme: a bundled name (`dark`, `light`, `high-contrast`)
    /// or a path to a theme file.
    pub theme: String,
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// The files `source` extends, nearest first (`extends = "…"`; empty without).
    #[serde(skip)]
    pub bases: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Data {
    pub kind: String,
    pub path: PathBuf,
    pub k: usize,
    pub eval_every: usize,
    /// Augmentation views per training image (view 0 is the image itself).
    pub views: usize,
    /// `test` (the fixed test split) or `validation` (the unused part of the training
    /// pool): tune hyperparameters on `validation`, report on `test`.
    pub eval_on: EvalOn,
    /// ImageFolder: fraction of each class held out as the fixed test set.
    pub test_fraction: f64,
    /// ImageFolder: fraction of each class held out as a fixed validation set (the same
    /// images at every k), used to select stage-1 epochs. 0: the validation set is
    /// everything of the training pool beyond the first k, as for digits.
    pub validation_fraction: f64,
    /// The unlabelled transfer set that `tdmr-transfer` and `kd-transfer` distil on:
    /// `""` (none) or `"pool"` (the training pool's images beyond the first k per class,
    /// labels unused; needs `validation_fraction` > 0 so validation stays apart).
    pub unlabeled: String,
    /// Views per image of the transfer set (0: `views`). Every view is one teacher
    /// forward when the cache is built, and the pool is several times the labelled set.
    pub unlabeled_views: usize,
    /// ImageFolder: mixed views added per training image, each a blend of one of its
    /// views with a view of another training image (mixup, own weight in [½, 1]). Like
    /// every view they are fixed, so the teacher labels each once through the cache.
    /// Every target method (scratch and kd too) trains on them with mixup
    /// cross-entropy; the probe and stage 1 keep to the plain views.
    pub mix_views: usize,
    /// ImageFolder: mixed views added per image of the transfer set, blended with
    /// another image of the transfer set; unlabelled when either image is.
    pub unlabeled_mix_views: usize,
    /// ImageFolder: shorter side images are stored at (0: the largest model input).
    pub stored_side: usize,
    /// ImageFolder: decoded images stay in memory up to this many MiB; the rest are
    /// decoded again from disk when used.
    pub memory_budget_mb: u64,
    /// ImageFolder decoding threads (0: all cores).
    pub workers: usize,
    /// ImageFolder views: random-resized-crop area range.
    pub crop_scale: [f64; 2],
    /// ImageFolder views: random-resized-crop aspect-ratio range.
    pub crop_ratio: [f64; 2],
    /// ImageFolder views: flip half of them horizontally (off: digits and text).
    pub flip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalOn {
    Test,
    Validation,
}

impl EvalOn {
    /// How reports name the evaluation set.
    pub fn describe(self) -> &'static str {
        match self {
            EvalOn::Test => "the fixed test split",
            EvalOn::Validation => "the validation split (training-pool images not used for training)",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Foundation {
    pub path: PathBuf,
    pub family: String,
    pub image_size: usize,
    pub inner_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reprogram {
    pub prompt: PromptKind,
    pub pad: usize,
    pub proxy_dim: usize,
    pub projector: ProjectorKind,
    pub normalize: bool,
    /// Multiplies L2-normalised proxies before the head (a cosine-classifier scale).
    pub logit_scale: f64,
    pub label_smoothing: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Optim {
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_epochs: usize,
    /// Stage 1 first fits the projector and head on the frozen features of the
    /// un-prompted images for this many epochs (a probe in the proxy space, at
    /// `baselines.linear_probe_lr`), then trains the prompt too. 0: all from the start.
    pub probe_init_epochs: usize,
    /// Keep the stage-1 epoch (the probe-initialised start included) with the best
    /// validation accuracy, not the last one.
    pub select_on_validation: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Target {
    pub arch: String,
    pub image_size: usize,
    /// Channel-width multiplier for resnet8, resnet18 and mobilenetv2.
    pub width: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Distill {
    pub temperature: f64,
    pub align_loss: AlignLoss,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub momentum: f64,
    pub head: HeadMode,
    pub stages: Vec<Stage>,
    /// Optimiser steps of a method on the transfer set, as a multiple of the steps the
    /// same schedule takes on the labelled images (its epochs are scaled by labelled ÷
    /// transfer images, times this). 1: every target method gets the same step budget.
    pub transfer_budget: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Stage {
    pub name: String,
    pub epochs: usize,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_epochs: usize,
    pub train: Vec<Group>,
    pub weights: LossWeights,
    /// Ramp the loss weights linearly from the previous stage's to this stage's.
    pub ramp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossWeights {
    pub align: f64,
    pub kd: f64,
    pub ce: f64,
}

/// Resumable checkpoints (`checkpoints/resume-NNNNNN.{safetensors,json}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checkpointing {
    /// Write one at the end of every `every_epochs`-th epoch (and a stage's last).
    pub every_epochs: usize,
    /// Also write one every `every_steps` optimisation steps (0: off).
    pub every_steps: usize,
    /// How many resumable checkpoints to keep (the newest).
    pub keep: usize,
    /// On a NaN/Inf loss or gradient, go back to the last good checkpoint with every
    /// learning rate multiplied by this factor (0: off, the run stops instead).
    pub lr_backoff: f64,
    /// Give up after this many back-offs in one run.
    pub max_backoffs: usize,
}

impl Default for Checkpointing {
    fn default() -> Self {
        Checkpointing {
            every_epochs: 1,
            every_steps: 0,
            keep: 3,
            lr_backoff: 0.0,
            max_backoffs: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Baselines {
    /// Epochs of the linear probe on cached frozen features (cheap, so trained longer).
    pub linear_probe_epochs: usize,
    pub linear_probe_lr: f64,
    /// Hinton KD: `kd_alpha · T²·KL + (1 − kd_alpha) · CE`.
    pub kd_alpha: f64,
}

impl Default for Experiment {
    fn default() -> Self {
        Experiment {
            name: "digits-tdmr".into(),
            seed: 0,
            device: "auto".into(),
            precision: Precision::F32,
            methods: vec![Method::Scratch, Method::LinearProbe, Method::Vp, Method::Kd, Method::Tdmr],
            data: Data::default(),
            foundation: Foundation::default(),
            reprogram: Reprogram::default(),
            stage1: Optim::default(),
            target: Target::default(),
            distill: Distill::default(),
            baselines: Baselines::default(),
            checkpoint: Checkpointing::default(),
            theme: "dark".into(),
            source: None,
            bases: Vec::new(),
        }
    }
}

impl Default for Data {
    fn default() -> Self {
        Data {
            kind: "digits".into(),
            path: "sample-data/digits".into(),
            k: 10,
            eval_every: 5,
            views: 8,
            eval_on: EvalOn::Test,
            test_fraction: 0.2,
            validation_fraction: 0.0,
            unlabeled: String::new(),
            unlabeled_views: 0,
            mix_views: 0,
            unlabeled_mix_views: 0,
            stored_side: 0,
            memory_budget_mb: 1024,
            workers: 0,
            crop_scale: [0.35, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            flip: false,
        }
    }
}

impl Default for Foundation {
    fn default() -> Self {
        Foundation {
            path: "sample-data/foundation/efficientnet-lite0.safetensors".into(),
            family: "auto".into(),
            image_size: 96,
            inner_size: 64,
        }
    }
}

impl Default for Reprogram {
    fn default() -> Self {
        Reprogram {
            prompt: PromptKind::Padding,
            pad: 16,
            proxy_dim: 128,
            projector: ProjectorKind::Linear,
            normalize: true,
            logit_scale: 10.0,
            label_smoothing: 0.0,
        }
    }
}

impl Default for Optim {
    fn default() -> Self {
        Optim {
            epochs: 30,
            batch_size: 32,
            optimizer: OptimizerKind::Adamw,
            lr: 1e-2,
            weight_decay: 0.0,
            momentum: 0.9,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 1,
            probe_init_epochs: 0,
            select_on_validation: false,
        }
    }
}

impl Default for Target {
    fn default() -> Self {
        Target {
            arch: "small-cnn".into(),
            image_size: 32,
            width: 1.0,
        }
    }
}

impl Default for Distill {
    fn default() -> Self {
        let stage = |name: &str, lr: f64, train: Vec<Group>, align: f64, kd: f64, ce: f64| Stage {
            name: name.into(),
            epochs: 20,
            lr,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 0,
            train,
            weights: LossWeights { align, kd, ce },
            ramp: false,
        };
        use Group::*;
        Distill {
            temperature: 4.0,
            align_loss: AlignLoss::Cosine,
            batch_size: 64,
            optimizer: OptimizerKind::Adamw,
            weight_decay: 5e-4,
            momentum: 0.9,
            head: HeadMode::Copy,
            transfer_budget: 1.0,
            stages: vec![
                stage("align", 3e-3, vec![Backbone, Projector], 1.0, 0.0, 0.0),
                stage("align+kd", 3e-3, vec![Backbone, Projector, Head], 1.0, 1.0, 0.1),
                stage("task", 1e-3, vec![Backbone, Projector, Head], 0.0, 0.2, 1.0),
            ],
        }
    }
}

impl Default for Stage {
    fn default() -> Self {
        Stage {
            name: "stage".into(),
            epochs: 10,
            lr: 1e-3,
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 0,
            train: vec![Group::Backbone, Group::Projector, Group::Head],
            weights: LossWeights {
                ce: 1.0,
                ..LossWeights::default()
            },
            ramp: false,
        }
    }
}

/// A weight left out of a `weights = { ... }` table is 0.
impl Default for LossWeights {
    fn default() -> Self {
        LossWeights {
            align: 0.0,
            kd: 0.0,
            ce: 0.0,
        }
    }
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines {
            linear_probe_epochs: 100,
            linear_probe_lr: 1e-2,
            kd_alpha: 0.5,
        }
    }
}

impl Reprogram {
    /// The factor a proxy-space head applies to its input (the logit scale only makes
    /// sense for L2-normalised proxies).
    pub fn head_scale(&self) -> f64 {
        if self.normalize {
            self.logit_scale
        } else {
            1.0
        }
    }
}

impl Data {
    /// `memory_budget_mb` in bytes.
    pub fn memory_budget_bytes(&self) -> usize {
        (self.memory_budget_mb as usize).saturating_mul(1 << 20)
    }
}

impl Experiment {
    /// Checks that serde cannot express; errors name the key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |key: &str, msg: String| Err(Error::config(format!("{origin}: `{key}`"), msg));
        if !matches!(self.data.kind.as_str(), "digits" | "image-folder") {
            return err(
                "data.kind",
                format!("`{}` is not a dataset kind (digits, image-folder)", self.data.kind),
            );
        }
        let d = &self.data;
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            return err(
                "data.test_fraction",
                format!("{} must be strictly between 0 and 1", d.test_fraction),
            );
        }
        if !(0.0..1.0).contains(&d.validation_fraction) || d.test_fraction + d.validation_fraction >= 1.0 {
            return err(
                "data.validation_fraction",
                format!(
                    "{} must be in [0, 1) and leave training images beside data.test_fraction = {}",
                    d.validation_fraction, d.test_fraction
                ),
            );
        }
        if !(self.distill.transfer_budget > 0.0 && self.distill.transfer_budget <= 100.0) {
            return err(
                "distill.transfer_budget",
                format!("{} must be in (0, 100]", self.distill.transfer_budget),
            );
        }
        let transfer = self.methods.iter().any(|m| matches!(m, Method::TdmrTransfer | Method::KdTransfer));
        match d.unlabeled.as_str() {
            "" if transfer => {
                return err(
                    "data.unlabeled",
                    "the methods tdmr-transfer and kd-transfer need a transfer set: set data.unlabeled = \"pool\"".into(),
                )
            }
            "" => {}
            "pool" if d.kind != "image-folder" => return err("data.unlabeled", "a transfer set needs data.kind = \"image-folder\"".into()),
            "pool" if d.validation_fraction <= 0.0 => {
                return err(
                    "data.unlabeled",
                    "\"pool\" takes the images beyond the first k, which are the validation set unless data.validation_fraction > 0".into(),
                )
            }
            "pool" => {}
            other => return err("data.unlabeled", format!("`{other}` is not a transfer set (\"\" or \"pool\")")),
        }
        if d.kind != "image-folder" {
            for (key, n) in [("data.mix_views", d.mix_views), ("data.unlabeled_mix_views", d.unlabeled_mix_views)] {
                if n > 0 {
                    return err(key, "mixed views need data.kind = \"image-folder\"".into());
                }
            }
        }
        if !(d.crop_scale[0] > 0.0 && d.crop_scale[0] <= d.crop_scale[1] && d.crop_scale[1] <= 1.0) {
            return err(
                "data.crop_scale",
                format!("{:?} must be [lo, hi] with 0 < lo ≤ hi ≤ 1", d.crop_scale),
            );
        }
        if !(d.crop_ratio[0] > 0.0 && d.crop_ratio[0] <= d.crop_ratio[1] && d.crop_ratio[1].is_finite()) {
            return err("data.crop_ratio", format!("{:?} must be [lo, hi] with 0 < lo ≤ hi", d.crop_ratio));
        }
        if self.data.k == 0 {
            return err("data.k", "must be at least 1".into());
        }
        if self.data.eval_every == 0 {
            return err("data.eval_every", "must be at least 1".into());
        }
        let families = crate::models::foundation::FAMILIES;
        if self.foundation.family != "auto" && !families.contains(&self.foundation.family.as_str()) {
            return err(
                "foundation.family",
                format!("`{}` is not a family (auto, {})", self.foundation.family, families.join(", ")),
            );
        }
        let f = &self.foundation;
        if f.image_size < 32 {
            return err("foundation.image_size", format!("{} is too small (at least 32)", f.image_size));
        }
        if f.inner_size == 0 || f.inner_size > f.image_size || !(f.image_size - f.inner_size).is_multiple_of(2) {
            return err(
                "foundation.inner_size",
                format!(
                    "{} must be in 1..={} and differ from image_size by an even number",
                    f.inner_size, f.image_size
                ),
            );
        }
        if self.reprogram.prompt == PromptKind::Padding && 2 * self.reprogram.pad > f.image_size {
            return err(
                "reprogram.pad",
                format!(
                    "a {}-pixel padding prompt is wider than the {}×{} canvas allows (2·pad ≤ image_size)",
                    self.reprogram.pad, f.image_size, f.image_size
                ),
            );
        }
        if self.reprogram.proxy_dim == 0 {
            return err("reprogram.proxy_dim", "must be at least 1".into());
        }
        if !crate::models::targets::ARCHS.contains(&self.target.arch.as_str()) {
            return err(
                "target.arch",
                format!(
                    "`{}` is not a target architecture ({})",
                    self.target.arch,
                    crate::models::targets::ARCHS.join(", ")
                ),
            );
        }
        if !(self.target.width > 0.0 && self.target.width <= 4.0) {
            return err("target.width", format!("{} must be in (0, 4]", self.target.width));
        }
        if self.target.image_size < 8 || !self.target.image_size.is_multiple_of(8) {
            return err(
                "target.image_size",
                format!("{} must be a positive multiple of 8 (three 2×2 poolings)", self.target.image_size),
            );
        }
        if self.stage1.batch_size == 0 {
            return err("stage1.batch_size", "must be at least 1".into());
        }
        if !self.stage1.lr.is_finite() || self.stage1.lr <= 0.0 {
            return err("stage1.lr", format!("{} must be a positive number", self.stage1.lr));
        }
        if self.distill.batch_size < 2 {
            return err("distill.batch_size", "must be at least 2 (batch norm in training mode)".into());
        }
        if self.distill.stages.is_empty() {
            return err("distill.stages", "needs at least one stage".into());
        }
        for (i, s) in self.distill.stages.iter().enumerate() {
            if !s.lr.is_finite() || s.lr <= 0.0 {
                return err(&format!("distill.stages[{i}].lr"), format!("{} must be a positive number", s.lr));
            }
            if s.train.is_empty() {
                return err(
                    &format!("distill.stages[{i}].train"),
                    "names no parameter group (backbone, projector, head)".into(),
                );
            }
            if self.distill.stages[..i].iter().any(|o| o.name == s.name) {
                return err(
                    &format!("distill.stages[{i}].name"),
                    format!(
                        "`{}` names an earlier stage too: stage names must be unique (checkpoints and live edits use them)",
                        s.name
                    ),
                );
            }
            let w = s.weights;
            if [w.align, w.kd, w.ce].iter().any(|v| *v < 0.0 || !v.is_finite()) {
                return err(&format!("distill.stages[{i}].weights"), "weights must be finite and ≥ 0".into());
            }
        }
        if self.methods.is_empty() {
            return err("methods", "names no method".into());
        }
        if let Err(msg) = crate::engine::session::check_device_spec(&self.device) {
            return err("device", msg);
        }
        self.validate_ranges(origin)
    }

    /// Bounds on every size and count: a typo like `epochs = 1000000000` or
    /// `image_size = 100000` must be an error, not a run that never ends or an
    /// allocation without limit.
    fn validate_ranges(&self, origin: &str) -> Result<()> {
        let err = |key: &str, msg: String| Err(Error::config(format!("{origin}: `{key}`"), msg));
        let (s1, d) = (&self.stage1, &self.distill);
        let mut counts = vec![
            ("data.views", self.data.views, 1, 256),
            ("data.unlabeled_views", self.data.unlabeled_views, 0, 256),
            ("data.mix_views", self.data.mix_views, 0, 256),
            ("data.unlabeled_mix_views", self.data.unlabeled_mix_views, 0, 256),
            ("data.stored_side", self.data.stored_side, 0, 4096),
            ("data.workers", self.data.workers, 0, 256),
            ("foundation.image_size", self.foundation.image_size, 32, 1024),
            ("target.image_size", self.target.image_size, 8, 512),
            ("reprogram.proxy_dim", self.reprogram.proxy_dim, 1, 8192),
            ("stage1.epochs", s1.epochs, 0, MAX_EPOCHS),
            ("stage1.warmup_epochs", s1.warmup_epochs, 0, s1.epochs),
            ("stage1.batch_size", s1.batch_size, 1, MAX_BATCH),
            ("distill.batch_size", d.batch_size, 2, MAX_BATCH),
            ("baselines.linear_probe_epochs", self.baselines.linear_probe_epochs, 0, MAX_EPOCHS),
            ("distill.stages", d.stages.len(), 1, 64),
            ("checkpoint.every_epochs", self.checkpoint.every_epochs, 1, MAX_EPOCHS),
            ("checkpoint.every_steps", self.checkpoint.every_steps, 0, 1 << 40),
            ("checkpoint.keep", self.checkpoint.keep, 1, 1000),
            ("checkpoint.max_backoffs", self.checkpoint.max_backoffs, 0, 100),
        ];
        let stage_keys: Vec<(String, String)> = (0..d.stages.len())
            .map(|i| (format!("distill.stages[{i}].epochs"), format!("distill.stages[{i}].warmup_epochs")))
            .collect();
        for (s, (e, w)) in d.stages.iter().zip(&stage_keys) {
            counts.push((e.as_str(), s.epochs, 0, MAX_EPOCHS));
            counts.push((w.as_str(), s.warmup_epochs, 0, s.epochs));
        }
        for (key, v, lo, hi) in counts {
            if v < lo || v > hi {
                return err(key, format!("{v} is out of range: expected {lo}..={hi}"));
            }
        }
        let reals = [
            ("stage1.weight_decay", s1.weight_decay, 0.0, 1.0),
            ("stage1.momentum", s1.momentum, 0.0, 0.999),
            ("distill.weight_decay", d.weight_decay, 0.0, 1.0),
            ("distill.momentum", d.momentum, 0.0, 0.999),
            ("reprogram.label_smoothing", self.reprogram.label_smoothing, 0.0, 0.999),
            ("reprogram.logit_scale", self.reprogram.logit_scale, 1e-3, 1e4),
            ("distill.temperature", d.temperature, 1e-3, 1e3),
            ("baselines.kd_alpha", self.baselines.kd_alpha, 0.0, 1.0),
            ("baselines.linear_probe_lr", self.baselines.linear_probe_lr, 1e-12, f64::MAX),
            ("checkpoint.lr_backoff", self.checkpoint.lr_backoff, 0.0, 0.999),
        ];
        for (key, v, lo, hi) in reals {
            if !v.is_finite() || v < lo || v > hi {
                return err(key, format!("{v} is out of range: expected a number in [{lo}, {hi}]"));
            }
        }
        Ok(())
    }

    /// Multiply every learning rate (stage 1, the probe, each distillation stage).
    pub fn scale_learning_rates(&mut self, factor: f64) {
        self.stage1.lr *= factor;
        self.baselines.linear_probe_lr *= factor;
        for s in &mut self.distill.stages {
            s.lr *= factor;
        }
    }

    /// Total stage-2 epochs: the baselines that train the target use the same budget.
    pub fn target_epochs(&self) -> usize {
        self.distill.stages.iter().map(|s| s.epochs).sum()
    }
}
