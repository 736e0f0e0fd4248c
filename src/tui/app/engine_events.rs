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

    pub fn on_engine(&mut self, e: Event) {
        self.plan.on_event(&e);
        self.charts.on_event(&e);
        match &e {
            Event::RunStarted { run_dir, seed, device, .. } => {
                self.device = device.clone();
                self.info(format!("seed {seed} on {device}, writing to {run_dir}"));
            }
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
            Event::StageStarted {
                method,
                stage,
                epochs,
                steps_per_epoch,
                trainable_params,
            } => self.info(format!(
                "{method}/{stage}: {epochs} epochs × {steps_per_epoch} steps, {trainable_params} trainable"
            )),
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                loss,
                test_acc,
                ..
            } => {
                let t = test_acc.map(|a| format!(" test {:.1}%", 100.0 * a)).unwrap_or_default();
                self.info(format!("{method}/{stage} epoch {epoch}/{epochs} loss {:.4}{t}", loss.total));
            }
            Event::StageSkipped { method, stage, epoch } => self.warn(format!("{method}/{stage} skipped at epoch {epoch}")),
            Event::CacheBuilt { .. } | Event::DataLoaded { .. } | Event::TargetBuilt { .. } => self.info(e.describe().unwrap_or_default()),
            Event::Paused => {
                self.run = RunState::Paused;
                self.info("paused");
            }
            Event::Resumed => {
                self.run = RunState::Running;
                self.info("resumed");
            }
            Event::ConfigApplied { changes } => self.info(format!("config applied: {}", changes.join("; "))),
            Event::Checkpoint { method, stage, path } => {
                self.checkpoints.push(CheckpointRow {
                    method: method.clone(),
                    stage: stage.clone(),
                    path: path.clone(),
                });
            }
            Event::Log { message } => self.info(message.clone()),
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
                self.info(format!("{method} done: test {:.2}%", 100.0 * test_acc));
            }
            Event::Done { wall_s, .. } => {
                self.run = RunState::Done;
                self.run_ended = Some(*wall_s);
                self.info(format!("run complete in {:.1} min", wall_s / 60.0));
            }
            Event::Failed { message, reason } => {
                self.run_ended = self.elapsed_s();
                if *reason == FailReason::Aborted {
                    self.run = RunState::Aborted;
                    self.warn("run aborted; the run directory keeps its report and checkpoints");
                } else {
                    self.run = RunState::Failed(message.clone());
                    self.error(format!("run failed: {message}"));
                }
            }
            Event::RunResumed {
                checkpoint,
                position,
                changes,
            } => {
                self.run = RunState::Running;
                let from = checkpoint.as_deref().unwrap_or("no checkpoint");
                self.info(format!("resumed at {position} ({from})"));
                if !changes.is_empty() {
                    self.info(format!("taken on resuming: {}", changes.join("; ")));
                }
            }
            Event::Diverged { message, checkpoint } => {
                let last = checkpoint.as_deref().unwrap_or("none yet");
                self.error(format!(
                    "diverged: {message}. Last good checkpoint: {last}. Lower the lr in the config, then resume (space) to continue from it"
                ));
            }
            Event::CheckpointFailed { message, last_good, .. } => {
                let last = last_good.as_deref().unwrap_or("none yet");
                self.error(format!(
                    "checkpoint not written: {message}. The last good one is {last}. Free space or fix the directory, then resume (space)"
                ));
            }
            Event::Step { .. } => {}
        }
    }
}
