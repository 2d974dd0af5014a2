//! What the chat and legacy completions APIs send back, as typed structs: whole responses,
//! stream chunks, usage, log probabilities and the error body. Keys and `null`s are the
//! API's; where OpenAI omits a key rather than nulling it (stream deltas, `usage` on chunks
//! unless asked for) the field is skipped.

use std::collections::BTreeMap;

use basalt_types::{BasaltError, ErrorKind, FinishReason, TokenLogprob, ToolCall, Usage};
use serde::Serialize;

/// A whole response or one stream chunk: `chat.completion`, `chat.completion.chunk` or
/// `text_completion`, with its choices of type `C`.
#[derive(Debug, Serialize)]
pub struct Completion<'a, C> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub system_fingerprint: &'static str,
    pub choices: Vec<C>,
    /// Absent (`None`), `null` (`Some(None)`: a chunk of a stream that will end with
    /// usage), or the usage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<CompletionUsage>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CompletionUsage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CompletionTokensDetails {
    /// Of `completion_tokens`, those a thinking model spent reasoning.
    pub reasoning_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: u32,
}

impl CompletionUsage {
    pub fn of(u: &Usage) -> Self {
        Self {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: u.cached_input_tokens,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: u.reasoning_tokens,
            },
        }
    }
}

/// A choice of a whole chat completion.
#[derive(Debug, Serialize)]
pub struct ChatChoice<'a> {
    pub index: usize,
    pub message: AssistantMessage<'a>,
    pub logprobs: Option<ChatLogprobs<'a>>,
    pub finish_reason: Option<&'static str>,
}

/// The assistant's message: its text, or its tool calls (content `null` when it has no
/// text).
#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    pub content: Option<&'a str>,
    /// A thinking model's reasoning, in the field DeepSeek's API, vLLM and llama.cpp's
    /// server use (OpenAI's own API does not return reasoning); absent for other models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    pub refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
}

