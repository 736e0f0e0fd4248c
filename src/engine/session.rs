//! Running an experiment: on the caller's thread ([`run_blocking`]) or on a worker
//! thread with event and command channels ([`Session::spawn`]).

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::Device;

use super::control::Control;
use super::events::{Command, Event, Summary};
use super::methods::Lab;
use super::report;
use super::run_dir::{write_text_atomic, RunDir};
use crate::config::{EvalOn, Experiment};
use crate::data::{Digits, ViewSet};
use crate::models::efficientnet_lite::EfficientNetLite;
use crate::{Error, Result};

/// Events the view has not read yet; step events beyond this are dropped.
const EVENT_BUFFER: usize = 1024;

/// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with it and present, else CPU).
pub fn select_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let n = s
                .strip_prefix("cuda:")
                .map(|n| n.parse::<usize>())
                .transpose()
                .map_err(|_| Error::config("device", format!("`{s}`: expected cuda:N")))?;
            Device::new_cuda(n.unwrap_or(0)).map_err(|e| Error::config("device", format!("`{s}` is not available: {e}")))
        }
        other => Err(Error::config("device", format!("`{other}` is not one of cpu, cuda, cuda:N, auto"))),
    }
}

/// Run the whole experiment into `run`, reporting through `ctl`.
pub fn run_experiment(exp: &Experiment, run: &RunDir, ctl: &mut Control) -> Result<Summary> {
    let started = Instant::now();
    let device = select_device(&exp.device)?;
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
    let foundation = EfficientNetLite::load(&fpath, &device)?;
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
