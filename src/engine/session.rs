//! Running an experiment: on the caller's thread ([`run_blocking`]) or on a worker
//! thread with event and command channels ([`Session::spawn`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{DType, Device};

use super::checkpoint::{self, Checkpointer, Restore};
use super::control::Control;
use super::events::{Command, Event, FailReason, Summary};
use super::methods::Lab;
use super::report;
use super::run_dir::{write_text_atomic, RunDir};
use crate::config::{live, Experiment, Precision};
use crate::models::foundation::Foundation;
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

/// Run the whole experiment into `run`, reporting through `ctl`. `ckpt` says which
/// methods a resume skips and where it picks up; a fresh run announces itself first.
pub fn run_experiment(exp: &Experiment, run: &RunDir, ctl: &mut Control, ckpt: Checkpointer, fresh: bool) -> Result<Summary> {
    let started = Instant::now();
    let (device, why) = select_device(&exp.device)?;
    write_text_atomic(&run.file("config.toml"), &exp.to_toml())?;
    if fresh {
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
    }
    if let Some(why) = why {
        ctl.emit(Event::Log { message: why });
    }
    let data = crate::data::load_experiment(exp, &device)?;
    write_text_atomic(
        &run.file("split.json"),
        &serde_json::to_string_pretty(&data.record).unwrap_or_default(),
    )?;
    if fresh {
        ctl.emit(Event::DataLoaded {
            kind: exp.data.kind.name().into(),
            root: data.record.root.clone(),
            classes: data.classes.clone(),
            train_images: data.items,
            eval_images: data.eval.len(),
            views: data.train.views,
            skipped: data.record.skipped.clone(),
            resident_bytes: data.resident_bytes,
            on_disk: data.on_disk,
        });
    }
    let fpath = exp.foundation_path();
    let mut foundation = Foundation::load(&fpath, exp.foundation.family, &device)?;
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
    if fresh {
        ctl.emit(Event::FoundationLoaded {
            path: fpath.display().to_string(),
            variant: foundation.variant().into(),
            params: foundation.param_count(),
            feature_dim: foundation.feature_dim(),
        });
    }
    let budget = exp.data.memory_budget_bytes();
    let mut lab = Lab {
        exp,
        ctl,
        run,
        classes: data.classes.len(),
        cache_budget: budget.saturating_sub(data.resident_bytes),
        train: data.train,
        target_train: data.target_train,
        test: data.eval,
        validation: data.validation,
        transfer: data.transfer,
        items: data.items,
        device,
        foundation: &foundation,
        ckpt,
        teacher_predictions: None,
    };
    let outcome = lab.run_all();
    let summary = lab.ckpt.summary().clone();
    // An aborted or failed run still leaves a report of the methods that finished.
    let title = match &outcome {
        Ok(()) => format!("{} (k = {})", exp.name, exp.data.k),
        Err(e) => format!("{} (k = {}), stopped early: {e}", exp.name, exp.data.k),
    };
    write_text_atomic(
        &run.file("summary.json"),
        &serde_json::to_string_pretty(&summary).unwrap_or_default(),
    )?;
    let mut table = report::single_seed(&title, exp.seed, &summary, exp.data.eval_on.describe());
    table += &pictures(&run.root, exp.data.eval_on.describe());
    write_text_atomic(&run.file("report.md"), &table)?;
    outcome?;
    ctl.emit(Event::Done {
        summary: summary.clone(),
        wall_s: started.elapsed().as_secs_f64(),
    });
    Ok(summary)
}

/// Draws the run's loss and accuracy pictures and returns the report's links to them.
/// A picture that cannot be drawn is named in the report; the run's results stand.
fn pictures(run: &std::path::Path, eval_set: &str) -> String {
    match super::plots::run_plots(run, eval_set) {
        Ok(_) => "\n![Training loss per method and stage](loss.png)\n\n![Accuracy per epoch](accuracy.png)\n\nVector versions: [loss.svg](loss.svg), [accuracy.svg](accuracy.svg).\n".into(),
        Err(e) => format!("\nThe loss and accuracy pictures could not be drawn: {e}\n"),
    }
}

