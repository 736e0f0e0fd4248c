//! Datasets, the fixed k-shot split, augmentation views and model inputs.

pub mod digits;
pub mod views;

pub use digits::{Digits, Split};
pub use views::ViewSet;
