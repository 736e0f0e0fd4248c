//! `tdmr bench`: images/s and peak memory of the workloads that dominate a run, the same
//! models, batches and sizes as `scripts/pytorch-bench.py` (the PyTorch CPU
//! reference): the small CNN and ResNet-18 (CIFAR stem) training steps, the frozen
//! EfficientNet-Lite0's forward and its forward + backward to the prompt, one stage-2
//! epoch with the teacher cache against one that recomputes the teacher, and one
//! stage-1 optimiser step at the default experiment's sizes.
//!
//! Each workload runs on the CPU kernels and, beside it, on the composed candle ops
//! they replace (`ops::cpu::set_composed_only`): the "before" column. Timings live
//! here, never in tests.

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::config::{AlignLoss, OptimizerKind, ProjectorKind, PromptKind};
use crate::distill::loss;
use crate::engine::optim::Optimizer;
use crate::models::efficientnet_lite::EfficientNetLite;
use crate::models::targets::blocks::{Conv, ConvBn, Dense, Macs};
use crate::models::targets::resnet::ResNet;
use crate::ops::isa::{self, Isa};
use crate::ops::{act::Act, cpu::set_composed_only, pool::max_pool2d};
use crate::params::Params;
use crate::reprogram::{Head, Projector, Prompt};
use crate::Result;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    pub workload: String,
    pub batch: usize,
    pub size: usize,
    pub dtype: String,
    pub images_per_s: f64,
    pub iterations: usize,
    /// Peak resident memory while the workload ran (Linux), MiB.
    pub peak_mib: Option<f64>,
    /// The same workload on the composed candle ops (`None` when not measured).
    pub before_images_per_s: Option<f64>,
    pub before_peak_mib: Option<f64>,
}

/// Where a benchmark ran: figures mean little without the CPU, the vector path the
/// kernels took and the thread count.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu: String,
    /// The path of tdmr's own loops ([`crate::ops::isa`]): scalar, avx2 or avx512.
    pub kernels: String,
    /// The micro-kernels of the convolutions' f32 GEMMs: fma, avx512 or crate.
    pub gemm: String,
    pub threads: usize,
}

impl Machine {
    pub fn here() -> Machine {
        Machine {
            cpu: isa::cpu_model(),
            kernels: Isa::active().name().into(),
            gemm: gemm_path().into(),
            threads: rayon::current_num_threads(),
        }
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CPU: {}; tdmr kernels: {}; GEMM: {}; threads: {}",
            self.cpu, self.kernels, self.gemm, self.threads
        )
    }
}

/// The micro-kernels the convolutions' f32 GEMMs run on ([`crate::ops::gemm_kernels`]).
fn gemm_path() -> &'static str {
    crate::ops::gemm_kernels::GemmKernels::active().name()
}

/// What to measure: seconds per workload after its warm-up, and whether to time the
/// composed-ops "before" figure too (one timed iteration: it is slow).
#[derive(Debug, Clone)]
pub struct Options {
    pub budget_s: f64,
    pub before: bool,
    /// Time only the workloads whose names contain this (for profiling one of them).
    pub only: Option<String>,
    /// Time only the workload at this index (`tdmr bench` runs each in its own process
    /// so that each peak-memory figure is its own).
    pub workload: Option<usize>,
}

/// How many workloads [`run`] has, in their fixed order.
pub const WORKLOADS: usize = 7;

impl Options {
    fn wants(&self, index: usize, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| name.contains(o.as_str())) && self.workload.is_none_or(|w| w == index)
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget_s: 3.0,
            before: true,
            only: None,
            workload: None,
        }
    }
}

/// mimalloc's `purge_delay` option (index 15 in mimalloc 2 and 3), as `main` sets it.
pub const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn sync(device: &Device) -> Result<()> {
    device.synchronize()?;
    Ok(())
}

