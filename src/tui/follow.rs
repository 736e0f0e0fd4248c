//! `tdmr attach RUN_DIR`: a run started elsewhere (a detached workbench, `tdmr run` in
//! another shell) shown live from its run directory. Its `metrics.jsonl` is the event
//! stream: replayed from the start, then followed as it grows. Read-only: the engine is
//! in another process, so the workbench's controls do not reach it.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{Event, Session, Summary};
use crate::{Error, Result};

/// Complete lines of a growing file: a line without its newline yet (a write in
/// progress, or the torn end of a killed run) is held back until it is finished.
pub struct LineFollower {
    reader: BufReader<File>,
    pending: String,
}

impl LineFollower {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(LineFollower {
            reader: BufReader::new(f),
            pending: String::new(),
        })
    }

    /// The next complete line, if one is there now.
    pub fn next_line(&mut self) -> std::io::Result<Option<String>> {
        let mut buf = String::new();
        let n = self.reader.read_line(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.pending.push_str(&buf);
        if self.pending.ends_with('\n') {
            let line = std::mem::take(&mut self.pending);
            return Ok(Some(line.trim_end().to_string()));
        }
        // Partial: read it again from the same place next time, whole.
        let back = self.pending.len() as i64;
        self.pending.clear();
        self.reader.seek(SeekFrom::Current(-back))?;
        Ok(None)
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_torn_last_line_waits_until_it_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        std::fs::write(&p, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let mut f = LineFollower::open(&p).unwrap();
        assert_eq!(f.next_line().unwrap().as_deref(), Some("{\"a\":1}"));
        assert_eq!(f.next_line().unwrap().as_deref(), Some("{\"b\":2}"));
        assert_eq!(f.next_line().unwrap(), None);
        assert_eq!(f.next_line().unwrap(), None);
        let mut w = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        w.write_all(b"3}\n").unwrap();
        assert_eq!(f.next_line().unwrap().as_deref(), Some("{\"c\":3}"));
        assert_eq!(f.next_line().unwrap(), None);
    }
}
