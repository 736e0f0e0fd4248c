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
use crate::config::{Checkpointing, LossWeights, LrSchedule, OptimizerKind};
use crate::params::Params;
use crate::{Error, Result};

mod live;

pub use live::{EpochScale, Live, LiveSource};

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

/// Test accuracy at the end of an epoch (given its number, and the control to report
/// more on the same predictions).
pub type EvalFn<'a> = dyn FnMut(&mut Control, usize) -> Result<f64> + 'a;
/// Called after every finished epoch with its number (stage 1's validation selection).
pub type EpochHook<'a> = dyn FnMut(usize) -> Result<()> + 'a;

/// What a stage calls back into: the loss of a batch, the evaluation (test or
/// validation accuracy), and optionally a hook after each epoch.
pub struct Hooks<'a> {
    pub step: &'a mut StepFn<'a>,
    pub eval: &'a mut EvalFn<'a>,
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
    let mut run = StageRun::begin(ctl, ckpt, spec, params, prefixes)?;
    let (start_epoch, start_batch) = run.start;
    let mut epoch = start_epoch;
    while epoch <= run.live.epochs {
        let started = Instant::now();
        let rows = run.shuffle(epoch);
        let first = if epoch == start_epoch { start_batch } else { 0 };
        let mut lr = spec.lr;
        for b in first..run.bounds.len() {
            let (lo, hi) = run.bounds[b];
            let req = ctl.between_steps()?;
            let every = run.policy(ctl).every_steps;
            let pos = &mut run.pos;
            let periodic =
                every > 0 && pos.step > 0 && pos.step.is_multiple_of(every) && !(run.resumed && epoch == start_epoch && b == first);
            if req.save || periodic {
                pos.batch = b;
                save(ctl, ckpt, spec, pos, params, &run.opt, req.save)?;
            }
            if req.skip_stage {
                ctl.emit(Event::StageSkipped {
                    method: spec.method.clone(),
                    stage: spec.stage.clone(),
                    epoch,
                });
                return Ok(run.outcome(true));
            }
            if let Some(exp) = ctl.live() {
                run.live.update(&spec.live, exp);
                run.plan.base = run.live.lr;
                // A stage steered shorter still finishes the epoch it is in.
                run.live.epochs = run.live.epochs.max(epoch);
                run.plan.total_steps = run.live.epochs * run.bounds.len();
            }
            let step_started = Instant::now();
            lr = run.plan.at(run.pos.step);
            let progress = run.pos.step as f64 / run.plan.total_steps.max(1) as f64;
            let next = run.bounds.get(b + 1).map_or(&[][..], |&(nlo, nhi)| &rows[nlo..nhi]);
            let out = step(
                &rows[lo..hi],
                &StepCtx {
                    next,
                    progress,
                    live: &run.live,
                },
            )?;
            run.optimise(ctl, out, epoch, hi - lo, lr, step_started)?;
        }
        run.end_epoch(ctl, epoch, lr, started, eval)?;
        if let Some(hook) = after_epoch.as_mut() {
            hook(epoch)?;
        }
        run.checkpoint_epoch(ctl, ckpt, params, epoch)?;
        epoch += 1;
    }
    Ok(run.outcome(false))
}

/// A stage's training state between steps: the optimiser, the LR plan, the shuffling
/// RNG and the position a checkpoint records.
struct StageRun<'s> {
    spec: &'s StageSpec,
    names: Vec<String>,
    opt: Optimizer,
    bounds: Vec<(usize, usize)>,
    plan: LrPlan,
    rng: ChaCha8Rng,
    pos: Position,
    live: Live,
    /// Restored from a checkpoint taken inside this stage.
    resumed: bool,
    /// The (epoch, batch) training starts at: (1, 0), or where the checkpoint stopped.
    start: (usize, usize),
    trainable_params: usize,
}

