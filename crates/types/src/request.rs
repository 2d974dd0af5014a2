//! Canonical generation requests and the events a running request emits.

use serde::{Deserialize, Serialize};

use crate::{OutputConstraints, ToolCall};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call, answering an assistant message's `tool_calls`.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// Calls an assistant message made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a `Tool` message: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A plain text message.
    pub fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }
}

/// What the model is asked to continue: a conversation rendered through the model's chat
/// template, or raw text used as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

impl Prompt {
    /// The texts a caller wrote (system and user messages, or the raw prompt), for policies
    /// that inspect what comes in, and the characters of the whole prompt.
    pub fn caller_texts_mut(&mut self) -> (Vec<&mut String>, u64) {
        match self {
            Prompt::Text(text) => {
                let total = text.chars().count() as u64;
                (vec![text], total)
            }
            Prompt::Chat(messages) => {
                let total = messages
                    .iter()
                    .map(|m| m.content.chars().count() as u64)
                    .sum();
                let texts = messages
                    .iter_mut()
                    .filter(|m| matches!(m.role, Role::System | Role::User))
                    .map(|m| &mut m.content)
                    .collect();
                (texts, total)
            }
        }
    }
}

/// How tokens are chosen. Defaults are the neutral values (no penalty, no truncation).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Drop tokens whose probability is below `min_p` times the most likely one's.
    pub min_p: f32,
    /// llama.cpp-style repetition penalty over the recent context; 1.0 disables.
    pub repetition_penalty: f32,
    /// OpenAI-style penalties over the tokens generated so far; 0 disables.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Seed for the sampler; the same seed and inputs give the same tokens.
    pub seed: Option<u64>,
    /// Added to the logits of these tokens before sampling (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            logit_bias: Vec::new(),
        }
    }
}

/// One generation: a prompt, how to sample, and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens; `None` means "until the context window is full".
    pub max_tokens: Option<u32>,
    /// Text that ends generation; it is not included in the output.
    pub stop: Vec<String>,
    /// How many alternatives to report per generated token (0 = none). `Some(0)` still reports
    /// the chosen token's own log-probability.
    pub logprobs: Option<u8>,
    /// Tools and output format; the default is free text.
    pub constraints: OutputConstraints,
    /// Where the caller asked the prompt to be kept in the prompt cache (Bedrock's
    /// `cachePoint` blocks); empty for none.
    pub cache_points: Vec<CachePoint>,
    /// For a model that thinks before it answers: switch its reasoning on or off where its
    /// chat template offers the switch; `None` keeps the model's default.
    pub thinking: Option<bool>,
}

/// A point in a chat prompt up to which the caller wants the prompt kept for reuse: the
/// tools and the first `messages` messages of `Prompt::Chat` (a point inside a message counts
/// from the message before it), for `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePoint {
    pub messages: usize,
    pub ttl: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-generation token.
    EndOfTurn,
    /// `max_tokens` was reached.
    MaxTokens,
    /// A stop sequence was produced.
    StopSequence,
    /// The context window is full.
    ContextWindow,
    /// The model called a tool and waits for its result.
    ToolUse,
    /// A guardrail blocked or masked the input or the answer.
    GuardrailIntervened,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prompt tokens whose KV entries came from the prefix cache.
    pub cached_input_tokens: u32,
    /// Prompt tokens up to the request's cache point that it computed and left in the
    /// prefix cache, kept there for the point's time to live (Bedrock's cache write).
    #[serde(default)]
    pub cache_write_input_tokens: u32,
    /// Of `output_tokens`, those the model spent reasoning before its answer.
    #[serde(default)]
    pub reasoning_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The log-probability of one generated token, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
}

/// What a running generation reports, in order: any number of `Text` and tool-call events,
/// then exactly one of `Finished` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerateEvent {
    /// New text, always whole UTF-8 characters. `logprobs` has one entry per token that this
    /// chunk completes (a token can produce no text of its own, e.g. half a character).
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// More of the model's reasoning, which comes before its answer (a thinking model's
    /// `<think>` block), always whole UTF-8 characters.
    Reasoning { text: String },
    /// A tool call starts; its arguments follow as `ToolArguments` fragments. `index`
    /// counts the calls of this generation from 0.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// More of a tool call's arguments: the fragments, joined, are its JSON object.
    ToolArguments { index: u32, json: String },
    Finished {
        reason: FinishReason,
        usage: Usage,
        /// The stop sequence that ended generation, when one did.
        stop_sequence: Option<String>,
    },
    Failed {
        error: crate::BasaltError,
        usage: Usage,
    },
}
