//! The frozen teacher's outputs, computed once per training image and view. Stage 2
//! reads only this cache: it holds no reference to the foundation model at all.
//!
//! The TDMR teacher's cache is written to the run directory as raw little-endian f32
//! files (`teacher-cache/<key>.z.f32`, `<key>.logits.f32`, then `<key>.json` last, as
//! the commit mark), streamed batch by batch so building it never holds it twice. It
//! is read into memory when it fits the budget and memory-mapped otherwise. The key is
//! a content hash of everything the outputs depend on, so a later run with the same
//! foundation, reprogrammer weights and input views links the files instead of
//! recomputing them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::data::select_rows;
use crate::engine::run_dir::write_text_atomic;
use crate::{Error, Result};

const FORMAT: &str = "tdmr-teacher-cache-1";

/// One `[rows, width]` f32 matrix, resident or mapped.
enum Matrix {
    Tensor(Tensor),
    Mapped { map: Mmap, width: usize, device: Device },
}

impl Matrix {
    fn select(&self, rows: &[usize]) -> Result<Tensor> {
        match self {
            Matrix::Tensor(t) => select_rows(t, rows),
            Matrix::Mapped { map, width, device } => {
                let row_bytes = width * 4;
                let mut out = Vec::with_capacity(rows.len() * width);
                for &r in rows {
                    let bytes = &map[r * row_bytes..(r + 1) * row_bytes];
                    out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                }
                Ok(Tensor::from_vec(out, (rows.len(), *width), device)?)
            }
        }
    }

    fn all(&self) -> Result<Tensor> {
        match self {
            Matrix::Tensor(t) => Ok(t.clone()),
            Matrix::Mapped { map, .. } => self.select(&(0..map.len() / (self.width() * 4).max(1)).collect::<Vec<_>>()),
        }
    }

    fn width(&self) -> usize {
        match self {
            Matrix::Tensor(t) => t.dim(1).unwrap_or(0),
            Matrix::Mapped { width, .. } => *width,
        }
    }
}

/// What `<key>.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheMeta {
    pub format: String,
    pub key: String,
    pub rows: usize,
    pub z_dim: usize,
    pub classes: usize,
}

pub struct TeacherCache {
    z: Matrix,
    logits: Matrix,
    rows: usize,
    /// The files behind it, when it was written to disk.
    pub files: Option<PathBuf>,
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn paths(dir: &Path, key: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join(format!("{key}.z.f32")),
        dir.join(format!("{key}.logits.f32")),
        dir.join(format!("{key}.json")),
    )
}

fn write_rows(w: &mut BufWriter<File>, t: &Tensor, path: &Path) -> Result<usize> {
    let v: Vec<f32> = t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    for x in &v {
        w.write_all(&x.to_le_bytes()).map_err(|e| Error::io(path, e))?;
    }
    Ok(t.dim(1)?)
}

impl TeacherCache {
    /// Build in memory by running `f` over `rows` in batches of `batch`; `f` returns
    /// `(z, logits)`.
    pub fn build(rows: usize, batch: usize, mut f: impl FnMut(&[usize]) -> Result<(Tensor, Tensor)>) -> Result<Self> {
        let (mut zs, mut ls) = (Vec::new(), Vec::new());
        let all: Vec<usize> = (0..rows).collect();
        for chunk in all.chunks(batch.max(1)) {
            let (z, l) = f(chunk)?;
            zs.push(z.detach());
            ls.push(l.detach());
        }
        Ok(Self::from_tensors(Tensor::cat(&zs, 0)?, Tensor::cat(&ls, 0)?))
    }

    pub fn from_tensors(z: Tensor, logits: Tensor) -> Self {
        let rows = z.dim(0).unwrap_or(0);
        TeacherCache {
            z: Matrix::Tensor(z),
            logits: Matrix::Tensor(logits),
            rows,
            files: None,
        }
    }

