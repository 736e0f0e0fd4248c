//! The target zoo: the small networks a user deploys. Each gives pooled features
//! `[B, d_T]`; the engine adds a projector into the proxy space and a head.

pub mod blocks;
pub mod mobilenet_v2;
pub mod resnet;
pub mod vit_tiny;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::extractor::TargetBackbone;
use super::prefix::Prefix;
use super::small_cnn::SmallCnn;
use crate::onnx::Graph;
use crate::params::Params;
use crate::{Error, Result};

/// The target architectures (`target.arch`, an exported card's `target.arch`).
// Read through `TryFrom<String>`, so a wrong name gets the key and the list, not serde's
// bare "unknown variant".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", try_from = "String")]
pub enum Arch {
    SmallCnn,
    Resnet8,
    Resnet18,
    Mobilenetv2,
    VitTiny,
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::SmallCnn, Arch::Resnet8, Arch::Resnet18, Arch::Mobilenetv2, Arch::VitTiny];

    pub fn name(self) -> &'static str {
        match self {
            Arch::SmallCnn => "small-cnn",
            Arch::Resnet8 => "resnet8",
            Arch::Resnet18 => "resnet18",
            Arch::Mobilenetv2 => "mobilenetv2",
            Arch::VitTiny => "vit-tiny",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl TryFrom<String> for Arch {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Arch, String> {
        Arch::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| {
            let all: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
            format!("`target.arch`: `{s}` is not a target architecture ({})", all.join(", "))
        })
    }
}

impl std::str::FromStr for Arch {
    type Err = Error;
    fn from_str(s: &str) -> Result<Arch> {
        Arch::try_from(s.to_string()).map_err(|msg| Error::config("target.arch", msg))
    }
}

/// Which target to build: what an exported model's sidecar records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetSpec {
    pub arch: Arch,
    /// Channel-width multiplier (ResNets, MobileNetV2; 1.0 elsewhere).
    pub width: f64,
    pub image_size: usize,
    pub in_channels: usize,
}

/// Multiply-accumulates per image of what follows a backbone of `feature_dim`
/// features: the projector into the proxy space (when there is one) and the head.
pub fn head_macs(feature_dim: usize, proxy_dim: Option<usize>, classes: usize) -> u64 {
    let projector = proxy_dim.map_or(0, |p| feature_dim * p);
    (projector + proxy_dim.unwrap_or(feature_dim) * classes) as u64
}

/// A target's feature extractor, whichever architecture it is.
pub struct Backbone(Box<dyn TargetBackbone>);

impl Backbone {
    /// Build `spec` with its parameters under `prefix` (e.g. `target.backbone.`).
    pub fn new(p: &mut Params, prefix: &str, spec: &TargetSpec) -> Result<Self> {
        let (c, side, width) = (spec.in_channels, spec.image_size, spec.width);
        let prefix = &Prefix::new(prefix);
        if !(width > 0.0 && width <= 4.0) {
            return Err(Error::config("target.width", format!("{width} must be in (0, 4]")));
        }
        Ok(Backbone(match spec.arch {
            Arch::SmallCnn => Box::new(SmallCnn::new(p, prefix, c)?.at_side(side)),
            Arch::Resnet8 => Box::new(resnet::ResNet::new(p, prefix, 8, width, c, side)?),
            Arch::Resnet18 => Box::new(resnet::ResNet::new(p, prefix, 18, width, c, side)?),
            Arch::Mobilenetv2 => Box::new(mobilenet_v2::MobileNetV2::new(p, prefix, width, c, side)?),
            Arch::VitTiny => Box::new(vit_tiny::VitTiny::new(p, prefix, c, side)?),
        }))
    }

    pub fn feature_dim(&self) -> usize {
        self.0.feature_dim()
    }

    /// The architecture, by the name `target.arch` gives it.
    pub fn variant(&self) -> &str {
        self.0.variant()
    }

    /// Multiply-accumulates per image of the backbone at the size it was built for.
    pub fn macs(&self) -> u64 {
        self.0.macs().unwrap_or(0)
    }

    /// Pooled features; `train` selects batch statistics for batch norm.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.features(x, train)
    }

    /// The evaluation-mode features as ONNX nodes after `x` `[B, C, H, W]`.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        self.0.emit_onnx(g, x)
    }
}
