//! Starting, resuming, attaching, pausing, stopping and restarting the session: the
//! run handle does the engine side, this resets the panes that show a run.

use super::*;

impl App {
    /// Empty the panes that show a run, before another one fills them.
    fn clear_run_panes(&mut self, exp: &Experiment) {
        self.charts = Charts::default();
        self.schedule.plan = super::super::plan::Plan::new(exp);
        self.runs = RunsPane::default();
        self.compare = ComparePane::default();
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
        match RunDir::create(out.as_deref(), &self.config.exp.name) {
            Ok(dir) => {
                self.info(format!("run started → {}", dir.root.display()));
                let launch = Launch {
                    resume: None,
                    attended: true,
                };
                self.run.begin(Session::launch(self.config.exp.clone(), dir, launch));
                let exp = self.config.exp.clone();
                self.clear_run_panes(&exp);
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
        let Some(dir) = dir.or_else(|| self.run.dir.clone()) else {
            self.warn("no run to resume yet: start one (s), or open one with `tdmr tui --resume RUN_DIR`");
            return;
        };
        let (exp, run, resume) = match crate::engine::prepare_resume(&dir, Some(self.config.exp.clone())) {
            Ok(r) => r,
            Err(e) => return self.error(format!("cannot resume: {e}")),
        };
        self.run.stop_session();
        self.clear_run_panes(&exp);
        let offset = resume.restore.as_ref().map_or(0, |r| r.manifest.metrics_offset) as usize;
        let history = std::fs::read(run.file("metrics.jsonl")).unwrap_or_default();
        for line in String::from_utf8_lossy(&history[..offset.min(history.len())]).lines() {
            if let Ok(e) = serde_json::from_str::<Event>(line) {
                self.on_engine(e);
            }
        }
        let launch = Launch {
            resume: Some(resume),
            attended: true,
        };
        self.run.begin(Session::launch(exp, run, launch));
        self.run.read_only = false;
    }

    /// Drive the app from a session started elsewhere (tests attach a scripted engine).
    pub fn attach(&mut self, session: Session) {
        self.run.begin(session);
    }

    /// Show a run that trains in another process, from its run directory (read-only).
    pub fn attach_read_only(&mut self, session: Session, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        self.info(format!(
            "attached to {} (read-only: control the run where it runs)",
            session.run_dir.display()
        ));
        self.run.follow(session, stop);
    }

    pub(super) fn send(&mut self, cmd: Command) {
        if !self.run.send(cmd) {
            self.warn("the engine has stopped");
        }
    }

    pub(super) fn toggle_pause(&mut self) {
        match self.run.state {
            RunState::Running => self.send(Command::Pause),
            RunState::Paused => self.send(Command::Resume),
            _ => self.warn("nothing is running"),
        }
    }

    pub(super) fn restart(&mut self) {
        self.config.take_next();
        self.run.stop_session();
        self.run.state = RunState::Idle;
        self.info("restarting with the file's configuration");
        self.start();
    }

    /// The terminal is gone: let the running session train to the end, then wait for
    /// every engine thread.
    pub fn finish_detached(&mut self) {
        self.run.finish_detached();
    }

    /// Wait for every engine thread (on quit): each stops at its next step.
    pub fn shutdown(&mut self) {
        self.run.shutdown();
    }
}
