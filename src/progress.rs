//! The headless run's progress bar (`tdmr run` with stdout on a terminal): the current
//! stage's steps, loss, images/s and ETA under the usual per-epoch lines. Without a
//! terminal nothing is drawn and the lines are all there is.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Event;

pub struct StageBar {
    bar: Option<ProgressBar>,
    enabled: bool,
    steps_per_epoch: usize,
    /// Recent images/s, smoothed so the figure is readable while it updates.
    rate: Option<f64>,
}

impl StageBar {
    /// `enabled`: stdout is a terminal and the output is not JSON.
    pub fn new(enabled: bool) -> Self {
        Self {
            bar: None,
            enabled,
            steps_per_epoch: 1,
            rate: None,
        }
    }

    /// Runs `print` with the bar hidden, so printed lines stay above it.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    pub fn update(&mut self, event: &Event) {
        if !self.enabled {
            return;
        }
        match event {
            Event::StageStarted {
                method,
                stage,
                epochs,
                steps_per_epoch,
                ..
            } => {
                self.finish();
                let bar = ProgressBar::with_draw_target(Some((epochs * steps_per_epoch) as u64), ProgressDrawTarget::stdout());
                bar.set_style(
                    ProgressStyle::with_template("{prefix:.bold} [{bar:28.cyan/blue}] {pos}/{len} steps  {msg}  ETA {eta}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(format!("{method}/{stage}"));
                self.steps_per_epoch = (*steps_per_epoch).max(1);
                self.rate = None;
                self.bar = Some(bar);
            }
            Event::Step {
                epoch,
                step,
                loss,
                images,
                wall_s,
                ..
            } => {
                let Some(bar) = &self.bar else { return };
                if *wall_s > 0.0 {
                    let now = *images as f64 / wall_s;
                    self.rate = Some(self.rate.map_or(now, |r| 0.9 * r + 0.1 * now));
                }
                // `step` counts from the stage's start; a resumed stage starts part-way.
                let done = (*step + 1).max(epoch.saturating_sub(1) * self.steps_per_epoch);
                bar.set_position(done as u64);
                bar.set_message(format!("loss {loss:.4}  {:.0} img/s", self.rate.unwrap_or(0.0)));
            }
            Event::MethodDone { .. } | Event::Done { .. } | Event::Failed { .. } | Event::StageSkipped { .. } => self.finish(),
            _ => {}
        }
    }

    /// Clears the bar; the epoch lines printed under it stay.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
