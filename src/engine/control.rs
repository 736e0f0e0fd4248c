//! The engine's side of the channels: emit events (and record them in
//! `metrics.jsonl`), and honour commands between steps.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use super::events::{Command, Event};
use crate::{Error, Result};

pub struct Control {
    commands: Option<Receiver<Command>>,
    events: Option<SyncSender<Event>>,
    metrics: Option<BufWriter<File>>,
    skip_requested: bool,
    save_requested: bool,
    live: Option<crate::config::Experiment>,
    /// A person watches (the workbench): trouble pauses the run for them instead of
    /// stopping it or pressing on.
    attended: bool,
    metrics_failed: bool,
    tensorboard: Option<super::tensorboard::TensorBoard>,
    /// Events a lagging view has not had room for yet (never step events).
    backlog: std::collections::VecDeque<Event>,
}

/// What the training loop should do after [`Control::between_steps`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub skip_stage: bool,
    pub save: bool,
}

impl Control {
    pub fn new(commands: Option<Receiver<Command>>, events: Option<SyncSender<Event>>) -> Self {
        Control {
            commands,
            events,
            metrics: None,
            skip_requested: false,
            save_requested: false,
            live: None,
            attended: false,
            metrics_failed: false,
            tensorboard: None,
            backlog: std::collections::VecDeque::new(),
        }
    }

