//! The two workloads with the experiment's own stage shapes: one stage-1 step at the
//! default's sizes, and one stage-2 epoch with and without the teacher cache.

use super::*;

/// One stage-1 step of the default experiment (`clipart.toml`): 96² images in a 128²
/// canvas with a 16-pixel padding prompt, the frozen foundation, a linear proxy
/// projector to 128 dimensions and a 10-class head, cross-entropy, AdamW, batch 32.
pub(super) fn stage_one(device: &Device, f: &EfficientNetLite, dtype: DType, opts: &Options) -> Result<Option<Figure>> {
    let name = "stage-1 step (default experiment: 96² in a 128² canvas)";
    if !opts.wants(6, name) {
        return Ok(None);
    }
    let (batch, canvas, inner) = (32, 128, 96);
    let mut p = Params::new(device, 9);
    let prompt = Prompt::new(
        &mut p,
        "s1.prompt.",
        PromptKind::Padding,
        canvas,
        inner,
        16,
        crate::models::IMAGENET,
    )?;
    let proj = Projector::new(&mut p, "s1.proj.", ProjectorKind::Linear, f.feature_dim(), PROXY, true)?;
    let head = Head::new(&mut p, "s1.head.", PROXY, 10, 1.0)?;
    let mut opt = Optimizer::new(OptimizerKind::Adamw, p.named_vars(&["s1.".to_string()]), 0.01, 0.9);
    let x = input(device, batch, inner, 10)?;
    let y = labels(device, batch)?;
    // No composed-ops column: candle's own backward through the 128² foundation needs
    // more memory than many machines have (the 96² one takes 22 GB).
    let opts = Options {
        before: false,
        ..opts.clone()
    };
    measure(
        device,
        &opts,
        6,
        Workload {
            name: name.into(),
            batch,
            size: canvas,
            dtype,
            step: Box::new(move || {
                let feats = f.features(&prompt.apply(&x, true)?.to_dtype(dtype)?)?.to_dtype(DType::F32)?;
                let logits = head.forward(&proj.forward(&feats)?)?;
                opt.step(&loss::cross_entropy(&logits, &y, 0.0)?.backward()?, 3e-3)
            }),
        },
    )
}

/// Images in the stage-2 epoch workload: the default experiment's teacher views at
/// 96², its 32² target views, distillation batch 64.
const EPOCH_IMAGES: usize = 256;
const PROXY: usize = 128;

/// One stage-2 epoch (align + KD + CE on the small CNN target, AdamW), once reading
/// the teacher's proxy embeddings and logits from a cache computed beforehand and once
/// recomputing the teacher (foundation forward + projector + head) for every batch.
pub(super) fn stage_two(device: &Device, f: &EfficientNetLite, dtype: DType, opts: &Options) -> Result<Vec<Figure>> {
    let batch = 64;
    let teacher_views = input(device, EPOCH_IMAGES, 96, 5)?.to_dtype(dtype)?;
    let target_views = input(device, EPOCH_IMAGES, 32, 6)?;
    let y = labels(device, EPOCH_IMAGES)?;
    let mut p = Params::new(device, 7);
    let proj = Dense::new(&mut p, "proj", f.feature_dim(), PROXY)?;
    let head = Dense::new(&mut p, "head", PROXY, 10)?;
    let teacher = |views: &Tensor| -> Result<(Tensor, Tensor)> {
        let z = proj.forward(&f.features(views)?.to_dtype(DType::F32)?)?;
        let logits = head.forward(&z)?;
        // The teacher is frozen: its outputs carry no graph into the student's step.
        Ok((z.detach(), logits.detach()))
    };
    let mut figures = Vec::new();
    for cached in [true, false] {
        let what = if cached {
            "stage-2 epoch, teacher cache"
        } else {
            "stage-2 epoch, teacher recomputed"
        };
        let name = format!("{what} ({EPOCH_IMAGES} images)");
        if !opts.wants(4 + usize::from(!cached), &name) {
            continue;
        }
        let mut tp = Params::new(device, 8);
        let net = crate::models::small_cnn::SmallCnn::new(&mut tp, "t.", 3)?;
        let tproj = Dense::new(&mut tp, "t.proj", net.feature_dim(), PROXY)?;
        let thead = Dense::new(&mut tp, "t.head", PROXY, 10)?;
        let mut opt = Optimizer::new(OptimizerKind::Adamw, tp.named_vars(&["t.".to_string()]), 0.0, 0.9);
        // Built batch by batch, as a run builds its cache.
        let cache = if cached {
            let (mut zs, mut ls) = (Vec::new(), Vec::new());
            for start in (0..EPOCH_IMAGES).step_by(batch) {
                let (z, l) = teacher(&teacher_views.narrow(0, start, batch.min(EPOCH_IMAGES - start))?)?;
                zs.push(z);
                ls.push(l);
            }
            Some((Tensor::cat(&zs, 0)?, Tensor::cat(&ls, 0)?))
        } else {
            None
        };
        let step = Box::new(|| -> Result<()> {
            for start in (0..EPOCH_IMAGES).step_by(batch) {
                let n = batch.min(EPOCH_IMAGES - start);
                let (tz, tl) = match &cache {
                    Some((z, l)) => (z.narrow(0, start, n)?, l.narrow(0, start, n)?),
                    None => teacher(&teacher_views.narrow(0, start, n)?)?,
                };
                let z = tproj.forward(&net.features(&target_views.narrow(0, start, n)?, true)?)?;
                let logits = thead.forward(&z)?;
                let l = ((loss::align(&z, &tz, AlignLoss::Cosine)? + loss::kd(&logits, &tl, 4.0)?)?
                    + (loss::cross_entropy(&logits, &y.narrow(0, start, n)?, 0.0)? * 0.1)?)?;
                opt.step(&l.backward()?, 3e-3)?;
            }
            Ok(())
        });
        figures.extend(measure(
            device,
            opts,
            4 + usize::from(!cached),
            Workload {
                name,
                batch: EPOCH_IMAGES,
                size: 32,
                dtype: DType::F32,
                step,
            },
        )?);
    }
    Ok(figures)
}
