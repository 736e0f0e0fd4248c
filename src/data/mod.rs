//! Datasets, the k-shot split, augmentation views and model inputs.

pub mod digits;
pub mod image_file;
pub mod image_folder;
pub mod views;

pub use digits::{Digits, Split};
pub use image_folder::{ImageFolder, Skipped};
pub use views::{Augment, ViewSet};

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{DataKind, EvalOn, Experiment};
use crate::{Error, Result};

/// Rows `rows` (dataset indices) of `t` along its first dimension.
pub fn select_rows(t: &Tensor, rows: &[usize]) -> crate::Result<Tensor> {
    let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), t.device())?;
    Ok(t.index_select(&idx, 0)?)
}

/// The split as written to `split.json` in the run directory: enough to repeat the run
/// exactly, or to evaluate an exported model on the same test images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub kind: String,
    pub root: String,
    pub seed: u64,
    pub k: usize,
    pub classes: Vec<String>,
    /// Image names (ImageFolder: path under the root; digits: row number).
    pub train: Vec<String>,
    pub validation: Vec<String>,
    pub test: Vec<String>,
    /// The unlabelled transfer set (empty without `data.unlabeled`).
    #[serde(default)]
    pub unlabeled: Vec<String>,
    pub skipped: Vec<Skipped>,
}

impl SplitRecord {
    /// The record of `split` of `exp`'s data at `root`, naming image `i` by `name(i)`.
    fn new(
        exp: &Experiment,
        root: &std::path::Path,
        classes: &[String],
        split: &Split,
        name: impl Fn(usize) -> String,
        skipped: &[Skipped],
    ) -> Self {
        let names = |rows: &[usize]| rows.iter().map(|&r| name(r)).collect::<Vec<_>>();
        SplitRecord {
            kind: exp.data.kind.name().into(),
            root: root.display().to_string(),
            seed: exp.seed,
            k: exp.data.k,
            classes: classes.to_vec(),
            train: names(&split.train),
            validation: names(&split.validation),
            test: names(&split.test),
            unlabeled: names(&split.unlabeled),
            skipped: skipped.to_vec(),
        }
    }
}

/// An experiment's data, ready to train on.
pub struct Loaded {
    pub classes: Vec<String>,
    pub train: ViewSet,
    /// `train` followed, per image, by its mixed views (`data.mix_views`): what the
    /// target methods train on. The teacher and the probe train on `train` alone.
    pub target_train: Option<ViewSet>,
    /// The evaluation set (`data.eval_on`), one un-augmented view per image.
    pub eval: ViewSet,
    /// The validation split, one un-augmented view per image (empty when no images are
    /// left over at this k): what stage-1 selection looks at.
    pub validation: ViewSet,
    /// The training images followed by the unlabelled transfer set, with views as
    /// `train` has them; rows of unlabelled images carry [`views::UNLABELED`].
    pub transfer: Option<ViewSet>,
    /// Training images (rows of `train` are images × views).
    pub items: usize,
    pub record: SplitRecord,
    /// Bytes of decoded images held in memory, and images read from disk per use.
    pub resident_bytes: usize,
    pub on_disk: usize,
}

fn eval_rows<'a>(exp: &Experiment, split: &'a Split) -> Result<&'a [usize]> {
    match exp.data.eval_on {
        EvalOn::Test => Ok(&split.test),
        EvalOn::Validation if split.validation.is_empty() => Err(Error::config(
            "data.eval_on",
            format!("no validation images left at k = {}", exp.data.k),
        )),
        EvalOn::Validation => Ok(&split.validation),
    }
}

/// The stored side of ImageFolder images: `data.stored_side`, or (0) the largest input
/// any model of the experiment takes.
pub fn stored_side(exp: &Experiment) -> usize {
    match exp.data.stored_side {
        0 => exp.foundation.image_size.max(exp.target.image_size),
        s => s,
    }
}

/// How many classes `exp`'s data has, without decoding an image (digits: 10; an
/// ImageFolder: its class sub-folders), for views that size a run before it loads.
pub fn class_count(exp: &Experiment) -> Result<usize> {
    match exp.data.kind {
        DataKind::ImageFolder => Ok(image_folder::class_dirs(&exp.data_path())?.len()),
        DataKind::Digits => Ok(digits::CLASSES),
    }
}

/// Load `exp`'s dataset and build its split and views.
pub fn load_experiment(exp: &Experiment, device: &Device) -> Result<Loaded> {
    let path = exp.data_path();
    let d = &exp.data;
    match d.kind {
        DataKind::Digits => {
            let data = Digits::load(&path)?;
            let split = data.split(d.k)?;
            let eval = eval_rows(exp, &split)?;
            let classes: Vec<String> = (0..digits::CLASSES).map(|c| c.to_string()).collect();
            Ok(Loaded {
                record: SplitRecord::new(exp, &path, &classes, &split, |r| r.to_string(), &[]),
                classes,
                train: ViewSet::new(&data, &split.train, d.views, exp.seed, device)?,
                eval: ViewSet::plain(&data, eval, device)?,
                validation: ViewSet::plain(&data, &split.validation, device)?,
                target_train: None,
                transfer: None,
                items: split.train.len(),
                resident_bytes: data.images.len() * digits::PIXELS * 4,
                on_disk: 0,
            })
        }
        DataKind::ImageFolder => {
            let pool = Arc::new(image_folder::pool(d.workers)?);
            let store = Arc::new(ImageFolder::load(
                &path,
                image_folder::LoadOptions {
                    stored_side: stored_side(exp),
                    memory_budget_bytes: d.memory_budget_bytes(),
                    workers: d.workers,
                },
            )?);
            let split = store.split(d.k, d.test_fraction, d.validation_fraction, exp.seed)?;
            let augment = Augment {
                scale: d.crop_scale,
                ratio: d.crop_ratio,
                flip: d.flip,
            };
            let eval = eval_rows(exp, &split)?;
            let transfer = match d.unlabeled.as_str() {
                "" => None,
                _ if split.unlabeled.is_empty() => {
                    return Err(Error::config(
                        "data.unlabeled",
                        format!("no images are left for the transfer set at k = {}", d.k),
                    ))
                }
                _ => {
                    let all: Vec<usize> = split.train.iter().chain(&split.unlabeled).copied().collect();
                    // Salted apart from `train`, so its views are drawn afresh.
                    let views = match d.unlabeled_views {
                        0 => d.views,
                        v => v,
                    };
                    let mut set = ViewSet::folder(&store, &all, views, augment, exp.seed ^ 0x7a11, &pool, device)?;
                    set.hide_labels_from(split.train.len());
                    Some(match d.unlabeled_mix_views {
                        0 => set,
                        n => set.with_mixes(n, exp.seed ^ 0x7a11)?,
                    })
                }
            };
            let train = ViewSet::folder(&store, &split.train, d.views, augment, exp.seed, &pool, device)?;
            let target_train = match d.mix_views {
                0 => None,
                n => Some(train.with_mixes(n, exp.seed)?),
            };
            Ok(Loaded {
                record: SplitRecord::new(exp, &path, &store.classes, &split, |r| store.name(r), &store.skipped),
                validation: ViewSet::folder(&store, &split.validation, 1, augment, 0, &pool, device)?,
                transfer,
                classes: store.classes.clone(),
                train,
                target_train,
                eval: ViewSet::folder(&store, eval, 1, augment, 0, &pool, device)?,
                items: split.train.len(),
                resident_bytes: store.resident_bytes,
                on_disk: store.on_disk(),
            })
        }
    }
}
