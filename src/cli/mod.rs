//! One module per subcommand: its arguments and what it does. `main.rs` parses the
//! command line and dispatches here.

mod attach;
mod bench;
mod deploy;
mod inspect;
mod metrics;
mod run;
mod sweep;
mod tui;

pub(crate) use attach::*;
pub(crate) use bench::*;
pub(crate) use deploy::*;
pub(crate) use inspect::*;
pub(crate) use metrics::*;
pub(crate) use run::*;
pub(crate) use sweep::*;
pub(crate) use tui::*;
