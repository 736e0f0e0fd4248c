//! Strict checkpoint reading: every tensor used, every shape checked, errors name the
//! file and the tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::prefix::Prefix;
use crate::{Error, Result};

/// `.pth`, `.pt` and `.bin` are PyTorch pickles (read by candle's pickle reader, which
/// interprets a fixed set of opcodes and executes no code).
pub fn is_pickle(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pth" || e == "pt" || e == "bin")
}

/// A Hugging Face sharded checkpoint's index (`model.safetensors.index.json`): the
/// shard files it names, in order, and which shard holds each tensor.
pub struct ShardIndex {
    pub shards: Vec<PathBuf>,
    pub weight_map: std::collections::BTreeMap<String, PathBuf>,
}

pub fn is_shard_index(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".index.json"))
}

/// Read a shard index; every shard it names must exist next to it.
pub fn shard_index(path: &Path) -> Result<ShardIndex> {
    #[derive(serde::Deserialize)]
    struct Raw {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let raw: Raw = serde_json::from_str(&text).map_err(|e| Error::File {
        path: path.into(),
        msg: format!("not a safetensors shard index (expected {{\"weight_map\": {{tensor: file}}}}): {e}"),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut shards: Vec<PathBuf> = Vec::new();
    let mut weight_map = std::collections::BTreeMap::new();
    for (tensor, file) in raw.weight_map {
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            return Err(Error::Tensor {
                path: path.into(),
                tensor,
                msg: format!("shard `{file}` must be a file name next to the index"),
            });
        }
        let shard = dir.join(&file);
        if !shards.contains(&shard) {
            if !shard.is_file() {
                return Err(Error::Tensor {
                    path: path.into(),
                    tensor,
                    msg: format!("its shard {} is missing", shard.display()),
                });
            }
            shards.push(shard.clone());
        }
        weight_map.insert(tensor, shard);
    }
    Ok(ShardIndex { shards, weight_map })
}

/// The files a checkpoint consists of: the shards and the index of a sharded one,
/// else the file itself.
pub fn files_of(path: &Path) -> Result<Vec<PathBuf>> {
    if is_shard_index(path) {
        let mut files = shard_index(path)?.shards;
        files.push(path.to_path_buf());
        Ok(files)
    } else {
        Ok(vec![path.to_path_buf()])
    }
}

/// How many numbered groups `{prefix}0.`, `{prefix}1.`, … the names hold: one more
/// than the largest index (0 when there is none).
pub fn count_indexed<'a>(names: impl Iterator<Item = &'a String>, prefix: &str) -> usize {
    names
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

thread_local! {
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic caught by [`guarded`] becomes an error message; it must not also print a
/// backtrace to the user's terminal. Other panics print as before.
fn quiet_panics_in_guard() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(|g| g.get()) {
                previous(info)
            }
        }));
    });
}

/// Run candle's pickle reader on `path`, turning its errors, and any panic on malformed
/// input, into one error that names the file.
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    let err = |msg: String| Error::File {
        path: path.into(),
        msg: format!("not a readable PyTorch checkpoint (zip + pickle): {msg}"),
    };
    quiet_panics_in_guard();
    IN_GUARD.with(|g| g.set(true));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(false));
    match caught {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(err(e.to_string().lines().next().unwrap_or_default().to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the reader failed".into());
            Err(err(what))
        }
    }
}

pub struct StrictWeights {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: BTreeSet<String>,
    /// What every float tensor is converted to (f32 unless a caller asks otherwise,
    /// e.g. f64 for finite-difference checks).
    dtype: DType,
}

