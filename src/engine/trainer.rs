//! The training loop shared by every method: seeded view sampling and shuffling, batches,
//! LR schedule, optimiser step, divergence guard, commands between steps, epoch events
//! and periodic evaluation.

use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::control::Control;
use super::events::{Event, LossParts};
use super::optim::Optimizer;
use super::schedule::LrPlan;
use crate::config::{Experiment, LossWeights, LrSchedule, OptimizerKind};
use crate::{Error, Result};

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
    /// `distill.stages[name = …]` and `distill.temperature`.
    Distill(String),
    /// `distill.temperature` only (the `kd` baseline).
    Temperature,
}

/// The settings a step runs with, re-read from the live experiment before every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Live {
    pub lr: f64,
    pub weights: LossWeights,
    pub temperature: f64,
}

impl Live {
    fn update(&mut self, source: &LiveSource, exp: &Experiment) {
        match source {
            LiveSource::Fixed => {}
            LiveSource::Stage1 => self.lr = exp.stage1.lr,
            LiveSource::Probe => self.lr = exp.baselines.linear_probe_lr,
            LiveSource::Temperature => self.temperature = exp.distill.temperature,
            LiveSource::Distill(name) => {
                self.temperature = exp.distill.temperature;
                if let Some(s) = exp.distill.stages.iter().find(|s| &s.name == name) {
                    self.lr = s.lr;
                    self.weights = s.weights;
                }
            }
        }
    }
}

/// A stage's loss for a batch of view rows: `(rows, progress, live)`.
pub type StepFn<'a> = dyn FnMut(&[usize], f64, &Live) -> Result<StepOut> + 'a;

/// Run `f` and time it: batch assembly is timed so views can show the data-wait share.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

pub struct StageSpec {
    pub method: String,
    pub stage: String,
    pub epochs: usize,
    pub batch_size: usize,
    /// Training images; each epoch sees every image once, in one of its `views`.
    pub items: usize,
    pub views: usize,
    pub optimizer: OptimizerKind,
    pub weight_decay: f64,
    pub momentum: f64,
    pub lr: f64,
    pub lr_schedule: LrSchedule,
    pub warmup_epochs: usize,
    pub eval_every: usize,
    pub seed: u64,
    /// Loss weights and temperature at the start (distillation stages; else unused).
    pub weights: LossWeights,
    pub temperature: f64,
    pub live: LiveSource,
}

pub struct StepOut {
    pub loss: Tensor,
    pub parts: LossParts,
    pub correct: usize,
    /// Seconds spent assembling the batch.
    pub data_wait_s: f64,
}

pub struct StageOutcome {
    pub test_acc: Option<f64>,
    pub skipped: bool,
    pub trainable_params: usize,
}

/// Split `n` items into batches of near-equal size, none larger than `batch`
/// (so no batch of one reaches a batch-norm layer in training mode).
pub fn batch_bounds(n: usize, batch: usize) -> Vec<(usize, usize)> {
    let count = n.div_ceil(batch.max(1)).max(1);
    (0..count)
        .map(|i| (i * n / count, (i + 1) * n / count))
        .filter(|(a, b)| b > a)
        .collect()
}

