//! The run as a timeline: every stage the experiment will train ([`crate::engine::plan`],
//! the engine's own order), with its state from the events seen so far, and the ETAs.

use std::collections::HashMap;

use crate::config::Experiment;
use crate::engine::plan::{plan, PlannedStage};
use crate::engine::Event;

pub use crate::engine::plan::Kind;

#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    Pending,
    Running { epoch: usize, step: usize },
    Done { test_acc: Option<f64> },
    Skipped { epoch: usize },
}

/// A planned stage and what the events say of it so far. It reads as its
/// [`PlannedStage`] (`row.method`, `row.epochs`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub planned: PlannedStage,
    pub state: RowState,
}

impl std::ops::Deref for Row {
    type Target = PlannedStage;

    fn deref(&self) -> &PlannedStage {
        &self.planned
    }
}

impl std::ops::DerefMut for Row {
    fn deref_mut(&mut self) -> &mut PlannedStage {
        &mut self.planned
    }
}

impl Row {
    fn pending(planned: PlannedStage) -> Row {
        Row {
            planned,
            state: RowState::Pending,
        }
    }

    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }
}

/// Rows from the experiment, states from the events.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub rows: Vec<Row>,
    states: HashMap<(String, String), RowState>,
    /// Seconds per step by kind, smoothed over the steps seen after a warm-up.
    rate: HashMap<Kind, (usize, f64)>,
    current: Option<(String, String)>,
    /// The data's class count as the engine reported it (`data-loaded`), for when the
    /// data cannot be looked at from here.
    classes: usize,
}

/// Steps of a kind ignored before its speed counts (allocator and cache warm-up).
const WARMUP_STEPS: usize = 3;

impl Plan {
    pub fn new(exp: &Experiment) -> Plan {
        let mut p = Plan::default();
        p.rebuild(exp);
        p
    }

    /// Recompute the rows from a (possibly edited) experiment, keeping known states.
    pub fn rebuild(&mut self, exp: &Experiment) {
        // The labelled set is k images of each class: count the classes where the data
        // is (an ImageFolder's sub-folders), so pending stages are sized before the run.
        let classes = crate::data::class_count(exp).unwrap_or(self.classes);
        let mut rows: Vec<Row> = plan(exp, classes).into_iter().map(Row::pending).collect();
        // Stages that already ran keep their place even if the file no longer lists them.
        let mut kept: Vec<Row> = self
            .rows
            .iter()
            .filter(|r| !matches!(r.state, RowState::Pending))
            .filter(|r| !rows.iter().any(|n| n.method == r.method && n.stage == r.stage))
            .cloned()
            .collect();
        for r in &mut rows {
            if let Some(s) = self.states.get(&(r.method.clone(), r.stage.clone())) {
                r.state = s.clone();
            }
        }
        kept.append(&mut rows);
        // Order: everything that started, in the order it started, then the pending rows.
        kept.sort_by_key(|r| matches!(r.state, RowState::Pending));
        self.rows = kept;
    }

    fn set(&mut self, method: &str, stage: &str, state: RowState) {
        let key = (method.to_string(), stage.to_string());
        self.states.insert(key, state.clone());
        if let Some(r) = self.rows.iter_mut().find(|r| r.method == method && r.stage == stage) {
            r.state = state;
        }
    }

    fn finish_current(&mut self) {
        if let Some((m, s)) = self.current.take() {
            if let Some(RowState::Running { .. }) = self.states.get(&(m.clone(), s.clone())) {
                self.set(&m, &s, RowState::Done { test_acc: None });
            }
        }
    }

    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::DataLoaded { classes, .. } => self.classes = classes.len(),
            Event::StageStarted {
                method,
                stage,
                epochs,
                steps_per_epoch,
                ..
            } => {
                self.finish_current();
                if let Some(r) = self.rows.iter_mut().find(|r| &r.method == method && &r.stage == stage) {
                    r.epochs = *epochs;
                    r.steps_per_epoch = *steps_per_epoch;
                }
                self.set(method, stage, RowState::Running { epoch: 0, step: 0 });
                self.current = Some((method.clone(), stage.clone()));
                // Started rows move ahead of the pending ones.
                self.rows.sort_by_key(|r| matches!(r.state, RowState::Pending));
            }
            Event::Step {
                method,
                stage,
                epoch,
                steps,
                step,
                wall_s,
                ..
            } => {
                let within = step % steps.max(&1);
                self.set(
                    method,
                    stage,
                    RowState::Running {
                        epoch: *epoch,
                        step: within + 1,
                    },
                );
                if let Some(kind) = self.rows.iter().find(|r| &r.method == method && &r.stage == stage).map(|r| r.kind) {
                    let (n, rate) = self.rate.entry(kind).or_insert((0, 0.0));
                    *n += 1;
                    if *n > WARMUP_STEPS {
                        let k = (*n - WARMUP_STEPS) as f64;
                        // A running mean for the first 20 steps, then an EMA.
                        let w = (1.0 / k).max(0.05);
                        *rate += w * (wall_s - *rate);
                    }
                }
            }
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                test_acc,
                ..
            } if epoch == epochs => {
                self.set(method, stage, RowState::Done { test_acc: *test_acc });
                self.current = None;
            }
            Event::StageSkipped { method, stage, epoch } => {
                self.set(method, stage, RowState::Skipped { epoch: *epoch });
                self.current = None;
            }
            _ => {}
        }
    }

    /// Seconds per step measured for a kind, once past the warm-up.
    pub fn seconds_per_step(&self, kind: Kind) -> Option<f64> {
        self.rate.get(&kind).filter(|(n, _)| *n > WARMUP_STEPS).map(|(_, r)| *r)
    }

    pub fn running(&self) -> Option<&Row> {
        self.rows.iter().find(|r| matches!(r.state, RowState::Running { .. }))
    }

    fn remaining_steps(r: &Row) -> usize {
        match r.state {
            RowState::Pending => r.total_steps(),
            RowState::Running { epoch, step } => r.total_steps().saturating_sub(epoch.saturating_sub(1) * r.steps_per_epoch + step),
            _ => 0,
        }
    }

    /// Seconds left in the running stage, once its kind's speed is known.
    pub fn stage_eta(&self) -> Option<f64> {
        let r = self.running()?;
        Some(Self::remaining_steps(r) as f64 * self.seconds_per_step(r.kind)?)
    }

    /// Seconds left in the whole run, and whether it is a lower bound (some kind of
    /// stage has not run yet, so its speed is unknown).
    pub fn run_eta(&self) -> Option<(f64, bool)> {
        self.running()?;
        let mut total = 0.0;
        let mut partial = false;
        for r in &self.rows {
            let n = Self::remaining_steps(r);
            if n == 0 {
                continue;
            }
            match self.seconds_per_step(r.kind) {
                Some(s) => total += n as f64 * s,
                None => partial = true,
            }
        }
        Some((total, partial))
    }

    /// Editable stages are the `tdmr` method's distillation stages not started yet.
    pub fn distill_started(&self) -> (usize, bool) {
        let started = self
            .rows
            .iter()
            .filter(|r| r.distill_index.is_some() && !matches!(r.state, RowState::Pending))
            .count();
        let running = self
            .rows
            .iter()
            .any(|r| r.distill_index.is_some() && matches!(r.state, RowState::Running { .. }));
        (started, running)
    }
}
