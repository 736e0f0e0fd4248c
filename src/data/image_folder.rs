//! A torchvision-style `ImageFolder`: one sub-folder per class (sorted names are the
//! classes), images decoded with the `image` crate. Every file is decoded once at load,
//! on a rayon pool, and resized so its shorter side is the stored side; images stay in
//! memory while the memory budget allows and are decoded again from disk per batch
//! after that. Unreadable files are skipped and reported by name, never a crash.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::image_file::{load_rgb, DEFAULT_MAX_PIXELS};
use crate::{Error, Result};

/// A file that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// Where one image's pixels live.
enum Pixels {
    Memory(RgbImage),
    /// Over the memory budget: decoded (and resized) again each time it is used.
    Disk,
}

struct Entry {
    path: PathBuf,
    label: u32,
    /// Width and height at the stored side.
    dims: (u32, u32),
    pixels: Pixels,
}

/// The decoded dataset, shared by the training and evaluation view sets.
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    entries: Vec<Entry>,
    pub skipped: Vec<Skipped>,
    /// Shorter side of every stored image, in pixels.
    pub stored_side: usize,
    /// Bytes of decoded pixels held in memory.
    pub resident_bytes: usize,
}

/// What [`ImageFolder::load`] needs to know.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub stored_side: usize,
    pub memory_budget_bytes: usize,
    /// Decoding threads (0: all cores).
    pub workers: usize,
}

/// `image` resized so its shorter side is `side` (never enlarged past it; aspect kept).
fn fit_shorter_side(image: RgbImage, side: usize) -> RgbImage {
    let (w, h) = image.dimensions();
    let short = w.min(h) as usize;
    if short == side || short == 0 {
        return image;
    }
    let scale = side as f64 / short as f64;
    let nw = ((w as f64 * scale).round() as u32).max(1);
    let nh = ((h as f64 * scale).round() as u32).max(1);
    imageops::resize(&image, nw, nh, FilterType::Triangle)
}

/// A file name with an image extension the decoder reads (png, jpeg, bmp, webp).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "webp"))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

/// The entries of `dir`, hidden ones left out, sorted by path.
pub fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !is_hidden(p))
        .collect();
    out.sort();
    Ok(out)
}

/// The class sub-folders of an ImageFolder root, sorted (their order is the label order).
pub fn class_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let not_folder = |msg: String| Error::File {
        path: root.to_path_buf(),
        msg,
    };
    if !root.is_dir() {
        return Err(not_folder(
            "not a folder: an ImageFolder has one sub-folder of images per class".into(),
        ));
    }
    let dirs: Vec<PathBuf> = sorted_dir(root)?.into_iter().filter(|p| p.is_dir()).collect();
    if dirs.len() < 2 {
        return Err(not_folder(format!(
            "found {} class folder(s); an ImageFolder needs at least 2 (one sub-folder per class)",
            dirs.len()
        )));
    }
    Ok(dirs)
}

