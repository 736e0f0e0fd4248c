//! The linear probe: a head on the frozen foundation's features, a baseline and the
//! KD baselines' teacher.

use super::*;

impl Lab<'_> {
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
                &["probe.head.".to_string()],
                Hooks {
                    step: &mut |rows, _| {
                        let (x, wait) = timed(|| select_rows(&train_f, rows))?;
                        ce_step(&head.forward(&x)?, train, rows, 0.0, wait)
                    },
                    eval: &mut |_, _| accuracy(test, |rows| head.forward(&select_rows(&test_f, rows)?)),
                    after_epoch: None,
                },
            )?;
            let acc = self.final_accuracy(&outcome, |rows| head.forward(&select_rows(&test_f, rows)?))?;
            Self::checkpoint(self.ctl, self.run, &params, "linear-probe", "probe", file)?;
            if record {
                let predicted = predictions(&self.test, |rows| head.forward(&select_rows(&test_f, rows)?))?;
                self.finish("linear-probe", started, before, acc, outcome.trainable_params);
                self.report_classes("linear-probe", predicted)?;
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
}
