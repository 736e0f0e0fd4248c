//! The experiment: TDMR (stage 1 + teacher cache + stage 2) and the baselines
//! `scratch`, `linear-probe`, `vp` and `kd`, all on the same data, split, views and
//! target budget so the comparison is fair.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};

use super::checkpoint::{Checkpointer, Fnv1a};
use super::control::Control;
use super::events::{Event, LossParts, MethodResult};
use super::run_dir::RunDir;
use super::trainer::{timed, train_stage, Hooks, Live, LiveSource, StageOutcome, StageSpec, StepOut};
use crate::config::{Experiment, Group, HeadMode, LossWeights, LrSchedule, Method, PromptKind, Stage};
use crate::data::{select_rows, ViewSet};
use crate::distill::{loss, TeacherCache};
use crate::models::foundation::Foundation;
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

fn all_prefixes(prefix: &str) -> Vec<String> {
    vec![prefix.to_string()]
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
            arch: self.exp.target.arch.clone(),
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
        let prefix = if with_proxy { "teacher." } else { "vp." };
        let prompt = Prompt::new(
            &mut params,
            &format!("{prefix}prompt."),
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
                &format!("{prefix}projector."),
                r.projector,
                d_f,
                r.proxy_dim,
                r.normalize,
            )?)
        } else {
            None
        };
        let (head_in, scale) = if with_proxy { (r.proxy_dim, r.head_scale()) } else { (d_f, 1.0) };
        let head = Head::new(&mut params, &format!("{prefix}head."), head_in, self.classes, scale)?;
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
            self.fit_proxy_probe(key, prefix, &model)?;
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
                &all_prefixes(prefix),
                Hooks {
                    step: &mut |rows, ctx| {
                        train.prefetch(ctx.next, inner);
                        let (x, wait) = timed(|| train.batch(rows, inner))?;
                        let (_, logits) = m.forward(foundation, &x, true)?;
                        ce_step(&logits, train, rows, smoothing, wait)
                    },
                    eval: &mut || accuracy(test, |rows| Ok(m.forward(foundation, &test.batch(rows, inner)?, false)?.1)),
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
        Self::checkpoint(self.ctl, self.run, &model.params, key, "reprogram", &ckpt)?;
        self.finish(key, started, before, acc, outcome.trainable_params);
        Ok(model)
    }

    /// Fit the teacher's projector and head on frozen features of the un-prompted
    /// training views (computed once: the prompt starts at zero), so stage 1 starts from
    /// a probe in the proxy space instead of from random projections.
    fn fit_proxy_probe(&mut self, key: &str, prefix: &str, model: &Reprogrammed) -> Result<()> {
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
            &[format!("{prefix}projector."), format!("{prefix}head.")],
            Hooks {
                step: &mut |rows, _| {
                    let (x, wait) = timed(|| select_rows(&train_f, rows))?;
                    ce_step(&proxy(&x)?, train, rows, smoothing, wait)
                },
                eval: &mut || accuracy(test, |rows| proxy(&select_rows(&test_f, rows)?)),
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

    /// The content hash the teacher cache is keyed by: the foundation file, the
    /// reprogrammer's weights, every input view exactly as the foundation sees it, and
    /// the settings and device that shape the forward pass.
    fn teacher_cache_key(&self, teacher: &Reprogrammed, set: &ViewSet) -> Result<String> {
        let mut h = Fnv1a::default();
        let mut buf = vec![0u8; 1 << 20];
        for fpath in crate::models::weights::files_of(&self.exp.foundation_path())? {
            let mut file = std::fs::File::open(&fpath).map_err(|e| crate::Error::io(&fpath, e))?;
            loop {
                let n = std::io::Read::read(&mut file, &mut buf).map_err(|e| crate::Error::io(&fpath, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        for (name, t) in teacher.params.tensors() {
            h.field(name.as_bytes());
            let v: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
            v.iter().for_each(|x| h.update(&x.to_le_bytes()));
        }
        let settings = format!(
            "{}|{:?}|{:?}|{:?}|{:?}",
            self.foundation.family(),
            self.exp.foundation.inner_size,
            self.exp.reprogram,
            self.exp.precision,
            self.device.location()
        );
        h.field(settings.as_bytes());
        let inner = self.exp.foundation.inner_size;
        let all: Vec<usize> = (0..set.len()).collect();
        for chunk in all.chunks(CACHE_BATCH) {
            let v: Vec<f32> = set.batch(chunk, inner)?.flatten_all()?.to_vec1()?;
            v.iter().for_each(|x| h.update(&x.to_le_bytes()));
        }
        Ok(format!("{:016x}", h.0))
    }

    /// A finished cache under `key` in another run directory next to this one.
    fn find_cache_elsewhere(&self, folder: &str, key: &str) -> Option<PathBuf> {
        let parent = self.run.root.parent()?;
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(parent).ok()?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        dirs.into_iter()
            .filter(|d| *d != self.run.root)
            .map(|d| d.join(folder))
            .find(|d| TeacherCache::exists(d, key))
    }

    /// Cache the teacher's proxy embeddings and logits for every training view, or
    /// link an identical cache from an earlier run. `quiet`: rebuilt on a resume, after
    /// its event was recorded.
    pub fn cache_teacher(&mut self, key: &str, teacher: &Reprogrammed, views: Views, quiet: bool) -> Result<TeacherCache> {
        let started = Instant::now();
        let folder = match views {
            Views::Labelled => CACHE_DIR,
            Views::Transfer => TRANSFER_CACHE_DIR,
        };
        let train = self.views(views)?;
        let hash = self.teacher_cache_key(teacher, train)?;
        let dir = self.run.file(folder);
        let mut reused_from = None;
        if !TeacherCache::exists(&dir, &hash) {
            if let Some(other) = self.find_cache_elsewhere(folder, &hash) {
                TeacherCache::link(&other, &dir, &hash)?;
                reused_from = other.parent().map(|p| p.display().to_string());
            }
        }
        let (foundation, inner) = (self.foundation, self.exp.foundation.inner_size);
        let cache = if TeacherCache::exists(&dir, &hash) {
            TeacherCache::open(&dir, &hash, self.cache_budget, &self.device)?
        } else {
            TeacherCache::build_files(&dir, &hash, train.len(), CACHE_BATCH, self.cache_budget, &self.device, |rows| {
                teacher.forward(foundation, &train.batch(rows, inner)?, false)
            })?
        };
        if quiet {
            return Ok(cache);
        }
        self.ctl.emit(Event::CacheBuilt {
            method: key.into(),
            rows: train.len(),
            bytes: cache.bytes(),
            wall_s: started.elapsed().as_secs_f64(),
            mapped: cache.is_mapped(),
            reused_from,
        });
        Ok(cache)
    }

    /// Linear probe on frozen features (image resized to the full canvas, no prompt).
    /// Returns the probe's logits for every training view: the `kd` baseline's teacher.
    /// `restore`: it finished before a resume; load its final checkpoint.
    pub fn linear_probe(&mut self, record: bool, restore: bool, transfer_too: bool) -> Result<(TeacherCache, Option<TeacherCache>)> {
        let (started, before) = (Instant::now(), self.foundation.forward_calls());
        let exp = self.exp;
        let size = exp.foundation.image_size;
        let mut params = Params::new(&self.device, exp.seed.wrapping_add(13));
        let plain = Prompt::new(
            &mut params,
            "probe.input.",
            PromptKind::None,
            size,
            size,
            0,
            self.foundation.normalization(),
        )?;
        let foundation = self.foundation;
        let feats = |views: &ViewSet| frozen_features(foundation, &plain, views, size);
        // The probe trains on the plain views; `kd` needs its logits on the target's
        // views too, which begin, per image, with those same plain views.
        let (train_f, target_f) = match &self.target_train {
            None => {
                let f = feats(&self.train)?;
                (f.clone(), f)
            }
            Some(set) => {
                let f = feats(set)?;
                let v = self.train.views;
                let own: Vec<usize> = (0..self.train.len()).map(|r| (r / v) * set.views + r % v).collect();
                (select_rows(&f, &own)?, f)
            }
        };
        let head = Head::new(&mut params, "probe.head.", foundation.feature_dim(), self.classes, 1.0)?;
        let file = "linear-probe.safetensors";
        if restore {
            params.load(&self.run.checkpoint(file))?;
        } else {
            let mut spec = self.spec("linear-probe", "probe", 3);
            spec.epochs = exp.baselines.linear_probe_epochs;
            spec.lr = exp.baselines.linear_probe_lr;
            spec.optimizer = crate::config::OptimizerKind::Adamw;
            spec.weight_decay = 0.0;
            spec.live = LiveSource::Probe;
            // Only training needs the test features; a restore skips them.
            let test_f = feats(&self.test)?;
            let (train, test) = (&self.train, &self.test);
            let outcome = train_stage(
                self.ctl,
                &mut self.ckpt,
                &spec,
                &params,
                &all_prefixes("probe.head."),
                Hooks {
                    step: &mut |rows, _| {
                        let (x, wait) = timed(|| select_rows(&train_f, rows))?;
                        ce_step(&head.forward(&x)?, train, rows, 0.0, wait)
                    },
                    eval: &mut || accuracy(test, |rows| head.forward(&select_rows(&test_f, rows)?)),
                    after_epoch: None,
                },
            )?;
            let acc = self.final_accuracy(&outcome, |rows| head.forward(&select_rows(&test_f, rows)?))?;
            Self::checkpoint(self.ctl, self.run, &params, "linear-probe", "probe", file)?;
            if record {
                self.finish("linear-probe", started, before, acc, outcome.trainable_params);
            } else {
                self.ckpt.complete("linear-probe", None);
            }
        }
        let logits = head.forward(&target_f)?.detach();
        let transfer = match (transfer_too, &self.transfer) {
            (true, Some(set)) => {
                let f = feats(set)?;
                let logits = head.forward(&f)?.detach();
                Some(TeacherCache::from_tensors(f, logits))
            }
            _ => None,
        };
        Ok((TeacherCache::from_tensors(target_f, logits), transfer))
    }

    /// A target network trained on the target budget: `scratch`, `kd` or stage 2 of
    /// `tdmr`. `teacher` is `None` for scratch.
    pub fn train_target(&mut self, key: &str, teacher: Option<(&TeacherCache, Option<&Head>)>, views: Views) -> Result<f64> {
        let (started, before) = (Instant::now(), self.foundation.forward_calls());
        let exp = self.exp;
        let (d, r) = (&exp.distill, &exp.reprogram);
        let size = exp.target.image_size;
        // Same seed for every target: scratch, kd and tdmr start from the same backbone.
        let mut params = Params::new(&self.device, exp.seed.wrapping_add(21));
        let backbone = Backbone::new(&mut params, "target.backbone.", &self.target_spec())?;
        let d_t = backbone.feature_dim();
        let proxy_teacher = teacher.and_then(|(c, h)| h.map(|h| (c, h)));
        let (projector, head) = match proxy_teacher {
            Some((_, teacher_head)) => {
                let projector = Projector::new(&mut params, "target.projector.", r.projector, d_t, r.proxy_dim, r.normalize)?;
                let head = match d.head {
                    HeadMode::Copy => Head::copy(&mut params, "target.head.", teacher_head)?,
                    HeadMode::Frozen => Head::frozen(teacher_head)?,
                    HeadMode::Own => Head::new(&mut params, "target.head.", r.proxy_dim, self.classes, r.head_scale())?,
                };
                (Some(projector), head)
            }
            None => (None, Head::new(&mut params, "target.head.", d_t, self.classes, 1.0)?),
        };
        let resume_at = self.ckpt.resume_stage_index(key);
        if resume_at == 0 && !self.ckpt.resumes(key) {
            let proxy = projector.as_ref().map(|_| r.proxy_dim);
            self.ctl.emit(Event::TargetBuilt {
                method: key.into(),
                arch: exp.target.arch.clone(),
                params: params.count(&["target.".to_string()]),
                macs: backbone.macs() + head_macs(d_t, proxy, self.classes),
                image_size: size,
            });
        }
        let forward = |x: &Tensor, train: bool| -> Result<(Tensor, Tensor)> {
            let f = backbone.features(x, train)?;
            let z = match &projector {
                Some(p) => p.forward(&f)?,
                None => f,
            };
            let logits = head.forward(&z)?;
            Ok((z, logits))
        };
        let train = target_views(&self.train, &self.target_train, &self.transfer, views)?;
        let (test, items) = (&self.test, train.images());
        let eval_logits = |rows: &[usize]| -> Result<Tensor> { Ok(forward(&test.batch(rows, size)?, false)?.1) };
        let mut prev = LossWeights::default();
        let mut last: Option<StageOutcome> = None;
        let mut trainable = std::collections::BTreeSet::new();
        // Stages are read from the live experiment as each one starts, so stages the
        // user edits, adds or reorders while earlier ones run take effect.
        for i in 0.. {
            let (stage, live) = {
                let now = self.ctl.live().unwrap_or(exp);
                match proxy_teacher {
                    Some(_) => match now.distill.stages.get(i) {
                        Some(s) => (s.clone(), LiveSource::Distill(s.name.clone())),
                        None => break,
                    },
                    None if i > 0 => break,
                    None => (Self::baseline_stage(now, teacher.is_some()), LiveSource::Temperature),
                }
            };
            let Stage {
                name,
                epochs,
                lr,
                lr_schedule,
                warmup_epochs,
                train: groups,
                weights,
                ramp,
            } = stage;
            trainable.extend(groups.iter().copied());
            if i < resume_at {
                // Finished before the checkpoint the run resumes from, which holds
                // every parameter of this target.
                prev = weights;
                continue;
            }
            // The transfer set has more images per epoch: fewer epochs keep the step
            // budget that `distill.transfer_budget` sets.
            let epochs = match views {
                Views::Labelled => epochs,
                Views::Transfer => ((epochs * self.items) as f64 * d.transfer_budget / items as f64).ceil().max(1.0) as usize,
            };
            let spec = StageSpec {
                method: key.into(),
                stage: name.clone(),
                stage_index: i,
                checkpoint: exp.checkpoint.clone(),
                epochs,
                batch_size: d.batch_size,
                items,
                views: train.views,
                optimizer: d.optimizer,
                weight_decay: d.weight_decay,
                momentum: d.momentum,
                lr,
                lr_schedule,
                warmup_epochs,
                eval_every: exp.data.eval_every,
                seed: exp.seed.wrapping_add(100 + i as u64),
                weights,
                temperature: d.temperature,
                live,
            };
            let from = prev;
            let align_kind = d.align_loss;
            let ckpt = format!("{key}-{name}.safetensors");
            let outcome = train_stage(
                self.ctl,
                &mut self.ckpt,
                &spec,
                &params,
                &prefixes(&groups),
                Hooks {
                    step: &mut |rows, ctx| {
                        let live: &Live = ctx.live;
                        let to = live.weights;
                        let w = if ramp {
                            let t = ctx.progress;
                            LossWeights {
                                align: from.align + (to.align - from.align) * t,
                                kd: from.kd + (to.kd - from.kd) * t,
                                ce: from.ce + (to.ce - from.ce) * t,
                            }
                        } else {
                            to
                        };
                        train.prefetch(ctx.next, size);
                        let (x, data_wait_s) = timed(|| train.batch(rows, size))?;
                        let (z, logits) = forward(&x, true)?;
                        // Cross-entropy sees only the labelled views of a transfer batch.
                        let labelled = train.labelled(rows);
                        let (logits_l, rows_l) = if labelled.len() == rows.len() {
                            (logits.clone(), rows.to_vec())
                        } else {
                            let at = Tensor::new(labelled.iter().map(|&i| i as u32).collect::<Vec<_>>(), logits.device())?;
                            (logits.index_select(&at, 0)?, labelled.iter().map(|&i| rows[i]).collect())
                        };
                        let y = train.label_tensor(&rows_l)?;
                        let mut parts = LossParts::default();
                        let mut total = Tensor::zeros((), candle_core::DType::F32, z.device())?;
                        if let Some((cache, _)) = teacher {
                            let (z_f, logits_f) = cache.select(rows)?;
                            if w.align > 0.0 && proxy_teacher.is_some() {
                                let a = loss::align(&z, &z_f, align_kind)?;
                                parts.align = a.to_scalar::<f32>()? as f64;
                                total = (total + (a * w.align)?)?;
                            }
                            if w.kd > 0.0 {
                                let k = loss::kd(&logits, &logits_f, live.temperature)?;
                                parts.kd = k.to_scalar::<f32>()? as f64;
                                total = (total + (k * w.kd)?)?;
                            }
                        }
                        if w.ce > 0.0 && !labelled.is_empty() {
                            let c = loss::set_cross_entropy(&logits_l, &y, train, &rows_l, r.label_smoothing)?;
                            parts.ce = c.to_scalar::<f32>()? as f64;
                            total = (total + (c * w.ce)?)?;
                        }
                        parts.total = total.to_scalar::<f32>()? as f64;
                        Ok(StepOut {
                            correct: if labelled.is_empty() { 0 } else { loss::correct(&logits_l, &y)? },
                            loss: total,
                            parts,
                            data_wait_s,
                        })
                    },
                    eval: &mut || accuracy(test, eval_logits),
                    after_epoch: None,
                },
            )?;
            Self::checkpoint(self.ctl, self.run, &params, key, &name, &ckpt)?;
            prev = weights;
            last = Some(outcome);
        }
        let acc = match &last {
            Some(o) => self.final_accuracy(o, eval_logits)?,
            None => accuracy(test, eval_logits)?,
        };
        let groups: Vec<Group> = trainable.into_iter().collect();
        let count = params.count(&prefixes(&groups));
        self.finish(key, started, before, acc, count);
        Ok(acc)
    }

    /// Baselines train one stage on the same total budget as the distillation schedule,
    /// at the schedule's peak lr.
    fn baseline_stage(exp: &Experiment, kd: bool) -> Stage {
        Stage {
            name: "train".into(),
            epochs: exp.target_epochs(),
            lr: exp.distill.stages.iter().map(|s| s.lr).fold(0.0, f64::max),
            lr_schedule: LrSchedule::Cosine,
            warmup_epochs: 0,
            train: vec![Group::Backbone, Group::Head],
            weights: if kd {
                LossWeights {
                    align: 0.0,
                    kd: exp.baselines.kd_alpha,
                    ce: 1.0 - exp.baselines.kd_alpha,
                }
            } else {
                LossWeights {
                    align: 0.0,
                    kd: 0.0,
                    ce: 1.0,
                }
            },
            ramp: false,
        }
    }

    /// Run every method listed in the config, in dependency order.
    pub fn run_all(&mut self) -> Result<()> {
        let methods = self.exp.methods.clone();
        let wants = |m: Method| methods.contains(&m);
        // After a resume, methods that finished are skipped, or rebuilt from their final
        // checkpoints where a later method needs them.
        let done = |lab: &Self, key: &str| lab.ckpt.is_completed(key);
        let pending = |lab: &Self, m: Method| wants(m) && !done(lab, m.name());
        let (probe, probe_transfer) =
            if pending(self, Method::LinearProbe) || pending(self, Method::Kd) || pending(self, Method::KdTransfer) {
                let (train, transfer) = self.linear_probe(
                    wants(Method::LinearProbe),
                    done(self, "linear-probe"),
                    pending(self, Method::KdTransfer),
                )?;
                (Some(train), transfer)
            } else {
                (None, None)
            };
        if pending(self, Method::Vp) {
            self.reprogram_foundation("vp", false, false)?;
        }
        let teacher_methods = [Method::Tdmr, Method::KdTdmrTeacher, Method::TdmrTransfer];
        if teacher_methods.iter().any(|&m| pending(self, m)) {
            let restored = done(self, "tdmr-teacher");
            let teacher = self.reprogram_foundation("tdmr-teacher", true, restored)?;
            if pending(self, Method::Tdmr) || pending(self, Method::KdTdmrTeacher) {
                let cache = self.cache_teacher("tdmr", &teacher, Views::Labelled, restored)?;
                if pending(self, Method::Tdmr) {
                    self.train_target("tdmr", Some((&cache, Some(&teacher.head))), Views::Labelled)?;
                }
                if pending(self, Method::KdTdmrTeacher) {
                    self.train_target("kd-tdmr-teacher", Some((&cache, None)), Views::Labelled)?;
                }
            }
            if pending(self, Method::TdmrTransfer) {
                let cache = self.cache_teacher("tdmr-transfer", &teacher, Views::Transfer, restored)?;
                self.train_target("tdmr-transfer", Some((&cache, Some(&teacher.head))), Views::Transfer)?;
            }
        }
        if pending(self, Method::Scratch) {
            self.train_target("scratch", None, Views::Labelled)?;
        }
        if let (true, Some(cache)) = (pending(self, Method::Kd), &probe) {
            self.train_target("kd", Some((cache, None)), Views::Labelled)?;
        }
        if let (true, Some(cache)) = (pending(self, Method::KdTransfer), &probe_transfer) {
            self.train_target("kd-transfer", Some((cache, None)), Views::Transfer)?;
        }
        Ok(())
    }
}
