//! The training loop shared by every method: seeded view sampling and shuffling, batches,
//! LR schedule, optimiser step, divergence guard, commands between steps, epoch events
//! and periodic evaluation.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{first_non_finite, fnv1a, Checkpointer, Position};
use super::control::Control;
use super::events::{Event, LossParts};
use super::optim::Optimizer;
use super::schedule::LrPlan;
use crate::config::{Checkpointing, Experiment, LossWeights, LrSchedule, OptimizerKind};
use crate::params::Params;
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

/// What a step knows besides its rows.
pub struct StepCtx<'a> {
    /// The rows of the batch after this one (empty at the end of an epoch): a loader
    /// can start preparing them while this step computes.
    pub next: &'a [usize],
    /// How far through the stage, in [0, 1) (for ramped loss weights).
    pub progress: f64,
    /// The loss weights and temperature in force.
    pub live: &'a Live,
}

/// A stage's loss for a batch of view rows.
pub type StepFn<'a> = dyn FnMut(&[usize], &StepCtx) -> Result<StepOut> + 'a;

/// Called after every finished epoch with its number (stage 1's validation selection).
pub type EpochHook<'a> = dyn FnMut(usize) -> Result<()> + 'a;

/// What a stage calls back into: the loss of a batch, the evaluation (test or
/// validation accuracy), and optionally a hook after each epoch.
pub struct Hooks<'a> {
    pub step: &'a mut StepFn<'a>,
    pub eval: &'a mut (dyn FnMut() -> Result<f64> + 'a),
    pub after_epoch: Option<&'a mut EpochHook<'a>>,
}

/// Run `f` and time it: batch assembly is timed so views can show the data-wait share.
pub fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    Ok((v, t.elapsed().as_secs_f64()))
}

