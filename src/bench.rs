//! `tdmr bench`: images/s of the workloads that dominate a run, on the chosen device:
//! training the small target CNN (stage 2 and the baselines), the frozen foundation's
//! forward (teacher cache, linear probe) and its forward + backward to the input
//! (stage 1 trains the prompt through it). Timings live here, never in tests.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::Serialize;

use crate::config::OptimizerKind;
use crate::engine::optim::Optimizer;
use crate::models::efficientnet_lite::EfficientNetLite;
use crate::models::small_cnn::SmallCnn;
use crate::params::Params;
use crate::reprogram::Head;
use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub workload: String,
    pub batch: usize,
    pub size: usize,
    pub dtype: String,
    pub images_per_s: f64,
    pub iterations: usize,
}

/// Seconds each workload is timed for, after its warm-up iteration.
const BUDGET_S: f64 = 3.0;

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// Time `step` (one batch) until the budget is spent, after one untimed warm-up.
fn time(device: &Device, batch: usize, mut step: impl FnMut() -> Result<()>) -> Result<(f64, usize)> {
    step()?;
    sync(device)?;
    let t = Instant::now();
    let mut n = 0;
    while n < 2 || t.elapsed().as_secs_f64() < BUDGET_S {
        step()?;
        n += 1;
    }
    sync(device)?;
    Ok(((n * batch) as f64 / t.elapsed().as_secs_f64(), n))
}

fn input(device: &Device, batch: usize, size: usize, seed: u64) -> Result<Tensor> {
    let mut p = Params::new(device, seed);
    p.uniform("x", &[batch, 3, size, size], 3)
}

/// Every workload; `foundation` is the checkpoint to time, `dtype` its precision.
pub fn run(device: &Device, foundation: &std::path::Path, dtype: DType) -> Result<Vec<Figure>> {
    let mut out = Vec::new();
    let name = |d: DType| format!("{d:?}").to_lowercase();

    // The target: 4 conv layers, batch norm, AdamW, at 32², batch 128 (PyTorch reference shape).
    let (batch, size) = (128, 32);
    let mut p = Params::new(device, 1);
    let net = SmallCnn::new(&mut p, "t.backbone.", 3)?;
    let head = Head::new(&mut p, "t.head.", net.feature_dim(), 10, 1.0)?;
    let mut opt = Optimizer::new(OptimizerKind::Adamw, p.named_vars(&["t.".to_string()]), 0.0, 0.9);
    let x = input(device, batch, size, 2)?;
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<u32>>(), batch, device)?;
    let (ips, n) = time(device, batch, || {
        let logits = head.forward(&net.features(&x, true)?)?;
        let loss = crate::distill::loss::cross_entropy(&logits, &y, 0.0)?;
        opt.step(&loss.backward()?, 1e-3)?;
        Ok(())
    })?;
    out.push(Figure {
        workload: "small CNN train step (fwd + bwd + AdamW)".into(),
        batch,
        size,
        dtype: "f32".into(),
        images_per_s: ips,
        iterations: n,
    });

    let mut f = EfficientNetLite::load(foundation, device)?;
    if dtype != DType::F32 {
        f = f.to_dtype(dtype)?;
    }
    let (batch, size) = (64, 96);
    let x = input(device, batch, size, 3)?;
    let (ips, n) = time(device, batch, || {
        f.features(&x)?;
        Ok(())
    })?;
    out.push(Figure {
        workload: format!("{} forward", f.variant()),
        batch,
        size,
        dtype: name(dtype),
        images_per_s: ips,
        iterations: n,
    });

    let batch = 32;
    let x = Var::from_tensor(&input(device, batch, size, 4)?)?;
    let (ips, n) = time(device, batch, || {
        let g = f.features(x.as_tensor())?.sum_all()?.backward()?;
        // Reading the gradient makes sure the backward pass ran to the input.
        g.get(&x).map(|t| t.dims().len()).unwrap_or(0);
        Ok(())
    })?;
    out.push(Figure {
        workload: format!("{} forward + backward to the input", f.variant()),
        batch,
        size,
        dtype: name(dtype),
        images_per_s: ips,
        iterations: n,
    });
    Ok(out)
}

/// The process's peak resident memory (Linux), for the report.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn table(device: &str, figures: &[Figure]) -> String {
    let mut s = format!("| workload ({device}) | batch | size | dtype | images/s |\n|---|---|---|---|---|\n");
    for f in figures {
        s.push_str(&format!(
            "| {} | {} | {}² | {} | {:.1} |\n",
            f.workload, f.batch, f.size, f.dtype, f.images_per_s
        ));
    }
    s
}
