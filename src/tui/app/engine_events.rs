//! Events from the engine into the components, and their lines into the log.

use super::*;

impl App {
    /// Drain the engine's and the loader's channels; `true` if anything changed.
    pub fn poll(&mut self) -> bool {
        let mut changed = false;
        if let Some(line) = self.foundation.poll() {
            if let Some((level, text)) = line {
                self.push_log(level, text);
            }
            changed = true;
        }
        let drained = self.run.drain();
        changed |= !drained.events.is_empty() || drained.finished;
        for e in drained.events {
            self.on_engine(e);
        }
        if drained.finished && self.run.is_active() {
            self.run.state = RunState::Failed("the engine stopped without a final event".into());
            self.error("the engine thread stopped without a final event");
        }
        changed
    }

    /// The event into every component that shows it, then its line (the printer's
    /// wording) into the log, with what to do next where that needs the workbench's keys.
    pub fn on_engine(&mut self, e: Event) {
        self.schedule.on_event(&e);
        self.charts.on_event(&e);
        self.foundation.on_event(&e);
        self.runs.on_event(&e);
        self.compare.on_event(&e);
        self.run.on_event(&e);
        self.skip_on_the_way(&e);
        if matches!(e, Event::Done { .. } | Event::Failed { .. }) {
            self.skip_to = None;
            // A question about stopping the run, asked just before it ended, no longer
            // means what it says.
            if let Overlay::Confirm(Confirm::Quit | Confirm::Abort) = self.view.overlay {
                self.view.overlay = Overlay::None;
                self.info("the run ended before the answer: nothing to stop (q quits)");
            }
        }
        let hint = match &e {
            Event::Diverged { .. } => Some("lower the lr in the config, then resume (space) to continue from it"),
            Event::CheckpointFailed { .. } => Some("free space or fix the directory; resume (space) if the run stops"),
            _ => None,
        };
        if let Some(Described { level, text }) = e.describe() {
            match hint {
                Some(h) => self.push_log(level, format!("{text}. Next: {h}")),
                None => self.push_log(level, text),
            }
        }
    }
}