impl<'a> AssistantMessage<'a> {
    pub fn new(reasoning: &'a str, text: &'a str, calls: &'a [ToolCall]) -> Self {
        Self {
            role: "assistant",
            content: (!text.is_empty() || calls.is_empty()).then_some(text),
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            refusal: None,
            tool_calls: calls.iter().map(ToolCallOut::of).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall<'a>,
}

impl<'a> ToolCallOut<'a> {
    fn of(c: &'a ToolCall) -> Self {
        Self {
            id: &c.id,
            kind: "function",
            function: FunctionCall {
                name: &c.name,
                arguments: &c.arguments,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FunctionCall<'a> {
    pub name: &'a str,
    pub arguments: &'a str,
}

/// A choice of a text completion, whole or streamed (the same shape).
#[derive(Debug, Serialize)]
pub struct TextChoice<'a> {
    pub index: usize,
    pub text: std::borrow::Cow<'a, str>,
    pub logprobs: Option<CompletionLogprobs<'a>>,
    pub finish_reason: Option<&'static str>,
}

/// A choice of a chat stream chunk.
#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: usize,
    pub delta: Delta<'a>,
    pub logprobs: Option<ChatLogprobs<'a>>,
    pub finish_reason: Option<&'static str>,
}

/// What a chat chunk adds to its choice; empty (`{}`) on the finishing chunk.
#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

impl<'a> Delta<'a> {
    /// The first chunk of a chat choice: the role, and empty content.
    pub fn opening() -> Self {
        Self {
            role: Some("assistant"),
            content: Some(""),
            ..Self::default()
        }
    }

    pub fn reasoning(text: &'a str) -> Self {
        Self {
            reasoning_content: Some(text),
            ..Self::default()
        }
    }

    pub fn text(text: &'a str) -> Self {
        Self {
            content: Some(text),
            ..Self::default()
        }
    }

    /// Opens tool call `index`: its id and name, empty arguments.
    pub fn tool_call_start(index: u32, id: &'a str, name: &'a str) -> Self {
        Self {
            tool_calls: vec![ToolCallDelta {
                index,
                id: Some(id),
                kind: Some("function"),
                function: FunctionDelta {
                    name: Some(name),
                    arguments: "",
                },
            }],
            ..Self::default()
        }
    }

    /// More of tool call `index`'s arguments.
    pub fn tool_arguments(index: u32, json: &'a str) -> Self {
        Self {
            tool_calls: vec![ToolCallDelta {
                index,
                id: None,
                kind: None,
                function: FunctionDelta {
                    name: None,
                    arguments: json,
                },
            }],
            ..Self::default()
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ToolCallDelta<'a> {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionDelta<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub arguments: &'a str,
}

/// Chat-style `logprobs`: one entry per token.
#[derive(Debug, Serialize)]
pub struct ChatLogprobs<'a> {
    pub content: Vec<TokenLogprobOut<'a>>,
}

#[derive(Debug, Serialize)]
pub struct TokenLogprobOut<'a> {
    pub token: &'a str,
    pub logprob: f32,
    pub bytes: &'a [u8],
    pub top_logprobs: Vec<TopLogprobOut<'a>>,
}

#[derive(Debug, Serialize)]
pub struct TopLogprobOut<'a> {
    pub token: &'a str,
    pub logprob: f32,
    pub bytes: &'a [u8],
}

pub fn chat_logprobs(items: &[TokenLogprob]) -> ChatLogprobs<'_> {
    ChatLogprobs {
        content: items
            .iter()
            .map(|t| TokenLogprobOut {
                token: &t.token,
                logprob: t.logprob,
                bytes: &t.bytes,
                top_logprobs: t
                    .top
                    .iter()
                    .map(|a| TopLogprobOut {
                        token: &a.token,
                        logprob: a.logprob,
                        bytes: &a.bytes,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The legacy completions' `logprobs` object.
#[derive(Debug, Serialize)]
pub struct CompletionLogprobs<'a> {
    pub tokens: Vec<&'a str>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<BTreeMap<&'a str, f32>>,
    pub text_offset: Vec<usize>,
}

/// [`CompletionLogprobs`] of `items`; `offset` is the text offset of the first token.
pub fn completion_logprobs(items: &[TokenLogprob], mut offset: usize) -> CompletionLogprobs<'_> {
    let mut out = CompletionLogprobs {
        tokens: Vec::with_capacity(items.len()),
        token_logprobs: Vec::with_capacity(items.len()),
        top_logprobs: Vec::with_capacity(items.len()),
        text_offset: Vec::with_capacity(items.len()),
    };
    for t in items {
        out.tokens.push(&t.token);
        out.token_logprobs.push(t.logprob);
        out.top_logprobs.push(
            t.top
                .iter()
                .map(|a| (a.token.as_str(), a.logprob))
                .collect(),
        );
        out.text_offset.push(offset);
        offset += t.token.len();
    }
    out
}

pub fn finish_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfTurn | FinishReason::StopSequence => "stop",
        FinishReason::MaxTokens | FinishReason::ContextWindow => "length",
        FinishReason::ToolUse => "tool_calls",
        FinishReason::GuardrailIntervened => "content_filter",
    }
}

/// `{"error": {...}}` in OpenAI's shape.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: ErrorDetail<'a>,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail<'a> {
    pub message: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'a str>,
    pub code: Option<&'static str>,
}

pub fn error_body(e: &BasaltError) -> ErrorBody<'_> {
    let (kind, code): (&str, Option<&str>) = match e.kind {
        ErrorKind::InvalidRequest | ErrorKind::UnsupportedForModel => {
            ("invalid_request_error", None)
        }
        ErrorKind::ContextLengthExceeded => {
            ("invalid_request_error", Some("context_length_exceeded"))
        }
        ErrorKind::ModelNotFound => ("invalid_request_error", Some("model_not_found")),
        ErrorKind::NotFound => ("invalid_request_error", Some("not_found")),
        ErrorKind::PayloadTooLarge => ("invalid_request_error", Some("request_too_large")),
        ErrorKind::RequestTimeout => ("invalid_request_error", Some("request_timeout")),
        ErrorKind::Overloaded => ("rate_limit_exceeded", Some("rate_limit_exceeded")),
        ErrorKind::QuotaExceeded => ("rate_limit_exceeded", Some("insufficient_quota")),
        ErrorKind::Unauthenticated | ErrorKind::InvalidSignature => {
            ("invalid_request_error", Some("invalid_api_key"))
        }
        ErrorKind::PermissionDenied => ("permission_denied", Some("permission_denied")),
        ErrorKind::Internal => ("server_error", None),
        ErrorKind::Unavailable => ("server_error", Some("service_unavailable")),
    };
    ErrorBody {
        error: ErrorDetail {
            message: &e.message,
            kind,
            param: e.param.as_deref(),
            code,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_types::TopLogprob;
    use serde_json::{json, Value};

    fn value(v: impl Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// The shapes the `openai` SDK parses, key for key (and which keys are absent).
    #[test]
    fn responses_and_chunks_keep_the_api_shapes() {
        let calls = [ToolCall {
            id: "call_1".into(),
            name: "w".into(),
            arguments: r#"{"q":1}"#.into(),
        }];
        let usage = CompletionUsage::of(&Usage {
            input_tokens: 5,
            output_tokens: 2,
            cached_input_tokens: 3,
            ..Usage::default()
        });
        let whole = Completion {
            id: "chatcmpl-1",
            object: "chat.completion",
            created: 9,
            model: "m",
            system_fingerprint: "basalt",
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage::new("", "", &calls),
                logprobs: None,
                finish_reason: Some(finish_reason(FinishReason::ToolUse)),
            }],
            usage: Some(Some(usage)),
        };
        assert_eq!(
            value(&whole),
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 9, "model": "m",
                   "system_fingerprint": "basalt",
                   "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
                                "message": {"role": "assistant", "content": null, "refusal": null,
                                            "tool_calls": [{"id": "call_1", "type": "function",
                                                            "function": {"name": "w", "arguments": "{\"q\":1}"}}]}}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
                             "prompt_tokens_details": {"cached_tokens": 3},
                             "completion_tokens_details": {"reasoning_tokens": 0}}})
        );
        assert_eq!(
            value(AssistantMessage::new("", "hi", &[])),
            json!({"role": "assistant", "content": "hi", "refusal": null})
        );
        // A thinking model's reasoning, where DeepSeek's API and vLLM put it.
        assert_eq!(
            value(AssistantMessage::new("hm", "4", &[])),
            json!({"role": "assistant", "content": "4", "reasoning_content": "hm", "refusal": null})
        );
        let chunk = |delta, usage| Completion {
            id: "c",
            object: "chat.completion.chunk",
            created: 1,
            model: "m",
            system_fingerprint: "basalt",
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: None,
            }],
            usage,
        };
        let v = value(chunk(Delta::opening(), None));
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert!(
            v.get("usage").is_none(),
            "absent unless the stream ends with usage"
        );
        assert_eq!(
            value(chunk(Delta::reasoning("hm"), None))["choices"][0]["delta"],
            json!({"reasoning_content": "hm"})
        );
        let v = value(chunk(Delta::tool_call_start(0, "call_1", "w"), Some(None)));
        assert!(v["usage"].is_null());
        assert_eq!(
            v["choices"][0]["delta"],
            json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "w", "arguments": ""}}]})
        );
        assert_eq!(
            value(Delta::tool_arguments(0, "{")),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]})
        );
        assert_eq!(value(Delta::default()), json!({}));
    }

    #[test]
    fn logprobs_in_both_styles() {
        let items = [TokenLogprob {
            token: "ab".into(),
            bytes: b"ab".to_vec(),
            logprob: -0.5,
            top: vec![TopLogprob {
                token: "ab".into(),
                bytes: b"ab".to_vec(),
                logprob: -0.5,
            }],
        }];
        assert_eq!(
            value(chat_logprobs(&items)),
            json!({"content": [{"token": "ab", "logprob": -0.5, "bytes": [97, 98],
                                "top_logprobs": [{"token": "ab", "logprob": -0.5, "bytes": [97, 98]}]}]})
        );
        assert_eq!(
            value(completion_logprobs(&items, 3)),
            json!({"tokens": ["ab"], "token_logprobs": [-0.5], "top_logprobs": [{"ab": -0.5}],
                   "text_offset": [3]})
        );
    }

    #[test]
    fn error_body_shape() {
        assert_eq!(
            value(error_body(&BasaltError::model_not_found("x"))),
            json!({"error": {"message": BasaltError::model_not_found("x").message,
                             "type": "invalid_request_error", "param": "model",
                             "code": "model_not_found"}})
        );
    }
}