fn stage_salt(method: &str, stage: &str) -> u64 {
    // FNV-1a: a stable salt so each stage draws its own reproducible order.
    method
        .bytes()
        .chain([0u8])
        .chain(stage.bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Train one stage. `step(rows, progress, live)` computes the loss of a batch of view
/// rows (`progress` ∈ [0, 1) through the stage, for ramped loss weights; `live` the
/// weights and temperature in force); `eval()` returns test accuracy; `save()` writes a
/// checkpoint and returns its path.
pub fn train_stage(
    ctl: &mut Control,
    spec: &StageSpec,
    vars: Vec<Var>,
    step: &mut StepFn,
    eval: &mut dyn FnMut() -> Result<f64>,
    save: &mut dyn FnMut() -> Result<String>,
) -> Result<StageOutcome> {
    let mut opt = Optimizer::new(spec.optimizer, vars, spec.weight_decay, spec.momentum);
    let bounds = batch_bounds(spec.items, spec.batch_size);
    let steps_per_epoch = bounds.len();
    let mut plan = LrPlan {
        kind: spec.lr_schedule,
        base: spec.lr,
        warmup_steps: spec.warmup_epochs * steps_per_epoch,
        total_steps: spec.epochs * steps_per_epoch,
    };
    let trainable_params = opt.param_count();
    ctl.emit(Event::StageStarted {
        method: spec.method.clone(),
        stage: spec.stage.clone(),
        epochs: spec.epochs,
        steps_per_epoch,
        trainable_params,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ stage_salt(&spec.method, &spec.stage));
    let mut global = 0usize;
    let mut test_acc = None;
    let mut live = Live {
        lr: spec.lr,
        weights: spec.weights,
        temperature: spec.temperature,
    };
    for epoch in 1..=spec.epochs {
        let started = Instant::now();
        let mut order: Vec<usize> = (0..spec.items).collect();
        order.shuffle(&mut rng);
        let rows: Vec<usize> = order.iter().map(|&i| i * spec.views + rng.random_range(0..spec.views)).collect();
        let (mut sums, mut correct, mut lr) = (LossParts::default(), 0usize, spec.lr);
        for (b, &(lo, hi)) in bounds.iter().enumerate() {
            let req = ctl.between_steps()?;
            if req.save {
                let path = save()?;
                ctl.emit(Event::Checkpoint {
                    method: spec.method.clone(),
                    stage: spec.stage.clone(),
                    path,
                });
            }
            if req.skip_stage {
                ctl.emit(Event::StageSkipped {
                    method: spec.method.clone(),
                    stage: spec.stage.clone(),
                    epoch,
                });
                return Ok(StageOutcome {
                    test_acc,
                    skipped: true,
                    trainable_params,
                });
            }
            if let Some(exp) = ctl.live() {
                live.update(&spec.live, exp);
                plan.base = live.lr;
            }
            let step_started = Instant::now();
            lr = plan.at(global);
            let progress = global as f64 / plan.total_steps.max(1) as f64;
            let out = step(&rows[lo..hi], progress, &live)?;
            let loss = out.loss.to_scalar::<f32>()? as f64;
            if !loss.is_finite() {
                return Err(Error::Diverged(format!(
                    "{} / {}: loss is {loss} at epoch {epoch}, step {}; the last checkpoint is kept",
                    spec.method,
                    spec.stage,
                    b + 1
                )));
            }
            let grads = out.loss.backward()?;
            opt.step(&grads, lr)?;
            let n = (hi - lo) as f64;
            sums.total += out.parts.total * n;
            sums.align += out.parts.align * n;
            sums.kd += out.parts.kd * n;
            sums.ce += out.parts.ce * n;
            correct += out.correct;
            ctl.emit(Event::Step {
                method: spec.method.clone(),
                stage: spec.stage.clone(),
                epoch,
                steps: steps_per_epoch,
                step: global,
                loss,
                lr,
                images: hi - lo,
                wall_s: step_started.elapsed().as_secs_f64(),
                data_wait_s: out.data_wait_s,
            });
            global += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let n = spec.items as f64;
        let loss = LossParts {
            total: sums.total / n,
            align: sums.align / n,
            kd: sums.kd / n,
            ce: sums.ce / n,
        };
        let evaluated = epoch % spec.eval_every == 0 || epoch == spec.epochs;
        if evaluated {
            test_acc = Some(eval()?);
        }
        ctl.emit(Event::Epoch {
            method: spec.method.clone(),
            stage: spec.stage.clone(),
            epoch,
            epochs: spec.epochs,
            loss,
            lr,
            train_acc: correct as f64 / n,
            test_acc: if evaluated { test_acc } else { None },
            images_per_s: n / elapsed.max(1e-9),
            gpu_memory_mib: opt.device().and_then(super::session::gpu_memory_mib),
        });
    }
    Ok(StageOutcome {
        test_acc,
        skipped: false,
        trainable_params,
    })
}
