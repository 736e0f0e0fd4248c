//! Every foundation family behind one type: detected from the checkpoint's key names
//! (or named by `foundation.family`), loaded strictly by its own names, frozen, giving
//! pooled features `[B, d_F]` whose gradient reaches the input image.

pub mod convnext;
pub mod layers;
pub mod resnet;
pub mod vit;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};

use super::efficientnet_lite::EfficientNetLite;
use super::extractor::FeatureExtractor;
use super::weights::StrictWeights;
use super::{Normalization, IMAGENET};
use crate::{Error, Result};

/// `foundation.family`: a checkpoint layout, or `auto` to detect it from the key names.
// Read through `TryFrom<String>`, so a wrong name gets the key and the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum Family {
    Auto,
    EfficientnetLite,
    Resnet,
    Convnext,
    Vit,
    VitHybrid,
    Dinov2,
    Clip,
}

impl Family {
    /// Every layout (all but `auto`).
    pub const KNOWN: [Family; 7] = [
        Family::EfficientnetLite,
        Family::Resnet,
        Family::Convnext,
        Family::Vit,
        Family::VitHybrid,
        Family::Dinov2,
        Family::Clip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Auto => "auto",
            Family::EfficientnetLite => "efficientnet-lite",
            Family::Resnet => "resnet",
            Family::Convnext => "convnext",
            Family::Vit => "vit",
            Family::VitHybrid => "vit-hybrid",
            Family::Dinov2 => "dinov2",
            Family::Clip => "clip",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Family {
    type Err = Error;
    fn from_str(s: &str) -> Result<Family> {
        Family::try_from(s.to_string()).map_err(|msg| Error::config("foundation.family", msg))
    }
}

impl TryFrom<String> for Family {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Family, String> {
        std::iter::once(Family::Auto)
            .chain(Family::KNOWN)
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = Family::KNOWN.iter().map(|f| f.name()).collect();
                format!("`foundation.family`: `{s}` is not a family (auto, {})", all.join(", "))
            })
    }
}