/// How a session starts.
#[derive(Default)]
pub struct Launch {
    /// Continue an existing run directory (see [`prepare_resume`]).
    pub resume: Option<Resume>,
    /// A person watches: divergence and failed checkpoint writes pause the run.
    pub attended: bool,
}

/// A run directory made ready to continue.
pub struct Resume {
    /// The newest checkpoint that reads back whole (`None`: start over in place).
    pub restore: Option<Restore>,
    /// Config changes taken on resuming, and checkpoints skipped as unreadable.
    pub changes: Vec<String>,
    pub notes: Vec<String>,
}

/// Keys a resume may change beyond the live ones: where and how fast it computes.
const RESUME_KEYS: &[&str] = &["device", "precision"];

/// Where the distillation schedule of `tdmr` stood at a checkpoint.
fn progress_at(r: &Restore, stages: usize) -> live::Progress {
    let m = &r.manifest;
    let (stages_started, stage_running) = if m.completed.iter().any(|c| c == "tdmr") {
        (stages, false)
    } else if m.method == "tdmr" {
        (m.position.stage_index + 1, true)
    } else {
        (0, false)
    };
    live::Progress {
        running: true,
        stages_started,
        stage_running,
    }
}

/// Open `run_dir` to continue it: the newest good checkpoint, the experiment it ran
/// (with the live edits it had taken) and, if `new` is given (else the directory's
/// `config.toml`), the changes a run in progress may take. Any other change is refused.
pub fn prepare_resume(run_dir: &Path, new: Option<Experiment>) -> Result<(Experiment, RunDir, Resume)> {
    let run = RunDir::open(run_dir)?;
    let dir = run.checkpoints();
    // Temp files of writes a kill interrupted.
    for e in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let (restore, notes) = checkpoint::latest(&dir, &Device::Cpu);
    let notes = notes
        .into_iter()
        .map(|n| format!("skipped an unreadable checkpoint: {n}"))
        .collect();
    let cfg = run.file("config.toml");
    let new = match new {
        Some(e) => e,
        None => Experiment::load(&cfg, &[])?,
    };
    let Some(r) = restore else {
        // Nothing trained was saved: start over in the same directory.
        return Ok((
            new,
            run,
            Resume {
                restore: None,
                changes: Vec::new(),
                notes,
            },
        ));
    };
    let mut base = r.experiment()?;
    base.source = new.source.clone().or(Some(cfg));
    let p = progress_at(&r, base.distill.stages.len());
    let diff = live::diff(&base, &new, &p);
    let refused: Vec<String> = diff
        .iter()
        .filter(|c| c.verdict != live::Verdict::Live && !RESUME_KEYS.contains(&c.key.as_str()))
        .map(|c| match &c.verdict {
            live::Verdict::Refused(why) => format!("{c} ({why})"),
            _ => format!("{c} (needs a new run)"),
        })
        .collect();
    if !refused.is_empty() {
        return Err(Error::config(
            format!("resume of {}", run_dir.display()),
            format!(
                "the run in progress cannot take these changes: {}. Undo them, or start a new run",
                refused.join("; ")
            ),
        ));
    }
    let mut exp = live::merge(&base, &new, &p);
    exp.device = new.device.clone();
    exp.precision = new.precision;
    let changes = diff.iter().map(|c| c.to_string()).collect();
    Ok((
        exp,
        run,
        Resume {
            restore: Some(r),
            changes,
            notes,
        },
    ))
}

fn describe(r: &Option<Restore>) -> String {
    match r {
        Some(r) => {
            let (m, p) = (&r.manifest, &r.manifest.position);
            format!("{}/{} epoch {}, batch {}", m.method, m.stage, p.epoch, p.batch)
        }
        None => "the start".into(),
    }
}

/// Continue the record from `restore` (or from nothing) and say so.
fn continue_record(ctl: &mut Control, run: &RunDir, restore: &Option<Restore>, changes: Vec<String>) -> Result<()> {
    let offset = restore.as_ref().map_or(0, |r| r.manifest.metrics_offset);
    ctl.record_from(&run.file("metrics.jsonl"), offset)?;
    ctl.emit(Event::RunResumed {
        checkpoint: restore.as_ref().map(|r| r.path.display().to_string()),
        position: describe(restore),
        changes,
    });
    Ok(())
}

