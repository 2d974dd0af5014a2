//! The Anthropic Messages dialect: `POST /v1/messages` and `/v1/messages/count_tokens`.
//!
//! Text conversations only for now: tool use, images and documents are refused with a
//! validation error naming the block (they need constrained decoding and multimodal models).

use basalt_types::{
    BasaltError, ChatMessage, ErrorKind, FinishReason, GenerateRequest, Prompt, Role,
    SamplingParams, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::check_range;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    pub messages: Vec<MessageIn>,
    pub system: Option<Content>,
    #[serde(default)]
    pub stop_sequences: Vec<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub tools: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    pub system: Option<Content>,
    pub tools: Option<Vec<Value>>,
}

fn text_of(content: Content, param: &str) -> Result<String, BasaltError> {
    match content {
        Content::Text(t) => Ok(t),
        Content::Blocks(blocks) => {
            let mut text = String::new();
            for (i, b) in blocks.into_iter().enumerate() {
                match (b.kind.as_str(), b.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    (kind, _) => {
                        return Err(BasaltError::invalid(
                            format!("{param}.{i}"),
                            format!("content block of type `{kind}` is not supported by this model (text only)"),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

fn conversation(
    system: Option<Content>,
    messages: Vec<MessageIn>,
    tools: &Option<Vec<Value>>,
) -> Result<Vec<ChatMessage>, BasaltError> {
    if tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(BasaltError::invalid(
            "tools",
            "tool use is not supported yet",
        ));
    }
    if messages.is_empty() {
        return Err(BasaltError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            out.push(ChatMessage {
                role: Role::System,
                content: text,
            });
        }
    }
    for (i, m) in messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(BasaltError::invalid(
                    format!("messages.{i}.role"),
                    format!("role `{other}` is not supported (use user or assistant)"),
                ))
            }
        };
        out.push(ChatMessage {
            role,
            content: text_of(m.content, &format!("messages.{i}.content"))?,
        });
    }
    Ok(out)
}

impl MessagesRequest {
    pub fn into_request(self) -> Result<(String, GenerateRequest, bool), BasaltError> {
        if self.max_tokens == 0 {
            return Err(BasaltError::invalid(
                "max_tokens",
                "`max_tokens` must be at least 1",
            ));
        }
        check_range("temperature", self.temperature, 0.0, 1.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        let messages = conversation(self.system, self.messages, &self.tools)?;
        let request = GenerateRequest {
            prompt: Prompt::Chat(messages),
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(1.0),
                top_k: self.top_k.unwrap_or(0) as usize,
                ..Default::default()
            },
            max_tokens: Some(self.max_tokens),
            stop: self
                .stop_sequences
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            logprobs: None,
        };
        Ok((self.model, request, self.stream))
    }
}

impl CountTokensRequest {
    pub fn into_prompt(self) -> Result<(String, Prompt), BasaltError> {
        let messages = conversation(self.system, self.messages, &self.tools)?;
        Ok((self.model, Prompt::Chat(messages)))
    }
}

pub fn stop_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfTurn => "end_turn",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::MaxTokens => "max_tokens",
        FinishReason::ContextWindow => "model_context_window_exceeded",
    }
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_input_tokens,
    })
}

/// The complete (non-streamed) response.
pub fn message(
    id: &str,
    model: &str,
    text: &str,
    reason: FinishReason,
    stop_sequence: Option<&str>,
    usage: &Usage,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason(reason),
        "stop_sequence": stop_sequence,
        "usage": usage_json(usage),
    })
}

/// `message_start`: the message shell, with the input tokens known up front.
pub fn message_start(id: &str, model: &str, input_tokens: u32) -> Value {
    json!({"type": "message_start", "message": {
        "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": 0},
    }})
}

pub fn text_block_start() -> Value {
    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
}

pub fn text_delta(text: &str) -> Value {
    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
}

pub fn block_stop() -> Value {
    json!({"type": "content_block_stop", "index": 0})
}

pub fn message_delta(reason: FinishReason, stop_sequence: Option<&str>, usage: &Usage) -> Value {
    json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(reason), "stop_sequence": stop_sequence},
        "usage": {"output_tokens": usage.output_tokens},
    })
}

/// `{"type": "error", "error": {...}}` in Anthropic's shape.
pub fn error_body(e: &BasaltError) -> Value {
    let kind = match e.kind {
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::UnsupportedForModel => "invalid_request_error",
        ErrorKind::ModelNotFound | ErrorKind::NotFound => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::Overloaded => "rate_limit_error",
        ErrorKind::Unauthenticated | ErrorKind::InvalidSignature => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::Internal => "api_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": e.message}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn converts_system_blocks_and_sampling() {
        let req: MessagesRequest = parse_json(
            br#"{"model":"m","max_tokens":10,"system":[{"type":"text","text":"be brief"}],
                 "messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                 "stop_sequences":["END"],"temperature":0.5,"top_k":5,"stream":true}"#,
        )
        .unwrap();
        let (model, r, stream) = req.into_request().unwrap();
        assert_eq!(model, "m");
        assert!(stream);
        assert_eq!(r.max_tokens, Some(10));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.sampling.top_k, 5);
        match r.prompt {
            Prompt::Chat(m) => {
                assert_eq!(
                    m[0],
                    ChatMessage {
                        role: Role::System,
                        content: "be brief".into()
                    }
                );
                assert_eq!(m[1].content, "hi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_what_it_cannot_do_naming_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#, "messages.0.content.0"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"name":"t"}]}"#, "tools"),
            (br#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#, "max_tokens"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]}"#, "messages.0.role"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"temperature":1.5}"#, "temperature"),
        ];
        for (body, param) in cases {
            let err = parse_json::<MessagesRequest>(body)
                .and_then(|r| r.into_request())
                .unwrap_err();
            assert_eq!(
                err.param.as_deref(),
                Some(*param),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = parse_json::<MessagesRequest>(br#"{"model":"m","messages":[]}"#).unwrap_err();
        assert!(e.message.contains("max_tokens"), "{}", e.message);
    }

    #[test]
    fn error_shape() {
        let v = error_body(&BasaltError::model_not_found("x"));
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "not_found_error");
    }
}
