//! `tdmr attach RUN_DIR`: a run started elsewhere (a detached workbench, `tdmr run` in
//! another shell) shown live from its run directory. Its `metrics.jsonl` is the event
//! stream: replayed from the start, then followed as it grows. Read-only: the engine is
//! in another process, so the workbench's controls do not reach it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

pub use crate::engine::line_follower::LineFollower;
use crate::engine::{Event, Session, Summary};
use crate::{Error, Result};

fn follow(path: PathBuf, tx: SyncSender<Event>, stop: Arc<AtomicBool>) -> Result<Summary> {
    let mut lines = LineFollower::open(&path)?;
    while !stop.load(Ordering::Relaxed) {
        match lines.next_line().map_err(|e| Error::io(&path, e))? {
            Some(line) => {
                // A line from a newer or older tdmr may not parse: skip it, keep going.
                let Ok(event) = serde_json::from_str::<Event>(&line) else {
                    continue;
                };
                let end = matches!(event, Event::Done { .. } | Event::Failed { .. });
                if tx.send(event).is_err() || end {
                    break;
                }
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    Ok(Summary::new())
}

/// A [`Session`] whose events come from `run_dir/metrics.jsonl`; `stop` ends the
/// follower thread (a run that never finishes would otherwise keep it waiting).
pub fn attach(run_dir: &Path) -> Result<(Session, Arc<AtomicBool>)> {
    let metrics = run_dir.join("metrics.jsonl");
    if !metrics.is_file() {
        return Err(Error::File {
            path: run_dir.into(),
            msg: "no metrics.jsonl here: not a tdmr run directory (or the run has not started)".into(),
        });
    }
    let (tx, rx) = mpsc::sync_channel(1024);
    // Commands go nowhere: the engine runs in another process.
    let (commands, _) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || follow(metrics, tx, flag));
    Ok((
        Session {
            events: rx,
            commands,
            run_dir: run_dir.into(),
            handle,
        },
        stop,
    ))
}
