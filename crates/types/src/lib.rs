//! The canonical vocabulary of Basalt.
//!
//! Every API dialect (OpenAI, Anthropic Messages, Bedrock) parses its own body and converts
//! it into these types; the engine only ever sees these. Keeping them free of any
//! dialect's quirks is what lets one engine serve every surface with the same behaviour.
//!
//! This crate must stay dependency-light (serde and thiserror only): every other crate
//! depends on it.

#![forbid(unsafe_code)]

mod error;
mod request;
pub mod time;
mod tools;

pub use error::{BasaltError, ErrorKind};
pub use request::{
    CachePoint, ChatMessage, FinishReason, GenerateEvent, GenerateRequest, Prompt, Role,
    SamplingParams, TokenLogprob, TopLogprob, Usage,
};
pub use tools::{OutputConstraints, OutputFormat, ToolCall, ToolChoice, ToolSpec};
