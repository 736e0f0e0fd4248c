//! The Charts pane: loss terms and accuracies on one step axis for the whole run, fed
//! by engine events (drawing in `draw`).

use crate::engine::Event;
use crate::tui::series::{Ema, Series};

mod draw;
pub use draw::{ChartView, MarkerKind, Window};

/// The charts' data: loss terms and accuracies on one step axis for the whole run.
#[derive(Debug, Clone)]
pub struct Charts {
    pub step_loss: Series,
    pub loss_ema: Series,
    ema: Ema,
    pub total: Series,
    pub align: Series,
    pub kd: Series,
    pub ce: Series,
    pub train_acc: Series,
    pub test_acc: Series,
    /// Stage starts: (step, "method/stage").
    pub boundaries: Vec<(f64, String)>,
    /// Steps where the base learning rate changed (a live edit).
    pub lr_marks: Vec<f64>,
    /// Steps taken so far in the whole run (the charts' x axis).
    pub x: f64,
    pub lr: f64,
    pub images_per_s: Ema,
    pub wait_share: Ema,
    /// Device memory in use on CUDA, from the last epoch.
    pub gpu_memory_mib: Option<f64>,
}

impl Default for Charts {
    fn default() -> Self {
        Charts {
            step_loss: Series::default(),
            loss_ema: Series::default(),
            ema: Ema::new(0.9),
            total: Series::default(),
            align: Series::default(),
            kd: Series::default(),
            ce: Series::default(),
            train_acc: Series::default(),
            test_acc: Series::default(),
            boundaries: Vec::new(),
            lr_marks: Vec::new(),
            x: 0.0,
            lr: 0.0,
            images_per_s: Ema::new(0.8),
            wait_share: Ema::new(0.8),
            gpu_memory_mib: None,
        }
    }
}

impl Charts {
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::StageStarted { method, stage, .. } => self.boundaries.push((self.x, format!("{method}/{stage}"))),
            Event::Step {
                loss,
                lr,
                images,
                wall_s,
                data_wait_s,
                ..
            } => {
                self.x += 1.0;
                self.step_loss.push(self.x, *loss);
                let smooth = self.ema.push(*loss);
                self.loss_ema.push(self.x, smooth);
                self.lr = *lr;
                if *wall_s > 0.0 {
                    self.images_per_s.push(*images as f64 / wall_s);
                    self.wait_share.push((data_wait_s / wall_s).clamp(0.0, 1.0));
                }
            }
            Event::Epoch {
                loss, train_acc, test_acc, ..
            } => {
                self.total.push(self.x, loss.total);
                // A term is charted only where it is part of the loss.
                for (s, v) in [(&mut self.align, loss.align), (&mut self.kd, loss.kd), (&mut self.ce, loss.ce)] {
                    if v > 0.0 {
                        s.push(self.x, v);
                    }
                }
                self.train_acc.push(self.x, *train_acc);
                if let Some(t) = test_acc {
                    self.test_acc.push(self.x, *t);
                }
            }
            Event::ConfigApplied { changes } if changes.iter().any(|c| c.contains("lr")) => self.lr_marks.push(self.x),
            _ => {}
        }
    }
}
