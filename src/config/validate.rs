//! The checks on an experiment that serde cannot express (ranges, combinations,
//! existing paths, known names): each error names the file and the key.

use super::schema::*;
use crate::{Error, Result};

impl Experiment {
    /// Checks that serde cannot express; errors name the key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let err = |key: &str, msg: String| Err(Error::config(format!("{origin}: `{key}`"), msg));
        let d = &self.data;
        if !(d.test_fraction > 0.0 && d.test_fraction < 1.0) {
            return err(
                "data.test_fraction",
                format!("{} must be strictly between 0 and 1", d.test_fraction),
            );
        }
        if !(0.0..1.0).contains(&d.validation_fraction) || d.test_fraction + d.validation_fraction >= 1.0 {
            return err(
                "data.validation_fraction",
                format!(
                    "{} must be in [0, 1) and leave training images beside data.test_fraction = {}",
                    d.validation_fraction, d.test_fraction
                ),
            );
        }
        if !(self.distill.transfer_budget > 0.0 && self.distill.transfer_budget <= 100.0) {
            return err(
                "distill.transfer_budget",
                format!("{} must be in (0, 100]", self.distill.transfer_budget),
            );
        }
        let transfer = self.methods.iter().any(|m| matches!(m, Method::TdmrTransfer | Method::KdTransfer));
        match d.unlabeled.as_str() {
            "" if transfer => {
                return err(
                    "data.unlabeled",
                    "the methods tdmr-transfer and kd-transfer need a transfer set: set data.unlabeled = \"pool\"".into(),
                )
            }
            "" => {}
            "pool" if d.kind != DataKind::ImageFolder => {
                return err("data.unlabeled", "a transfer set needs data.kind = \"image-folder\"".into())
            }
            "pool" if d.validation_fraction <= 0.0 => {
                return err(
                    "data.unlabeled",
                    "\"pool\" takes the images beyond the first k, which are the validation set unless data.validation_fraction > 0".into(),
                )
            }
            "pool" => {}
            other => return err("data.unlabeled", format!("`{other}` is not a transfer set (\"\" or \"pool\")")),
        }
        if d.kind != DataKind::ImageFolder {
            for (key, n) in [("data.mix_views", d.mix_views), ("data.unlabeled_mix_views", d.unlabeled_mix_views)] {
                if n > 0 {
                    return err(key, "mixed views need data.kind = \"image-folder\"".into());
                }
            }
        }
        if !(d.crop_scale[0] > 0.0 && d.crop_scale[0] <= d.crop_scale[1] && d.crop_scale[1] <= 1.0) {
            return err(
                "data.crop_scale",
                format!("{:?} must be [lo, hi] with 0 < lo ≤ hi ≤ 1", d.crop_scale),
            );
        }
        if !(d.crop_ratio[0] > 0.0 && d.crop_ratio[0] <= d.crop_ratio[1] && d.crop_ratio[1].is_finite()) {
            return err("data.crop_ratio", format!("{:?} must be [lo, hi] with 0 < lo ≤ hi", d.crop_ratio));
        }
        if self.data.k == 0 {
            return err("data.k", "must be at least 1".into());
        }
        if self.data.eval_every == 0 {
            return err("data.eval_every", "must be at least 1".into());
        }
        let f = &self.foundation;
        if f.image_size < 32 {
            return err("foundation.image_size", format!("{} is too small (at least 32)", f.image_size));
        }
        if f.inner_size == 0 || f.inner_size > f.image_size || !(f.image_size - f.inner_size).is_multiple_of(2) {
            return err(
                "foundation.inner_size",
                format!(
                    "{} must be in 1..={} and differ from image_size by an even number",
                    f.inner_size, f.image_size
                ),
            );
        }
        if self.reprogram.prompt == PromptKind::Padding && 2 * self.reprogram.pad > f.image_size {
            return err(
                "reprogram.pad",
                format!(
                    "a {}-pixel padding prompt is wider than the {}×{} canvas allows (2·pad ≤ image_size)",
                    self.reprogram.pad, f.image_size, f.image_size
                ),
            );
        }
        if self.reprogram.proxy_dim == 0 {
            return err("reprogram.proxy_dim", "must be at least 1".into());
        }
        if !(self.target.width > 0.0 && self.target.width <= 4.0) {
            return err("target.width", format!("{} must be in (0, 4]", self.target.width));
        }
        if self.target.image_size < 8 || !self.target.image_size.is_multiple_of(8) {
            return err(
                "target.image_size",
                format!("{} must be a positive multiple of 8 (three 2×2 poolings)", self.target.image_size),
            );
        }
        if self.stage1.batch_size == 0 {
            return err("stage1.batch_size", "must be at least 1".into());
        }
        if !self.stage1.lr.is_finite() || self.stage1.lr <= 0.0 {
            return err("stage1.lr", format!("{} must be a positive number", self.stage1.lr));
        }
        if self.distill.batch_size < 2 {
            return err("distill.batch_size", "must be at least 2 (batch norm in training mode)".into());
        }
        if self.distill.stages.is_empty() {
            return err("distill.stages", "needs at least one stage".into());
        }
        for (i, s) in self.distill.stages.iter().enumerate() {
            if !s.lr.is_finite() || s.lr <= 0.0 {
                return err(&format!("distill.stages[{i}].lr"), format!("{} must be a positive number", s.lr));
            }
            if s.train.is_empty() {
                return err(
                    &format!("distill.stages[{i}].train"),
                    "names no parameter group (backbone, projector, head)".into(),
                );
            }
            if self.distill.stages[..i].iter().any(|o| o.name == s.name) {
                return err(
                    &format!("distill.stages[{i}].name"),
                    format!(
                        "`{}` names an earlier stage too: stage names must be unique (checkpoints and live edits use them)",
                        s.name
                    ),
                );
            }
            let w = s.weights;
            if [w.align, w.kd, w.ce].iter().any(|v| *v < 0.0 || !v.is_finite()) {
                return err(&format!("distill.stages[{i}].weights"), "weights must be finite and ≥ 0".into());
            }
        }
        if self.methods.is_empty() {
            return err("methods", "names no method".into());
        }
        if let Err(msg) = crate::engine::session::check_device_spec(&self.device) {
            return err("device", msg);
        }
        self.validate_ranges(origin)
    }

    /// Bounds on every size and count: a typo like `epochs = 1000000000` or
    /// `image_size = 100000` must be an error, not a run that never ends or an
    /// allocation without limit.
    fn validate_ranges(&self, origin: &str) -> Result<()> {
        let err = |key: &str, msg: String| Err(Error::config(format!("{origin}: `{key}`"), msg));
        let (s1, d) = (&self.stage1, &self.distill);
        let mut counts = vec![
            ("data.views", self.data.views, 1, 256),
            ("data.unlabeled_views", self.data.unlabeled_views, 0, 256),
            ("data.mix_views", self.data.mix_views, 0, 256),
            ("data.unlabeled_mix_views", self.data.unlabeled_mix_views, 0, 256),
            ("data.stored_side", self.data.stored_side, 0, 4096),
            ("data.workers", self.data.workers, 0, 256),
            ("foundation.image_size", self.foundation.image_size, 32, 1024),
            ("target.image_size", self.target.image_size, 8, 512),
            ("reprogram.proxy_dim", self.reprogram.proxy_dim, 1, 8192),
            ("stage1.epochs", s1.epochs, 0, MAX_EPOCHS),
            ("stage1.warmup_epochs", s1.warmup_epochs, 0, s1.epochs),
            ("stage1.batch_size", s1.batch_size, 1, MAX_BATCH),
            ("distill.batch_size", d.batch_size, 2, MAX_BATCH),
            ("baselines.linear_probe_epochs", self.baselines.linear_probe_epochs, 0, MAX_EPOCHS),
            ("distill.stages", d.stages.len(), 1, 64),
            ("checkpoint.every_epochs", self.checkpoint.every_epochs, 1, MAX_EPOCHS),
            ("checkpoint.every_steps", self.checkpoint.every_steps, 0, 1 << 40),
            ("checkpoint.keep", self.checkpoint.keep, 1, 1000),
            ("checkpoint.max_backoffs", self.checkpoint.max_backoffs, 0, 100),
        ];
        let stage_keys: Vec<(String, String)> = (0..d.stages.len())
            .map(|i| (format!("distill.stages[{i}].epochs"), format!("distill.stages[{i}].warmup_epochs")))
            .collect();
        for (s, (e, w)) in d.stages.iter().zip(&stage_keys) {
            counts.push((e.as_str(), s.epochs, 0, MAX_EPOCHS));
            counts.push((w.as_str(), s.warmup_epochs, 0, s.epochs));
        }
        for (key, v, lo, hi) in counts {
            if v < lo || v > hi {
                return err(key, format!("{v} is out of range: expected {lo}..={hi}"));
            }
        }
        let reals = [
            ("stage1.weight_decay", s1.weight_decay, 0.0, 1.0),
            ("stage1.momentum", s1.momentum, 0.0, 0.999),
            ("distill.weight_decay", d.weight_decay, 0.0, 1.0),
            ("distill.momentum", d.momentum, 0.0, 0.999),
            ("reprogram.label_smoothing", self.reprogram.label_smoothing, 0.0, 0.999),
            ("reprogram.logit_scale", self.reprogram.logit_scale, 1e-3, 1e4),
            ("distill.temperature", d.temperature, 1e-3, 1e3),
            ("baselines.kd_alpha", self.baselines.kd_alpha, 0.0, 1.0),
            ("baselines.linear_probe_lr", self.baselines.linear_probe_lr, 1e-12, f64::MAX),
            ("checkpoint.lr_backoff", self.checkpoint.lr_backoff, 0.0, 0.999),
        ];
        for (key, v, lo, hi) in reals {
            if !v.is_finite() || v < lo || v > hi {
                return err(key, format!("{v} is out of range: expected a number in [{lo}, {hi}]"));
            }
        }
        Ok(())
    }
}
