//! Running an experiment: on the caller's thread ([`run_blocking`]) or on a worker
//! thread with event and command channels ([`Session::spawn`]).

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{DType, Device};

use super::control::Control;
use super::events::{Command, Event, Summary};
use super::methods::Lab;
use super::report;
use super::run_dir::{write_text_atomic, RunDir};
use crate::config::{EvalOn, Experiment, Precision};
use crate::data::{Digits, ViewSet};
use crate::models::efficientnet_lite::EfficientNetLite;
use crate::{Error, Result};

/// Events the view has not read yet; step events beyond this are dropped.
const EVENT_BUFFER: usize = 1024;

/// candle's CUDA errors carry a backtrace after the message: keep the message.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().trim().to_string()
}

/// A parsed `device` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Auto,
    Cuda(usize),
}

/// Parse `spec` and check this build can use it (called when the config is validated,
/// so a bad device never leaves a half-made run directory behind).
pub fn check_device_spec(spec: &str) -> std::result::Result<DeviceSpec, String> {
    let parsed = match spec {
        "cpu" => DeviceSpec::Cpu,
        "auto" => DeviceSpec::Auto,
        "cuda" => DeviceSpec::Cuda(0),
        s => match s.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) => DeviceSpec::Cuda(n),
            None => return Err(format!("`{spec}` is not one of cpu, cuda, cuda:N, auto")),
        },
    };
    if matches!(parsed, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
        return Err(format!(
            "`{spec}`: this tdmr was built without CUDA. Build one with scripts/build-cuda.sh \
             (or `cargo build --release --features cuda` where CUDA is installed), or use device = \"cpu\""
        ));
    }
    Ok(parsed)
}

/// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with it and a GPU answers, else
/// CPU). The second value says why `auto` chose what it chose.
pub fn select_device(spec: &str) -> Result<(Device, Option<String>)> {
    match check_device_spec(spec).map_err(|msg| Error::config("device", msg))? {
        DeviceSpec::Cpu => Ok((Device::Cpu, None)),
        DeviceSpec::Auto if !cfg!(feature = "cuda") => {
            Ok((Device::Cpu, Some("auto: this build has no CUDA support; using the CPU".into())))
        }
        DeviceSpec::Auto => match Device::new_cuda(0) {
            Ok(d) => Ok((d, Some("auto: using CUDA device 0".into()))),
            Err(e) => Ok((
                Device::Cpu,
                Some(format!("auto: no CUDA device answered ({}); using the CPU", first_line(&e))),
            )),
        },
        DeviceSpec::Cuda(n) => Device::new_cuda(n)
            .map(|d| (d, None))
            .map_err(|e| Error::config("device", format!("`{spec}`: CUDA device {n} is not available: {}", first_line(&e)))),
    }
}

/// Device memory in use (MiB) on a CUDA device; `None` on the CPU.
#[cfg(feature = "cuda")]
pub fn gpu_memory_mib(device: &Device) -> Option<f64> {
    use candle_core::cuda_backend::cudarc::driver::result;
    let Device::Cuda(d) = device else { return None };
    d.cuda_stream().context().bind_to_thread().ok()?;
    let (free, total) = result::mem_get_info().ok()?;
    Some(total.saturating_sub(free) as f64 / (1024.0 * 1024.0))
}

/// Device memory in use (MiB) on a CUDA device; `None` on the CPU.
#[cfg(not(feature = "cuda"))]
pub fn gpu_memory_mib(_device: &Device) -> Option<f64> {
    None
}