impl ImageFolder {
    /// Scan `root` (class sub-folders of image files) and decode every file.
    pub fn load(root: &Path, opts: LoadOptions) -> Result<Self> {
        let class_dirs = class_dirs(root)?;
        let mut files = Vec::new();
        let mut classes = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            classes.push(dir.file_name().unwrap_or_default().to_string_lossy().into_owned());
            for f in sorted_dir(dir)?.into_iter().filter(|p| p.is_file()) {
                files.push((f, label as u32));
            }
        }
        let side = opts.stored_side.max(1);
        let resident = AtomicUsize::new(0);
        let decode = |(path, label): &(PathBuf, u32)| -> std::result::Result<Entry, Skipped> {
            let image = load_rgb(path, DEFAULT_MAX_PIXELS).map_err(|e| Skipped {
                path: path.display().to_string(),
                reason: match e {
                    Error::File { msg, .. } => msg,
                    other => other.to_string(),
                },
            })?;
            let image = fit_shorter_side(image, side);
            let bytes = image.as_raw().len();
            // Claim room in the budget first; images that do not fit go back to disk.
            let fits = resident
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    (used + bytes <= opts.memory_budget_bytes).then_some(used + bytes)
                })
                .is_ok();
            Ok(Entry {
                path: path.clone(),
                label: *label,
                dims: image.dimensions(),
                pixels: if fits { Pixels::Memory(image) } else { Pixels::Disk },
            })
        };
        let decoded: Vec<std::result::Result<Entry, Skipped>> = pool(opts.workers)?.install(|| files.par_iter().map(decode).collect());
        let (mut entries, mut skipped) = (Vec::new(), Vec::new());
        for d in decoded {
            match d {
                Ok(e) => entries.push(e),
                Err(s) => skipped.push(s),
            }
        }
        for (label, name) in classes.iter().enumerate() {
            if !entries.iter().any(|e| e.label == label as u32) {
                return Err(Error::File {
                    path: root.join(name),
                    msg: "class folder has no readable images".into(),
                });
            }
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            entries,
            skipped,
            stored_side: side,
            resident_bytes: resident.into_inner(),
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn label(&self, i: usize) -> u32 {
        self.entries[i].label
    }

    /// Width and height of image `i` at the stored side (known without decoding).
    pub fn dims(&self, i: usize) -> (u32, u32) {
        self.entries[i].dims
    }

    /// Path of image `i` relative to the root (how split files name images).
    pub fn name(&self, i: usize) -> String {
        let p = &self.entries[i].path;
        p.strip_prefix(&self.root).unwrap_or(p).display().to_string()
    }

    /// How many images are decoded again from disk per use (over the memory budget).
    pub fn on_disk(&self) -> usize {
        self.entries.iter().filter(|e| matches!(e.pixels, Pixels::Disk)).count()
    }

    /// Image `i` at the stored side.
    pub fn image(&self, i: usize) -> Result<std::borrow::Cow<'_, RgbImage>> {
        let e = &self.entries[i];
        match &e.pixels {
            Pixels::Memory(img) => Ok(std::borrow::Cow::Borrowed(img)),
            Pixels::Disk => Ok(std::borrow::Cow::Owned(fit_shorter_side(
                load_rgb(&e.path, DEFAULT_MAX_PIXELS)?,
                self.stored_side,
            ))),
        }
    }

    /// The seeded split: per class, a fixed `test_fraction` (at least one image) is the
    /// test set whatever `k` is. With `validation_fraction` 0, of the rest the first `k`
    /// train and the others are validation. Otherwise that fraction (at least one image)
    /// is a fixed validation set, then `k` train, and the rest is the unlabelled pool.
    pub fn split(&self, k: usize, test_fraction: f64, validation_fraction: f64, seed: u64) -> Result<super::Split> {
        let mut split = super::Split {
            train: Vec::new(),
            test: Vec::new(),
            validation: Vec::new(),
            unlabeled: Vec::new(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5917_u64);
        for (label, name) in self.classes.iter().enumerate() {
            let mut idx: Vec<usize> = (0..self.len()).filter(|&i| self.label(i) == label as u32).collect();
            idx.shuffle(&mut rng);
            let (n_test, n_val, pool) = held_out(idx.len(), test_fraction, validation_fraction);
            if k == 0 || k > pool {
                return Err(Error::config(
                    "data.k",
                    format!(
                        "k = {k} must be between 1 and {pool}: class `{name}` has {} readable images, {n_test} of them held out for testing and {n_val} for validation",
                        idx.len()
                    ),
                ));
            }
            split.test.extend_from_slice(&idx[..n_test]);
            if n_val == 0 {
                split.train.extend_from_slice(&idx[n_test..n_test + k]);
                split.validation.extend_from_slice(&idx[n_test + k..]);
            } else {
                let (v, t) = (n_test + n_val, n_test + n_val + k);
                split.validation.extend_from_slice(&idx[n_test..v]);
                split.train.extend_from_slice(&idx[v..t]);
                split.unlabeled.extend_from_slice(&idx[t..]);
            }
        }
        Ok(split)
    }
}

/// Of a class's `n` images: how many are held out for testing and for validation, and
/// how many are left for the `k` labelled ones (and the unlabelled pool).
pub fn held_out(n: usize, test_fraction: f64, validation_fraction: f64) -> (usize, usize, usize) {
    let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n.max(1));
    let n_val = match validation_fraction {
        f if f > 0.0 => ((n as f64 * f).round() as usize).max(1),
        _ => 0,
    };
    (n_test, n_val, n.saturating_sub(n_test + n_val))
}

