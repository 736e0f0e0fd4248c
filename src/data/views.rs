//! Augmentation views: each training image gets `n` fixed views (view 0 is the image
//! itself, the others random ±1-pixel shifts of the 8×8 source), drawn once from the
//! seed. Fixed views let the frozen teacher's outputs be cached once per view.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::digits::{Digits, PIXELS, SIDE};
use crate::ops::resize_bilinear;
use crate::Result;

pub struct ViewSet {
    /// `[N, 1, 8, 8]` in [0, 1], ordered image-major: image i, view v is row `i * views + v`.
    pub images: Tensor,
    pub labels: Vec<u32>,
    pub views: usize,
}

fn shifted(img: &[f32; PIXELS], dy: isize, dx: isize) -> [f32; PIXELS] {
    let mut out = [0f32; PIXELS];
    for y in 0..SIDE as isize {
        for x in 0..SIDE as isize {
            let (sy, sx) = (y - dy, x - dx);
            if (0..SIDE as isize).contains(&sy) && (0..SIDE as isize).contains(&sx) {
                out[(y * SIDE as isize + x) as usize] = img[(sy * SIDE as isize + sx) as usize];
            }
        }
    }
    out
}

impl ViewSet {
    pub fn new(data: &Digits, indices: &[usize], views: usize, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_u64);
        let views = views.max(1);
        let mut pixels = Vec::with_capacity(indices.len() * views * PIXELS);
        let mut labels = Vec::with_capacity(indices.len() * views);
        for &i in indices {
            for v in 0..views {
                let (dy, dx) = if v == 0 {
                    (0, 0)
                } else {
                    (rng.random_range(-1i32..=1) as isize, rng.random_range(-1i32..=1) as isize)
                };
                pixels.extend_from_slice(&shifted(&data.images[i], dy, dx));
                labels.push(data.labels[i]);
            }
        }
        let n = labels.len();
        Ok(ViewSet {
            images: Tensor::from_vec(pixels, (n, 1, SIDE, SIDE), device)?,
            labels,
            views,
        })
    }

    /// The un-augmented images only (views = 1), e.g. for the test set.
    pub fn plain(data: &Digits, indices: &[usize], device: &Device) -> Result<Self> {
        Self::new(data, indices, 1, 0, device)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn label_tensor(&self, rows: &[usize]) -> Result<Tensor> {
        let y: Vec<u32> = rows.iter().map(|&r| self.labels[r]).collect();
        Ok(Tensor::new(y, self.images.device())?)
    }

    /// Rows `rows` as RGB images of side `size` (bilinear resize, channel repeated).
    pub fn batch(&self, rows: &[usize], size: usize) -> Result<Tensor> {
        let x = super::select_rows(&self.images, rows)?;
        let x = resize_bilinear(&x, size, size)?;
        Ok(x.repeat((1, 3, 1, 1))?)
    }
}
