//! The session the workbench drives or watches: its engine thread and channels, its
//! state and clock, and the threads asked to stop that are joined on quit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::TryRecvError;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::engine::{Command, Event, FailReason, Session, Summary};

#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Idle,
    Running,
    Paused,
    Done,
    Aborted,
    Failed(String),
}

impl RunState {
    pub fn is_active(&self) -> bool {
        matches!(self, RunState::Running | RunState::Paused)
    }
}

/// Events drained from the session in one poll.
pub struct Drained {
    pub events: Vec<Event>,
    /// The engine thread is gone (its channel closed).
    pub finished: bool,
}

pub struct RunHandle {
    pub state: RunState,
    pub dir: Option<PathBuf>,
    /// The device the engine reported (the config's `device` until it does).
    pub device: String,
    /// Attached to a run in another process (`tdmr attach`): nothing here controls it.
    pub read_only: bool,
    started: Option<Instant>,
    ended: Option<f64>,
    session: Option<Session>,
    /// Engine threads asked to stop (a restart); joined when the app quits.
    stopping: Vec<JoinHandle<crate::Result<Summary>>>,
    follow_stop: Option<Arc<AtomicBool>>,
}

impl RunHandle {
    pub fn new(device: String) -> Self {
        RunHandle {
            state: RunState::Idle,
            dir: None,
            device,
            read_only: false,
            started: None,
            ended: None,
            session: None,
            stopping: Vec::new(),
            follow_stop: None,
        }
    }

    pub fn is_active(&self) -> bool {
        self.state.is_active()
    }

    pub fn elapsed_s(&self) -> Option<f64> {
        self.ended.or_else(|| self.started.map(|t| t.elapsed().as_secs_f64()))
    }

    /// Drive `session` from now on; its clock starts.
    pub fn begin(&mut self, session: Session) {
        self.dir = Some(session.run_dir.clone());
        self.session = Some(session);
        self.state = RunState::Running;
        self.started = Some(Instant::now());
        self.ended = None;
    }

    /// Watch a run that trains in another process; `stop` ends the follower.
    pub fn follow(&mut self, session: Session, stop: Arc<AtomicBool>) {
        self.begin(session);
        self.read_only = true;
        self.follow_stop = Some(stop);
    }

    /// Send `cmd` to the engine; `false` if it has stopped listening.
    pub fn send(&self, cmd: Command) -> bool {
        match &self.session {
            Some(s) => s.commands.send(cmd).is_ok(),
            None => true,
        }
    }

    /// The events waiting, bounded per poll so a flood cannot starve the keyboard. A
    /// finished engine's thread moves to the ones joined on quit.
    pub fn drain(&mut self) -> Drained {
        let mut events = Vec::new();
        let mut finished = false;
        if let Some(s) = &self.session {
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
        if finished {
            if let Some(s) = self.session.take() {
                self.stopping.push(s.handle);
            }
        }
        Drained { events, finished }
    }

    /// The run's state and clock as the engine reports them.
    pub fn on_event(&mut self, e: &Event) {
        match e {
            Event::RunStarted { device, .. } => self.device = device.clone(),
            Event::Paused => self.state = RunState::Paused,
            Event::Resumed | Event::RunResumed { .. } => self.state = RunState::Running,
            Event::Done { wall_s, .. } => {
                self.state = RunState::Done;
                self.ended = Some(*wall_s);
            }
            Event::Failed { message, reason } => {
                self.ended = self.elapsed_s();
                self.state = match reason {
                    FailReason::Aborted => RunState::Aborted,
                    FailReason::Diverged | FailReason::Error => RunState::Failed(message.clone()),
                };
            }
            _ => {}
        }
    }

    /// Stop the engine (it finishes its step and writes its report) and forget it.
    pub fn stop_session(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.commands.send(Command::Abort);
            // Dropping the event receiver makes the engine stop sending (it never
            // blocks on a view); Abort stops it at its next step.
            self.stopping.push(s.handle);
        }
    }

    fn stop_following(&mut self) {
        if let Some(stop) = self.follow_stop.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// The terminal is gone: let the running session train to the end (its events are
    /// no longer read; the engine records everything in the run directory and never
    /// waits for a view), then wait for every engine thread.
    pub fn finish_detached(&mut self) {
        self.stop_following();
        if let Some(Session {
            events, commands, handle, ..
        }) = self.session.take()
        {
            // Without a command sender a paused engine resumes by itself (nobody is left
            // to resume it); without an event receiver it stops sending.
            drop(commands);
            drop(events);
            let _ = handle.join();
        }
        for h in self.stopping.drain(..) {
            let _ = h.join();
        }
    }

    /// Wait for every engine thread (on quit): each stops at its next step.
    pub fn shutdown(&mut self) {
        self.stop_following();
        self.stop_session();
        for h in self.stopping.drain(..) {
            let _ = h.join();
        }
    }
}
