//! The frozen teacher's outputs, computed once per training image and view. Stage 2
//! reads only this cache: it holds no reference to the foundation model at all.

use candle_core::Tensor;

use crate::data::select_rows;
use crate::Result;

pub struct TeacherCache {
    /// Proxy embeddings `z_F`, `[rows, P]` (empty `[rows, 0]` for a probe-only teacher).
    pub z: Tensor,
    /// Teacher logits `h(z_F)`, `[rows, C]`.
    pub logits: Tensor,
}

impl TeacherCache {
    /// Build by running `f` over `rows` in batches of `batch`; `f` returns `(z, logits)`.
    pub fn build(rows: usize, batch: usize, mut f: impl FnMut(&[usize]) -> Result<(Tensor, Tensor)>) -> Result<Self> {
        let (mut zs, mut ls) = (Vec::new(), Vec::new());
        let all: Vec<usize> = (0..rows).collect();
        for chunk in all.chunks(batch.max(1)) {
            let (z, l) = f(chunk)?;
            zs.push(z.detach());
            ls.push(l.detach());
        }
        Ok(TeacherCache {
            z: Tensor::cat(&zs, 0)?,
            logits: Tensor::cat(&ls, 0)?,
        })
    }

    pub fn select(&self, rows: &[usize]) -> Result<(Tensor, Tensor)> {
        Ok((select_rows(&self.z, rows)?, select_rows(&self.logits, rows)?))
    }

    pub fn bytes(&self) -> usize {
        (self.z.elem_count() + self.logits.elem_count()) * 4
    }
}
