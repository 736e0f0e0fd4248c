//! `tdmr`: Task-Driven Model Reprogramming.
//!
//! A frozen foundation model is reprogrammed (input prompt + output projector into a
//! proxy space + task head), then a small target model is distilled from that proxy
//! space with a progressive schedule. See the README for the method; the engine is
//! headless and talks through [`engine::Event`] and [`engine::Command`].

pub mod bench;
pub mod config;
pub mod data;
pub mod deploy;
pub mod distill;
pub mod engine;
pub mod error;
pub mod models;
pub mod onnx;
pub mod ops;
pub mod params;
pub mod progress;
pub mod reprogram;
pub mod resources;
pub mod tui;

pub use error::{Error, Result};
