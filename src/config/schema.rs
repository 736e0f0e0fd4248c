use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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

/// Where `data.path` points: the bundled digits file or a folder per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum DataKind {
    Digits,
    ImageFolder,
}

impl DataKind {
    pub fn name(self) -> &'static str {
        match self {
            DataKind::Digits => "digits",
            DataKind::ImageFolder => "image-folder",
        }
    }
}

impl TryFrom<String> for DataKind {
    type Error = String;
    fn try_from(s: String) -> Result<DataKind, String> {
        [DataKind::Digits, DataKind::ImageFolder]
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("`data.kind`: `{s}` is not a dataset kind (digits, image-folder)"))
    }
}

impl std::fmt::Display for DataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
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
pub(super) const MAX_EPOCHS: usize = 100_000;
pub(super) const MAX_BATCH: usize = 4096;

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
    pub kind: DataKind,
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
    pub family: crate::models::foundation::Family,
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
    pub arch: crate::models::targets::Arch,
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