/// Run the whole experiment into `run`, reporting through `ctl`.
pub fn run_experiment(exp: &Experiment, run: &RunDir, ctl: &mut Control) -> Result<Summary> {
    let started = Instant::now();
    let (device, why) = select_device(&exp.device)?;
    write_text_atomic(&run.file("config.toml"), &exp.to_toml())?;
    ctl.emit(Event::RunStarted {
        name: exp.name.clone(),
        seed: exp.seed,
        run_dir: run.root.display().to_string(),
        methods: exp.methods.iter().map(|m| m.name().to_string()).collect(),
        device: match &device {
            Device::Cuda(_) => "cuda".into(),
            Device::Metal(_) => "metal".into(),
            Device::Cpu => "cpu".into(),
        },
    });
    if let Some(why) = why {
        ctl.emit(Event::Log { message: why });
    }
    let data = Digits::load(&exp.data_path())?;
    let split = data.split(exp.data.k)?;
    let eval_rows = match exp.data.eval_on {
        EvalOn::Test => &split.test,
        EvalOn::Validation if split.validation.is_empty() => {
            return Err(Error::config(
                "data.eval_on",
                format!("no validation images left at k = {} (the pool has 50 per class)", exp.data.k),
            ))
        }
        EvalOn::Validation => &split.validation,
    };
    let fpath = exp.foundation_path();
    let mut foundation = EfficientNetLite::load(&fpath, &device)?;
    if exp.precision == Precision::Bf16 {
        if device.is_cpu() {
            ctl.emit(Event::Log {
                message: "precision = \"bf16\" applies on CUDA; the CPU computes the foundation in f32".into(),
            });
        } else {
            foundation = foundation.to_dtype(DType::BF16)?;
            ctl.emit(Event::Log {
                message: "foundation in bf16 (trained parameters stay f32)".into(),
            });
        }
    }
    ctl.emit(Event::FoundationLoaded {
        path: fpath.display().to_string(),
        variant: foundation.variant().into(),
        params: foundation.param_count(),
        feature_dim: foundation.feature_dim(),
    });
    let mut lab = Lab {
        exp,
        ctl,
        run,
        train: ViewSet::new(&data, &split.train, exp.data.views, exp.seed, &device)?,
        test: ViewSet::plain(&data, eval_rows, &device)?,
        items: split.train.len(),
        device,
        foundation: &foundation,
        summary: Summary::new(),
    };
    let outcome = lab.run_all();
    let summary = std::mem::take(&mut lab.summary);
    // An aborted or failed run still leaves a report of the methods that finished.
    let title = match &outcome {
        Ok(()) => format!("{} (k = {})", exp.name, exp.data.k),
        Err(e) => format!("{} (k = {}), stopped early: {e}", exp.name, exp.data.k),
    };
    write_text_atomic(
        &run.file("summary.json"),
        &serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    write_text_atomic(
        &run.file("report.md"),
        &report::single_seed(&title, exp.seed, &summary, exp.data.eval_on.describe()),
    )?;
    outcome?;
    ctl.emit(Event::Done {
        summary: summary.clone(),
        wall_s: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

/// Run on this thread; `events`, if given, receives every event.
pub fn run_blocking(
    exp: &Experiment,
    run: &RunDir,
    events: Option<mpsc::SyncSender<Event>>,
    commands: Option<Receiver<Command>>,
) -> Result<Summary> {
    let mut ctl = Control::new(commands, events);
    ctl.record_to(&run.file("metrics.jsonl"))?;
    let result = run_experiment(exp, run, &mut ctl);
    if let Err(e) = &result {
        ctl.emit(Event::Failed { message: e.to_string() });
    }
    // The final events must reach the view: here, and only here, wait for room.
    ctl.flush();
    result
}

/// An experiment running on its own OS thread: candle work is synchronous and must
/// never block a view.
pub struct Session {
    pub events: Receiver<Event>,
    pub commands: Sender<Command>,
    pub run_dir: PathBuf,
    pub handle: JoinHandle<Result<Summary>>,
}

impl Session {
    pub fn spawn(exp: Experiment, run: RunDir) -> Session {
        let (etx, erx) = mpsc::sync_channel(EVENT_BUFFER);
        let (ctx, crx) = mpsc::channel();
        let run_dir = run.root.clone();
        let handle = std::thread::spawn(move || run_blocking(&exp, &run, Some(etx), Some(crx)));
        Session {
            events: erx,
            commands: ctx,
            run_dir,
            handle,
        }
    }
}