    pub fn record_to(&mut self, path: &Path) -> Result<()> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        self.metrics = Some(BufWriter::new(f));
        Ok(())
    }

    /// Continue `path` from byte `offset` (a checkpoint's): what was written after it,
    /// a torn last line included, is dropped and will be written again.
    pub fn record_from(&mut self, path: &Path, offset: u64) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        if offset > len {
            return Err(Error::File {
                path: path.into(),
                msg: format!("is {len} bytes, shorter than the checkpoint's offset {offset}: it was cut after the checkpoint"),
            });
        }
        f.set_len(offset).map_err(|e| Error::io(path, e))?;
        f.seek(SeekFrom::Start(offset)).map_err(|e| Error::io(path, e))?;
        self.metrics = Some(BufWriter::new(f));
        Ok(())
    }

    /// Also write TensorBoard event files under `dir`. A folder that cannot be made is
    /// a warning: the run goes on without it.
    pub fn tensorboard_to(&mut self, dir: &Path, config: String) {
        match super::tensorboard::TensorBoard::new(dir, config) {
            Ok(tb) => self.tensorboard = Some(tb),
            Err(e) => self.send(Event::Log {
                message: format!("warning: TensorBoard files are not written: {e}"),
            }),
        }
    }

    /// Bytes recorded so far (flushed to the file first).
    pub fn metrics_offset(&mut self) -> Result<u64> {
        match &mut self.metrics {
            Some(m) => {
                let err = |e| Error::io("metrics.jsonl", e);
                m.flush().map_err(err)?;
                m.get_mut().sync_data().map_err(err)?;
                m.get_mut().stream_position().map_err(err)
            }
            None => Ok(0),
        }
    }

    pub fn set_attended(&mut self, attended: bool) {
        self.attended = attended;
    }

    pub fn attended(&self) -> bool {
        self.attended && self.commands.is_some()
    }

    /// Pause until the view resumes (when someone watches); returns at once otherwise.
    pub fn pause_for_attention(&mut self) -> Result<()> {
        if self.attended() {
            self.emit(Event::Paused);
            self.wait_while_paused()?;
        }
        Ok(())
    }

    /// Record and forward an event.
    pub fn emit(&mut self, event: Event) {
        if let Some(m) = &mut self.metrics {
            if let Ok(line) = serde_json::to_string(&event) {
                let mut written = writeln!(m, "{line}");
                if written.is_ok() && !matches!(event, Event::Step { .. }) {
                    written = m.flush();
                }
                if let (Err(e), false) = (written, self.metrics_failed) {
                    // Said once: the run goes on, and views still get every event.
                    self.metrics_failed = true;
                    self.send(Event::Log {
                        message: format!("warning: metrics.jsonl: {e}; events are no longer recorded"),
                    });
                }
            }
        }
        if let Some(tb) = &mut self.tensorboard {
            if let Err(e) = tb.observe(&event) {
                self.tensorboard = None;
                self.send(Event::Log {
                    message: format!("warning: TensorBoard: {e}; no more events are written there"),
                });
            }
        }
        self.send(event);
    }

    fn send(&mut self, event: Event) {
        let Some(tx) = &self.events else { return };
        // Never wait for the view: step events are dropped when it lags (the epoch
        // events carry the same figures); every other event queues here, in order.
        let mut gone = false;
        while let Some(e) = self.backlog.pop_front() {
            match tx.try_send(e) {
                Ok(()) => {}
                Err(TrySendError::Full(e)) => {
                    self.backlog.push_front(e);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    gone = true;
                    break;
                }
            }
        }
        if !gone {
            let step = matches!(event, Event::Step { .. });
            if !self.backlog.is_empty() {
                if !step {
                    self.backlog.push_back(event);
                }
            } else {
                match tx.try_send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(e)) if !step => self.backlog.push_back(e),
                    Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => gone = true,
                }
            }
        }
        if gone {
            // The view went away: keep training and recording, stop sending.
            self.events = None;
            self.backlog.clear();
        }
    }

    /// Hand the view what it had no room for (called when the run ends).
    pub fn flush(&mut self) {
        while let (Some(tx), Some(e)) = (&self.events, self.backlog.pop_front()) {
            if tx.send(e).is_err() {
                self.events = None;
            }
        }
    }

    /// The experiment as last changed live, if it was.
    pub fn live(&self) -> Option<&crate::config::Experiment> {
        self.live.as_ref()
    }

    /// Make `config` the live experiment (after a divergence back-off).
    pub fn set_live(&mut self, config: crate::config::Experiment) {
        self.live = Some(config);
    }

    fn apply(&mut self, config: crate::config::Experiment, changes: Vec<String>) {
        self.live = Some(config);
        self.emit(Event::ConfigApplied { changes });
    }

    fn handle(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::Apply { config, changes } => self.apply(*config, changes),
            Command::Pause => {
                self.emit(Event::Paused);
                self.wait_while_paused()?;
            }
            Command::Resume => {}
            Command::SkipStage => self.skip_requested = true,
            Command::Save => self.save_requested = true,
            Command::Abort => return Err(Error::Aborted),
        }
        Ok(())
    }

    fn wait_while_paused(&mut self) -> Result<()> {
        loop {
            let Some(rx) = &self.commands else { return Ok(()) };
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Command::Resume) => {
                    self.emit(Event::Resumed);
                    return Ok(());
                }
                Ok(Command::Pause) => {}
                Ok(Command::Abort) => return Err(Error::Aborted),
                Ok(Command::SkipStage) => self.skip_requested = true,
                Ok(Command::Save) => self.save_requested = true,
                Ok(Command::Apply { config, changes }) => self.apply(*config, changes),
                Err(RecvTimeoutError::Timeout) => {}
                // Nobody can resume us any more: carry on rather than hang.
                Err(RecvTimeoutError::Disconnected) => {
                    self.commands = None;
                    return Ok(());
                }
            }
        }
    }

    /// Drain pending commands; called by the training loop between steps.
    pub fn between_steps(&mut self) -> Result<Requests> {
        while let Some(cmd) = self.commands.as_ref().and_then(|rx| rx.try_recv().ok()) {
            self.handle(cmd)?;
        }
        let r = Requests {
            skip_stage: self.skip_requested,
            save: self.save_requested,
        };
        self.skip_requested = false;
        self.save_requested = false;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(i: usize) -> Event {
        Event::Step {
            method: "m".into(),
            stage: "s".into(),
            epoch: 1,
            steps: 1,
            step: i,
            loss: 1.0,
            lr: 0.1,
            images: 1,
            wall_s: 0.0,
            data_wait_s: 0.0,
        }
    }

    #[test]
    fn a_view_that_does_not_read_never_blocks_the_engine_and_loses_no_event_but_steps() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut ctl = Control::new(None, Some(tx));
        for i in 0..50 {
            ctl.emit(step(i));
            ctl.emit(Event::Log { message: format!("{i}") });
        }
        // Every emit returned without a reader; now the view catches up.
        let reader = std::thread::spawn(move || rx.iter().collect::<Vec<Event>>());
        ctl.flush();
        drop(ctl);
        let got = reader.join().unwrap();
        let logs: Vec<String> = got
            .iter()
            .filter_map(|e| match e {
                Event::Log { message } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(logs, (0..50).map(|i| i.to_string()).collect::<Vec<_>>());
        assert!(got.iter().filter(|e| matches!(e, Event::Step { .. })).count() < 50);
    }
}