impl StrictWeights {
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return Err(Error::File {
                path: path.into(),
                msg: "is a directory, expected a .safetensors file".into(),
            });
        }
        let tensors = if is_shard_index(path) {
            let index = shard_index(path)?;
            let mut map = HashMap::new();
            for shard in &index.shards {
                let part = candle_core::safetensors::load(shard, device).map_err(|e| Error::File {
                    path: shard.clone(),
                    msg: format!("not a readable safetensors shard (truncated or corrupt?): {e}"),
                })?;
                for (name, t) in part {
                    if index.weight_map.get(&name) != Some(shard) {
                        return Err(Error::Tensor {
                            path: shard.clone(),
                            tensor: name,
                            msg: format!("is not listed for this shard in {}", path.display()),
                        });
                    }
                    map.insert(name, t);
                }
            }
            if let Some(name) = index.weight_map.keys().find(|k| !map.contains_key(*k)) {
                return Err(Error::Tensor {
                    path: index.weight_map[name].clone(),
                    tensor: name.clone(),
                    msg: format!("listed in {} but not in the shard", path.display()),
                });
            }
            map
        } else if is_pickle(path) {
            let list = guarded(path, || candle_core::pickle::read_all(path))?;
            let mut map = HashMap::new();
            for (name, t) in list {
                map.insert(name, t.to_device(device)?);
            }
            map
        } else {
            candle_core::safetensors::load(path, device).map_err(|e| Error::File {
                path: path.into(),
                msg: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
            })?
        };
        Ok(StrictWeights {
            path: path.into(),
            tensors,
            used: BTreeSet::new(),
            dtype: DType::F32,
        })
    }

    /// Convert float tensors to `dtype` instead of f32.
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of floating-point values in the file (parameters and statistics).
    pub fn float_elements(&self) -> usize {
        self.tensors.values().filter(|t| t.dtype().is_float()).map(|t| t.elem_count()).sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    fn err(&self, name: &str, msg: String) -> Error {
        Error::Tensor {
            path: self.path.clone(),
            tensor: name.into(),
            msg,
        }
    }

    /// Take `name` as f32 after checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.take_any(name)?;
        if t.dims() != shape {
            return Err(self.err(name, format!("expected shape {shape:?}, found {:?}", t.dims())));
        }
        Ok(t)
    }

    /// Take `name` as f32, any shape (the caller checks it against other tensors).
    pub fn take_any(&mut self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(name, "missing from the file".into()))?;
        let t = match t.dtype() {
            d if d == self.dtype => t.clone(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(self.dtype)?,
            other => return Err(self.err(name, format!("expected a float tensor, found {other:?}"))),
        };
        self.used.insert(name.to_string());
        Ok(t)
    }

    /// `at.weight` and `at.bias`, each shape checked.
    pub fn take_affine(&mut self, at: &Prefix, weight: &[usize], bias: &[usize]) -> Result<(Tensor, Tensor)> {
        Ok((self.take(&at.key("weight"), weight)?, self.take(&at.key("bias"), bias)?))
    }

    /// A batch norm of `channels` under `at` (`weight`, `bias`, `running_mean`,
    /// `running_var`, and `num_batches_tracked` where the file has it) folded into the
    /// per-channel `(scale, shift)` of its evaluation mode.
    pub fn take_batch_norm(&mut self, at: &Prefix, channels: usize, eps: f64) -> Result<(Tensor, Tensor)> {
        let c = [channels];
        let (gamma, beta) = self.take_affine(at, &c, &c)?;
        let mean = self.take(&at.key("running_mean"), &c)?;
        let var = self.take(&at.key("running_var"), &c)?;
        let counter = at.key("num_batches_tracked");
        if self.contains(&counter) {
            self.take_scalar_counter(&counter)?;
        }
        Ok(crate::ops::norm::fold_batch_norm(&gamma, &beta, &mean, &var, eps)?)
    }

    /// Mark a bookkeeping tensor (e.g. `num_batches_tracked`) as seen, checking it is a scalar.
    pub fn take_scalar_counter(&mut self, name: &str) -> Result<()> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.err(name, "missing from the file".into()))?;
        if t.rank() != 0 {
            return Err(self.err(name, format!("expected a scalar, found shape {:?}", t.dims())));
        }
        self.used.insert(name.to_string());
        Ok(())
    }

    /// How many numbered groups `{prefix}0.`, `{prefix}1.`, … the file has (blocks,
    /// layers, stages): one more than the largest index.
    pub fn count_indexed(&self, prefix: &str) -> usize {
        count_indexed(self.tensors.keys(), prefix)
    }

    /// The shape of `name`, if the file has it (nothing is marked used).
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.dims().to_vec())
    }

    /// Mark every tensor whose name satisfies `skip` as deliberately unused (classifier
    /// heads, CLIP's text tower), so [`StrictWeights::finish`] accepts them.
    pub fn ignore(&mut self, skip: impl Fn(&str) -> bool) {
        let names: Vec<String> = self.tensors.keys().filter(|k| skip(k)).cloned().collect();
        self.used.extend(names);
    }

    /// Error if any tensor in the file was not used.
    pub fn finish(self) -> Result<()> {
        let mut extra: Vec<&String> = self.tensors.keys().filter(|k| !self.used.contains(*k)).collect();
        if extra.is_empty() {
            return Ok(());
        }
        extra.sort();
        let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
        Err(self.err(
            shown[0],
            format!("{} unexpected tensor(s) in the file: {}", extra.len(), shown.join(", ")),
        ))
    }
}
