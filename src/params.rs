//! Trainable parameters and buffers with seeded initialisation and atomic checkpoints.
//!
//! Why not `candle_nn::VarMap`: its initialisers draw from candle's device RNG, which
//! cannot be seeded on CPU (`Device::Cpu.set_seed` errors), and runs must be
//! reproducible from the config seed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::{Error, Result};

/// `tensors[name]`, checked to have `like`'s shape and moved to its device; `None` if
/// the checkpoint `origin` does not hold it.
pub fn saved_like(tensors: &HashMap<String, Tensor>, name: &str, like: &Var, origin: &Path) -> Result<Option<Tensor>> {
    let Some(t) = tensors.get(name) else { return Ok(None) };
    if t.dims() != like.dims() {
        return Err(Error::Tensor {
            path: origin.into(),
            tensor: name.into(),
            msg: format!("expected shape {:?}, found {:?}", like.dims(), t.dims()),
        });
    }
    Ok(Some(t.to_device(like.device())?))
}

pub struct Params {
    device: Device,
    rng: ChaCha8Rng,
    vars: BTreeMap<String, Var>,
    buffers: BTreeMap<String, Var>,
    dtype: DType,
}

impl Params {
    pub fn new(device: &Device, seed: u64) -> Self {
        Params {
            device: device.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            vars: BTreeMap::new(),
            buffers: BTreeMap::new(),
            dtype: DType::F32,
        }
    }

    /// Parameters created in `dtype` instead of f32 (f64 for finite-difference checks).
    pub fn with_dtype(device: &Device, seed: u64, dtype: DType) -> Self {
        Params {
            dtype,
            ..Self::new(device, seed)
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn insert(&mut self, name: &str, t: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&t.to_dtype(self.dtype)?)?;
        let out = var.as_tensor().clone();
        self.vars.insert(name.to_string(), var);
        Ok(out)
    }

    /// PyTorch's default for linear layers (kaiming-uniform with a = √5): U(±1/√fan_in).
    pub fn uniform(&mut self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.random_range(-bound..bound)).collect();
        let t = Tensor::from_vec(v, shape, &self.device)?;
        self.insert(name, t)
    }

    /// He-normal initialisation for ReLU networks (std = √(2/fan_in)).
    pub fn kaiming_normal(&mut self, name: &str, shape: &[usize], fan_in: usize) -> Result<Tensor> {
        let normal = Normal::new(0.0f32, (2.0 / fan_in as f32).sqrt()).map_err(|e| Error::Data(e.to_string()))?;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut self.rng)).collect();
        let t = Tensor::from_vec(v, shape, &self.device)?;
        self.insert(name, t)
    }

    /// Normal with standard deviation `std` (ViT class token and position embeddings).
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f32) -> Result<Tensor> {
        let normal = Normal::new(0.0f32, std).map_err(|e| Error::Data(e.to_string()))?;
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut self.rng)).collect();
        let t = Tensor::from_vec(v, shape, &self.device)?;
        self.insert(name, t)
    }

    pub fn constant(&mut self, name: &str, shape: &[usize], value: f32) -> Result<Tensor> {
        let t = (Tensor::ones(shape, DType::F32, &self.device)? * value as f64)?;
        self.insert(name, t)
    }

    /// A trainable copy of an existing tensor (e.g. a head copied from the teacher).
    pub fn copy_of(&mut self, name: &str, t: &Tensor) -> Result<Tensor> {
        self.insert(name, t.copy()?)
    }

    /// Non-trainable state saved with the checkpoint (batch-norm running statistics).
    pub fn buffer(&mut self, name: &str, shape: &[usize], value: f32) -> Result<Var> {
        let t = (Tensor::ones(shape, self.dtype, &self.device)? * value as f64)?;
        let var = Var::from_tensor(&t)?;
        self.buffers.insert(name.to_string(), var.clone());
        Ok(var)
    }

    /// Trainable variables whose names start with any of `prefixes`, in name order.
    pub fn vars(&self, prefixes: &[String]) -> Vec<Var> {
        self.vars
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p.as_str())))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// [`Params::vars`] with their names.
    pub fn named_vars(&self, prefixes: &[String]) -> Vec<(String, Var)> {
        self.vars
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p.as_str())))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Set every variable and buffer from `tensors` (a resumable checkpoint, which may
    /// hold more, such as optimiser moments); each must be there with its shape.
    pub fn restore(&self, tensors: &HashMap<String, Tensor>, origin: &Path) -> Result<()> {
        for (name, var) in self.vars.iter().chain(self.buffers.iter()) {
            let t = saved_like(tensors, name, var, origin)?.ok_or_else(|| Error::Tensor {
                path: origin.into(),
                tensor: name.clone(),
                msg: "missing from the checkpoint".into(),
            })?;
            var.set(&t)?;
        }
        Ok(())
    }

    pub fn count(&self, prefixes: &[String]) -> usize {
        self.vars(prefixes).iter().map(|v| v.elem_count()).sum()
    }

    /// All variables and buffers, by name.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.vars
            .iter()
            .chain(self.buffers.iter())
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    }

    /// A copy of every variable and buffer (not sharing storage: `Var::set` writes in
    /// place), to [`Params::restore`] later.
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>> {
        self.tensors().into_iter().map(|(k, t)| Ok((k, t.copy()?))).collect()
    }

    /// Atomic safetensors checkpoint: a killed run never leaves a half-written file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = self.tensors().into_iter().collect();
        crate::engine::run_dir::write_safetensors_atomic(path, &tensors)
    }

    /// Load a checkpoint written by [`Params::save`] into the existing variables; every
    /// name and shape must match.
    pub fn load(&self, path: &Path) -> Result<()> {
        let mut file = crate::models::weights::StrictWeights::open(path, &self.device)?;
        for (name, var) in self.vars.iter().chain(self.buffers.iter()) {
            let t = file.take(name, var.dims())?;
            var.set(&t)?;
        }
        file.finish()
    }
}
