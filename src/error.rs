use std::path::PathBuf;

/// Every error names what the user has to look at: a file, a config key or a tensor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The I/O error is part of the message, not a `source`: printed once, not twice.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    #[error("config {origin}: {msg}")]
    Config { origin: String, msg: String },
    #[error("weights {path}: tensor `{tensor}`: {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },
    #[error("data: {0}")]
    Data(String),
    #[error("training diverged: {0}")]
    Diverged(String),
    /// Building or running an ONNX graph (names the tensor or node at fault).
    #[error("ONNX: {0}")]
    Onnx(String),
    #[error("run aborted by the user")]
    Aborted,
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn config(origin: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            origin: origin.into(),
            msg: msg.into(),
        }
    }
}
