//! The workbench's run: start, resume, attach, pause, stop and restart a session, and
//! its clock.

use super::*;

impl App {
    pub fn progress(&self) -> Progress {
        let (stages_started, stage_running) = self.plan.distill_started();
        Progress {
            running: self.run.is_active(),
            stages_started,
            stage_running,
        }
    }

    pub fn elapsed_s(&self) -> Option<f64> {
        self.run_ended.or_else(|| self.run_started.map(|t| t.elapsed().as_secs_f64()))
    }

    pub fn start(&mut self) {
        if self.run.is_active() {
            self.warn("a run is already going: pause (space), abort (x) or restart (R)");
            return;
        }
        let out = self.options.out.clone().map(|o| {
            // A second run in the same session must not reuse the first one's directory.
            if o.join("metrics.jsonl").exists() {
                o.join(crate::engine::run_dir::timestamp())
            } else {
                o
            }
        });
        match RunDir::create(out.as_deref(), &self.exp.name) {
            Ok(dir) => {
                self.run_dir = Some(dir.root.clone());
                self.info(format!("run started → {}", dir.root.display()));
                let launch = Launch {
                    resume: None,
                    attended: true,
                };
                self.session = Some(Session::launch(self.exp.clone(), dir, launch));
                self.run = RunState::Running;
                self.run_started = Some(Instant::now());
                self.run_ended = None;
                self.charts = Charts::default();
                self.plan = Plan::new(&self.exp);
                self.checkpoints.clear();
                self.results.clear();
            }
            Err(e) => self.error(format!("cannot start: {e}")),
        }
    }

    /// Continue `dir` (the last run, by default) from its last good checkpoint: the
    /// history up to that checkpoint is replayed from its `metrics.jsonl` into the panes,
    /// then the engine picks up there. The open config's changes apply as on `tdmr run
    /// --resume`: what a running session could take, nothing else.
    pub fn resume(&mut self, dir: Option<PathBuf>) {
        if self.run.is_active() {
            self.warn("a run is going: abort it (x) before resuming another");
            return;
        }
        let Some(dir) = dir.or_else(|| self.run_dir.clone()) else {
            self.warn("no run to resume yet: start one (s), or open one with `tdmr tui --resume RUN_DIR`");
            return;
        };
        let (exp, run, resume) = match crate::engine::prepare_resume(&dir, Some(self.exp.clone())) {
            Ok(r) => r,
            Err(e) => return self.error(format!("cannot resume: {e}")),
        };
        self.stop_session();
        self.charts = Charts::default();
        self.plan = Plan::new(&exp);
        self.checkpoints.clear();
        self.results.clear();
        let offset = resume.restore.as_ref().map_or(0, |r| r.manifest.metrics_offset) as usize;
        let history = std::fs::read(run.file("metrics.jsonl")).unwrap_or_default();
        for line in String::from_utf8_lossy(&history[..offset.min(history.len())]).lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                self.on_engine(e);
            }
        }
        self.run_dir = Some(run.root.clone());
        let launch = Launch {
            resume: Some(resume),
            attended: true,
        };
        self.session = Some(Session::launch(exp, run, launch));
        self.read_only = false;
        self.run = RunState::Running;
        self.run_started = Some(Instant::now());
        self.run_ended = None;
    }

    /// Drive the app from a session started elsewhere (tests attach a scripted engine).
    pub fn attach(&mut self, session: Session) {
        self.run_dir = Some(session.run_dir.clone());
        self.session = Some(session);
        self.run = RunState::Running;
        self.run_started = Some(Instant::now());
        self.run_ended = None;
    }

    /// Show a run that trains in another process, from its run directory (read-only).
    pub fn attach_read_only(&mut self, session: Session, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.info(format!(
            "attached to {} (read-only: control the run where it runs)",
            session.run_dir.display()
        ));
        self.attach(session);
        self.read_only = true;
        self.follow_stop = Some(stop);
    }

    pub(super) fn stop_following(&mut self) {
        if let Some(stop) = self.follow_stop.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn send(&mut self, cmd: Command) {
        if let Some(s) = &self.session {
            if s.commands.send(cmd).is_err() {
                self.warn("the engine has stopped");
            }
        }
    }

    pub(super) fn toggle_pause(&mut self) {
        match self.run {
            RunState::Running => self.send(Command::Pause),
            RunState::Paused => self.send(Command::Resume),
            _ => self.warn("nothing is running"),
        }
    }

    /// Stop the engine (it finishes its step and writes its report) and forget it.
    pub(super) fn stop_session(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.commands.send(Command::Abort);
            // Dropping the event receiver makes the engine stop sending (it never
            // blocks on a view); Abort stops it at its next step.
            self.stopping.push(s.handle);
        }
    }

    pub(super) fn restart(&mut self) {
        if let Some(next) = self.next.take() {
            self.exp = next;
        }
        self.pending.clear();
        self.stop_session();
        self.run = RunState::Idle;
        self.info("restarting with the file's configuration");
        self.start();
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
