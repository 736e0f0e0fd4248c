//! Learning-rate schedules, evaluated per optimisation step.

use crate::config::LrSchedule;

#[derive(Debug, Clone, Copy)]
pub struct LrPlan {
    pub kind: LrSchedule,
    pub base: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LrPlan {
    /// Linear warm-up to `base`, then constant, cosine to 0, or step (×0.1 at 50% and 75%).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        match self.kind {
            LrSchedule::Constant => self.base,
            LrSchedule::Cosine => 0.5 * self.base * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Step => {
                self.base
                    * if progress >= 0.75 {
                        0.01
                    } else if progress >= 0.5 {
                        0.1
                    } else {
                        1.0
                    }
            }
        }
    }
}