    /// Build into `dir` under `key`, streaming each batch to disk, then [`Self::open`].
    pub fn build_files(
        dir: &Path,
        key: &str,
        rows: usize,
        batch: usize,
        budget_bytes: usize,
        device: &Device,
        mut f: impl FnMut(&[usize]) -> Result<(Tensor, Tensor)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let (zp, lp, mp) = paths(dir, key);
        let create = |p: &Path| File::create(p).map(BufWriter::new).map_err(|e| Error::io(p, e));
        let (mut zw, mut lw) = (create(&zp)?, create(&lp)?);
        let (mut z_dim, mut classes) = (0, 0);
        let all: Vec<usize> = (0..rows).collect();
        for chunk in all.chunks(batch.max(1)) {
            let (z, l) = f(chunk)?;
            z_dim = write_rows(&mut zw, &z, &zp)?;
            classes = write_rows(&mut lw, &l, &lp)?;
        }
        for (w, p) in [(zw, &zp), (lw, &lp)] {
            let file = w.into_inner().map_err(|e| Error::io(p, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(p, e))?;
        }
        let meta = CacheMeta {
            format: FORMAT.into(),
            key: key.into(),
            rows,
            z_dim,
            classes,
        };
        write_text_atomic(&mp, &serde_json::to_string_pretty(&meta).unwrap_or_default())?;
        Self::open(dir, key, budget_bytes, device)
    }

    /// Open a finished cache: into memory when it is at most `budget_bytes`, else
    /// memory-mapped.
    pub fn open(dir: &Path, key: &str, budget_bytes: usize, device: &Device) -> Result<Self> {
        let (zp, lp, mp) = paths(dir, key);
        let text = std::fs::read_to_string(&mp).map_err(|e| Error::io(&mp, e))?;
        let meta: CacheMeta = serde_json::from_str(&text).map_err(|e| file_err(&mp, format!("not a teacher-cache manifest: {e}")))?;
        if meta.format != FORMAT || meta.key != key {
            return Err(file_err(
                &mp,
                format!("format `{}`, key `{}`: expected {FORMAT}, {key}", meta.format, meta.key),
            ));
        }
        let map = |p: &Path, width: usize| -> Result<Matrix> {
            let file = File::open(p).map_err(|e| Error::io(p, e))?;
            // Safety: the file is ours, written and fsynced before its manifest; it is
            // never modified in place (a rebuild writes a new key).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(p, e))?;
            if map.len() != meta.rows * width * 4 {
                return Err(file_err(
                    p,
                    format!("{} bytes, expected {} rows × {width} f32", map.len(), meta.rows),
                ));
            }
            Ok(Matrix::Mapped {
                map,
                width,
                device: device.clone(),
            })
        };
        let (z, logits) = (map(&zp, meta.z_dim)?, map(&lp, meta.classes)?);
        let bytes = meta.rows * (meta.z_dim + meta.classes) * 4;
        let (z, logits) = if bytes <= budget_bytes {
            (Matrix::Tensor(z.all()?), Matrix::Tensor(logits.all()?))
        } else {
            (z, logits)
        };
        Ok(TeacherCache {
            z,
            logits,
            rows: meta.rows,
            files: Some(mp),
        })
    }

    /// Whether a finished cache under `key` is in `dir`.
    pub fn exists(dir: &Path, key: &str) -> bool {
        paths(dir, key).2.is_file()
    }

    /// Hard-link (or copy) the finished cache `key` from `from` into `to`.
    pub fn link(from: &Path, to: &Path, key: &str) -> Result<()> {
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        let (a, b) = (paths(from, key), paths(to, key));
        for (src, dst) in [(a.0, b.0), (a.1, b.1), (a.2, b.2)] {
            if std::fs::hard_link(&src, &dst).is_err() {
                std::fs::copy(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            }
        }
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn z_dim(&self) -> usize {
        self.z.width()
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self.z, Matrix::Mapped { .. })
    }

    /// Proxy embeddings (`[rows, P]`, or `[rows, d_F]` for the probe teacher) and
    /// logits for `rows`.
    pub fn select(&self, rows: &[usize]) -> Result<(Tensor, Tensor)> {
        Ok((self.z.select(rows)?, self.logits.select(rows)?))
    }

    pub fn bytes(&self) -> usize {
        self.rows * (self.z.width() + self.logits.width()) * 4
    }
}
