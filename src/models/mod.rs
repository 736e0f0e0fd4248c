//! Foundation models (frozen, loaded from real checkpoints) and target models (trained).

pub mod efficientnet_lite;
pub mod small_cnn;
pub mod weights;

/// ImageNet normalisation used by the bundled foundation model.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