/// Run on this thread; `events`, if given, receives every event.
pub fn run_blocking(
    exp: &Experiment,
    run: &RunDir,
    events: Option<mpsc::SyncSender<Event>>,
    commands: Option<Receiver<Command>>,
) -> Result<Summary> {
    run_launched(exp, run, events, commands, Launch::default())
}

/// [`run_blocking`], fresh or resumed as `launch` says. A divergence goes back to the
/// last good checkpoint when `checkpoint.lr_backoff` allows (every learning rate
/// scaled by it) or when the person watching resumes the paused run (with whatever
/// learning rates they have set meanwhile); otherwise the run stops.
pub fn run_launched(
    exp: &Experiment,
    run: &RunDir,
    events: Option<mpsc::SyncSender<Event>>,
    commands: Option<Receiver<Command>>,
    launch: Launch,
) -> Result<Summary> {
    let mut ctl = Control::new(commands, events);
    ctl.set_attended(launch.attended);
    let mut exp = exp.clone();
    let mut restore = None;
    let started = match launch.resume {
        None => ctl.record_to(&run.file("metrics.jsonl")),
        Some(r) => {
            restore = r.restore;
            continue_record(&mut ctl, run, &restore, r.changes).map(|()| {
                for n in r.notes {
                    ctl.emit(Event::Log { message: n });
                }
            })
        }
    };
    if started.is_ok() {
        ctl.tensorboard_to(&run.file("tb"), exp.to_toml());
    }
    let result = started.and_then(|()| {
        let mut backoffs = restore.as_ref().map_or(0, |r| r.manifest.backoffs);
        let mut fresh = restore.is_none();
        loop {
            let mut ckpt = Checkpointer::new(&run.checkpoints(), &exp);
            if let Some(r) = restore.take() {
                ckpt.resume_from(r);
            }
            ckpt.set_backoffs(backoffs);
            let msg = match run_experiment(&exp, run, &mut ctl, ckpt, fresh) {
                Err(Error::Diverged(msg)) => msg,
                other => return other,
            };
            let (last, _) = checkpoint::latest(&run.checkpoints(), &Device::Cpu);
            let last_path = last.as_ref().map(|r| r.path.display().to_string());
            ctl.emit(Event::Diverged {
                message: msg.clone(),
                checkpoint: last_path.clone(),
            });
            let policy = ctl.live().unwrap_or(&exp).checkpoint.clone();
            let back_off = policy.lr_backoff > 0.0 && backoffs < policy.max_backoffs;
            if !back_off {
                if !ctl.attended() {
                    return Err(Error::Diverged(format!(
                        "{msg}. Last good checkpoint: {}. Continue from it with a lower learning rate: \
                         tdmr run --resume {} --set stage1.lr=… (or the stage's lr)",
                        last_path.as_deref().unwrap_or("none (the run starts over)"),
                        run.root.display()
                    )));
                }
                ctl.pause_for_attention()?;
            }
            let mut next = ctl.live().cloned().unwrap_or_else(|| exp.clone());
            if back_off {
                backoffs += 1;
                next.scale_learning_rates(policy.lr_backoff);
                ctl.emit(Event::Log {
                    message: format!(
                        "learning rates × {} (back-off {backoffs} of {}), from the last good checkpoint",
                        policy.lr_backoff, policy.max_backoffs
                    ),
                });
            }
            ctl.set_live(next.clone());
            exp = next;
            fresh = last.is_none();
            restore = last;
            continue_record(&mut ctl, run, &restore, Vec::new())?;
        }
    });
    if let Err(e) = &result {
        ctl.emit(Event::Failed {
            message: e.to_string(),
            reason: FailReason::of(e),
        });
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
        Self::launch(exp, run, Launch::default())
    }

    pub fn launch(exp: Experiment, run: RunDir, launch: Launch) -> Session {
        let (etx, erx) = mpsc::sync_channel(EVENT_BUFFER);
        let (ctx, crx) = mpsc::channel();
        let run_dir = run.root.clone();
        let handle = std::thread::spawn(move || run_launched(&exp, &run, Some(etx), Some(crx), launch));
        Session {
            events: erx,
            commands: ctx,
            run_dir,
            handle,
        }
    }
}