/// Each class of an ImageFolder root and how many image files it holds, without
/// decoding any (the data picker's preview).
pub fn class_counts(root: &Path) -> Result<Vec<(String, usize)>> {
    class_dirs(root)?
        .iter()
        .map(|dir| {
            let name = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
            Ok((name, sorted_dir(dir)?.iter().filter(|p| p.is_file() && is_image_file(p)).count()))
        })
        .collect()
}

/// A decoding pool of `workers` threads (0: rayon's default, all cores).
pub fn pool(workers: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .thread_name(|i| format!("tdmr-decode-{i}"))
        .build()
        .map_err(|e| Error::config("data.workers", format!("cannot start the decoding threads: {e}")))
}

/// One augmented view of a stored image: a crop in relative coordinates and a flip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct View {
    pub image: usize,
    /// `[x0, y0, w, h]` as fractions of the stored image.
    pub crop: [f32; 4],
    pub flip: bool,
}

impl View {
    pub fn whole(image: usize) -> Self {
        View {
            image,
            crop: [0.0, 0.0, 1.0, 1.0],
            flip: false,
        }
    }
}

/// Random-resized-crop parameters as torchvision draws them: area fraction in `scale`,
/// log-uniform aspect ratio in `ratio`, ten tries, then the whole image.
pub fn random_resized_crop(rng: &mut impl rand::Rng, width: usize, height: usize, scale: [f64; 2], ratio: [f64; 2]) -> [f32; 4] {
    let area = (width * height) as f64;
    let (lo, hi) = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale[0]..=scale[1]);
        let aspect = rng.random_range(lo..=hi).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w >= 1.0 && h >= 1.0 && w <= width as f64 && h <= height as f64 {
            let x0 = rng.random_range(0.0..=(width as f64 - w));
            let y0 = rng.random_range(0.0..=(height as f64 - h));
            return [
                (x0 / width as f64) as f32,
                (y0 / height as f64) as f32,
                (w / width as f64) as f32,
                (h / height as f64) as f32,
            ];
        }
    }
    [0.0, 0.0, 1.0, 1.0]
}

/// Render `view` of `store` as `3 × side × side` floats in [0, 1], channel-major.
pub fn render(store: &ImageFolder, view: &View, side: usize) -> Result<Vec<f32>> {
    Ok(render_image(&*store.image(view.image)?, view, side))
}

/// The model input of one image file, exactly as training and evaluation see an image:
/// decoded, its shorter side fitted to `stored_side`, then the whole image resized to
/// `side` square (triangle filter both times) and scaled to [0, 1].
pub fn file_input(path: &Path, stored_side: usize, side: usize) -> Result<Vec<f32>> {
    let image = fit_shorter_side(load_rgb(path, DEFAULT_MAX_PIXELS)?, stored_side.max(1));
    Ok(render_image(&image, &View::whole(0), side))
}

fn render_image(image: &RgbImage, view: &View, side: usize) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let [cx, cy, cw, ch] = view.crop;
    let x0 = ((cx * w as f32).round() as u32).min(w - 1);
    let y0 = ((cy * h as f32).round() as u32).min(h - 1);
    let cw = ((cw * w as f32).round() as u32).clamp(1, w - x0);
    let ch = ((ch * h as f32).round() as u32).clamp(1, h - y0);
    let crop = imageops::crop_imm(image, x0, y0, cw, ch).to_image();
    let mut out_img = imageops::resize(&crop, side as u32, side as u32, FilterType::Triangle);
    if view.flip {
        imageops::flip_horizontal_in_place(&mut out_img);
    }
    let plane = side * side;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in out_img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 / 255.0;
        }
    }
    out
}

/// Render many views on `pool`, in order.
pub fn render_batch(store: &Arc<ImageFolder>, views: &[View], side: usize, pool: &rayon::ThreadPool) -> Result<Vec<f32>> {
    let parts: Vec<Result<Vec<f32>>> = pool.install(|| views.par_iter().map(|v| render(store, v, side)).collect());
    let mut out = Vec::with_capacity(views.len() * 3 * side * side);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}