pub struct StageSpec {
    pub method: String,
    pub stage: String,
    /// Position of the stage within its method (checkpoints record it).
    pub stage_index: usize,
    pub checkpoint: Checkpointing,
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

/// Train one stage. `step(rows, ctx)` computes the loss of a batch of view rows;
/// `eval()` returns test accuracy. The variables of `params` under `prefixes` are
/// trained; all of `params` goes into the checkpoints, and a resume that stopped in
/// this stage restores them, the optimiser and the RNG.
pub fn train_stage(
    ctl: &mut Control,
    ckpt: &mut Checkpointer,
    spec: &StageSpec,
    params: &Params,
    prefixes: &[String],
    hooks: Hooks,
) -> Result<StageOutcome> {
    let Hooks {
        step,
        eval,
        mut after_epoch,
    } = hooks;
    let named = params.named_vars(prefixes);
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let mut opt = Optimizer::new(spec.optimizer, named, spec.weight_decay, spec.momentum);
    let bounds = batch_bounds(spec.items, spec.batch_size);
    let steps_per_epoch = bounds.len();
    let mut plan = LrPlan {
        kind: spec.lr_schedule,
        base: spec.lr,
        warmup_steps: spec.warmup_epochs * steps_per_epoch,
        total_steps: spec.epochs * steps_per_epoch,
    };
    let trainable_params = opt.param_count();
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ fnv1a(spec.method.bytes().chain([0u8]).chain(spec.stage.bytes())));
    let mut pos = Position {
        stage_index: spec.stage_index,
        epoch: 1,
        ..Position::default()
    };
    // The restored tensors are dropped once copied into the variables.
    let resumed = match ckpt.take_restore(&spec.method, &spec.stage) {
        Some(r) => {
            params.restore(&r.tensors, &r.path)?;
            opt.restore(&r.tensors, r.manifest.optimizer_steps, &r.path)?;
            pos = r.manifest.position;
            rng.set_word_pos(pos.rng_word_pos);
            true
        }
        None => {
            ctl.emit(Event::StageStarted {
                method: spec.method.clone(),
                stage: spec.stage.clone(),
                epochs: spec.epochs,
                steps_per_epoch,
                trainable_params,
            });
            false
        }
    };
    let (start_epoch, start_batch) = (pos.epoch, pos.batch);
    let mut live = Live {
        lr: spec.lr,
        weights: spec.weights,
        temperature: spec.temperature,
    };
    let policy = |ctl: &Control| ctl.live().map(|e| e.checkpoint.clone()).unwrap_or_else(|| spec.checkpoint.clone());
    for epoch in start_epoch..=spec.epochs {
        let started = Instant::now();
        let epoch_rng = rng.get_word_pos();
        let mut order: Vec<usize> = (0..spec.items).collect();
        order.shuffle(&mut rng);
        let rows: Vec<usize> = order.iter().map(|&i| i * spec.views + rng.random_range(0..spec.views)).collect();
        let first = if epoch == start_epoch { start_batch } else { 0 };
        if epoch != start_epoch || !resumed {
            (pos.partial, pos.correct) = (LossParts::default(), 0);
        }
        pos.epoch = epoch;
        pos.rng_word_pos = epoch_rng;
        let mut lr = spec.lr;
        for (b, &(lo, hi)) in bounds.iter().enumerate().skip(first) {
            let req = ctl.between_steps()?;
            let every = policy(ctl).every_steps;
            let periodic = every > 0 && pos.step > 0 && pos.step.is_multiple_of(every) && !(resumed && epoch == start_epoch && b == first);
            if req.save || periodic {
                pos.batch = b;
                save(ctl, ckpt, spec, &pos, params, &opt, req.save)?;
            }
            if req.skip_stage {
                ctl.emit(Event::StageSkipped {
                    method: spec.method.clone(),
                    stage: spec.stage.clone(),
                    epoch,
                });
                return Ok(StageOutcome {
                    test_acc: pos.test_acc,
                    skipped: true,
                    trainable_params,
                });
            }
            if let Some(exp) = ctl.live() {
                live.update(&spec.live, exp);
                plan.base = live.lr;
            }
            let step_started = Instant::now();
            lr = plan.at(pos.step);
            let progress = pos.step as f64 / plan.total_steps.max(1) as f64;
            let next = bounds.get(b + 1).map_or(&[][..], |&(nlo, nhi)| &rows[nlo..nhi]);
            let out = step(
                &rows[lo..hi],
                &StepCtx {
                    next,
                    progress,
                    live: &live,
                },
            )?;
            let loss = out.loss.to_scalar::<f32>()? as f64;
            let diverged = |what: String| {
                Error::Diverged(format!(
                    "{} / {}: {what} at epoch {epoch}, step {} (loss terms: align {:.4}, kd {:.4}, ce {:.4}; lr {lr:.3e})",
                    spec.method,
                    spec.stage,
                    pos.step + 1,
                    out.parts.align,
                    out.parts.kd,
                    out.parts.ce
                ))
            };
            if !loss.is_finite() {
                return Err(diverged(format!("the loss is {loss}")));
            }
            let grads = out.loss.backward()?;
            if let Some(bad) = non_finite_gradient(&grads, &names, &opt)? {
                return Err(diverged(format!("the gradient of `{bad}` holds NaN or Inf (loss {loss:.4})")));
            }
            opt.step(&grads, lr)?;
            let n = (hi - lo) as f64;
            let sums = &mut pos.partial;
            sums.total += out.parts.total * n;
            sums.align += out.parts.align * n;
            sums.kd += out.parts.kd * n;
            sums.ce += out.parts.ce * n;
            pos.correct += out.correct;
            ctl.emit(Event::Step {
                method: spec.method.clone(),
                stage: spec.stage.clone(),
                epoch,
                steps: steps_per_epoch,
                step: pos.step,
                loss,
                lr,
                images: hi - lo,
                wall_s: step_started.elapsed().as_secs_f64(),
                data_wait_s: out.data_wait_s,
            });
            pos.step += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let n = spec.items as f64;
        let sums = pos.partial;
        let loss = LossParts {
            total: sums.total / n,
            align: sums.align / n,
            kd: sums.kd / n,
            ce: sums.ce / n,
        };
        let evaluated = epoch % spec.eval_every == 0 || epoch == spec.epochs;
        if evaluated {
            pos.test_acc = Some(eval()?);
        }
        ctl.emit(Event::Epoch {
            method: spec.method.clone(),
            stage: spec.stage.clone(),
            epoch,
            epochs: spec.epochs,
            loss,
            lr,
            train_acc: pos.correct as f64 / n,
            test_acc: if evaluated { pos.test_acc } else { None },
            images_per_s: n / elapsed.max(1e-9),
            gpu_memory_mib: opt.device().and_then(super::session::gpu_memory_mib),
        });
        if let Some(hook) = after_epoch.as_mut() {
            hook(epoch)?;
        }
        if epoch.is_multiple_of(policy(ctl).every_epochs) || epoch == spec.epochs {
            let next = Position {
                epoch: epoch + 1,
                batch: 0,
                rng_word_pos: rng.get_word_pos(),
                partial: LossParts::default(),
                correct: 0,
                ..pos
            };
            save(ctl, ckpt, spec, &next, params, &opt, false)?;
        }
    }
    Ok(StageOutcome {
        test_acc: pos.test_acc,
        skipped: false,
        trainable_params,
    })
}

/// Write a resumable checkpoint. A failed write (disk full, read-only directory) is
/// reported and, with someone watching, pauses the run; the previous checkpoint stays.
fn save(
    ctl: &mut Control,
    ckpt: &mut Checkpointer,
    spec: &StageSpec,
    pos: &Position,
    params: &Params,
    opt: &Optimizer,
    announce: bool,
) -> Result<()> {
    match ckpt.save(ctl, &spec.method, &spec.stage, pos, params, opt) {
        Ok(path) if announce => ctl.emit(Event::Checkpoint {
            method: spec.method.clone(),
            stage: spec.stage.clone(),
            path: path.display().to_string(),
        }),
        Ok(_) => {}
        Err(e @ Error::Diverged(_)) => return Err(e),
        Err(e) => {
            ctl.emit(Event::CheckpointFailed {
                path: ckpt.dir().display().to_string(),
                message: e.to_string(),
                last_good: ckpt.last_good().map(|p| p.display().to_string()),
            });
            ctl.pause_for_attention()?;
        }
    }
    Ok(())
}

/// The first trained variable whose gradient holds NaN or Inf.
fn non_finite_gradient(grads: &GradStore, names: &[String], opt: &Optimizer) -> Result<Option<String>> {
    let named: Vec<(&String, &Tensor)> = names
        .iter()
        .zip(opt.vars())
        .filter_map(|(n, v)| grads.get(v.as_tensor()).map(|g| (n, g)))
        .collect();
    first_non_finite(named)
}
