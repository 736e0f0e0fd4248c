//! Strict checkpoint reading: every tensor used, every shape checked, errors name the
//! file and the tensor.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// `.pth`, `.pt` and `.bin` are PyTorch pickles (read by candle's pickle reader, which
/// interprets a fixed set of opcodes and executes no code).
pub fn is_pickle(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "pth" || e == "pt" || e == "bin")
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
        let tensors = if is_pickle(path) {
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
