//! The experiment: TDMR (stage 1 + teacher cache + stage 2) and the baselines
//! `scratch`, `linear-probe`, `vp` and `kd`, all on the same data, split, views and
//! target budget so the comparison is fair.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::checkpoint::{Checkpointer, Fnv1a};
use super::control::Control;
use super::events::{Event, LossParts, MethodResult};
use super::plan::{self, Job, PROBE_METHODS, TEACHER_METHODS};
use super::run_dir::RunDir;
use super::trainer::{timed, train_stage, Hooks, LiveSource, StageOutcome, StageSpec, StepOut};
use crate::config::{Experiment, Group, HeadMode, LossWeights, LrSchedule, Method, PromptKind, Stage};
use crate::data::{select_rows, ViewSet};
use crate::distill::{loss, TeacherCache};
use crate::models::foundation::Foundation;
use crate::models::prefix::Prefix;
use crate::models::targets::{head_macs, Backbone, TargetSpec};
use crate::params::Params;
use crate::reprogram::{Head, Projector, Prompt};
use crate::Result;

const EVAL_BATCH: usize = 128;
const CACHE_BATCH: usize = 64;
/// The teacher cache's folder inside a run directory.
pub const CACHE_DIR: &str = "teacher-cache";
/// The teacher cache of the transfer set (training images and the unlabelled pool).
pub const TRANSFER_CACHE_DIR: &str = "teacher-cache-transfer";

mod cache;
mod class_reports;
mod probe;
mod target;

use class_reports::predictions;

/// Which training views a target method learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Views {
    /// The labelled training images.
    Labelled,
    /// The labelled images and the unlabelled transfer set.
    Transfer,
}

pub struct Lab<'a> {
    pub exp: &'a Experiment,
    pub ctl: &'a mut Control,
    pub run: &'a RunDir,
    pub device: Device,
    pub foundation: &'a Foundation,
    pub train: ViewSet,
    /// `train` with its mixed views, where `data.mix_views` asks for them: the
    /// labelled views of the target methods.
    pub target_train: Option<ViewSet>,
    /// The evaluation set (`data.eval_on`).
    pub test: ViewSet,
    /// The validation split (stage-1 selection); may be empty.
    pub validation: ViewSet,
    /// Training images plus the unlabelled transfer set (`data.unlabeled`).
    pub transfer: Option<ViewSet>,
    /// Class count of the dataset.
    pub classes: usize,
    /// Bytes the teacher cache may take in memory before it is memory-mapped instead.
    pub cache_budget: usize,
    /// Number of training images (rows of `train` are images × views).
    pub items: usize,
    /// Resumable checkpoints, and the methods finished so far (with their results).
    pub ckpt: Checkpointer,
    /// The TDMR teacher's test predictions, once it has finished in this process: its
    /// students' reports say how often they agree with it.
    pub teacher_predictions: Option<Vec<u32>>,
}

/// Test accuracy of `logits(rows)` over the whole test set.
fn accuracy(test: &ViewSet, mut logits: impl FnMut(&[usize]) -> Result<Tensor>) -> Result<f64> {
    let rows: Vec<usize> = (0..test.len()).collect();
    let mut correct = 0;
    for chunk in rows.chunks(EVAL_BATCH) {
        correct += loss::correct(&logits(chunk)?, &test.label_tensor(chunk)?)?;
    }
    Ok(correct as f64 / test.len() as f64)
}

/// Frozen foundation features of every row of `views` at `size`, through `prompt` as it
/// stands (the linear probe's plain input, or stage 1's prompt before training).
fn frozen_features(foundation: &Foundation, prompt: &Prompt, views: &ViewSet, size: usize) -> Result<Tensor> {
    let rows: Vec<usize> = (0..views.len()).collect();
    let mut out = Vec::new();
    for chunk in rows.chunks(CACHE_BATCH) {
        out.push(foundation.features(&prompt.apply(&views.batch(chunk, size)?, false)?)?);
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// A cross-entropy step on rows `rows` of `set` (stage 1, `vp`, the linear probe);
/// mixup cross-entropy on mixed views.
fn ce_step(logits: &Tensor, set: &ViewSet, rows: &[usize], smoothing: f64, data_wait_s: f64) -> Result<StepOut> {
    let labels = &set.label_tensor(rows)?;
    let ce = loss::set_cross_entropy(logits, labels, set, rows, smoothing)?;
    let v = ce.to_scalar::<f32>()? as f64;
    Ok(StepOut {
        correct: loss::correct(logits, labels)?,
        data_wait_s,
        loss: ce,
        parts: LossParts {
            total: v,
            ce: v,
            ..Default::default()
        },
    })
}

fn prefixes(groups: &[Group]) -> Vec<String> {
    groups
        .iter()
        .map(|g| match g {
            Group::Backbone => "target.backbone.",
            Group::Projector => "target.projector.",
            Group::Head => "target.head.",
        })
        .map(String::from)
        .collect()
}

/// The training views of a target method: the labelled views (with their mixed views
/// where there are any) or the transfer set. Free of `Lab` so its fields stay
/// separately borrowable while a stage trains.
fn target_views<'a>(
    train: &'a ViewSet,
    target_train: &'a Option<ViewSet>,
    transfer: &'a Option<ViewSet>,
    views: Views,
) -> Result<&'a ViewSet> {
    match views {
        Views::Labelled => Ok(target_train.as_ref().unwrap_or(train)),
        Views::Transfer => transfer
            .as_ref()
            .ok_or_else(|| crate::Error::config("data.unlabeled", "this method needs a transfer set: set data.unlabeled = \"pool\"")),
    }
}

