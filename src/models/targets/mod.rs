//! The target zoo: the small networks a user deploys. Each gives pooled features
//! `[B, d_T]`; the engine adds a projector into the proxy space and a head.

pub mod blocks;
pub mod mobilenet_v2;
pub mod resnet;
pub mod vit_tiny;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

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

pub enum Backbone {
    /// With the image side it was built for (its cost depends on it).
    SmallCnn(SmallCnn, usize),
    ResNet(resnet::ResNet),
    MobileNetV2(mobilenet_v2::MobileNetV2),
    VitTiny(vit_tiny::VitTiny),
}

impl Backbone {
    /// Build `spec` with its parameters under `prefix` (e.g. `target.backbone.`).
    pub fn new(p: &mut Params, prefix: &str, spec: &TargetSpec) -> Result<Self> {
        let (c, side, width) = (spec.in_channels, spec.image_size, spec.width);
        let prefix = &Prefix::new(prefix);
        if !(width > 0.0 && width <= 4.0) {
            return Err(Error::config("target.width", format!("{width} must be in (0, 4]")));
        }
        Ok(match spec.arch {
            Arch::SmallCnn => Backbone::SmallCnn(SmallCnn::new(p, prefix, c)?, side),
            Arch::Resnet8 => Backbone::ResNet(resnet::ResNet::new(p, prefix, 8, width, c, side)?),
            Arch::Resnet18 => Backbone::ResNet(resnet::ResNet::new(p, prefix, 18, width, c, side)?),
            Arch::Mobilenetv2 => Backbone::MobileNetV2(mobilenet_v2::MobileNetV2::new(p, prefix, width, c, side)?),
            Arch::VitTiny => Backbone::VitTiny(vit_tiny::VitTiny::new(p, prefix, c, side)?),
        })
    }

    pub fn feature_dim(&self) -> usize {
        match self {
            Backbone::SmallCnn(m, _) => m.feature_dim(),
            Backbone::ResNet(m) => m.feature_dim(),
            Backbone::MobileNetV2(m) => m.feature_dim(),
            Backbone::VitTiny(m) => m.feature_dim(),
        }
    }

    /// Multiply-accumulates per image of the backbone at the size it was built for.
    pub fn macs(&self) -> u64 {
        match self {
            Backbone::SmallCnn(m, side) => m.macs_at(*side),
            Backbone::ResNet(m) => m.macs.0,
            Backbone::MobileNetV2(m) => m.macs.0,
            Backbone::VitTiny(m) => m.macs.0,
        }
    }

    /// Pooled features; `train` selects batch statistics for batch norm.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Backbone::SmallCnn(m, _) => m.features(x, train),
            Backbone::ResNet(m) => m.features(x, train),
            Backbone::MobileNetV2(m) => m.features(x, train),
            Backbone::VitTiny(m) => m.features(x, train),
        }
    }

    /// The evaluation-mode features as ONNX nodes after `x` `[B, C, H, W]`.
    pub fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
        match self {
            Backbone::SmallCnn(m, _) => m.emit_onnx(g, x),
            Backbone::ResNet(m) => m.emit_onnx(g, x),
            Backbone::MobileNetV2(m) => m.emit_onnx(g, x),
            Backbone::VitTiny(m) => m.emit_onnx(g, x),
        }
    }
}
