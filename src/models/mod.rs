//! Foundation models (frozen, loaded from real checkpoints) and target models (trained).

pub mod efficientnet_lite;
pub mod extractor;
pub mod foundation;
pub mod inspect;
pub mod prefix;
pub mod small_cnn;
pub mod targets;
pub mod weights;

use candle_core::Tensor;

/// A foundation model's input normalisation, per RGB channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// ImageNet mean/std, used by the bundled foundation model.
pub const IMAGENET: Normalization = Normalization {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

impl Normalization {
    /// `(x - mean) / std` on `[B, 3, H, W]`, in `x`'s dtype.
    pub fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let per_channel = |v: &[f32; 3]| Tensor::new(v, x.device())?.to_dtype(x.dtype())?.reshape((1, 3, 1, 1));
        x.broadcast_sub(&per_channel(&self.mean)?)?.broadcast_div(&per_channel(&self.std)?)
    }
}