/// Start a fresh peak-memory window: ask the allocator to hand freed pages back (it
/// may keep some, which is why `tdmr bench` runs each workload in its own process),
/// then reset the kernel's high-water mark (Linux `clear_refs` 5).
fn reset_peak() {
    // SAFETY: setting an option and collecting only return free pages to the OS; the
    // binary keeps freed pages otherwise (`main`), which is restored after.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        libmimalloc_sys::mi_collect(true);
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Time `step` (one batch) for `budget_s` seconds and at least `min_iters` iterations,
/// after one untimed warm-up: images/s, iterations, peak MiB.
fn time(
    device: &Device,
    batch: usize,
    budget_s: f64,
    min_iters: usize,
    step: &mut dyn FnMut() -> Result<()>,
) -> Result<(f64, usize, Option<f64>)> {
    reset_peak();
    step()?;
    sync(device)?;
    let t = Instant::now();
    let mut n = 0;
    while n < min_iters || t.elapsed().as_secs_f64() < budget_s {
        step()?;
        n += 1;
    }
    sync(device)?;
    Ok(((n * batch) as f64 / t.elapsed().as_secs_f64(), n, peak_rss_mib()))
}

/// One workload: a name, its batch and image side, and one step of it (both columns
/// run the same step on the same state; only the ops underneath change).
struct Workload<'a> {
    name: String,
    batch: usize,
    size: usize,
    dtype: DType,
    step: Box<dyn FnMut() -> Result<()> + 'a>,
}

fn measure(device: &Device, opts: &Options, index: usize, mut w: Workload) -> Result<Option<Figure>> {
    if !opts.wants(index, &w.name) {
        return Ok(None);
    }
    let (ips, iterations, peak) = time(device, w.batch, opts.budget_s, 2, &mut w.step)?;
    let (before, before_peak) = if opts.before && device.is_cpu() {
        set_composed_only(true);
        let r = time(device, w.batch, 0.0, 1, &mut w.step);
        set_composed_only(false);
        let (b, _, p) = r?;
        (Some(b), p)
    } else {
        (None, None)
    };
    Ok(Some(Figure {
        workload: w.name,
        batch: w.batch,
        size: w.size,
        dtype: format!("{:?}", w.dtype).to_lowercase(),
        images_per_s: ips,
        iterations,
        peak_mib: peak,
        before_images_per_s: before,
        before_peak_mib: before_peak,
    }))
}

fn input(device: &Device, batch: usize, size: usize, seed: u64) -> Result<Tensor> {
    let mut p = Params::new(device, seed);
    p.uniform("x", &[batch, 3, size, size], 3)
}

fn labels(device: &Device, batch: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        (0..batch as u32).map(|i| i % 10).collect::<Vec<u32>>(),
        batch,
        device,
    )?)
}

/// The reference script's small CNN: conv3×3 3→32, 32→64, max-pool, 64→128, max-pool,
/// 128→256 (each with batch norm and ReLU), global average pool, linear 256→10.
struct BenchCnn {
    convs: Vec<ConvBn>,
    fc: Dense,
}

impl BenchCnn {
    fn new(p: &mut Params) -> Result<Self> {
        let (mut side, mut macs) = (32, Macs::default());
        let mut convs = Vec::new();
        for (i, (cin, cout)) in [(3, 32), (32, 64), (64, 128), (128, 256)].into_iter().enumerate() {
            convs.push(ConvBn::new(p, format!("c{i}"), Conv::dense(cin, cout, 3, 1), &mut side, &mut macs)?);
        }
        Ok(BenchCnn {
            convs,
            fc: Dense::new(p, "fc", 256, 10)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, c) in self.convs.iter().enumerate() {
            x = c.forward_act(&x, true, Act::Relu)?;
            if i == 1 || i == 2 {
                x = max_pool2d(&x, 2, 2, 0)?;
            }
        }
        self.fc.forward(&x.mean((2, 3))?)
    }
}

/// A training step (cross-entropy, backward, AdamW) of `forward` over the parameters in `p`.
fn train_step<'a>(
    device: &Device,
    p: &Params,
    batch: usize,
    size: usize,
    forward: impl Fn(&Tensor) -> Result<Tensor> + 'a,
) -> Result<Box<dyn FnMut() -> Result<()> + 'a>> {
    let mut opt = Optimizer::new(OptimizerKind::Adamw, p.named_vars(&[String::new()]), 0.0, 0.9);
    let x = input(device, batch, size, 2)?;
    let y = labels(device, batch)?;
    Ok(Box::new(move || {
        let l = loss::cross_entropy(&forward(&x)?, &y, 0.0)?;
        opt.step(&l.backward()?, 1e-3)
    }))
}

