//! `runs/<name>-<timestamp>/`: config as run, metrics, checkpoints, report. Every file
//! is written atomically (temp file, fsync, rename) so a killed run leaves only
//! complete files behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

/// Write through `f` into a temp file beside `path`, fsync it, rename it over `path`,
/// then fsync the directory so the rename itself survives a power cut. On failure the
/// temp file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let written = f(&tmp)
        .map(|()| fault_injection_pause())
        .and_then(|()| File::open(&tmp).and_then(|h| h.sync_all()).map_err(|e| Error::io(&tmp, e)))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir).and_then(|h| h.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// `TDMR_FAULT_WRITE_DELAY_MS`: hold every atomic write between writing its temp
/// file and renaming it, so crash tests can kill the process inside a write.
fn fault_injection_pause() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("TDMR_FAULT_WRITE_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = delay {
        std::thread::sleep(*d);
    }
}

/// Tensors as an atomic safetensors file. Serialised here, not by candle, whose writer
/// renames its own temp file into place and would hide where a write failed.
pub fn write_safetensors_atomic(path: &Path, tensors: &std::collections::HashMap<String, candle_core::Tensor>) -> Result<()> {
    let bytes = safetensors::serialize(tensors, None).map_err(|e| Error::File {
        path: path.into(),
        msg: format!("cannot serialise the tensors: {e}"),
    })?;
    write_atomic(path, |tmp| std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e)))
}

pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    write_atomic(path, |tmp| std::fs::write(tmp, text).map_err(|e| Error::io(tmp, e)))
}

/// UTC `YYYYMMDD-HHMMSS` for run directory names.
/// Where the run of seed `seed` goes inside a `--seeds` run or a sweep point: `seed-S/`.
pub fn seed_dir(parent: &Path, seed: u64) -> PathBuf {
    parent.join(format!("seed-{seed}"))
}

/// The seed of a [`seed_dir`] folder, from its name.
pub fn seed_of(folder_name: &str) -> Option<u64> {
    folder_name.strip_prefix("seed-")?.parse().ok()
}

pub fn timestamp() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// `out` names the run directory itself; otherwise `runs/<name>-<timestamp>`.
    pub fn create(out: Option<&Path>, name: &str) -> Result<Self> {
        let root = match out {
            Some(p) => p.to_path_buf(),
            None => {
                // Two runs started within the same second get `-2`, `-3`...
                let base = PathBuf::from("runs").join(format!("{name}-{}", timestamp()));
                (1..)
                    .map(|k| {
                        if k == 1 {
                            base.clone()
                        } else {
                            PathBuf::from(format!("{}-{k}", base.display()))
                        }
                    })
                    .find(|p| !p.exists())
                    .unwrap_or(base)
            }
        };
        // Never write over a finished or interrupted run.
        for existing in ["metrics.jsonl", "summary.json"] {
            if root.join(existing).exists() {
                return Err(Error::File {
                    path: root,
                    msg: format!("already holds a run ({existing}); choose another --out"),
                });
            }
        }
        let ckpt = root.join("checkpoints");
        std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
        Ok(RunDir { root })
    }

    /// An existing run directory, to resume: it must hold the run's `config.toml`.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("config.toml").is_file() {
            return Err(Error::File {
                path: root.into(),
                msg: "is not a tdmr run directory (no config.toml)".into(),
            });
        }
        let ckpt = root.join("checkpoints");
        std::fs::create_dir_all(&ckpt).map_err(|e| Error::io(&ckpt, e))?;
        Ok(RunDir { root: root.into() })
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    pub fn checkpoint(&self, file: &str) -> PathBuf {
        self.root.join("checkpoints").join(file)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}
