//! Augmentation views: each training image gets `n` fixed views (view 0 is the image
//! itself), drawn once from the seed. Fixed views let the frozen teacher's outputs be
//! cached once per view, so stage 2 needs no foundation forward at all.
//!
//! Digits views are ±1-pixel shifts of the 8×8 source, materialised as one tensor.
//! ImageFolder views are random-resized crops (and optional flips) described by their
//! crop box and rendered per batch from the decoded images, so memory holds each image
//! once, not once per view.
//!
//! Mixed views (`data.mix_views`) blend one view of an image with a view of another
//! image. They are fixed too, so the teacher labels each of them once through the
//! cache: the inputs between two training images are where a teacher's soft outputs
//! say more than the labels do.

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

/// A mixed view: its own view weighted `lambda` (at least ½), plus `1 − lambda` of
/// `partner`, a view of another image whose label is `label`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub partner: View,
    pub label: u32,
    pub lambda: f32,
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
        /// Per row: the partner it is blended with (empty: no mixed rows).
        mixes: Arc<Vec<Option<Mix>>>,
        pool: Arc<rayon::ThreadPool>,
        next: Mutex<Option<Prefetch>>,
    },
}

/// Rows `rows` of `views` rendered at `side`, mixed rows blended with their partners.
fn render_rows(
    store: &Arc<ImageFolder>,
    views: &[View],
    mixes: &[Option<Mix>],
    rows: &[usize],
    side: usize,
    pool: &rayon::ThreadPool,
) -> Result<Vec<f32>> {
    let chosen: Vec<View> = rows.iter().map(|&r| views[r]).collect();
    let mut out = render_batch(store, &chosen, side, pool)?;
    let mixed: Vec<(usize, Mix)> = rows
        .iter()
        .enumerate()
        .filter_map(|(i, &r)| mixes.get(r).copied().flatten().map(|m| (i, m)))
        .collect();
    if mixed.is_empty() {
        return Ok(out);
    }
    let partners: Vec<View> = mixed.iter().map(|(_, m)| m.partner).collect();
    let other = render_batch(store, &partners, side, pool)?;
    let n = 3 * side * side;
    for (j, (i, m)) in mixed.iter().enumerate() {
        let (a, b) = (&mut out[i * n..(i + 1) * n], &other[j * n..(j + 1) * n]);
        a.iter_mut().zip(b).for_each(|(x, y)| *x = m.lambda * *x + (1.0 - m.lambda) * y);
    }
    Ok(out)
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
                mixes: Arc::new(Vec::new()),
                pool: pool.clone(),
                next: Mutex::new(None),
            },
            device: device.clone(),
            labels,
            views,
        })
    }

    /// These views followed, per image, by `per_image` mixed views drawn from `seed`:
    /// one of the image's own views blended with a view of another image of the set,
    /// the weight of its own uniform in [½, 1]. A mixed view of an unlabelled image, or
    /// with one, is unlabelled. ImageFolder views only.
    pub fn with_mixes(&self, per_image: usize, seed: u64) -> Result<Self> {
        let (labels, views) = (&self.labels, self.views);
        let Pixels::Folder {
            store, views: list, pool, ..
        } = &self.pixels
        else {
            return Err(crate::Error::config("data.mix_views", "mixed views need image-folder data"));
        };
        let images = labels.len() / views;
        if images < 2 {
            return Err(crate::Error::config(
                "data.mix_views",
                "mixed views need at least two training images",
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x3a1e_u64);
        let per = views + per_image;
        let (mut out, mut out_labels, mut mixes) = (
            Vec::with_capacity(images * per),
            Vec::with_capacity(images * per),
            Vec::with_capacity(images * per),
        );
        for i in 0..images {
            for v in 0..views {
                out.push(list[i * views + v]);
                out_labels.push(labels[i * views + v]);
                mixes.push(None);
            }
            for _ in 0..per_image {
                let a = i * views + rng.random_range(0..views);
                let other = rng.random_range(0..images - 1);
                let j = if other >= i { other + 1 } else { other };
                let b = j * views + rng.random_range(0..views);
                let u: f32 = rng.random();
                let unlabelled = labels[a] == UNLABELED || labels[b] == UNLABELED;
                out.push(list[a]);
                out_labels.push(if unlabelled { UNLABELED } else { labels[a] });
                mixes.push(Some(Mix {
                    partner: list[b],
                    label: labels[b],
                    lambda: u.max(1.0 - u),
                }));
            }
        }
        Ok(ViewSet {
            pixels: Pixels::Folder {
                store: store.clone(),
                views: Arc::new(out),
                mixes: Arc::new(mixes),
                pool: pool.clone(),
                next: Mutex::new(None),
            },
            device: self.device.clone(),
            labels: out_labels,
            views: per,
        })
    }

    /// The mixed view of `row`, if it is one.
    pub fn mix(&self, row: usize) -> Option<Mix> {
        match &self.pixels {
            Pixels::Folder { mixes, .. } => mixes.get(row).copied().flatten(),
            Pixels::Tensor(_) => None,
        }
    }

    /// For mixup cross-entropy over `rows`: each row's second label and the weight of
    /// its first (its own label, weight 1, where the row is not mixed). `None` when no
    /// row of `rows` is mixed, so unmixed batches keep the plain loss.
    pub fn mixing(&self, rows: &[usize]) -> Result<Option<(Tensor, Tensor)>> {
        if rows.iter().all(|&r| self.mix(r).is_none()) {
            return Ok(None);
        }
        let (labels, weights): (Vec<u32>, Vec<f32>) = rows
            .iter()
            .map(|&r| match self.mix(r) {
                Some(m) => (m.label, m.lambda),
                None => (self.labels[r], 1.0),
            })
            .unzip();
        Ok(Some((Tensor::new(labels, &self.device)?, Tensor::new(weights, &self.device)?)))
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
        let Pixels::Folder {
            store,
            views,
            mixes,
            pool,
            next,
        } = &self.pixels
        else {
            return;
        };
        let (store, views, mixes, pool, owned) = (store.clone(), views.clone(), mixes.clone(), pool.clone(), rows.to_vec());
        let job = std::thread::spawn(move || render_rows(&store, &views, &mixes, &owned, side, &pool));
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
            Pixels::Folder {
                store,
                views,
                mixes,
                pool,
                next,
            } => {
                let ready = next.lock().ok().and_then(|mut slot| match slot.take() {
                    Some(p) if p.rows == rows && p.side == size => Some(p.job),
                    _ => None,
                });
                let pixels = match ready.map(|job| job.join()) {
                    Some(Ok(result)) => result?,
                    _ => render_rows(store, views, mixes, rows, size, pool)?,
                };
                Ok(Tensor::from_vec(pixels, (rows.len(), 3, size, size), &self.device)?)
            }
        }
    }
}
