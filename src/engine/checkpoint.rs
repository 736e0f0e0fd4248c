//! Resumable checkpoints: `checkpoints/resume-NNNNNN.safetensors` (the method's
//! parameters, buffers and optimiser moments) beside `resume-NNNNNN.json` (where the run
//! stood: method, stage, epoch, batch, RNG position, partial epoch sums, the methods
//! finished so far, the effective config and the length of `metrics.jsonl`).
//!
//! The tensors are written first and the manifest last, each atomically, so a manifest
//! only ever names complete tensors: a kill at any instant leaves the previous
//! checkpoint usable. The newest `keep` are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::control::Control;
use super::events::{LossParts, MethodResult, Summary};
use super::optim::Optimizer;
use super::run_dir::{write_safetensors_atomic, write_text_atomic};
use crate::config::Experiment;
use crate::params::Params;
use crate::{Error, Result};

const FORMAT: u32 = 1;
const PREFIX: &str = "resume-";

/// Where a stage stands between two optimisation steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// Index of the stage within its method (distillation stages count from 0).
    pub stage_index: usize,
    /// The epoch to run next (1-based); `epochs + 1` once the stage has finished.
    pub epoch: usize,
    /// Batches of `epoch` already trained.
    pub batch: usize,
    /// Optimisation steps taken in this stage.
    pub step: usize,
    /// Word position of the stage's RNG at the start of `epoch` (before its shuffle).
    #[serde(with = "u128_text")]
    pub rng_word_pos: u128,
    /// Loss sums and correct predictions of the batches of `epoch` already trained.
    pub partial: LossParts,
    pub correct: usize,
    /// The last evaluation's test accuracy in this stage.
    pub test_acc: Option<f64>,
}

/// JSON numbers lose precision past 2^53 in most readers: the RNG position is text.
mod u128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub seq: u64,
    /// The tensors' file, beside this manifest.
    pub tensors: String,
    pub method: String,
    pub stage: String,
    pub position: Position,
    pub optimizer_steps: usize,
    /// Methods finished before this checkpoint, in order (their final checkpoints are
    /// `checkpoints/<method>.safetensors`).
    pub completed: Vec<String>,
    pub summary: Summary,
    /// Bytes of `metrics.jsonl` that describe the run up to this checkpoint.
    pub metrics_offset: u64,
    /// FNV-1a of `config`: tells at a glance whether two checkpoints ran one config.
    pub config_hash: String,
    /// The experiment in force (with the live edits taken so far), as TOML.
    pub config: String,
    /// Learning-rate back-offs taken so far (see `checkpoint.lr_backoff`).
    pub backoffs: usize,
}

/// A checkpoint read back: its manifest and every tensor it holds.
pub struct Restore {
    pub manifest: Manifest,
    pub tensors: HashMap<String, Tensor>,
    pub path: PathBuf,
}

impl Restore {
    pub fn experiment(&self) -> Result<Experiment> {
        Experiment::parse(&self.manifest.config, &self.path.display().to_string(), &[])
    }
}

/// 64-bit FNV-1a: a stable hash (std's `DefaultHasher` may change between releases).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h = Fnv1a::default();
    for b in bytes {
        h.byte(b);
    }
    h.0
}

/// Incremental [`fnv1a`], for content hashes of large inputs.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn byte(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }

    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// A length-prefixed field, so `("ab", "c")` and `("a", "bc")` differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.update(&(bytes.len() as u64).to_le_bytes());
        self.update(bytes);
    }
}