impl<'s> StageRun<'s> {
    /// Set the stage up, restoring its state when the run resumes inside it, and
    /// announcing it otherwise.
    fn begin(ctl: &mut Control, ckpt: &mut Checkpointer, spec: &'s StageSpec, params: &Params, prefixes: &[String]) -> Result<Self> {
        let named = params.named_vars(prefixes);
        let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
        let mut opt = Optimizer::new(spec.optimizer, named, spec.weight_decay, spec.momentum);
        let bounds = batch_bounds(spec.items, spec.batch_size);
        let steps_per_epoch = bounds.len();
        let plan = LrPlan {
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
        Ok(StageRun {
            spec,
            names,
            opt,
            bounds,
            plan,
            rng,
            start: (pos.epoch, pos.batch),
            pos,
            live: Live {
                lr: spec.lr,
                weights: spec.weights,
                temperature: spec.temperature,
                epochs: spec.epochs,
            },
            resumed,
            trainable_params,
        })
    }

    /// The checkpoint policy in force (the user may change it while the run goes).
    fn policy(&self, ctl: &Control) -> Checkpointing {
        ctl.live()
            .map(|e| e.checkpoint.clone())
            .unwrap_or_else(|| self.spec.checkpoint.clone())
    }

    /// The view rows of `epoch`: every image once, in order shuffled by the stage's RNG,
    /// each in one of its views drawn at random. Records where the RNG stood, so a
    /// resume inside this epoch draws the same rows.
    fn shuffle(&mut self, epoch: usize) -> Vec<usize> {
        let spec = self.spec;
        let epoch_rng = self.rng.get_word_pos();
        let mut order: Vec<usize> = (0..spec.items).collect();
        order.shuffle(&mut self.rng);
        let rows: Vec<usize> = order
            .iter()
            .map(|&i| i * spec.views + self.rng.random_range(0..spec.views))
            .collect();
        if epoch != self.start.0 || !self.resumed {
            (self.pos.partial, self.pos.correct) = (LossParts::default(), 0);
        }
        self.pos.epoch = epoch;
        self.pos.rng_word_pos = epoch_rng;
        rows
    }

    /// Check a batch's loss and gradients, take the optimiser step, and report it.
    fn optimise(&mut self, ctl: &mut Control, out: StepOut, epoch: usize, images: usize, lr: f64, started: Instant) -> Result<()> {
        let spec = self.spec;
        let loss = out.loss.to_scalar::<f32>()? as f64;
        let step = self.pos.step + 1;
        let diverged = |what: String| {
            Error::Diverged(format!(
                "{} / {}: {what} at epoch {epoch}, step {step} (loss terms: align {:.4}, kd {:.4}, ce {:.4}; lr {lr:.3e})",
                spec.method, spec.stage, out.parts.align, out.parts.kd, out.parts.ce
            ))
        };
        if !loss.is_finite() {
            return Err(diverged(format!("the loss is {loss}")));
        }
        let grads = out.loss.backward()?;
        if let Some(bad) = non_finite_gradient(&grads, &self.names, &self.opt)? {
            return Err(diverged(format!("the gradient of `{bad}` holds NaN or Inf (loss {loss:.4})")));
        }
        self.opt.step(&grads, lr)?;
        let n = images as f64;
        let sums = &mut self.pos.partial;
        sums.total += out.parts.total * n;
        sums.align += out.parts.align * n;
        sums.kd += out.parts.kd * n;
        sums.ce += out.parts.ce * n;
        self.pos.correct += out.correct;
        ctl.emit(Event::Step {
            method: spec.method.clone(),
            stage: spec.stage.clone(),
            epoch,
            steps: self.bounds.len(),
            step: self.pos.step,
            loss,
            lr,
            images,
            wall_s: started.elapsed().as_secs_f64(),
            data_wait_s: out.data_wait_s,
        });
        self.pos.step += 1;
        Ok(())
    }

    /// The epoch's mean losses and accuracy, evaluated on the test split where due.
    fn end_epoch(&mut self, ctl: &mut Control, epoch: usize, lr: f64, started: Instant, eval: &mut EvalFn<'_>) -> Result<()> {
        let spec = self.spec;
        let elapsed = started.elapsed().as_secs_f64();
        let n = spec.items as f64;
        let sums = self.pos.partial;
        let loss = LossParts {
            total: sums.total / n,
            align: sums.align / n,
            kd: sums.kd / n,
            ce: sums.ce / n,
        };
        let evaluated = epoch.is_multiple_of(spec.eval_every) || epoch == self.live.epochs;
        if evaluated {
            self.pos.test_acc = Some(eval(ctl, epoch)?);
        }
        ctl.emit(Event::Epoch {
            method: spec.method.clone(),
            stage: spec.stage.clone(),
            epoch,
            epochs: self.live.epochs,
            loss,
            lr,
            train_acc: self.pos.correct as f64 / n,
            test_acc: if evaluated { self.pos.test_acc } else { None },
            images_per_s: n / elapsed.max(1e-9),
            gpu_memory_mib: self.opt.device().and_then(super::session::gpu_memory_mib),
        });
        Ok(())
    }

    /// The end-of-epoch checkpoint, where the policy asks for one (and after the
    /// stage's last epoch): it resumes at the next epoch's first batch.
    fn checkpoint_epoch(&mut self, ctl: &mut Control, ckpt: &mut Checkpointer, params: &Params, epoch: usize) -> Result<()> {
        if epoch.is_multiple_of(self.policy(ctl).every_epochs) || epoch == self.live.epochs {
            let next = Position {
                epoch: epoch + 1,
                batch: 0,
                rng_word_pos: self.rng.get_word_pos(),
                partial: LossParts::default(),
                correct: 0,
                ..self.pos
            };
            save(ctl, ckpt, self.spec, &next, params, &self.opt, false)?;
        }
        Ok(())
    }

    fn outcome(&self, skipped: bool) -> StageOutcome {
        StageOutcome {
            test_acc: self.pos.test_acc,
            skipped,
            trainable_params: self.trainable_params,
        }
    }
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
