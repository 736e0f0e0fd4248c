//! Every event as one line of text: the one wording that the headless printer and the
//! workbench's log both show, so the two never drift apart.

use super::events::{Event, FailReason};

/// How loud a line is: the printer sends warnings and errors to stderr, the
/// workbench colours them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub level: Level,
    pub text: String,
}

fn info(text: String) -> Option<Described> {
    Some(Described { level: Level::Info, text })
}

/// `n` with thousands separators.
fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A fraction as a percentage in a fixed width, so epoch lines stay in columns.
pub fn pct(x: f64) -> String {
    format!("{:5.1}%", 100.0 * x)
}

fn or_none_yet(path: &Option<String>) -> &str {
    path.as_deref().unwrap_or("none yet")
}

impl Event {
    /// The event's line; `None` for steps (views chart them) and checkpoints (the
    /// workbench lists them in its Runs pane).
    pub fn describe(&self) -> Option<Described> {
        match self {
            Event::RunStarted {
                name,
                seed,
                run_dir,
                methods,
                device,
            } => info(format!(
                "run {name} seed {seed} on {device} → {run_dir}  (methods: {})",
                methods.join(", ")
            )),
            Event::FoundationLoaded {
                path,
                variant,
                params,
                feature_dim,
            } => info(format!(
                "foundation {variant} from {path}: {:.2}M values, features {feature_dim}",
                *params as f64 / 1e6
            )),
            Event::StageStarted {
                method,
                stage,
                epochs,
                steps_per_epoch,
                trainable_params,
            } => info(format!(
                "[{method}/{stage}] {epochs} epochs × {steps_per_epoch} steps, {trainable_params} trainable parameters"
            )),
            Event::Epoch {
                method,
                stage,
                epoch,
                epochs,
                loss,
                lr,
                train_acc,
                test_acc,
                images_per_s,
                gpu_memory_mib,
            } => {
                let test = test_acc.map(pct).unwrap_or_else(|| "   -  ".into());
                let gpu = gpu_memory_mib.map(|m| format!(" GPU {:.1} GiB", m / 1024.0)).unwrap_or_default();
                info(format!(
                    "[{method}/{stage}] epoch {epoch:>3}/{epochs:<3} loss {:.4} (align {:.4} kd {:.4} ce {:.4}) lr {lr:.2e} train {} test {test} {images_per_s:7.1} img/s{gpu}",
                    loss.total, loss.align, loss.kd, loss.ce, pct(*train_acc)
                ))
            }
            Event::StageSkipped { method, stage, epoch } => info(format!("[{method}/{stage}] skipped at epoch {epoch}")),
            Event::DataLoaded { .. } => info(self.data_line()),
            Event::TargetBuilt {
                method,
                arch,
                params,
                macs,
                image_size,
            } => info(format!(
                "[{method}] target {arch}: {} parameters, {} multiply-accumulates per {image_size}×{image_size} image",
                grouped(*params as u64),
                grouped(*macs)
            )),
            Event::CacheBuilt {
                method,
                rows,
                bytes,
                wall_s,
                mapped,
                reused_from,
            } => {
                let how = match reused_from {
                    Some(run) => format!("reused from {run} (same foundation, reprogrammer and views)"),
                    None => format!("computed in {wall_s:.1}s"),
                };
                let place = if *mapped { "memory-mapped" } else { "in memory" };
                info(format!(
                    "[{method}] teacher cache: {rows} views, {:.1} KiB {place}, {how}",
                    *bytes as f64 / 1024.0
                ))
            }
            Event::Paused => info("paused".into()),
            Event::Resumed => info("resumed".into()),
            Event::ConfigApplied { changes } => info(format!("config applied: {}", changes.join("; "))),
            // Listed in the workbench's Runs pane and the run directory, not as lines.
            Event::Checkpoint { .. } => None,
            Event::Log { message } => info(message.clone()),
            Event::MethodDone {
                method,
                test_acc,
                trainable_params,
                wall_s,
                foundation_forwards,
            } => info(format!(
                "== {method}: test {} ({trainable_params} trainable params, {wall_s:.1}s, {foundation_forwards} foundation batches)",
                pct(*test_acc)
            )),
            // Charted by the workbench as the target trains; the finished one is said.
            Event::ClassReport { during: Some(_), .. } => None,
            Event::ClassReport {
                method,
                per_class,
                agreement,
                ..
            } => {
                let worst = per_class.iter().copied().fold(f64::INFINITY, f64::min);
                let best = per_class.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let agrees = agreement
                    .map(|a| format!("; agrees with its teacher on {}", pct(a)))
                    .unwrap_or_default();
                info(format!("{method}: per-class test accuracy {}–{}{agrees}", pct(worst), pct(best)))
            }
            Event::Done { wall_s, .. } => info(format!("done in {:.1} min", wall_s / 60.0)),
            Event::Failed { message, reason } => Some(match reason {
                FailReason::Aborted => Described {
                    level: Level::Warn,
                    text: "run aborted; the run directory keeps its report and checkpoints".into(),
                },
                FailReason::Diverged | FailReason::Error => Described {
                    level: Level::Error,
                    text: format!("run failed: {message}"),
                },
            }),
            Event::RunResumed {
                checkpoint,
                position,
                changes,
            } => {
                let mut text = match checkpoint {
                    Some(c) => format!("resumed from {c}; training resumed at {position}"),
                    None => format!("no checkpoint to resume from: training resumed at {position}, in the same directory"),
                };
                if !changes.is_empty() {
                    text.push_str(&format!("; taken on resuming: {}", changes.join("; ")));
                }
                info(text)
            }
            Event::Diverged { message, checkpoint } => Some(Described {
                level: Level::Error,
                text: format!("diverged: {message} (last good checkpoint: {})", or_none_yet(checkpoint)),
            }),
            Event::CheckpointFailed { message, last_good, .. } => Some(Described {
                level: Level::Warn,
                text: format!(
                    "checkpoint not written: {message}; the last good one is {}; training goes on",
                    or_none_yet(last_good)
                ),
            }),
            Event::Step { .. } => None,
        }
    }

    fn data_line(&self) -> String {
        let Event::DataLoaded {
            kind,
            root,
            classes,
            train_images,
            eval_images,
            views,
            skipped,
            resident_bytes,
            on_disk,
        } = self
        else {
            unreachable!("data_line is only called on DataLoaded")
        };
        let mut line = format!(
            "data: {kind} {root}: {} classes, {train_images} training images × {views} views, {eval_images} evaluation images, {:.1} MiB decoded in memory",
            classes.len(),
            *resident_bytes as f64 / (1024.0 * 1024.0)
        );
        if *on_disk > 0 {
            line.push_str(&format!(", {on_disk} over the memory budget (decoded from disk when used)"));
        }
        if !skipped.is_empty() {
            // The full list is in split.json; a line names the first few.
            const SHOWN: usize = 10;
            let names: Vec<String> = skipped.iter().take(SHOWN).map(|s| format!("{} ({})", s.path, s.reason)).collect();
            let more = match skipped.len().saturating_sub(SHOWN) {
                0 => String::new(),
                n => format!("; and {n} more (all in split.json)"),
            };
            line.push_str(&format!(
                "; skipped {} unreadable file(s): {}{more}",
                skipped.len(),
                names.join("; ")
            ));
        }
        line
    }
}
