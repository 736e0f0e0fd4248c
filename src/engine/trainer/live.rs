//! The settings a running stage re-reads from the live experiment: which of them
//! change mid-stage, and how a configured epoch count becomes epochs over the set.

use crate::config::{Experiment, LossWeights};

/// Where a stage's live settings come from when the view changes the experiment while
/// it runs. Only learning rates, loss weights and the temperature change mid-stage.
#[derive(Debug, Clone, PartialEq)]
pub enum LiveSource {
    /// Nothing of this stage changes live (the baselines' fixed budget).
    Fixed,
    /// `stage1.lr` (stage 1 and `vp`).
    Stage1,
    /// `baselines.linear_probe_lr`.
    Probe,
    /// `distill.stages[name = …]` (lr, loss weights, epochs: the running stage can be
    /// steered longer or shorter) and `distill.temperature`.
    Distill { stage: String, scale: EpochScale },
    /// `distill.temperature` only (the `kd` baseline).
    Temperature,
}

/// How a stage's configured epochs become epochs over the set it trains on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EpochScale {
    AsWritten,
    /// On a transfer set of `items` images, fewer epochs keep the step budget that
    /// `distill.transfer_budget` (`budget`) sets for the `labelled` images.
    Transfer {
        labelled: usize,
        budget: f64,
        items: usize,
    },
}

impl EpochScale {
    pub fn epochs(&self, configured: usize) -> usize {
        match *self {
            EpochScale::AsWritten => configured,
            EpochScale::Transfer { labelled, budget, items } => {
                ((configured * labelled) as f64 * budget / items as f64).ceil().max(1.0) as usize
            }
        }
    }
}

/// The settings a step runs with, re-read from the live experiment before every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    pub lr: f64,
    pub weights: LossWeights,
    pub temperature: f64,
    /// The stage's length in epochs: steering changes it while the stage runs.
    pub epochs: usize,
}

impl Live {
    pub(super) fn update(&mut self, source: &LiveSource, exp: &Experiment) {
        match source {
            LiveSource::Fixed => {}
            LiveSource::Stage1 => self.lr = exp.stage1.lr,
            LiveSource::Probe => self.lr = exp.baselines.linear_probe_lr,
            LiveSource::Temperature => self.temperature = exp.distill.temperature,
            LiveSource::Distill { stage, scale } => {
                self.temperature = exp.distill.temperature;
                if let Some(s) = exp.distill.stages.iter().find(|s| &s.name == stage) {
                    self.lr = s.lr;
                    self.weights = s.weights;
                    self.epochs = scale.epochs(s.epochs);
                }
            }
        }
    }
}
