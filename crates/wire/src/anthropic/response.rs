//! What the Messages API sends back, as typed structs: the message, the server-sent events
//! of a streamed one, and the error body. Field names and `null`s are the API's; the `type`
//! tags come from the enums, so a variant cannot be sent under the wrong name.

use basalt_types::{BasaltError, ErrorKind, FinishReason, ToolCall, Usage};
use serde::Serialize;
use serde_json::Value;

/// A complete (non-streamed) message.
#[derive(Debug, Serialize)]
pub struct Message<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub role: &'static str,
    pub model: &'a str,
    pub content: Vec<ContentBlock<'a>>,
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<&'a str>,
    pub usage: MessageUsage,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock<'a> {
    /// A thinking model's reasoning. Anthropic signs its own; Basalt's has no signature
    /// to verify (its history is never trusted as the model's own), so it is empty.
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        /// The arguments as a JSON object (`{}` while a streamed block is still open).
        input: Value,
    },
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MessageUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u32>,
}

impl MessageUsage {
    /// A finished message's usage: reads are the prefix cache's hits, writes the tokens up
    /// to the request's cache point it computed.
    pub fn of(u: &Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: Some(u.cache_write_input_tokens),
            cache_read_input_tokens: Some(u.cached_input_tokens),
        }
    }
}

/// One server-sent event of a streamed message; its `type` is also the event's name.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent<'a> {
    MessageStart {
        message: Message<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: Delta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: MessageDelta<'a>,
        usage: OutputUsage,
    },
    MessageStop,
    Error {
        error: ErrorDetail<'a>,
    },
}

impl StreamEvent<'_> {
    /// The SSE event name: the same as the `type` inside.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta<'a> {
    ThinkingDelta { thinking: &'a str },
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Debug, Serialize)]
pub struct MessageDelta<'a> {
    pub stop_reason: &'static str,
    pub stop_sequence: Option<&'a str>,
}

#[derive(Debug, Serialize)]
pub struct OutputUsage {
    pub output_tokens: u32,
}

/// `{"type": "error", "error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: &'a str,
}

pub fn stop_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfTurn => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::MaxTokens => "max_tokens",
        FinishReason::ContextWindow => "model_context_window_exceeded",
        FinishReason::ToolUse => "tool_use",
        // Anthropic's own word for an answer its safety checks stopped.
        FinishReason::GuardrailIntervened => "refusal",
    }
}

/// The complete (non-streamed) response: a text block, or the tool calls the model made.
#[allow(clippy::too_many_arguments)]
pub fn message<'a>(
    id: &'a str,
    model: &'a str,
    reasoning: &'a str,
    text: &'a str,
    calls: &'a [ToolCall],
    reason: FinishReason,
    stop_sequence: Option<&'a str>,
    usage: &Usage,
) -> Message<'a> {
    let mut content = Vec::new();
    if !reasoning.is_empty() {
        content.push(ContentBlock::Thinking {
            thinking: reasoning,
            signature: "",
        });
    }
    if !text.is_empty() || calls.is_empty() {
        content.push(ContentBlock::Text { text });
    }
    for c in calls {
        content.push(ContentBlock::ToolUse {
            id: &c.id,
            name: &c.name,
            input: crate::arguments_value(&c.arguments),
        });
    }
    Message {
        id,
        kind: "message",
        role: "assistant",
        model,
        content,
        stop_reason: Some(stop_reason(reason)),
        stop_sequence,
        usage: MessageUsage::of(usage),
    }
}

/// `message_start`: the message shell, with the input tokens known up front.
pub fn message_start<'a>(id: &'a str, model: &'a str, input_tokens: u32) -> StreamEvent<'a> {
    StreamEvent::MessageStart {
        message: Message {
            id,
            kind: "message",
            role: "assistant",
            model,
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: MessageUsage {
                input_tokens,
                output_tokens: 0,
                cache_creation_input_tokens: None,
                cache_read_input_tokens: None,
            },
        },
    }
}

pub fn thinking_block_start(index: usize) -> StreamEvent<'static> {
    StreamEvent::ContentBlockStart {
        index,
        content_block: ContentBlock::Thinking {
            thinking: "",
            signature: "",
        },
    }
}

pub fn thinking_delta(index: usize, thinking: &str) -> StreamEvent<'_> {
    StreamEvent::ContentBlockDelta {
        index,
        delta: Delta::ThinkingDelta { thinking },
    }
}

pub fn text_block_start(index: usize) -> StreamEvent<'static> {
    StreamEvent::ContentBlockStart {
        index,
        content_block: ContentBlock::Text { text: "" },
    }
}

