//! What Bedrock Runtime sends back, as typed structs: the `Converse` response, the payloads
//! of `ConverseStream` events, `TokenUsage`, Meta's native `InvokeModel` bodies and the
//! error body. Member names are botocore's (`bedrock-runtime/2023-09-30`).

use basalt_types::{FinishReason, ToolCall, Usage};
use serde::Serialize;
use serde_json::Value;

/// `TokenUsage`.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub total_tokens: u32,
    pub cache_read_input_tokens: u32,
    pub cache_write_input_tokens: u32,
}

impl TokenUsage {
    pub fn of(u: &Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            cache_read_input_tokens: u.cached_input_tokens,
            cache_write_input_tokens: u.cache_write_input_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub latency_ms: u64,
}

/// The `Converse` response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseResponse<'a> {
    pub output: Output<'a>,
    pub stop_reason: &'static str,
    pub usage: TokenUsage,
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<ConverseTrace>,
    #[serde(flatten)]
    pub echo: super::converse::Echo,
}

/// `ConverseTrace`: what a guardrail assessed, when the request asked for its trace.
#[derive(Debug, Serialize)]
pub struct ConverseTrace {
    pub guardrail: super::guardrails::GuardrailTrace,
}

#[derive(Debug, Serialize)]
pub struct Output<'a> {
    pub message: OutputMessage<'a>,
}

#[derive(Debug, Serialize)]
pub struct OutputMessage<'a> {
    pub role: &'static str,
    pub content: Vec<OutputBlock<'a>>,
}

/// A response content block: a union, serialised as its one member.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OutputBlock<'a> {
    /// A thinking model's reasoning: `{"reasoningContent": {"reasoningText": {"text"}}}`.
    ReasoningContent(ReasoningOut<'a>),
    Text(&'a str),
    ToolUse(ToolUseOut<'a>),
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningOut<'a> {
    pub reasoning_text: ReasoningText<'a>,
}

/// Bedrock's models may sign their reasoning; Basalt's are not signed, so the signature
/// is absent.
#[derive(Debug, Serialize)]
pub struct ReasoningText<'a> {
    pub text: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUseOut<'a> {
    pub tool_use_id: &'a str,
    pub name: &'a str,
    pub input: Value,
}

impl<'a> ConverseResponse<'a> {
    /// A text block, or the tool calls the model made (and the text before them, if any),
    /// after the model's reasoning if it thought.
    pub fn new(
        reasoning: &'a str,
        text: &'a str,
        calls: &'a [ToolCall],
        stop_reason: &'static str,
        usage: &Usage,
        latency_ms: u64,
    ) -> Self {
        let mut content = Vec::new();
        if !reasoning.is_empty() {
            content.push(OutputBlock::ReasoningContent(ReasoningOut {
                reasoning_text: ReasoningText { text: reasoning },
            }));
        }
        if !text.is_empty() || calls.is_empty() {
            content.push(OutputBlock::Text(text));
        }
        for c in calls {
            content.push(OutputBlock::ToolUse(ToolUseOut {
                tool_use_id: &c.id,
                name: &c.name,
                input: crate::arguments_value(&c.arguments),
            }));
        }
        Self {
            output: Output {
                message: OutputMessage {
                    role: "assistant",
                    content,
                },
            },
            stop_reason,
            usage: TokenUsage::of(usage),
            metrics: Metrics { latency_ms },
            trace: None,
            echo: Default::default(),
        }
    }
}

/// One `ConverseStream` event: the payload is the variant's body, the name goes in the
/// frame's `:event-type` header ([`ConverseStreamEvent::name`]).
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ConverseStreamEvent<'a> {
    MessageStart(MessageStart),
    ContentBlockStart(BlockStart<'a>),
    ContentBlockDelta(BlockDelta<'a>),
    ContentBlockStop(BlockStop),
    MessageStop(MessageStop),
    Metadata(StreamMetadata),
}

impl ConverseStreamEvent<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            ConverseStreamEvent::MessageStart(_) => "messageStart",
            ConverseStreamEvent::ContentBlockStart(_) => "contentBlockStart",
            ConverseStreamEvent::ContentBlockDelta(_) => "contentBlockDelta",
            ConverseStreamEvent::ContentBlockStop(_) => "contentBlockStop",
            ConverseStreamEvent::MessageStop(_) => "messageStop",
            ConverseStreamEvent::Metadata(_) => "metadata",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MessageStart {
    pub role: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStart<'a> {
    pub content_block_index: usize,
    pub start: Start<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Start<'a> {
    ToolUse {
        #[serde(rename = "toolUseId")]
        tool_use_id: &'a str,
        name: &'a str,
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDelta<'a> {
    pub content_block_index: usize,
    pub delta: Delta<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Delta<'a> {
    /// `{"reasoningContent": {"text": ...}}`.
    ReasoningContent(ReasoningDelta<'a>),
    Text(&'a str),
    /// A piece of the tool call's input, as JSON text.
    ToolUse {
        input: &'a str,
    },
}

#[derive(Debug, Serialize)]
pub struct ReasoningDelta<'a> {
    pub text: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStop {
    pub content_block_index: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStop {
    pub stop_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct StreamMetadata {
    pub usage: TokenUsage,
    pub metrics: Metrics,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<ConverseTrace>,
    #[serde(flatten)]
    pub echo: super::converse::Echo,
}

/// Meta Llama's native `InvokeModel` body, whole or as one streamed chunk.
#[derive(Debug, Serialize)]
pub struct LlamaGeneration<'a> {
    pub generation: &'a str,
    pub prompt_token_count: Option<u32>,
    pub generation_token_count: u32,
    pub stop_reason: Option<&'static str>,
    /// On a stream's last chunk, as Bedrock adds it.
    #[serde(
        rename = "amazon-bedrock-invocationMetrics",
        skip_serializing_if = "Option::is_none"
    )]
    pub invocation_metrics: Option<InvocationMetrics>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationMetrics {
    pub input_token_count: u32,
    pub output_token_count: u32,
    pub invocation_latency: u64,
    pub first_byte_latency: u64,
}

/// An error response's body (its name travels in `x-amzn-ErrorType`).
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub message: String,
}

/// The stop reason of an answer a guardrail blocked or masked.
pub const GUARDRAIL_INTERVENED: &str = "guardrail_intervened";

/// The reason a Converse generation stopped, as Bedrock names it.
pub fn stop_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfTurn => "end_turn",
        FinishReason::MaxTokens => "max_tokens",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::ContextWindow => "model_context_window_exceeded",
        FinishReason::ToolUse => "tool_use",
        FinishReason::GuardrailIntervened => GUARDRAIL_INTERVENED,
    }
}
