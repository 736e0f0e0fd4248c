//! Target training: `scratch`, the KD baselines and the progressive distillation of
//! stage 2, all on the target budget (one optimiser step schedule per method).

use super::*;

impl Lab<'_> {
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
                arch: exp.target.arch.name().into(),
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
