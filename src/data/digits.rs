//! The UCI/scikit-learn handwritten digits (1797 images, 8×8, values 0..16), stored in
//! `sample-data/digits/digits.csv.gz` exactly as scikit-learn ships it: one image per
//! line, 64 pixel values then the label.

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

pub const SIDE: usize = 8;
pub const PIXELS: usize = SIDE * SIDE;
pub const CLASSES: usize = 10;
/// Images per class reserved for training; the rest of each class is the test set.
pub const TRAIN_POOL: usize = 50;

pub struct Digits {
    /// Pixels scaled to [0, 1], `PIXELS` per image, file order.
    pub images: Vec<[f32; PIXELS]>,
    pub labels: Vec<u32>,
}

/// Indices into [`Digits`] for one k-shot experiment.
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// Images of the training pool not used for training (`k..50` of each class):
    /// disjoint from the test set, for choosing hyperparameters.
    pub validation: Vec<usize>,
    /// The unlabelled transfer set (`data.unlabeled = "pool"`): training-pool images
    /// beyond the first k, disjoint from validation and test.
    pub unlabeled: Vec<usize>,
}

impl Digits {
    /// Reads `digits.csv.gz` (or a plain `digits.csv`) from `dir`, or the file `dir` itself.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = if dir.is_dir() {
            dir.join("digits.csv.gz")
        } else {
            dir.to_path_buf()
        };
        let raw = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut text = String::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_string(&mut text)
                .map_err(|e| Error::File {
                    path: path.clone(),
                    msg: format!("corrupt gzip: {e}"),
                })?;
        } else {
            text = String::from_utf8(raw).map_err(|_| Error::File {
                path: path.clone(),
                msg: "not UTF-8 text".into(),
            })?;
        }
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |msg: String| Error::File {
                path: path.clone(),
                msg: format!("line {}: {msg}", i + 1),
            };
            let values: Vec<f32> = line
                .split(',')
                .map(|v| v.trim().parse::<f32>().map_err(|_| bad(format!("`{v}` is not a number"))))
                .collect::<Result<_>>()?;
            if values.len() != PIXELS + 1 {
                return Err(bad(format!("expected {} values, found {}", PIXELS + 1, values.len())));
            }
            let label = values[PIXELS];
            if label.fract() != 0.0 || !(0.0..CLASSES as f32).contains(&label) {
                return Err(bad(format!("label {label} is not a class 0..{}", CLASSES - 1)));
            }
            let mut img = [0f32; PIXELS];
            for (dst, v) in img.iter_mut().zip(&values) {
                *dst = v / 16.0;
            }
            images.push(img);
            labels.push(label as u32);
        }
        if images.is_empty() {
            return Err(Error::File {
                path,
                msg: "no images".into(),
            });
        }
        Ok(Digits { images, labels })
    }

    /// The fixed, RNG-free split: the first `k` images of each class (file order) train;
    /// every image not among the first [`TRAIN_POOL`] of its class is a test image.
    pub fn split(&self, k: usize) -> Result<Split> {
        let mut seen = [0usize; CLASSES];
        let mut split = Split {
            train: Vec::new(),
            test: Vec::new(),
            validation: Vec::new(),
            unlabeled: Vec::new(),
        };
        for (i, &y) in self.labels.iter().enumerate() {
            let n = seen[y as usize];
            if n < k {
                split.train.push(i);
            } else if n < TRAIN_POOL {
                split.validation.push(i);
            }
            if n >= TRAIN_POOL {
                split.test.push(i);
            }
            seen[y as usize] += 1;
        }
        let smallest = seen.iter().copied().min().unwrap_or(0);
        if k == 0 || k > TRAIN_POOL.min(smallest) {
            return Err(Error::config(
                "data.k",
                format!(
                    "k = {k} must be between 1 and {} (the training pool per class; the smallest class has {smallest} images)",
                    TRAIN_POOL.min(smallest)
                ),
            ));
        }
        Ok(split)
    }
}
