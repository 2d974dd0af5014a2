//! Why a model could not be opened. Request errors are `basalt_types::BasaltError`, which
//! each API dialect renders; these are the operator's, at load and import.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Gguf(#[from] basalt_gguf::GgufError),
    #[error("model file: {0}")]
    Model(String),
    #[error("cannot start the scheduler thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The model's KV budget and buffers cannot fit in the memory available.
    #[error("not enough memory for this model: {0}")]
    OutOfMemory(String),
}
