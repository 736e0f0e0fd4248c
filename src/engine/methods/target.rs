//! Target training: `scratch`, the KD baselines and the progressive distillation of
//! stage 2, all on the target budget (one optimiser step schedule per method).

use super::*;
use crate::distill::loss::{Labelled, TargetLoss};
use crate::engine::class_report::{self, During};
use crate::engine::trainer::{EpochScale, StepCtx};

/// A target network under training: backbone, the projector into the proxy space (when
/// the teacher has one) and the head, all in `params`.
struct TargetNet {
    params: Params,
    backbone: Backbone,
    projector: Option<Projector>,
    head: Head,
}

impl TargetNet {
    /// Proxy embedding (the backbone's features where there is no projector) and logits.
    fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let f = self.backbone.features(x, train)?;
        let z = match &self.projector {
            Some(p) => p.forward(&f)?,
            None => f,
        };
        let logits = self.head.forward(&z)?;
        Ok((z, logits))
    }
}

impl Lab<'_> {
    /// A target network trained on the target budget: `scratch`, `kd` or stage 2 of
    /// `tdmr`. `teacher` is `None` for scratch.
    pub fn train_target(&mut self, key: &str, teacher: Option<(&TeacherCache, Option<&Head>)>, views: Views) -> Result<f64> {
        let (started, before) = (Instant::now(), self.foundation.forward_calls());
        let exp = self.exp;
        let size = exp.target.image_size;
        let proxy_teacher = teacher.and_then(|(c, h)| h.map(|h| (c, h)));
        let net = self.build_target(proxy_teacher.map(|(_, h)| h))?;
        let resume_at = self.ckpt.resume_stage_index(key);
        if resume_at == 0 && !self.ckpt.resumes(key) {
            self.announce_target(key, &net);
        }
        let teacher_predicted = self.teacher_predictions_for(key).map(<[u32]>::to_vec);
        let train = target_views(&self.train, &self.target_train, &self.transfer, views)?;
        // The transfer set has more images per epoch: fewer epochs keep the step
        // budget that `distill.transfer_budget` sets.
        let scale = match views {
            Views::Labelled => EpochScale::AsWritten,
            Views::Transfer => EpochScale::Transfer {
                labelled: self.items,
                budget: exp.distill.transfer_budget,
                items: train.images(),
            },
        };
        let (test, classes) = (&self.test, self.classes);
        let eval_logits = |rows: &[usize]| -> Result<Tensor> { Ok(net.forward(&test.batch(rows, size)?, false)?.1) };
        let mut prev = LossWeights::default();
        let mut last: Option<StageOutcome> = None;
        let mut trainable = std::collections::BTreeSet::new();
        // Stages are read from the live experiment as each one starts, so stages the
        // user edits, adds or reorders while earlier ones run take effect.
        for i in 0.. {
            let Some((stage, live)) = self.target_stage(i, proxy_teacher.is_some(), teacher.is_some(), scale) else {
                break;
            };
            trainable.extend(stage.train.iter().copied());
            if i < resume_at {
                // Finished before the checkpoint the run resumes from, which holds
                // every parameter of this target.
                prev = stage.weights;
                continue;
            }
            let spec = self.target_stage_spec(key, i, &stage, live, scale, train);
            let (from, ramp) = (prev, stage.ramp);
            let step_loss = |ctx: &StepCtx| TargetLoss {
                weights: loss::ramped(from, ctx.live.weights, ramp, ctx.progress),
                align: proxy_teacher.map(|_| exp.distill.align_loss),
                temperature: ctx.live.temperature,
                smoothing: exp.reprogram.label_smoothing,
            };
            let outcome = train_stage(
                self.ctl,
                &mut self.ckpt,
                &spec,
                &net.params,
                &prefixes(&stage.train),
                Hooks {
                    step: &mut |rows, ctx| {
                        train.prefetch(ctx.next, size);
                        let (x, data_wait_s) = timed(|| train.batch(rows, size))?;
                        target_step(&net, &x, rows, train, teacher.map(|(c, _)| c), &step_loss(ctx), data_wait_s)
                    },
                    // The same predictions give the accuracy and, to the views, the
                    // target's classes as it trains.
                    eval: &mut |ctl, epoch| {
                        let predicted = predictions(test, eval_logits)?;
                        let during = During {
                            stage: stage.name.clone(),
                            epoch,
                        };
                        let report =
                            class_report::report(key, &test.labels, &predicted, classes, teacher_predicted.as_deref(), Some(during));
                        ctl.emit(report);
                        let correct = predicted.iter().zip(&test.labels).filter(|(p, t)| p == t).count();
                        Ok(correct as f64 / test.len() as f64)
                    },
                    after_epoch: None,
                },
            )?;
            let ckpt = format!("{key}-{}.safetensors", stage.name);
            Self::checkpoint(self.ctl, self.run, &net.params, key, &stage.name, &ckpt)?;
            prev = stage.weights;
            last = Some(outcome);
        }
        let acc = match &last {
            Some(o) => self.final_accuracy(o, eval_logits)?,
            None => accuracy(test, eval_logits)?,
        };
        let predicted = predictions(test, eval_logits)?;
        let groups: Vec<Group> = trainable.into_iter().collect();
        let count = net.params.count(&prefixes(&groups));
        self.finish(key, started, before, acc, count);
        self.report_classes(key, predicted)?;
        Ok(acc)
    }

    /// The target's parameters. Every target starts from the same seed, so scratch,
    /// kd and tdmr start from the same backbone. With a proxy teacher (its head given)
    /// the target gets a projector into the proxy space and a head per `distill.head`.
    fn build_target(&self, teacher_head: Option<&Head>) -> Result<TargetNet> {
        let (d, r) = (&self.exp.distill, &self.exp.reprogram);
        let mut params = Params::new(&self.device, self.exp.seed.wrapping_add(21));
        let backbone = Backbone::new(&mut params, "target.backbone.", &self.target_spec())?;
        let d_t = backbone.feature_dim();
        let (projector, head) = match teacher_head {
            Some(teacher_head) => {
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
        Ok(TargetNet {
            params,
            backbone,
            projector,
            head,
        })
    }

    fn announce_target(&mut self, key: &str, net: &TargetNet) {
        let exp = self.exp;
        let d_t = net.backbone.feature_dim();
        let proxy = net.projector.as_ref().map(|_| exp.reprogram.proxy_dim);
        self.ctl.emit(Event::TargetBuilt {
            method: key.into(),
            arch: exp.target.arch.name().into(),
            params: net.params.count(&["target.".to_string()]),
            macs: net.backbone.macs() + head_macs(d_t, proxy, self.classes),
            image_size: exp.target.image_size,
        });
    }

    /// Stage `i` of a target as the live experiment has it now: the distillation
    /// schedule against a proxy teacher, else the baselines' one stage.
    fn target_stage(&self, i: usize, proxy_teacher: bool, kd: bool, scale: EpochScale) -> Option<(Stage, LiveSource)> {
        let now = self.ctl.live().unwrap_or(self.exp);
        match (proxy_teacher, i) {
            (true, _) => now.distill.stages.get(i).map(|s| {
                let live = LiveSource::Distill {
                    stage: s.name.clone(),
                    scale,
                };
                (s.clone(), live)
            }),
            (false, 0) => Some((Self::baseline_stage(now, kd), LiveSource::Temperature)),
            (false, _) => None,
        }
    }

    fn target_stage_spec(&self, key: &str, i: usize, stage: &Stage, live: LiveSource, scale: EpochScale, train: &ViewSet) -> StageSpec {
        let (exp, d) = (self.exp, &self.exp.distill);
        let items = train.images();
        let epochs = scale.epochs(stage.epochs);
        StageSpec {
            method: key.into(),
            stage: stage.name.clone(),
            stage_index: i,
            checkpoint: exp.checkpoint.clone(),
            epochs,
            batch_size: d.batch_size,
            items,
            views: train.views,
            optimizer: d.optimizer,
            weight_decay: d.weight_decay,
            momentum: d.momentum,
            lr: stage.lr,
            lr_schedule: stage.lr_schedule,
            warmup_epochs: stage.warmup_epochs,
            eval_every: exp.data.eval_every,
            seed: exp.seed.wrapping_add(100 + i as u64),
            weights: stage.weights,
            temperature: d.temperature,
            live,
        }
    }

    /// Baselines train one stage on the same total budget as the distillation schedule,
    /// at the schedule's peak lr.
    pub(super) fn baseline_stage(exp: &Experiment, kd: bool) -> Stage {
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
}

/// One optimisation step's loss for a target: forward `x` (the batch of view `rows`),
/// compare with the cached teacher outputs, and take cross-entropy on the labelled
/// views only (a transfer batch also holds unlabelled ones).
fn target_step(
    net: &TargetNet,
    x: &Tensor,
    rows: &[usize],
    train: &ViewSet,
    cache: Option<&TeacherCache>,
    loss: &TargetLoss,
    data_wait_s: f64,
) -> Result<StepOut> {
    let (z, logits) = net.forward(x, true)?;
    let labelled = train.labelled(rows);
    let (logits_l, rows_l) = if labelled.len() == rows.len() {
        (logits.clone(), rows.to_vec())
    } else {
        let at = Tensor::new(labelled.iter().map(|&i| i as u32).collect::<Vec<_>>(), logits.device())?;
        (logits.index_select(&at, 0)?, labelled.iter().map(|&i| rows[i]).collect())
    };
    let y = train.label_tensor(&rows_l)?;
    let teacher = match cache {
        Some(c) => Some(c.select(rows)?),
        None => None,
    };
    let labelled_part = (!labelled.is_empty()).then_some(Labelled {
        logits: &logits_l,
        labels: &y,
        set: train,
        rows: &rows_l,
    });
    let (total, parts) = loss.batch(&z, &logits, teacher.as_ref().map(|(z_f, l_f)| (z_f, l_f)), labelled_part)?;
    Ok(StepOut {
        correct: if labelled.is_empty() { 0 } else { loss::correct(&logits_l, &y)? },
        loss: total,
        parts,
        data_wait_s,
    })
}
