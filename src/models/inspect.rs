//! `tdmr inspect`: what a weight file holds and which foundation family it is, read
//! from the safetensors header of a memory-mapped file (only the header's pages are
//! touched, never the whole file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::IMAGENET;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Detected {
    pub family: String,
    pub variant: String,
    /// The resolution the checkpoint was trained at (tdmr reprograms at any size).
    pub native_input: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub feature_dim: usize,
    pub classes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub tensors: Vec<TensorEntry>,
    pub parameters: usize,
    pub dtypes: BTreeMap<String, usize>,
    pub detected: Detected,
}

/// A family's fingerprint: keys that must be there, and how to read the variant.
struct Family {
    name: &'static str,
    required: &'static [&'static str],
    describe: fn(&BTreeMap<String, Vec<usize>>) -> Option<Detected>,
}

fn efficientnet_lite(keys: &BTreeMap<String, Vec<usize>>) -> Option<Detected> {
    let blocks = keys
        .keys()
        .filter_map(|k| k.strip_prefix("_blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()?
        + 1;
    // The five published EfficientNet-Lite models differ in depth and resolution.
    let (variant, input) = match blocks {
        16 => ("efficientnet-lite0", 224),
        20 => ("efficientnet-lite1", 240),
        23 => ("efficientnet-lite2", 260),
        26 => ("efficientnet-lite3", 280),
        32 => ("efficientnet-lite4", 300),
        _ => ("efficientnet-lite", 224),
    };
    Some(Detected {
        family: "efficientnet-lite".into(),
        variant: variant.into(),
        native_input: input,
        mean: IMAGENET.mean,
        std: IMAGENET.std,
        feature_dim: *keys.get("_conv_head.weight")?.first()?,
        classes: *keys.get("_fc.weight")?.first()?,
    })
}

const FAMILIES: &[Family] = &[Family {
    name: "efficientnet-lite",
    required: &[
        "_conv_stem.weight",
        "_bn0.weight",
        "_blocks.0._depthwise_conv.weight",
        "_conv_head.weight",
        "_fc.weight",
    ],
    describe: efficientnet_lite,
}];

/// The family and variant from key names and shapes, or an error that lists the
/// families tried, what each missed, and the file's first keys.
pub fn detect(path: &Path, keys: &BTreeMap<String, Vec<usize>>) -> Result<Detected> {
    let mut tried = Vec::new();
    for f in FAMILIES {
        let missing: Vec<&str> = f.required.iter().copied().filter(|k| !keys.contains_key(*k)).collect();
        if missing.is_empty() {
            if let Some(d) = (f.describe)(keys) {
                return Ok(d);
            }
        }
        tried.push(format!("{} (missing {})", f.name, missing.join(", ")));
    }
    let first: Vec<String> = keys.keys().take(8).cloned().collect();
    Err(Error::File {
        path: path.into(),
        msg: format!(
            "no known foundation layout. Tried: {}. The file's first keys ({} in all): {}",
            tried.join("; "),
            keys.len(),
            first.join(", ")
        ),
    })
}

/// The tensors a safetensors header declares (name, dtype, shape), checked against
/// the bytes that follow it.
pub fn safetensors_entries(bytes: &[u8]) -> std::result::Result<Vec<TensorEntry>, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    Ok(meta
        .tensors()
        .into_iter()
        .map(|(name, info)| TensorEntry {
            name,
            dtype: format!("{:?}", info.dtype).to_uppercase(),
            shape: info.shape.clone(),
        })
        .collect())
}

/// The tensors a PyTorch checkpoint's pickle declares (the data is not read).
pub fn pickle_entries(path: &Path) -> Result<Vec<TensorEntry>> {
    let infos = super::weights::guarded(path, || candle_core::pickle::read_pth_tensor_info(path, false, None))?;
    Ok(infos
        .into_iter()
        .map(|i| TensorEntry {
            name: i.name,
            dtype: format!("{:?}", i.dtype).to_uppercase(),
            shape: i.layout.dims().to_vec(),
        })
        .collect())
}

/// Read a checkpoint's header (`.safetensors` memory-mapped, or a PyTorch pickle) and
/// detect its family.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut tensors = if super::weights::is_pickle(path) {
        pickle_entries(path)?
    } else {
        // SAFETY: read-only mapping of a file we do not write; a file changed underneath
        // would give wrong numbers in a report, not memory unsafety in safe code we call.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        safetensors_entries(&map).map_err(|e| Error::File {
            path: path.into(),
            msg: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
        })?
    };
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    let mut dtypes = BTreeMap::new();
    let mut parameters = 0usize;
    for t in &tensors {
        *dtypes.entry(t.dtype.clone()).or_insert(0) += 1;
        if matches!(t.dtype.as_str(), "F32" | "F16" | "BF16" | "F64") {
            // A pickle's shapes are not checked against its data: never overflow.
            let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
            parameters = parameters.saturating_add(n);
        }
    }
    let keys: BTreeMap<String, Vec<usize>> = tensors.iter().map(|t| (t.name.clone(), t.shape.clone())).collect();
    let detected = detect(path, &keys)?;
    Ok(Inspection {
        path: path.into(),
        file_bytes,
        tensors,
        parameters,
        dtypes,
        detected,
    })
}

/// `_blocks.0-15.* (240)`: tensors grouped by their first name component, numbered
/// second components collapsed into a range.
pub fn key_summary(tensors: &[TensorEntry]) -> Vec<String> {
    // Per group: tensor count and the range of numbered second components.
    type Group = (usize, Option<(usize, usize)>);
    let mut groups: BTreeMap<&str, Group> = BTreeMap::new();
    for t in tensors {
        let mut parts = t.name.splitn(3, '.');
        let head = parts.next().unwrap_or("");
        let index = parts.next().and_then(|p| p.parse::<usize>().ok());
        let g = groups.entry(head).or_insert((0, None));
        g.0 += 1;
        if let Some(i) = index {
            g.1 = Some(g.1.map_or((i, i), |(lo, hi)| (lo.min(i), hi.max(i))));
        }
    }
    groups
        .into_iter()
        .map(|(head, (n, range))| match range {
            Some((lo, hi)) => format!("{head}.{lo}-{hi}.* ({n})"),
            None => format!("{head}.* ({n})"),
        })
        .collect()
}

impl Inspection {
    pub fn report(&self) -> String {
        let d = &self.detected;
        let dtypes: Vec<String> = self.dtypes.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        let f3 = |v: [f32; 3]| format!("[{:.3}, {:.3}, {:.3}]", v[0], v[1], v[2]);
        format!(
            "file        {} ({:.1} MiB, {})\n\
             family      {} (detected from key names) · variant {}\n\
             parameters  {:.2}M floating-point values in {} tensors\n\
             input       {}² native (tdmr reprograms at any size ≥ 32) · normalisation mean {} std {}\n\
             features    {} (pooled, before the {}-way classifier)\n\
             dtypes      {}\n\
             keys        {}\n",
            self.path.display(),
            self.file_bytes as f64 / (1024.0 * 1024.0),
            if super::weights::is_pickle(&self.path) {
                "PyTorch pickle"
            } else {
                "safetensors"
            },
            d.family,
            d.variant,
            self.parameters as f64 / 1e6,
            self.tensors.len(),
            d.native_input,
            f3(d.mean),
            f3(d.std),
            d.feature_dim,
            d.classes,
            dtypes.join(", "),
            key_summary(&self.tensors).join(", ")
        )
    }
}
