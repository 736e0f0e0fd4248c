//! Events from the engine into the workbench's state and log.

use super::*;

impl App {
    /// Drain the engine's and the loader's channels; `true` if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        if let Some(rx) = &self.foundation_rx {
            match rx.try_recv() {
                Ok(r) => {
                    self.foundation_rx = None;
                    match r {
                        Ok(info) => {
                            self.info(format!("foundation {} loaded", info.variant));
                            self.foundation = FoundationState::Loaded(info);
                        }
                        Err(e) => {
                            self.error(format!("foundation: {e}"));
                            self.foundation = FoundationState::Failed(e);
                        }
                    }
                    changed = true;
                }
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => {
                    self.foundation_rx = None;
                    self.foundation = FoundationState::Failed("the loader thread stopped".into());
                    changed = true;
                }
            }
        }
        let mut events = Vec::new();
        let mut finished = false;
        if let Some(s) = &self.session {
            // Bounded per poll so a flood of events cannot starve the keyboard.
            while events.len() < 4096 {
                match s.events.try_recv() {
                    Ok(e) => events.push(e),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        finished = true;
                        break;
                    }
                }
            }
        }
        changed |= !events.is_empty() || finished;
        for e in events {
            self.on_engine(e);
        }
        if finished {
            if let Some(s) = self.session.take() {
                self.stopping.push(s.handle);
            }
            if self.run.is_active() {
                self.run = RunState::Failed("the engine stopped without a final event".into());
                self.error("the engine thread stopped without a final event");
            }
        }
        changed
    }

    /// The event into the workbench's state, then its line (the printer's wording)
    /// into the log, with what to do next where that needs the workbench's keys.
    pub fn on_engine(&mut self, e: Event) {
        self.plan.on_event(&e);
        self.charts.on_event(&e);
        let mut hint = None;
        match &e {
            Event::RunStarted { device, .. } => self.device = device.clone(),
            Event::FoundationLoaded {
                variant,
                params,
                feature_dim,
                ..
            } => {
                self.foundation = FoundationState::Loaded(FoundationInfo {
                    variant: variant.clone(),
                    params: *params,
                    feature_dim: *feature_dim,
                })
            }
            Event::Paused => self.run = RunState::Paused,
            Event::Resumed | Event::RunResumed { .. } => self.run = RunState::Running,
            Event::Checkpoint { method, stage, path } => {
                self.checkpoints.push(CheckpointRow {
                    method: method.clone(),
                    stage: stage.clone(),
                    path: path.clone(),
                });
            }
            Event::MethodDone {
                method,
                test_acc,
                trainable_params,
                wall_s,
                ..
            } => {
                self.results.push(MethodRow {
                    method: method.clone(),
                    test_acc: *test_acc,
                    trainable_params: *trainable_params,
                    wall_s: *wall_s,
                });
            }
            Event::Done { wall_s, .. } => {
                self.run = RunState::Done;
                self.run_ended = Some(*wall_s);
            }
            Event::Failed { message, reason } => {
                self.run_ended = self.elapsed_s();
                self.run = match reason {
                    FailReason::Aborted => RunState::Aborted,
                    FailReason::Diverged | FailReason::Error => RunState::Failed(message.clone()),
                };
            }
            Event::Diverged { .. } => hint = Some("lower the lr in the config, then resume (space) to continue from it"),
            Event::CheckpointFailed { .. } => hint = Some("free space or fix the directory; resume (space) if the run stops"),
            Event::StageStarted { .. }
            | Event::Step { .. }
            | Event::Epoch { .. }
            | Event::StageSkipped { .. }
            | Event::CacheBuilt { .. }
            | Event::DataLoaded { .. }
            | Event::TargetBuilt { .. }
            | Event::ConfigApplied { .. }
            | Event::Log { .. } => {}
        }
        if let Some(Described { level, text }) = e.describe() {
            match hint {
                Some(h) => self.push_log(level, format!("{text}. Next: {h}")),
                None => self.push_log(level, text),
            }
        }
    }
}
