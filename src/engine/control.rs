//! The engine's side of the channels: emit events (and record them in
//! `metrics.jsonl`), and honour commands between steps.

use std::fs::File;
use std::io::{BufWriter, Write};
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
        }
    }

    pub fn record_to(&mut self, path: &Path) -> Result<()> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        self.metrics = Some(BufWriter::new(f));
        Ok(())
    }

    /// Record and forward an event. Step events are dropped when the view lags (the
    /// epoch events carry the same figures); others wait for room, so none is lost.
    pub fn emit(&mut self, event: Event) {
        if let Some(m) = &mut self.metrics {
            if let Ok(line) = serde_json::to_string(&event) {
                let _ = writeln!(m, "{line}");
                if !matches!(event, Event::Step { .. }) {
                    let _ = m.flush();
                }
            }
        }
        if let Some(tx) = &self.events {
            let gone = match tx.try_send(event) {
                Ok(()) => false,
                Err(TrySendError::Full(e)) if !matches!(e, Event::Step { .. }) => tx.send(e).is_err(),
                Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => true,
            };
            if gone {
                // The view went away: keep training and recording, stop sending.
                self.events = None;
            }
        }
    }

    /// The experiment as last changed live, if it was.
    pub fn live(&self) -> Option<&crate::config::Experiment> {
        self.live.as_ref()
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
