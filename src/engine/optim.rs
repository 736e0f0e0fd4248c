//! AdamW and SGD (momentum, weight decay) owned by the project: candle's SGD has neither
//! momentum nor weight decay, and its AdamW keeps its moments private.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::OptimizerKind;
use crate::ops::adamw::{adamw_cpu, AdamwStep};
use crate::Result;

pub struct Optimizer {
    kind: OptimizerKind,
    names: Vec<String>,
    vars: Vec<Var>,
    first: Vec<Option<Tensor>>,
    second: Vec<Option<Tensor>>,
    steps: usize,
    weight_decay: f64,
    momentum: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

impl Optimizer {
    /// `vars` by name: the names key the moments in checkpoints.
    pub fn new(kind: OptimizerKind, vars: Vec<(String, Var)>, weight_decay: f64, momentum: f64) -> Self {
        let n = vars.len();
        let (names, vars) = vars.into_iter().unzip();
        Optimizer {
            kind,
            names,
            vars,
            first: vec![None; n],
            second: vec![None; n],
            steps: 0,
            weight_decay,
            momentum,
        }
    }

    /// Where the parameters live (`None` for an empty optimiser).
    pub fn device(&self) -> Option<&candle_core::Device> {
        self.vars.first().map(|v| v.device())
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The moments, as `optim.m.<var>` and `optim.v.<var>` (for checkpoints).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let named = |tag: &str, ts: &[Option<Tensor>]| -> Vec<(String, Tensor)> {
            self.names
                .iter()
                .zip(ts)
                .filter_map(|(n, t)| t.as_ref().map(|t| (format!("optim.{tag}.{n}"), t.clone())))
                .collect()
        };
        let mut out = named("m", &self.first);
        out.extend(named("v", &self.second));
        out
    }

    /// Take back the moments written by [`Optimizer::state`] and the step count.
    pub fn restore(&mut self, tensors: &std::collections::HashMap<String, Tensor>, steps: usize, origin: &std::path::Path) -> Result<()> {
        for (i, (name, var)) in self.names.iter().zip(&self.vars).enumerate() {
            for (tag, slot) in [("m", &mut self.first[i]), ("v", &mut self.second[i])] {
                *slot = crate::params::saved_like(tensors, &format!("optim.{tag}.{name}"), var, origin)?;
            }
        }
        self.steps = steps;
        Ok(())
    }

    pub fn param_count(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    /// One update at learning rate `lr`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (i, var) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let theta = var.as_tensor();
            let updated = match self.kind {
                OptimizerKind::Adamw => {
                    let step = AdamwStep {
                        lr,
                        weight_decay: self.weight_decay,
                        beta1: BETA1,
                        beta2: BETA2,
                        eps: EPS,
                        t,
                    };
                    if let Some(fused) = adamw_cpu(theta, g, self.first[i].as_ref(), self.second[i].as_ref(), step) {
                        let (theta, m, v) = fused?;
                        self.first[i] = Some(m);
                        self.second[i] = Some(v);
                        var.set(&theta)?;
                        continue;
                    }
                    let m = match &self.first[i] {
                        Some(m) => ((m * BETA1)? + (g * (1.0 - BETA1))?)?,
                        None => (g * (1.0 - BETA1))?,
                    };
                    let v = match &self.second[i] {
                        Some(v) => ((v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?,
                        None => (g.sqr()? * (1.0 - BETA2))?,
                    };
                    let m_hat = (&m / (1.0 - BETA1.powi(t)))?;
                    let v_hat = (&v / (1.0 - BETA2.powi(t)))?;
                    let decayed = (theta * (1.0 - lr * self.weight_decay))?;
                    let upd = (m_hat / (v_hat.sqrt()? + EPS)?)?;
                    self.first[i] = Some(m);
                    self.second[i] = Some(v);
                    (decayed - (upd * lr)?)?
                }
                OptimizerKind::Sgd => {
                    let g = if self.weight_decay != 0.0 {
                        (g + (theta * self.weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let buf = match &self.first[i] {
                        Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + &g)?,
                        _ => g,
                    };
                    let out = (theta - (&buf * lr)?)?;
                    self.first[i] = Some(buf);
                    out
                }
            };
            var.set(&updated.detach())?;
        }
        Ok(())
    }
}