/// The first tensor holding a NaN or an infinity, if any. Called on every training
/// step's gradients: one reduction per tensor and a single read back, so a GPU run
/// synchronises once, not once per tensor.
pub fn first_non_finite<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>) -> Result<Option<String>> {
    let (names, sums): (Vec<&String>, Vec<Tensor>) = tensors
        .into_iter()
        // x − x is 0 for every finite x and NaN otherwise, so one sum tells.
        .map(|(name, t)| Ok((name, t.sub(t)?.sum_all()?.to_dtype(candle_core::DType::F32)?)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    if sums.is_empty() {
        return Ok(None);
    }
    let sums: Vec<f32> = Tensor::stack(&sums, 0)?.to_vec1()?;
    Ok(names.into_iter().zip(sums).find(|(_, s)| *s != 0.0).map(|(n, _)| n.clone()))
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?.strip_suffix(".json")?.parse().ok()
}

/// Manifests in `dir`, newest first.
fn manifests(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter_map(|p| seq_of(&p).map(|s| (s, p)))
        .collect();
    out.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    out
}

/// Read one checkpoint (manifest and tensors) and check that it is whole.
pub fn load(manifest: &Path, device: &Device) -> Result<Restore> {
    let text = std::fs::read_to_string(manifest).map_err(|e| Error::io(manifest, e))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| Error::File {
        path: manifest.into(),
        msg: format!("not a checkpoint manifest: {e}"),
    })?;
    if m.format != FORMAT {
        return Err(Error::File {
            path: manifest.into(),
            msg: format!("checkpoint format {} (this tdmr reads {FORMAT})", m.format),
        });
    }
    let tpath = manifest.with_file_name(&m.tensors);
    let tensors = candle_core::safetensors::load(&tpath, device).map_err(|e| Error::File {
        path: tpath.clone(),
        msg: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
    })?;
    Ok(Restore {
        manifest: m,
        tensors,
        path: manifest.into(),
    })
}

/// The newest checkpoint in `dir` that reads back whole; the ones skipped, with why.
pub fn latest(dir: &Path, device: &Device) -> (Option<Restore>, Vec<String>) {
    let mut skipped = Vec::new();
    for (_, path) in manifests(dir) {
        match load(&path, device) {
            Ok(r) => return (Some(r), skipped),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    (None, skipped)
}

/// Writes the resumable checkpoints of one run and remembers what a resume must skip.
pub struct Checkpointer {
    dir: PathBuf,
    /// The experiment the run started with (the live edits come from `Control`).
    exp: Experiment,
    next_seq: u64,
    completed: Vec<String>,
    summary: Summary,
    restore: Option<Restore>,
    backoffs: usize,
    last_good: Option<PathBuf>,
}

impl Checkpointer {
    pub fn new(dir: &Path, exp: &Experiment) -> Self {
        let next_seq = manifests(dir).first().map(|(s, _)| s + 1).unwrap_or(1);
        Checkpointer {
            dir: dir.into(),
            exp: exp.clone(),
            next_seq,
            completed: Vec::new(),
            summary: Summary::new(),
            restore: None,
            backoffs: 0,
            last_good: None,
        }
    }

    /// Continue from `r`: the methods it lists as finished are skipped (or rebuilt from
    /// their final checkpoints), and its stage picks up at its position.
    pub fn resume_from(&mut self, r: Restore) {
        self.completed = r.manifest.completed.clone();
        self.summary = r.manifest.summary.clone();
        self.backoffs = r.manifest.backoffs;
        self.last_good = Some(r.path.clone());
        self.restore = Some(r);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn backoffs(&self) -> usize {
        self.backoffs
    }

    pub fn set_backoffs(&mut self, n: usize) {
        self.backoffs = n;
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn last_good(&self) -> Option<&Path> {
        self.last_good.as_deref()
    }

    pub fn is_completed(&self, method: &str) -> bool {
        self.completed.iter().any(|m| m == method)
    }

    pub fn complete(&mut self, method: &str, result: Option<MethodResult>) {
        self.completed.push(method.into());
        if let Some(r) = result {
            self.summary.insert(method.into(), r);
        }
    }

    /// The stage index a resume starts `method` at (0 when it does not resume it).
    pub fn resume_stage_index(&self, method: &str) -> usize {
        match &self.restore {
            Some(r) if r.manifest.method == method => r.manifest.position.stage_index,
            _ => 0,
        }
    }

    /// Whether the run resumes inside `method`.
    pub fn resumes(&self, method: &str) -> bool {
        self.restore.as_ref().is_some_and(|r| r.manifest.method == method)
    }

    /// The saved state of `method`/`stage`, if the run resumes there.
    pub fn take_restore(&mut self, method: &str, stage: &str) -> Option<Restore> {
        match &self.restore {
            Some(r) if r.manifest.method == method && r.manifest.stage == stage => self.restore.take(),
            _ => None,
        }
    }

    fn name(&self, seq: u64, ext: &str) -> PathBuf {
        self.dir.join(format!("{PREFIX}{seq:06}.{ext}"))
    }

    /// Write a checkpoint of `params` and `opt` at `pos`. Non-finite values are refused
    /// (as [`Error::Diverged`]) so NaN weights never replace a good checkpoint.
    pub fn save(
        &mut self,
        ctl: &mut Control,
        method: &str,
        stage: &str,
        pos: &Position,
        params: &Params,
        opt: &Optimizer,
    ) -> Result<PathBuf> {
        let mut tensors = params.tensors();
        tensors.extend(opt.state());
        if let Some(bad) = first_non_finite(tensors.iter())? {
            return Err(Error::Diverged(format!(
                "{method}/{stage}: `{bad}` holds NaN or Inf at epoch {}, step {}; no checkpoint written",
                pos.epoch, pos.step
            )));
        }
        let config = ctl.live().unwrap_or(&self.exp).to_toml();
        let seq = self.next_seq;
        let (tpath, mpath) = (self.name(seq, "safetensors"), self.name(seq, "json"));
        let manifest = Manifest {
            format: FORMAT,
            seq,
            tensors: tpath.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            method: method.into(),
            stage: stage.into(),
            position: *pos,
            optimizer_steps: opt.steps(),
            completed: self.completed.clone(),
            summary: self.summary.clone(),
            metrics_offset: ctl.metrics_offset()?,
            config_hash: format!("{:016x}", fnv1a(config.bytes())),
            config,
            backoffs: self.backoffs,
        };
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        write_safetensors_atomic(&tpath, &map)?;
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::File {
            path: mpath.clone(),
            msg: e.to_string(),
        })?;
        write_text_atomic(&mpath, &json)?;
        self.next_seq += 1;
        self.last_good = Some(mpath.clone());
        self.prune(ctl.live().unwrap_or(&self.exp).checkpoint.keep);
        Ok(mpath)
    }

    /// Remove all but the newest `keep` checkpoints (manifest first, so no manifest
    /// ever names a removed file).
    fn prune(&self, keep: usize) {
        for (seq, manifest) in manifests(&self.dir).into_iter().skip(keep.max(1)) {
            let _ = std::fs::remove_file(&manifest);
            let _ = std::fs::remove_file(self.name(seq, "safetensors"));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    /// A resumed epoch's mean loss is the restored partial sum plus the rest: a sum that
    /// comes back one bit off ends the run one bit away from an uninterrupted one.
    /// serde_json's default float parser is off by one ulp for some numbers.
    #[test]
    fn partial_loss_sums_survive_the_manifest_bit_for_bit() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..20_000 {
            let mut sum = || rng.random::<f64>() * 10f64.powi(rng.random_range(-3..4));
            let partial = LossParts {
                total: sum(),
                align: sum(),
                kd: sum(),
                ce: sum(),
            };
            let pos = Position {
                partial,
                test_acc: Some(rng.random()),
                ..Position::default()
            };
            let back: Position = serde_json::from_str(&serde_json::to_string_pretty(&pos).unwrap()).unwrap();
            assert_eq!(back.partial.total.to_bits(), partial.total.to_bits(), "{:?}", partial.total);
            assert_eq!(back.partial.align.to_bits(), partial.align.to_bits(), "{:?}", partial.align);
            assert_eq!(back.partial.kd.to_bits(), partial.kd.to_bits(), "{:?}", partial.kd);
            assert_eq!(back.partial.ce.to_bits(), partial.ce.to_bits(), "{:?}", partial.ce);
            assert_eq!(back, pos);
        }
    }
}