/// A family's fingerprint: keys that must all be there (any of the alternatives).
struct Fingerprint {
    family: Family,
    required: &'static [&'static [&'static str]],
}

/// Order matters: more specific layouts first (a hybrid is also a timm ViT).
const FINGERPRINTS: &[Fingerprint] = &[
    Fingerprint {
        family: Family::EfficientnetLite,
        required: &[
            &["_conv_stem.weight"],
            &["_blocks.0._depthwise_conv.weight"],
            &["_conv_head.weight"],
        ],
    },
    Fingerprint {
        family: Family::Resnet,
        required: &[
            &["conv1.weight"],
            &["bn1.running_mean"],
            &["layer1.0.conv1.weight"],
            &["layer4.0.conv1.weight"],
        ],
    },
    Fingerprint {
        family: Family::Convnext,
        required: &[&["stem.0.weight"], &["stages.0.blocks.0.conv_dw.weight"], &["head.norm.weight"]],
    },
    Fingerprint {
        family: Family::Convnext,
        required: &[
            &["convnext.embeddings.patch_embeddings.weight", "embeddings.patch_embeddings.weight"],
            &[
                "convnext.encoder.stages.0.layers.0.dwconv.weight",
                "encoder.stages.0.layers.0.dwconv.weight",
            ],
        ],
    },
    Fingerprint {
        family: Family::VitHybrid,
        required: &[
            &["patch_embed.backbone.conv.weight", "patch_embed.backbone.stem.conv.weight"],
            &["cls_token"],
            &["blocks.0.attn.qkv.weight"],
        ],
    },
    Fingerprint {
        family: Family::Vit,
        required: &[
            &["cls_token"],
            &["pos_embed"],
            &["patch_embed.proj.weight"],
            &["blocks.0.attn.qkv.weight"],
        ],
    },
    Fingerprint {
        family: Family::Dinov2,
        required: &[
            &["embeddings.mask_token", "dinov2.embeddings.mask_token"],
            &[
                "encoder.layer.0.layer_scale1.lambda1",
                "dinov2.encoder.layer.0.layer_scale1.lambda1",
            ],
        ],
    },
    Fingerprint {
        family: Family::Vit,
        required: &[
            &[
                "vit.embeddings.patch_embeddings.projection.weight",
                "embeddings.patch_embeddings.projection.weight",
            ],
            &[
                "vit.encoder.layer.0.layernorm_before.weight",
                "encoder.layer.0.layernorm_before.weight",
                "vit.layers.0.layernorm_before.weight",
                "layers.0.layernorm_before.weight",
            ],
        ],
    },
    Fingerprint {
        family: Family::Clip,
        required: &[
            &["vision_model.embeddings.class_embedding"],
            &["vision_model.encoder.layers.0.self_attn.q_proj.weight"],
        ],
    },
];

/// The family whose fingerprint the keys match, or an error listing the families
/// tried, what each missed, and the file's first keys.
pub fn detect_family(path: &Path, keys: &BTreeMap<String, Vec<usize>>) -> Result<Family> {
    let mut tried = Vec::new();
    for f in FINGERPRINTS {
        let missing: Vec<String> = f
            .required
            .iter()
            .filter(|alts| !alts.iter().any(|k| keys.contains_key(*k)))
            .map(|alts| alts.join(" or "))
            .collect();
        if missing.is_empty() {
            return Ok(f.family);
        }
        tried.push(format!("{} (missing {})", f.family, missing.join(", ")));
    }
    tried.dedup();
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

enum Net {
    Lite(EfficientNetLite),
    ResNet(resnet::ResNet),
    ConvNext(convnext::ConvNext),
    Vit(vit::Vit),
}

pub struct Foundation {
    net: Net,
    /// Never `Auto`: the detected or named layout.
    family: Family,
    params: usize,
    forwards: AtomicUsize,
}

impl Foundation {
    /// Load `path` as `family` (`auto`: detected from the key names).
    pub fn load(path: &Path, family: Family, device: &Device) -> Result<Self> {
        Self::load_as(path, family, device, DType::F32)
    }

    /// [`Self::load`] with the weights in `dtype` (f64 for finite-difference checks;
    /// EfficientNet-Lite always loads in f32).
    pub fn load_as(path: &Path, family: Family, device: &Device, dtype: DType) -> Result<Self> {
        // The header decides the family before any tensor is read.
        let keys: BTreeMap<String, Vec<usize>> = super::inspect::read_entries(path)?.into_iter().map(|t| (t.name, t.shape)).collect();
        let family = match family {
            Family::Auto => detect_family(path, &keys)?,
            named => named,
        };
        if family == Family::EfficientnetLite {
            let m = EfficientNetLite::load(path, device)?;
            return Ok(Foundation {
                params: m.param_count(),
                net: Net::Lite(m),
                family,
                forwards: AtomicUsize::new(0),
            });
        }
        let mut w = StrictWeights::open(path, device)?.with_dtype(dtype);
        let params = w.float_elements();
        let net = match family {
            Family::Resnet => Net::ResNet(resnet::ResNet::load(&mut w)?),
            Family::Convnext => Net::ConvNext(convnext::ConvNext::load(&mut w)?),
            Family::Vit | Family::VitHybrid | Family::Dinov2 | Family::Clip => {
                let layout = match family {
                    Family::VitHybrid => vit::Layout::TimmHybrid,
                    Family::Dinov2 => vit::Layout::Dinov2,
                    Family::Clip => vit::Layout::Clip,
                    _ if keys.contains_key("cls_token") => vit::Layout::Timm,
                    _ => vit::Layout::HfVit,
                };
                Net::Vit(vit::Vit::load(&mut w, layout)?)
            }
            Family::Auto | Family::EfficientnetLite => unreachable!("resolved and loaded above"),
        };
        w.finish()?;
        Ok(Foundation {
            net,
            family,
            params,
            forwards: AtomicUsize::new(0),
        })
    }

    pub fn family(&self) -> &'static str {
        self.family.name()
    }

    fn net(&self) -> &dyn FeatureExtractor {
        match &self.net {
            Net::Lite(m) => m,
            Net::ResNet(m) => m,
            Net::ConvNext(m) => m,
            Net::Vit(m) => m,
        }
    }

    pub fn variant(&self) -> &str {
        self.net().variant()
    }

    /// Floating-point values in the checkpoint (parameters and statistics).
    pub fn param_count(&self) -> usize {
        match &self.net {
            Net::Lite(m) => m.param_count(),
            _ => self.params,
        }
    }

    pub fn feature_dim(&self) -> usize {
        self.net().feature_dim()
    }

    /// The input normalisation the checkpoint was trained with.
    pub fn normalization(&self) -> Normalization {
        match &self.net {
            Net::Vit(m) => m.normalization,
            _ => IMAGENET,
        }
    }

    /// The resolution the checkpoint was trained at (tdmr reprograms at any size).
    pub fn native_input(&self) -> usize {
        match &self.net {
            Net::Vit(m) => m.native_input,
            _ => 224,
        }
    }

    /// How many batches went through [`Self::features`]: stage 2 must not add to it.
    pub fn forward_calls(&self) -> usize {
        match &self.net {
            Net::Lite(m) => m.forward_calls(),
            _ => self.forwards.load(Ordering::Relaxed),
        }
    }

    /// Pooled features `[B, d_F]` of a normalised `[B, 3, H, W]` input.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        // EfficientNet-Lite counts its own forwards (it is also used on its own).
        if !matches!(self.net, Net::Lite(_)) {
            self.forwards.fetch_add(1, Ordering::Relaxed);
        }
        self.net().features(x, false)
    }

    /// The EfficientNet-Lite network, for what only it offers (its classifier, bf16).
    pub fn as_efficientnet_lite(&self) -> Option<&EfficientNetLite> {
        match &self.net {
            Net::Lite(m) => Some(m),
            _ => None,
        }
    }

    /// bf16 foundation compute (CUDA): EfficientNet-Lite only so far.
    pub fn to_dtype(self, dtype: DType) -> Result<Self> {
        match &self.net {
            Net::Lite(m) => Ok(Foundation {
                net: Net::Lite(m.to_dtype(dtype)?),
                ..self
            }),
            _ if dtype == DType::F32 => Ok(self),
            _ => Err(Error::config(
                "precision",
                format!("bf16 is implemented for efficientnet-lite only; {} runs in f32", self.family),
            )),
        }
    }
}
