//! What every network that turns images into pooled features offers, frozen foundation
//! or trained target: the features, their width, the cost, and what the network is.
//! `Foundation` and `Backbone` dispatch through this once instead of matching on the
//! concrete network in every method.

use candle_core::Tensor;

use super::efficientnet_lite::EfficientNetLite;
use super::foundation::{convnext::ConvNext, resnet::ResNet, vit::Vit};
use super::small_cnn::SmallCnn;
use super::targets::{mobilenet_v2::MobileNetV2, resnet::ResNet as TargetResNet, vit_tiny::VitTiny};
use crate::onnx::Graph;
use crate::Result;

pub trait FeatureExtractor: Send + Sync {
    /// Pooled features `[B, feature_dim]` of a `[B, C, H, W]` input. `train` selects
    /// batch statistics for batch norm; a frozen foundation ignores it.
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    fn feature_dim(&self) -> usize;

    /// Multiply-accumulates per image at the input size the network was built for;
    /// `None` where the network does not count them (the foundations, so far).
    fn macs(&self) -> Option<u64>;

    /// What the network is, as a model card or `inspect` names it (`resnet50`,
    /// `vit-base-patch16-224`, `resnet8`).
    fn variant(&self) -> &str;
}

/// A trained target backbone: a feature extractor that also exports to ONNX.
pub trait TargetBackbone: FeatureExtractor {
    /// The evaluation-mode features as ONNX nodes after `x` `[B, C, H, W]`.
    fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String>;
}

impl FeatureExtractor for EfficientNetLite {
    fn features(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        EfficientNetLite::features(self, x)
    }
    fn feature_dim(&self) -> usize {
        EfficientNetLite::feature_dim(self)
    }
    fn macs(&self) -> Option<u64> {
        None
    }
    fn variant(&self) -> &str {
        EfficientNetLite::variant(self)
    }
}

/// A frozen foundation: its own `features(x)`, its width and name from its fields.
macro_rules! frozen {
    ($net:ty, $width:ident) => {
        impl FeatureExtractor for $net {
            fn features(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
                <$net>::features(self, x)
            }
            fn feature_dim(&self) -> usize {
                self.$width
            }
            fn macs(&self) -> Option<u64> {
                None
            }
            fn variant(&self) -> &str {
                &self.variant
            }
        }
    };
}

frozen!(ResNet, feature_dim);
frozen!(ConvNext, feature_dim);
frozen!(Vit, dim);

impl FeatureExtractor for SmallCnn {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        SmallCnn::features(self, x, train)
    }
    fn feature_dim(&self) -> usize {
        SmallCnn::feature_dim(self)
    }
    fn macs(&self) -> Option<u64> {
        self.side().map(|side| self.macs_at(side))
    }
    fn variant(&self) -> &str {
        "small-cnn"
    }
}

impl FeatureExtractor for TargetResNet {
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        TargetResNet::features(self, x, train)
    }
    fn feature_dim(&self) -> usize {
        TargetResNet::feature_dim(self)
    }
    fn macs(&self) -> Option<u64> {
        Some(self.macs.0)
    }
    fn variant(&self) -> &str {
        self.variant()
    }
}

/// A trained target counted as it was built: its own `features` and `feature_dim`, the
/// MACs it summed, and its architecture's name.
macro_rules! trained {
    ($net:ty, $name:literal) => {
        impl FeatureExtractor for $net {
            fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
                <$net>::features(self, x, train)
            }
            fn feature_dim(&self) -> usize {
                <$net>::feature_dim(self)
            }
            fn macs(&self) -> Option<u64> {
                Some(self.macs.0)
            }
            fn variant(&self) -> &str {
                $name
            }
        }
    };
}

trained!(MobileNetV2, "mobilenetv2");
trained!(VitTiny, "vit-tiny");

macro_rules! exported {
    ($($net:ty),*) => {
        $(impl TargetBackbone for $net {
            fn emit_onnx(&self, g: &mut Graph, x: &str) -> Result<String> {
                <$net>::emit_onnx(self, g, x)
            }
        })*
    };
}

exported!(SmallCnn, TargetResNet, MobileNetV2, VitTiny);
