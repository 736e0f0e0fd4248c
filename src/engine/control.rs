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
            backlog: std::collections::VecDeque::new(),
        }
    }

    pub fn record_to(&mut self, path: &Path) -> Result<()> {
        let f = File::create(path).map_err(|e| Error::io(path, e))?;
        self.metrics = Some(BufWriter::new(f));
        Ok(())
    }

    /// Record and forward an event.
    pub fn emit(&mut self, event: Event) {
        if let Some(m) = &mut self.metrics {
            if let Ok(line) = serde_json::to_string(&event) {
                let _ = writeln!(m, "{line}");
                if !matches!(event, Event::Step { .. }) {
                    let _ = m.flush();
                }
            }
        }
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
