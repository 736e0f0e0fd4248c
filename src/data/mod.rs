//! Datasets, the fixed k-shot split, augmentation views and model inputs.

pub mod digits;
pub mod image_file;
pub mod views;

pub use digits::{Digits, Split};
pub use views::ViewSet;

use candle_core::Tensor;

/// Rows `rows` (dataset indices) of `t` along its first dimension.
pub fn select_rows(t: &Tensor, rows: &[usize]) -> crate::Result<Tensor> {
    let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), t.device())?;
    Ok(t.index_select(&idx, 0)?)
}