/// Every workload; `foundation` is the EfficientNet-Lite checkpoint to time, `dtype`
/// its precision.
pub fn run(device: &Device, foundation: &std::path::Path, dtype: DType, opts: Options) -> Result<Vec<Figure>> {
    let mut out = Vec::new();

    // Workloads are built only when selected: profiling one should not include the
    // others' set-up.
    let name = "small CNN train step";
    if opts.wants(0, name) {
        let mut p = Params::new(device, 1);
        let cnn = BenchCnn::new(&mut p)?;
        out.extend(measure(
            device,
            &opts,
            0,
            Workload {
                name: name.into(),
                batch: 128,
                size: 32,
                dtype: DType::F32,
                step: train_step(device, &p, 128, 32, |x| cnn.forward(x))?,
            },
        )?);
    }

    let name = "ResNet-18 (CIFAR stem) train step";
    if opts.wants(1, name) {
        let mut p = Params::new(device, 1);
        let resnet = ResNet::new(&mut p, "r.", 18, 1.0, 3, 32)?;
        let fc = Dense::new(&mut p, "fc", resnet.feature_dim(), 10)?;
        out.extend(measure(
            device,
            &opts,
            1,
            Workload {
                name: name.into(),
                batch: 64,
                size: 32,
                dtype: DType::F32,
                step: train_step(device, &p, 64, 32, |x| fc.forward(&resnet.features(x, true)?))?,
            },
        )?);
    }

    let mut f = EfficientNetLite::load(foundation, device)?;
    if dtype != DType::F32 {
        f = f.to_dtype(dtype)?;
    }
    let variant = f.variant().to_string();
    let (batch, size) = (64, 96);
    let x = input(device, batch, size, 3)?.to_dtype(dtype)?;
    out.extend(measure(
        device,
        &opts,
        2,
        Workload {
            name: format!("{variant} forward"),
            batch,
            size,
            dtype,
            step: Box::new(|| f.features(&x).map(|_| ())),
        },
    )?);

    // The stage-1 shape: a prompt added to every image, the loss's gradient taken
    // through the frozen network back to the prompt alone.
    let prompt = Var::from_tensor(&Tensor::zeros((1, 3, size, size), dtype, device)?)?;
    out.extend(measure(
        device,
        &opts,
        3,
        Workload {
            name: format!("{variant} forward + backward to the prompt"),
            batch,
            size,
            dtype,
            step: Box::new(|| {
                let feats = f.features(&x.broadcast_add(prompt.as_tensor())?)?;
                let g = feats.sqr()?.mean_all()?.backward()?;
                match g.get(&prompt) {
                    Some(_) => Ok(()),
                    None => Err(candle_core::Error::Msg("bench: no gradient reached the prompt".into()).into()),
                }
            }),
        },
    )?);

    out.extend(stage_two(device, &f, dtype, &opts)?);
    out.extend(stage_one(device, &f, dtype, &opts)?);
    Ok(out)
}

mod stages;
use stages::{stage_one, stage_two};

/// The process's peak resident memory (Linux), for the report.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn mib(v: Option<f64>) -> String {
    v.map_or("-".into(), |m| format!("{m:.0}"))
}

pub fn table(device: &str, figures: &[Figure]) -> String {
    let mut s = format!(
        "| workload ({device}) | batch | size | dtype | images/s | peak MiB | before: images/s | before: peak MiB | speed-up |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for f in figures {
        let (before, speedup) = match f.before_images_per_s {
            Some(b) => (format!("{b:.1}"), format!("{:.1}×", f.images_per_s / b)),
            None => ("-".into(), "-".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {}² | {} | {:.1} | {} | {} | {} | {} |\n",
            f.workload,
            f.batch,
            f.size,
            f.dtype,
            f.images_per_s,
            mib(f.peak_mib),
            before,
            mib(f.before_peak_mib),
            speedup
        ));
    }
    s
}