pub fn tool_block_start<'a>(index: usize, id: &'a str, name: &'a str) -> StreamEvent<'a> {
    StreamEvent::ContentBlockStart {
        index,
        content_block: ContentBlock::ToolUse {
            id,
            name,
            input: Value::Object(serde_json::Map::new()),
        },
    }
}

pub fn text_delta(index: usize, text: &str) -> StreamEvent<'_> {
    StreamEvent::ContentBlockDelta {
        index,
        delta: Delta::TextDelta { text },
    }
}

pub fn input_json_delta(index: usize, partial_json: &str) -> StreamEvent<'_> {
    StreamEvent::ContentBlockDelta {
        index,
        delta: Delta::InputJsonDelta { partial_json },
    }
}

pub fn block_stop(index: usize) -> StreamEvent<'static> {
    StreamEvent::ContentBlockStop { index }
}

pub fn message_delta<'a>(
    reason: FinishReason,
    stop_sequence: Option<&'a str>,
    usage: &Usage,
) -> StreamEvent<'a> {
    StreamEvent::MessageDelta {
        delta: MessageDelta {
            stop_reason: stop_reason(reason),
            stop_sequence,
        },
        usage: OutputUsage {
            output_tokens: usage.output_tokens,
        },
    }
}

fn error_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::UnsupportedForModel => "invalid_request_error",
        ErrorKind::ModelNotFound | ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RequestTimeout => "timeout_error",
        ErrorKind::Overloaded | ErrorKind::QuotaExceeded => "rate_limit_error",
        ErrorKind::Unauthenticated | ErrorKind::InvalidSignature => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::Internal | ErrorKind::Unavailable => "api_error",
    }
}

fn error_detail(e: &BasaltError) -> ErrorDetail<'_> {
    ErrorDetail {
        kind: error_type(e.kind),
        message: &e.message,
    }
}

/// `{"type": "error", "error": {...}}` in Anthropic's shape.
pub fn error_body(e: &BasaltError) -> ErrorBody<'_> {
    ErrorBody {
        kind: "error",
        error: error_detail(e),
    }
}

/// The `error` event that ends a stream that failed.
pub fn error_event(e: &BasaltError) -> StreamEvent<'_> {
    StreamEvent::Error {
        error: error_detail(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// The shapes the `anthropic` SDK parses, field for field.
    #[test]
    fn responses_and_events_keep_the_api_shapes() {
        let usage = Usage {
            input_tokens: 7,
            output_tokens: 3,
            cached_input_tokens: 4,
            ..Usage::default()
        };
        let calls = [ToolCall {
            id: "toolu_1".into(),
            name: "f".into(),
            arguments: r#"{"a":1}"#.into(),
        }];
        assert_eq!(
            value(message(
                "msg_1",
                "m",
                "",
                "",
                &calls,
                FinishReason::ToolUse,
                None,
                &usage
            )),
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                   "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
                   "stop_reason": "tool_use", "stop_sequence": null,
                   "usage": {"input_tokens": 7, "output_tokens": 3,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}})
        );
        // A thinking model's reasoning comes first, as a thinking block.
        assert_eq!(
            value(message(
                "msg_2",
                "m",
                "2+2 is 4.",
                "4",
                &[],
                FinishReason::EndOfTurn,
                None,
                &usage
            ))["content"],
            json!([{"type": "thinking", "thinking": "2+2 is 4.", "signature": ""},
                   {"type": "text", "text": "4"}])
        );
        assert_eq!(
            value(thinking_block_start(0)),
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
        );
        assert_eq!(
            value(thinking_delta(0, "hm")),
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "thinking_delta", "thinking": "hm"}})
        );
        assert_eq!(
            value(message_start("msg_1", "m", 7)),
            json!({"type": "message_start", "message": {
                "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 7, "output_tokens": 0}}})
        );
        assert_eq!(
            value(tool_block_start(1, "toolu_1", "f")),
            json!({"type": "content_block_start", "index": 1,
                   "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}})
        );
        assert_eq!(
            value(input_json_delta(1, "{\"a\"")),
            json!({"type": "content_block_delta", "index": 1,
                   "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}})
        );
        assert_eq!(
            value(message_delta(
                FinishReason::StopSequence,
                Some("END"),
                &usage
            )),
            json!({"type": "message_delta",
                   "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"},
                   "usage": {"output_tokens": 3}})
        );
        assert_eq!(
            value(StreamEvent::MessageStop),
            json!({"type": "message_stop"})
        );
        assert_eq!(value(StreamEvent::Ping).to_string(), r#"{"type":"ping"}"#);
        let e = BasaltError::new(ErrorKind::Overloaded, "busy");
        assert_eq!(
            value(error_body(&e)),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "busy"}})
        );
        let event = error_event(&e);
        assert_eq!(event.name(), "error");
        assert_eq!(value(&event), value(error_body(&e)));
    }
}
