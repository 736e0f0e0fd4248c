//! Reprogramming layers: the input transformation `R_in` (visual prompt) and the output
//! transformation `R_out` (projector into the proxy space, task head).

pub mod projector;
pub mod prompt;

pub use projector::{Head, Projector};
pub use prompt::Prompt;
