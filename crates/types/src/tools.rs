//! Tool use and structured output, as canonical data: the tools a caller offers, how the
//! model may use them, the calls it made, and the shape its answer must have.
//!
//! Schemas travel as JSON text: this crate stays free of a JSON library, and only the
//! grammar compiler ever needs to look inside them.

use serde::{Deserialize, Serialize};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// `[a-zA-Z0-9_-]{1,64}`, as every API surface requires.
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON Schema, as JSON text (an object schema).
    pub parameters: String,
}

/// How the model may use the tools offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides: it answers in text or calls one tool.
    #[default]
    Auto,
    /// The tools are context only; the model answers in text.
    None,
    /// The model must call one of the tools (OpenAI `required`, Bedrock and Anthropic `any`).
    Required,
    /// The model must call this tool.
    Named(String),
}

/// A call the model made (in a response) or made earlier (in the conversation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as JSON text (an object).
    pub arguments: String,
}

/// The form the answer's text must take.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// Any JSON object (OpenAI `json_object`).
    JsonObject,
    /// JSON valid against this schema (JSON text).
    JsonSchema {
        name: Option<String>,
        schema: String,
    },
}

/// Everything that constrains what a generation may produce beyond plain text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputConstraints {
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    pub format: OutputFormat,
}

impl OutputConstraints {
    /// True when the output is plain, unconstrained text.
    pub fn is_free_text(&self) -> bool {
        self.format == OutputFormat::Text
            && (self.tools.is_empty() || self.tool_choice == ToolChoice::None)
    }
}
