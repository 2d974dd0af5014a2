//! Basalt's in-process inference engine.
//!
//! A [`LoadedModel`] owns one model's weights (kept in their GGUF encoding, never
//! expanded), tokenizer and chat template, and one dedicated scheduler thread.
//! [`LoadedModel::submit`] turns a canonical [`basalt_types::GenerateRequest`] into tokens, validates it
//! against the context window, and hands it to the scheduler; the caller gets a channel of
//! [`basalt_types::GenerateEvent`]s. Dropping the receiver cancels the request: the scheduler notices at
//! its next step and frees the sequence's KV memory at once.
//!
//! Heavy compute happens only on the scheduler thread, never on the caller's (async) thread;
//! `submit` does tokenisation only, which callers on an async runtime should still run via
//! `spawn_blocking` for long prompts.
//!
//! This crate must never panic on input: bad requests and bad model files are errors.

#![deny(clippy::undocumented_unsafe_blocks)]

pub mod kernels;
pub mod kv;
pub mod model;
mod prefix_cache;
pub mod reasoning;
mod sampling;
mod scheduler;
pub mod template;
pub mod text;
pub mod tokenizer;
pub mod tools;

mod config;
mod error;
mod loaded;
pub mod memory;
mod request;

pub use config::EngineConfig;
pub use error::EngineError;
pub use kernels::set_compute_threads;
pub use loaded::{open_weights, LoadedModel};
pub use request::{
    Accounting, Admission, EventReceiver, Outcome, PreparedRequest, Priority, TenantLane,
};
pub use sampling::{argmax, logprobs, Rng, Sampler};
pub use scheduler::SchedulerStats;
