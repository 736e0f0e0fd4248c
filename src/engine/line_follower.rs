//! Lines of a file that another process is still appending to (a run's
//! `metrics.jsonl`), read as they are completed.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

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
