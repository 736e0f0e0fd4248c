//! AdamW and SGD (momentum, weight decay) owned by the project: candle's SGD has neither
//! momentum nor weight decay, and its AdamW keeps its moments private.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::config::OptimizerKind;
use crate::Result;

pub struct Optimizer {
    kind: OptimizerKind,
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
    pub fn new(kind: OptimizerKind, vars: Vec<Var>, weight_decay: f64, momentum: f64) -> Self {
        let n = vars.len();
        Optimizer {
            kind,
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
