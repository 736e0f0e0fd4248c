//! Augmentation views: each training image gets `n` fixed views (view 0 is the image
//! itself), drawn once from the seed. Fixed views let the frozen teacher's outputs be
//! cached once per view, so stage 2 needs no foundation forward at all.
//!
//! Digits views are ±1-pixel shifts of the 8×8 source, materialised as one tensor.
//! ImageFolder views are random-resized crops (and optional flips) described by their
//! crop box and rendered per batch from the decoded images, so memory holds each image
//! once, not once per view.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::digits::{Digits, PIXELS, SIDE};
use super::image_folder::{random_resized_crop, render_batch, ImageFolder, View};
use crate::ops::resize_bilinear;
use crate::Result;

/// The label of a view whose image is in the unlabelled transfer set.
pub const UNLABELED: u32 = u32::MAX;

/// Training augmentation for ImageFolder views.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Area fraction of a random-resized crop.
    pub scale: [f64; 2],
    /// Aspect-ratio range of a random-resized crop.
    pub ratio: [f64; 2],
    /// Flip half of the augmented views horizontally.
    pub flip: bool,
}

struct Prefetch {
    rows: Vec<usize>,
    side: usize,
    job: JoinHandle<Result<Vec<f32>>>,
}

enum Pixels {
    /// `[N, C, h, w]` in [0, 1], one row per view.
    Tensor(Tensor),
    Folder {
        store: Arc<ImageFolder>,
        views: Arc<Vec<View>>,
        pool: Arc<rayon::ThreadPool>,
        next: Mutex<Option<Prefetch>>,
    },
}

pub struct ViewSet {
    pixels: Pixels,
    device: Device,
    /// One label per row; rows are image-major: image i, view v is row `i * views + v`.
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
            pixels: Pixels::Tensor(Tensor::from_vec(pixels, (n, 1, SIDE, SIDE), device)?),
            device: device.clone(),
            labels,
            views,
        })
    }

    /// The un-augmented images only (views = 1), e.g. for the test set.
    pub fn plain(data: &Digits, indices: &[usize], device: &Device) -> Result<Self> {
        Self::new(data, indices, 1, 0, device)
    }

    /// Views of ImageFolder images `indices`: view 0 the whole image, the others drawn
    /// from `seed` with `augment`.
    pub fn folder(
        store: &Arc<ImageFolder>,
        indices: &[usize],
        views: usize,
        augment: Augment,
        seed: u64,
        pool: &Arc<rayon::ThreadPool>,
        device: &Device,
    ) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_u64);
        let views = views.max(1);
        let mut list = Vec::with_capacity(indices.len() * views);
        let mut labels = Vec::with_capacity(indices.len() * views);
        for &i in indices {
            let (w, h) = store.dims(i);
            for v in 0..views {
                list.push(if v == 0 {
                    View::whole(i)
                } else {
                    View {
                        image: i,
                        crop: random_resized_crop(&mut rng, w as usize, h as usize, augment.scale, augment.ratio),
                        flip: augment.flip && rng.random_bool(0.5),
                    }
                });
                labels.push(store.label(i));
            }
        }
        Ok(ViewSet {
            pixels: Pixels::Folder {
                store: store.clone(),
                views: Arc::new(list),
                pool: pool.clone(),
                next: Mutex::new(None),
            },
            device: device.clone(),
            labels,
            views,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Mark the views of images `first..` as unlabelled (the transfer set's part).
    pub fn hide_labels_from(&mut self, first: usize) {
        let from = (first * self.views).min(self.labels.len());
        self.labels[from..].iter_mut().for_each(|l| *l = UNLABELED);
    }

    /// Positions within `rows` whose views have a label.
    pub fn labelled(&self, rows: &[usize]) -> Vec<usize> {
        (0..rows.len()).filter(|&i| self.labels[rows[i]] != UNLABELED).collect()
    }

    /// Images in the set (rows are images × views).
    pub fn images(&self) -> usize {
        self.labels.len() / self.views
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn label_tensor(&self, rows: &[usize]) -> Result<Tensor> {
        let y: Vec<u32> = rows.iter().map(|&r| self.labels[r]).collect();
        Ok(Tensor::new(y, &self.device)?)
    }

    /// Start rendering `rows` at `side` in the background, so the next [`ViewSet::batch`]
    /// with the same rows finds them ready (ImageFolder views only: digits are a tensor).
    pub fn prefetch(&self, rows: &[usize], side: usize) {
        let Pixels::Folder { store, views, pool, next } = &self.pixels else {
            return;
        };
        let (store, views, pool, owned) = (store.clone(), views.clone(), pool.clone(), rows.to_vec());
        let job = std::thread::spawn(move || {
            let chosen: Vec<View> = owned.iter().map(|&r| views[r]).collect();
            render_batch(&store, &chosen, side, &pool)
        });
        if let Ok(mut slot) = next.lock() {
            // A stale prefetch (rows never asked for) is simply dropped.
            *slot = Some(Prefetch {
                rows: rows.to_vec(),
                side,
                job,
            });
        }
    }

    /// Rows `rows` as RGB images of side `size`, values in [0, 1].
    pub fn batch(&self, rows: &[usize], size: usize) -> Result<Tensor> {
        match &self.pixels {
            Pixels::Tensor(images) => {
                let x = super::select_rows(images, rows)?;
                let x = resize_bilinear(&x, size, size)?;
                Ok(if x.dim(1)? == 1 { x.repeat((1, 3, 1, 1))? } else { x })
            }
            Pixels::Folder { store, views, pool, next } => {
                let ready = next.lock().ok().and_then(|mut slot| match slot.take() {
                    Some(p) if p.rows == rows && p.side == size => Some(p.job),
                    _ => None,
                });
                let pixels = match ready.map(|job| job.join()) {
                    Some(Ok(result)) => result?,
                    _ => {
                        let chosen: Vec<View> = rows.iter().map(|&r| views[r]).collect();
                        render_batch(store, &chosen, size, pool)?
                    }
                };
                Ok(Tensor::from_vec(pixels, (rows.len(), 3, size, size), &self.device)?)
            }
        }
    }
}
