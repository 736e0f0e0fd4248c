//! The headless engine: optimisers, schedules, the training loop, the methods, the run
//! directory, and the `Event`/`Command` API that the runner (and later the TUI) use.

pub mod checkpoint;
pub mod class_report;
pub mod compare;
pub mod control;
pub mod describe;
pub mod events;
pub mod line_follower;
pub mod methods;
pub mod optim;
pub mod plan;
pub mod plots;
pub mod report;
pub mod run_dir;
pub mod schedule;
pub mod session;
pub mod sweep;
pub mod sweep_status;
pub mod tensorboard;
pub mod trainer;

pub use control::Control;
pub use events::{Command, Event, FailReason, LossParts, MethodResult, Summary};
pub use session::{prepare_resume, run_blocking, run_launched, Launch, Resume, Session};
