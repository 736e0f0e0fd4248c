//! `tdmr inspect`: what a weight file holds and which foundation family it is, read
//! from the safetensors header of a memory-mapped file (only the header's pages are
//! touched, never the whole file).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::prefix::Prefix;
use super::IMAGENET;
use crate::models::foundation::Family;
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

fn efficientnet_lite(keys: &BTreeMap<String, Vec<usize>>) -> Option<Detected> {
    let blocks = max_index(keys, "_blocks.")?;
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

/// Number of `{prefix}{i}.` groups.
fn max_index(keys: &BTreeMap<String, Vec<usize>>, prefix: &str) -> Option<usize> {
    Some(super::weights::count_indexed(keys.keys(), prefix)).filter(|&n| n > 0)
}

fn first_dim(keys: &BTreeMap<String, Vec<usize>>, key: &str) -> Option<usize> {
    keys.get(key)?.first().copied()
}

fn resnet(keys: &BTreeMap<String, Vec<usize>>) -> Option<Detected> {
    let bottleneck = keys.contains_key("layer1.0.conv3.weight");
    let depths: Vec<usize> = (1..=4).map(|l| max_index(keys, &format!("layer{l}."))).collect::<Option<_>>()?;
    let last = format!("layer4.{}.conv{}.weight", depths[3] - 1, if bottleneck { 3 } else { 2 });
    Some(Detected {
        family: "resnet".into(),
        variant: format!("resnet{}", depths.iter().sum::<usize>() * if bottleneck { 3 } else { 2 } + 2),
        native_input: 224,
        mean: IMAGENET.mean,
        std: IMAGENET.std,
        feature_dim: first_dim(keys, &last)?,
        classes: first_dim(keys, "fc.weight").unwrap_or(0),
    })
}

fn convnext(keys: &BTreeMap<String, Vec<usize>>) -> Option<Detected> {
    // timm or Hugging Face (with or without the `convnext.` prefix) key names.
    let hf = [Prefix::new("convnext"), Prefix::root()]
        .into_iter()
        .find(|p| keys.contains_key(&p.key("embeddings.patch_embeddings.weight")));
    let (stem, stage2, norm, fc) = match hf {
        Some(p) => (
            p.key("embeddings.patch_embeddings.weight"),
            p.pp("encoder.stages.2.layers").dotted(),
            p.key("layernorm.weight"),
            "classifier.weight".to_string(),
        ),
        None => (
            "stem.0.weight".into(),
            "stages.2.blocks.".into(),
            "head.norm.weight".into(),
            "head.fc.weight".into(),
        ),
    };
    let size = crate::models::foundation::convnext::size_name(first_dim(keys, &stem)?, max_index(keys, &stage2)?);
    Some(Detected {
        family: "convnext".into(),
        variant: format!("convnext-{size}"),
        native_input: 224,
        mean: IMAGENET.mean,
        std: IMAGENET.std,
        feature_dim: first_dim(keys, &norm)?,
        classes: first_dim(keys, &fc).unwrap_or(0),
    })
}

/// Any of the transformer layouts: width and patch from the patch embedding, the
/// native size from the position-embedding grid.
fn transformer(family: &str, keys: &BTreeMap<String, Vec<usize>>) -> Option<Detected> {
    let find = |cands: &[&str]| cands.iter().find_map(|k| keys.get(*k).cloned());
    let patch = find(&[
        "patch_embed.proj.weight",
        "vit.embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.weight",
        "dinov2.embeddings.patch_embeddings.projection.weight",
        "vision_model.embeddings.patch_embedding.weight",
    ])?;
    let pos = find(&[
        "pos_embed",
        "vit.embeddings.position_embeddings",
        "embeddings.position_embeddings",
        "dinov2.embeddings.position_embeddings",
        "vision_model.embeddings.position_embedding.weight",
    ])?;
    let tokens = if pos.len() == 3 { *pos.get(1)? } else { *pos.first()? };
    let grid = ((tokens.saturating_sub(1)) as f64).sqrt().round() as usize;
    let (dim, p) = (*patch.first()?, *patch.get(2)?);
    let stem = if family == "vit-hybrid" { 4 } else { 1 };
    let norm = match family {
        "dinov2" => IMAGENET,
        "clip" => crate::models::foundation::vit::CLIP_NORM,
        _ => crate::models::foundation::vit::HALF_NORM,
    };
    let classes = ["head.weight", "classifier.weight"]
        .iter()
        .find_map(|k| first_dim(keys, k))
        .unwrap_or(0);
    Some(Detected {
        family: family.into(),
        variant: format!("{family} d{dim} patch{p}"),
        native_input: grid * p * stem,
        mean: norm.mean,
        std: norm.std,
        feature_dim: dim,
        classes,
    })
}

/// The family and variant from key names and shapes, or an error that lists the
/// families tried, what each missed, and the file's first keys.
pub fn detect(path: &Path, keys: &BTreeMap<String, Vec<usize>>) -> Result<Detected> {
    let family = crate::models::foundation::detect_family(path, keys)?;
    let described = match family {
        Family::EfficientnetLite => efficientnet_lite(keys),
        Family::Resnet => resnet(keys),
        Family::Convnext => convnext(keys),
        other => transformer(other.name(), keys),
    };
    described.ok_or_else(|| Error::File {
        path: path.into(),
        msg: format!("has the {family} key names but not the shapes of one"),
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

/// The tensors a checkpoint declares, from its header only (`.safetensors`
/// memory-mapped, or a PyTorch pickle's program).
pub fn read_entries(path: &Path) -> Result<Vec<TensorEntry>> {
    if super::weights::is_pickle(path) {
        return pickle_entries(path);
    }
    if super::weights::is_shard_index(path) {
        let index = super::weights::shard_index(path)?;
        let mut all = Vec::new();
        for shard in &index.shards {
            all.extend(read_entries(shard)?);
        }
        return Ok(all);
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only mapping of a file we do not write; a file changed underneath
    // would give wrong numbers in a report, not memory unsafety in safe code we call.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    safetensors_entries(&map).map_err(|e| Error::File {
        path: path.into(),
        msg: format!("not a readable safetensors file (truncated or corrupt?): {e}"),
    })
}

/// Read a checkpoint's header and detect its family.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let mut file_bytes = 0;
    for f in &super::weights::files_of(path)? {
        file_bytes += std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len();
    }
    let mut tensors = read_entries(path)?;
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
             features    {} (pooled, {})\n\
             dtypes      {}\n\
             keys        {}\n",
            self.path.display(),
            self.file_bytes as f64 / (1024.0 * 1024.0),
            if super::weights::is_pickle(&self.path) {
                "PyTorch pickle"
            } else if super::weights::is_shard_index(&self.path) {
                "sharded safetensors"
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
            match d.classes {
                0 => "the file has no classifier".to_string(),
                n => format!("before the {n}-way classifier"),
            },
            dtypes.join(", "),
            key_summary(&self.tensors).join(", ")
        )
    }
}
