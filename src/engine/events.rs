//! What the engine tells its views, and what they may ask of it.

use serde::{Deserialize, Serialize};

/// Commands are honoured between optimisation steps.
#[derive(Debug, Clone)]
pub enum Command {
    Pause,
    Resume,
    /// End the current stage now and go on with the next one.
    SkipStage,
    /// Stop the run; checkpoints written so far stay valid.
    Abort,
    /// Write a checkpoint of the current stage's parameters now.
    Save,
    /// Take the live fields of this experiment (learning rates, loss weights,
    /// temperature, stages not yet started) from the next step on. The view decides
    /// what may change (see `config::live`); the engine applies what it is sent, with
    /// `changes` describing it for the record.
    Apply {
        config: Box<crate::config::Experiment>,
        changes: Vec<String>,
    },
}

pub use crate::distill::loss::LossParts;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    pub test_acc: f64,
    pub trainable_params: usize,
    pub wall_s: f64,
}

/// Per-method results, keyed `scratch`, `linear-probe`, `vp`, `kd`, `tdmr-teacher`, `tdmr`.
pub type Summary = std::collections::BTreeMap<String, MethodResult>;

/// Everything the engine reports. Serialised one per line into `metrics.jsonl`; fields
/// named `wall_s`, `images_per_s` and `data_wait_s` are timings, everything else is deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        name: String,
        seed: u64,
        run_dir: String,
        methods: Vec<String>,
        /// The device the run trains on (`cpu`, `cuda:0`).
        device: String,
    },
    FoundationLoaded {
        path: String,
        variant: String,
        params: usize,
        feature_dim: usize,
    },
    StageStarted {
        method: String,
        stage: String,
        epochs: usize,
        steps_per_epoch: usize,
        trainable_params: usize,
    },
    Step {
        method: String,
        stage: String,
        epoch: usize,
        /// Steps of this epoch, so views can place the step on an epoch axis.
        steps: usize,
        step: usize,
        loss: f64,
        lr: f64,
        images: usize,
        /// Seconds of this step, and how many of them went to assembling the batch.
        wall_s: f64,
        data_wait_s: f64,
    },
    Epoch {
        method: String,
        stage: String,
        epoch: usize,
        epochs: usize,
        loss: LossParts,
        lr: f64,
        train_acc: f64,
        test_acc: Option<f64>,
        images_per_s: f64,
        /// Device memory in use on CUDA (MiB); absent on the CPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu_memory_mib: Option<f64>,
    },
    StageSkipped {
        method: String,
        stage: String,
        epoch: usize,
    },
    CacheBuilt {
        method: String,
        rows: usize,
        bytes: usize,
        wall_s: f64,
        /// Memory-mapped from the run directory (over the memory budget).
        #[serde(default)]
        mapped: bool,
        /// The run directory whose identical cache was linked instead of recomputed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reused_from: Option<String>,
    },
    /// The dataset, its split (written to `split.json`) and unreadable files skipped.
    DataLoaded {
        kind: String,
        root: String,
        classes: Vec<String>,
        train_images: usize,
        eval_images: usize,
        views: usize,
        skipped: Vec<crate::data::Skipped>,
        /// Bytes of decoded images in memory, and images decoded from disk per use.
        resident_bytes: usize,
        on_disk: usize,
    },
    /// A target network built for `method`: what the user would deploy.
    TargetBuilt {
        method: String,
        arch: String,
        params: usize,
        /// Multiply-accumulates per image (backbone, projector and head).
        macs: u64,
        image_size: usize,
    },
    Paused,
    Resumed,
    /// Live configuration changes taken by the running engine.
    ConfigApplied {
        changes: Vec<String>,
    },
    Checkpoint {
        method: String,
        stage: String,
        path: String,
    },
    Log {
        message: String,
    },
    MethodDone {
        method: String,
        test_acc: f64,
        trainable_params: usize,
        wall_s: f64,
        foundation_forwards: usize,
    },
    /// A finished method's test predictions by class (the teacher-against-target view).
    ClassReport {
        method: String,
        /// Test accuracy of each class, in the order `data-loaded` names them.
        per_class: Vec<f64>,
        /// For the `tdmr` target: the share of test images on which it predicts what
        /// its TDMR teacher does.
        agreement: Option<f64>,
        /// The most frequent confusions, most frequent first.
        confused: Vec<super::class_report::Confusion>,
        /// Set on the reports a target sends at each evaluation while it trains (its
        /// stage and epoch); absent on the one it sends when it finishes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        during: Option<super::class_report::During>,
    },
    Done {
        summary: Summary,
        wall_s: f64,
    },
    Failed {
        message: String,
        /// Why it ended (absent in runs recorded before it existed: an error).
        #[serde(default)]
        reason: FailReason,
    },
    /// The run continues from a checkpoint (`None`: none was written, so from the start).
    RunResumed {
        checkpoint: Option<String>,
        /// `method/stage epoch E, batch B` or `the start`.
        position: String,
        /// Config changes taken on resuming.
        changes: Vec<String>,
    },
    /// A NaN or Inf loss, gradient or weight: where, and the last good checkpoint.
    Diverged {
        message: String,
        checkpoint: Option<String>,
    },
    /// A checkpoint could not be written (disk full, directory gone read-only...): the
    /// previous one is intact.
    CheckpointFailed {
        path: String,
        message: String,
        last_good: Option<String>,
    },
}

/// Why a run ended without finishing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailReason {
    /// The user stopped it (`x` in the workbench, Ctrl-C).
    Aborted,
    /// A NaN or Inf loss, gradient or weight the back-off policy could not get past.
    Diverged,
    #[default]
    Error,
}

impl FailReason {
    pub fn of(e: &crate::Error) -> FailReason {
        match e {
            crate::Error::Aborted => FailReason::Aborted,
            crate::Error::Diverged(_) => FailReason::Diverged,
            _ => FailReason::Error,
        }
    }
}