/// The stage-1 model: prompt → frozen foundation → (projector) → head.
pub struct Reprogrammed {
    pub params: Params,
    pub prompt: Prompt,
    pub projector: Option<Projector>,
    pub head: Head,
}

impl Reprogrammed {
    /// Proxy embedding (or raw features without a projector) and logits.
    pub fn forward(&self, foundation: &Foundation, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let f = foundation.features(&self.prompt.apply(x, train)?)?;
        let z = match &self.projector {
            Some(p) => p.forward(&f)?,
            None => f,
        };
        let logits = self.head.forward(&z)?;
        Ok((z, logits))
    }
}

impl Lab<'_> {
    /// The target network this experiment trains (inputs are RGB in [0, 1]).
    pub fn target_spec(&self) -> TargetSpec {
        TargetSpec {
            arch: self.exp.target.arch,
            width: self.exp.target.width,
            image_size: self.exp.target.image_size,
            in_channels: 3,
        }
    }

    fn spec(&self, method: &str, stage: &str, salt: u64) -> StageSpec {
        let s1 = &self.exp.stage1;
        StageSpec {
            method: method.into(),
            stage: stage.into(),
            stage_index: 0,
            checkpoint: self.exp.checkpoint.clone(),
            epochs: s1.epochs,
            batch_size: s1.batch_size,
            items: self.items,
            views: self.train.views,
            optimizer: s1.optimizer,
            weight_decay: s1.weight_decay,
            momentum: s1.momentum,
            lr: s1.lr,
            lr_schedule: s1.lr_schedule,
            warmup_epochs: s1.warmup_epochs,
            eval_every: self.exp.data.eval_every,
            seed: self.exp.seed.wrapping_add(salt),
            weights: LossWeights::default(),
            temperature: self.exp.distill.temperature,
            live: LiveSource::Stage1,
        }
    }

    fn finish(&mut self, key: &str, started: Instant, forwards_before: usize, test_acc: f64, trainable_params: usize) {
        let wall_s = started.elapsed().as_secs_f64();
        let foundation_forwards = self.foundation.forward_calls() - forwards_before;
        self.ctl.emit(Event::MethodDone {
            method: key.into(),
            test_acc,
            trainable_params,
            wall_s,
            foundation_forwards,
        });
        self.ckpt.complete(
            key,
            Some(MethodResult {
                test_acc,
                trainable_params,
                wall_s,
            }),
        );
    }

    fn checkpoint(ctl: &mut Control, run: &RunDir, params: &Params, method: &str, stage: &str, file: &str) -> Result<()> {
        let path = run.checkpoint(file);
        params.save(&path)?;
        ctl.emit(Event::Checkpoint {
            method: method.into(),
            stage: stage.into(),
            path: path.display().to_string(),
        });
        Ok(())
    }

    /// Stage 1 (`with_proxy`) or the `vp` baseline (prompt + label head, no proxy).
    /// `restore`: the method finished before a resume; load its final checkpoint.
    pub fn reprogram_foundation(&mut self, key: &str, with_proxy: bool, restore: bool) -> Result<Reprogrammed> {
        let (started, before) = (Instant::now(), self.foundation.forward_calls());
        let exp = self.exp;
        let (r, f) = (&exp.reprogram, &exp.foundation);
        let mut params = Params::new(&self.device, exp.seed.wrapping_add(if with_proxy { 11 } else { 12 }));
        let prefix = Prefix::new(if with_proxy { "teacher" } else { "vp" });
        let prompt = Prompt::new(
            &mut params,
            prefix.pp("prompt"),
            r.prompt,
            f.image_size,
            f.inner_size,
            r.pad,
            self.foundation.normalization(),
        )?;
        let d_f = self.foundation.feature_dim();
        let projector = if with_proxy {
            Some(Projector::new(
                &mut params,
                prefix.pp("projector"),
                r.projector,
                d_f,
                r.proxy_dim,
                r.normalize,
            )?)
        } else {
            None
        };
        let (head_in, scale) = if with_proxy { (r.proxy_dim, r.head_scale()) } else { (d_f, 1.0) };
        let head = Head::new(&mut params, prefix.pp("head"), head_in, self.classes, scale)?;
        let model = Reprogrammed {
            params,
            prompt,
            projector,
            head,
        };
        let ckpt = format!("{key}.safetensors");
        if restore {
            model.params.load(&self.run.checkpoint(&ckpt))?;
            return Ok(model);
        }
        if with_proxy && exp.stage1.probe_init_epochs > 0 {
            self.fit_proxy_probe(key, &prefix, &model)?;
        }
        let spec = self.spec(key, "reprogram", if with_proxy { 1 } else { 2 });
        let (foundation, train, test, inner, smoothing) = (self.foundation, &self.train, &self.test, f.inner_size, r.label_smoothing);
        let validation = &self.validation;
        let select = exp.stage1.select_on_validation && !validation.is_empty();
        let val_acc = |m: &Reprogrammed| {
            accuracy(validation, |rows| {
                Ok(m.forward(foundation, &validation.batch(rows, inner)?, false)?.1)
            })
        };
        // (validation accuracy, epoch, weights) of the best epoch so far; epoch 0 is the
        // start, which with `probe_init_epochs` is already a probe in the proxy space.
        let mut best = match select {
            true => Some((val_acc(&model)?, 0, model.params.snapshot()?)),
            false => None,
        };
        let mut last_epoch = 0;
        let outcome = {
            let m = &model;
            let mut keep_best = |epoch: usize| -> Result<()> {
                last_epoch = epoch;
                if let Some((best_acc, best_epoch, weights)) = best.as_mut() {
                    let acc = val_acc(m)?;
                    if acc > *best_acc {
                        (*best_acc, *best_epoch, *weights) = (acc, epoch, m.params.snapshot()?);
                    }
                }
                Ok(())
            };
            train_stage(
                self.ctl,
                &mut self.ckpt,
                &spec,
                &model.params,
                &[prefix.dotted()],
                Hooks {
                    step: &mut |rows, ctx| {
                        train.prefetch(ctx.next, inner);
                        let (x, wait) = timed(|| train.batch(rows, inner))?;
                        let (_, logits) = m.forward(foundation, &x, true)?;
                        ce_step(&logits, train, rows, smoothing, wait)
                    },
                    eval: &mut |_, _| accuracy(test, |rows| Ok(m.forward(foundation, &test.batch(rows, inner)?, false)?.1)),
                    after_epoch: Some(&mut keep_best),
                },
            )?
        };
        let reselected = match best {
            Some((acc, epoch, weights)) if epoch != last_epoch => {
                model.params.restore(&weights, &self.run.checkpoint(&ckpt))?;
                self.ctl.emit(Event::Log {
                    message: format!(
                        "{key}: kept epoch {epoch} of {last_epoch}, the best on validation ({:.1}%)",
                        acc * 100.0
                    ),
                });
                true
            }
            _ => false,
        };
        let eval = |rows: &[usize]| Ok(model.forward(foundation, &test.batch(rows, inner)?, false)?.1);
        let acc = match reselected {
            true => accuracy(test, eval)?,
            false => self.final_accuracy(&outcome, eval)?,
        };
        // The report's pass is not the method's cost: its foundation batches are not counted.
        let report_from = self.foundation.forward_calls();
        let predicted = predictions(test, eval)?;
        let report_batches = self.foundation.forward_calls() - report_from;
        Self::checkpoint(self.ctl, self.run, &model.params, key, "reprogram", &ckpt)?;
        self.finish(key, started, before + report_batches, acc, outcome.trainable_params);
        self.report_classes(key, predicted)?;
        Ok(model)
    }

    /// Fit the teacher's projector and head on frozen features of the un-prompted
    /// training views (computed once: the prompt starts at zero), so stage 1 starts from
    /// a probe in the proxy space instead of from random projections.
    fn fit_proxy_probe(&mut self, key: &str, prefix: &Prefix, model: &Reprogrammed) -> Result<()> {
        let exp = self.exp;
        let (foundation, inner) = (self.foundation, exp.foundation.inner_size);
        let feats = |views: &ViewSet| frozen_features(foundation, &model.prompt, views, inner);
        let (train_f, test_f) = (feats(&self.train)?, feats(&self.test)?);
        let mut spec = self.spec(key, "probe-init", 4);
        spec.epochs = exp.stage1.probe_init_epochs;
        spec.lr = exp.baselines.linear_probe_lr;
        spec.warmup_epochs = 0;
        spec.live = LiveSource::Fixed;
        let proxy = |f: &Tensor| -> Result<Tensor> {
            let z = match &model.projector {
                Some(p) => p.forward(f)?,
                None => f.clone(),
            };
            model.head.forward(&z)
        };
        let (train, test, smoothing) = (&self.train, &self.test, exp.reprogram.label_smoothing);
        train_stage(
            self.ctl,
            &mut self.ckpt,
            &spec,
            &model.params,
            &[prefix.pp("projector").dotted(), prefix.pp("head").dotted()],
            Hooks {
                step: &mut |rows, _| {
                    let (x, wait) = timed(|| select_rows(&train_f, rows))?;
                    ce_step(&proxy(&x)?, train, rows, smoothing, wait)
                },
                eval: &mut |_, _| accuracy(test, |rows| proxy(&select_rows(&test_f, rows)?)),
                after_epoch: None,
            },
        )?;
        Ok(())
    }

    /// The training views a target method learns from under `views`.
    fn views(&self, views: Views) -> Result<&ViewSet> {
        target_views(&self.train, &self.target_train, &self.transfer, views)
    }

    fn final_accuracy(&self, outcome: &StageOutcome, logits: impl FnMut(&[usize]) -> Result<Tensor>) -> Result<f64> {
        match (outcome.skipped, outcome.test_acc) {
            (false, Some(a)) => Ok(a),
            _ => accuracy(&self.test, logits),
        }
    }

    /// Every method the config lists: the plan's jobs, in their order. After a resume, methods that finished are skipped,
    /// or rebuilt from their final checkpoints where a later method needs them.
    pub fn run_all(&mut self) -> Result<()> {
        let methods = self.exp.methods.clone();
        let wants = |m: Method| methods.contains(&m);
        let done = |lab: &Self, key: &str| lab.ckpt.is_completed(key);
        let pending = |lab: &Self, m: Method| wants(m) && !done(lab, m.name());
        let mut probe: Option<(TeacherCache, Option<TeacherCache>)> = None;
        let mut teacher: Option<(Reprogrammed, bool)> = None;
        let (mut labelled, mut transfer) = (None, None);
        for job in plan::jobs(&methods) {
            match job {
                Job::LinearProbe => {
                    if PROBE_METHODS.iter().any(|&m| pending(self, m)) {
                        probe = Some(self.linear_probe(
                            wants(Method::LinearProbe),
                            done(self, Method::LinearProbe.name()),
                            pending(self, Method::KdTransfer),
                        )?);
                    }
                }
                Job::Reprogram { teacher: false } => {
                    if pending(self, Method::Vp) {
                        self.reprogram_foundation(Method::Vp.name(), false, false)?;
                    }
                }
                Job::Reprogram { teacher: true } => {
                    if TEACHER_METHODS.iter().any(|&m| pending(self, m)) {
                        let restored = done(self, plan::TEACHER);
                        teacher = Some((self.reprogram_foundation(plan::TEACHER, true, restored)?, restored));
                    }
                }
                Job::Target(m) if !pending(self, m) => {}
                Job::Target(m) => {
                    let key = m.name();
                    match m {
                        Method::Tdmr | Method::KdTdmrTeacher | Method::TdmrTransfer => {
                            let (t, restored) = teacher.as_ref().expect("the teacher's job runs before its students");
                            let (views, slot, cache_key) = match m {
                                Method::TdmrTransfer => (Views::Transfer, &mut transfer, key),
                                _ => (Views::Labelled, &mut labelled, Method::Tdmr.name()),
                            };
                            if slot.is_none() {
                                *slot = Some(self.cache_teacher(cache_key, t, views, *restored)?);
                            }
                            let head = (m != Method::KdTdmrTeacher).then_some(&t.head);
                            self.train_target(key, Some((slot.as_ref().unwrap(), head)), views)?;
                        }
                        Method::Scratch => {
                            self.train_target(key, None, Views::Labelled)?;
                        }
                        Method::Kd | Method::KdTransfer => {
                            let (train, with_transfer) = probe.as_ref().expect("the probe's job runs before kd");
                            let (cache, views) = match m {
                                Method::Kd => (Some(train), Views::Labelled),
                                _ => (with_transfer.as_ref(), Views::Transfer),
                            };
                            if let Some(cache) = cache {
                                self.train_target(key, Some((cache, None)), views)?;
                            }
                        }
                        Method::LinearProbe | Method::Vp => unreachable!("not a target method"),
                    }
                }
            }
        }
        Ok(())
    }
}
