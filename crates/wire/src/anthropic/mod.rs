//! The Anthropic Messages dialect: `POST /v1/messages` and `/v1/messages/count_tokens`.
//!
//! Text and tool use (`tools`, `tool_choice`, `tool_use` and `tool_result` blocks); images
//! and documents are refused with an error naming the block, as our models read text only.

use std::time::Duration;

use basalt_types::{
    BasaltError, CachePoint, ChatMessage, ErrorKind, GenerateRequest, OutputConstraints,
    OutputFormat, Prompt, Role, SamplingParams, ToolCall, ToolChoice, ToolSpec,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::check_range;

mod response;
pub use response::*;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Map<String, Value>>),
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Content,
}

#[derive(Debug, Deserialize)]
pub struct ToolIn {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
    /// Server tools (`web_search_...`) have a type; custom tools have none or `custom`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub cache_control: Option<Value>,
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
    #[serde(default)]
    pub tools: Vec<ToolIn>,
    pub tool_choice: Option<Value>,
    /// Extended thinking, `{"type": "enabled" | "disabled"}`: switches a thinking model's
    /// reasoning on or off (`budget_tokens` is accepted; the model's block ends when it
    /// ends it, within `max_tokens`). Enabling it for a model that does not think is refused
    /// by the engine.
    pub thinking: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<MessageIn>,
    pub system: Option<Content>,
    #[serde(default)]
    pub tools: Vec<ToolIn>,
    pub tool_choice: Option<Value>,
}

fn block_kind<'a>(block: &'a Map<String, Value>, param: &str) -> Result<&'a str, BasaltError> {
    block.get("type").and_then(Value::as_str).ok_or_else(|| {
        BasaltError::invalid(format!("{param}.type"), "a content block needs a `type`")
    })
}

fn refuse_media(kind: &str, param: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::UnsupportedForModel,
        format!(
            "content block of type `{kind}` is not supported by this model (it reads text only)"
        ),
    )
    .with_param(param)
}

/// The text of a system prompt or a tool result's content.
fn plain_text(content: Content, param: &str) -> Result<String, BasaltError> {
    match content {
        Content::Text(t) => Ok(t),
        Content::Blocks(blocks) => {
            let mut text = String::new();
            for (i, b) in blocks.iter().enumerate() {
                let param = format!("{param}.{i}");
                match block_kind(b, &param)? {
                    "text" => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    kind => return Err(refuse_media(kind, &param)),
                }
            }
            Ok(text)
        }
    }
}

/// One API message as canonical messages: tool results become `Tool` messages (before
/// any text of the same turn), tool uses become the assistant's `tool_calls`.
fn convert_message(
    role: Role,
    content: Content,
    param: &str,
    out: &mut Vec<ChatMessage>,
) -> Result<(), BasaltError> {
    let blocks = match content {
        Content::Text(t) => {
            out.push(ChatMessage::text(role, t));
            return Ok(());
        }
        Content::Blocks(b) => b,
    };
    let mut message = ChatMessage::text(role, String::new());
    for (i, b) in blocks.into_iter().enumerate() {
        let param = format!("{param}.{i}");
        match block_kind(&b, &param)? {
            "text" => message
                .content
                .push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            "tool_use" if role == Role::Assistant => {
                let field = |k: &str| {
                    b.get(k)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            BasaltError::invalid(
                                format!("{param}.{k}"),
                                format!("`{k}` is required"),
                            )
                        })
                };
                message.tool_calls.push(ToolCall {
                    id: field("id")?,
                    name: field("name")?,
                    arguments: b
                        .get("input")
                        .cloned()
                        .unwrap_or_else(|| json!({}))
                        .to_string(),
                });
            }
            "tool_result" if role == Role::User => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        BasaltError::invalid(
                            format!("{param}.tool_use_id"),
                            "`tool_use_id` is required",
                        )
                    })?;
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(v) => plain_text(
                        crate::from_value::<Content>(v.clone())?,
                        &format!("{param}.content"),
                    )?,
                };
                let content = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {content}")
                } else {
                    content
                };
                let mut result = ChatMessage::text(Role::Tool, content);
                result.tool_call_id = Some(id.to_string());
                out.push(result);
            }
            // A thinking model's earlier reasoning, sent back as the API asks: templates
            // leave past reasoning out of the prompt, and so does Basalt.
            "thinking" | "redacted_thinking" if role == Role::Assistant => {}
            kind @ ("tool_use" | "tool_result") => {
                return Err(BasaltError::invalid(
                    param,
                    format!(
                        "`{kind}` blocks are not allowed in a {} message",
                        role.as_str()
                    ),
                ))
            }
            kind => return Err(refuse_media(kind, &param)),
        }
    }
    if !message.content.is_empty() || !message.tool_calls.is_empty() {
        out.push(message);
    }
    Ok(())
}

/// A block's `cache_control` (`{"type": "ephemeral", "ttl": "5m" | "1h"}`): how long
/// the prompt up to it is to be kept, if it asks.
fn cache_control(block: Option<&Value>, param: &str) -> Result<Option<Duration>, BasaltError> {
    let Some(control) = block.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let param = format!("{param}.cache_control");
    if control.get("type").and_then(Value::as_str) != Some("ephemeral") {
        return Err(BasaltError::invalid(
            format!("{param}.type"),
            "`cache_control.type` must be `ephemeral`",
        ));
    }
    match control.get("ttl").map_or(Some("5m"), Value::as_str) {
        Some("5m") => Ok(Some(Duration::from_secs(300))),
        Some("1h") => Ok(Some(Duration::from_secs(3600))),
        _ => Err(BasaltError::invalid(
            format!("{param}.ttl"),
            "`cache_control.ttl` must be `5m` or `1h`",
        )),
    }
}

/// The `cache_control` a message's (or the system prompt's) blocks carry, the last one
/// counting: its time to live, and whether it marks the content's last block (the whole
/// message is then covered; otherwise only the messages before it).
fn marked_block(content: &Content, param: &str) -> Result<Option<(Duration, bool)>, BasaltError> {
    let Content::Blocks(blocks) = content else {
        return Ok(None);
    };
    let mut marked = None;
    for (i, b) in blocks.iter().enumerate() {
        if let Some(ttl) = cache_control(b.get("cache_control"), &format!("{param}.{i}"))? {
            marked = Some((ttl, i + 1 == blocks.len()));
        }
    }
    Ok(marked)
}

fn point(marked: Option<(Duration, bool)>, before: usize, after: usize) -> Option<CachePoint> {
    marked.map(|(ttl, whole)| CachePoint {
        messages: if whole { after } else { before },
        ttl,
    })
}

fn conversation(
    system: Option<Content>,
    messages: Vec<MessageIn>,
    cache_points: &mut Vec<CachePoint>,
) -> Result<Vec<ChatMessage>, BasaltError> {
    if messages.is_empty() {
        return Err(BasaltError::invalid(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if let Some(system) = system {
        let marked = marked_block(&system, "system")?;
        let text = plain_text(system, "system")?;
        if !text.is_empty() {
            out.push(ChatMessage::text(Role::System, text));
        }
        cache_points.extend(point(marked, 0, out.len()));
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
        let param = format!("messages.{i}.content");
        let before = out.len();
        let marked = marked_block(&m.content, &param)?;
        convert_message(role, m.content, &param, &mut out)?;
        cache_points.extend(point(marked, before, out.len()));
    }
    Ok(out)
}

/// The cache point a tool's `cache_control` asks for: tools render into the system turn,
/// so it covers the system messages.
fn tools_cache_point(
    tools: &[ToolIn],
    messages: &[ChatMessage],
) -> Result<Option<CachePoint>, BasaltError> {
    let mut point = None;
    for (i, t) in tools.iter().enumerate() {
        if let Some(ttl) = cache_control(t.cache_control.as_ref(), &format!("tools.{i}"))? {
            let messages = messages
                .iter()
                .take_while(|m| m.role == Role::System)
                .count();
            point = Some(CachePoint { messages, ttl });
        }
    }
    Ok(point)
}

fn constraints(
    tools: Vec<ToolIn>,
    choice: Option<Value>,
) -> Result<OutputConstraints, BasaltError> {
    let mut specs = Vec::with_capacity(tools.len());
    for (i, t) in tools.into_iter().enumerate() {
        if t.kind.as_deref().is_some_and(|k| k != "custom") {
            return Err(BasaltError::invalid(
                format!("tools.{i}.type"),
                format!("server tool `{}` is not available here; define custom tools with an input_schema", t.kind.unwrap_or_default()),
            ));
        }
        specs.push(ToolSpec {
            name: t.name,
            description: t.description,
            parameters: crate::schema_text(t.input_schema.as_ref()),
        });
    }
    let tool_choice = match &choice {
        None => ToolChoice::Auto,
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some("auto") => ToolChoice::Auto,
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => ToolChoice::Named(
                v.get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| BasaltError::invalid("tool_choice.name", "`name` is required"))?
                    .to_string(),
            ),
            _ => {
                return Err(BasaltError::invalid(
                    "tool_choice.type",
                    "`type` must be auto, any, tool or none",
                ))
            }
        },
    };
    Ok(OutputConstraints {
        tools: specs,
        tool_choice,
        format: OutputFormat::Text,
    })
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
        let thinking = match &self.thinking {
            None => None,
            Some(thinking) => match thinking.get("type").and_then(Value::as_str) {
                Some("disabled") => Some(false),
                Some("enabled") => Some(true),
                _ => {
                    return Err(BasaltError::invalid(
                        "thinking.type",
                        "`thinking.type` must be `enabled` or `disabled`",
                    ))
                }
            },
        };
        let mut cache_points = Vec::new();
        let messages = conversation(self.system, self.messages, &mut cache_points)?;
        cache_points.extend(tools_cache_point(&self.tools, &messages)?);
        let constraints = constraints(self.tools, self.tool_choice)?;
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
            constraints,
            cache_points,
            thinking,
        };
        Ok((self.model, request, self.stream))
    }
}

impl CountTokensRequest {
    pub fn into_prompt(self) -> Result<(String, Prompt, OutputConstraints), BasaltError> {
        let constraints = constraints(self.tools, self.tool_choice)?;
        let messages = conversation(self.system, self.messages, &mut Vec::new())?;
        Ok((self.model, Prompt::Chat(messages), constraints))
    }
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
                assert_eq!(m[0], ChatMessage::text(Role::System, "be brief"));
                assert_eq!(m[1].content, "hi");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cache_control_marks_cache_points() {
        let points = |body: &[u8]| -> Vec<(usize, u64)> {
            let req: MessagesRequest = parse_json(body).unwrap();
            let (_, r, _) = req.into_request().unwrap();
            r.cache_points
                .iter()
                .map(|p| (p.messages, p.ttl.as_secs()))
                .collect()
        };
        assert_eq!(
            points(
                br#"{"model":"m","max_tokens":5,
                     "system":[{"type":"text","text":"s","cache_control":{"type":"ephemeral"}}],
                     "messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"ephemeral","ttl":"1h"}}]},
                                 {"role":"assistant","content":"b"},
                                 {"role":"user","content":[{"type":"text","text":"c","cache_control":{"type":"ephemeral"}},{"type":"text","text":"d"}]}],
                     "tools":[{"name":"f","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}}]}"#
            ),
            [(1, 300), (2, 3600), (3, 300), (1, 300)]
        );
        let bad: MessagesRequest = parse_json(
            br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{"type":"persistent"}}]}]}"#,
        )
        .unwrap();
        let e = bad.into_request().unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages.0.content.0.cache_control.type")
        );
    }

    #[test]
    fn refuses_what_it_cannot_do_naming_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#, "messages.0.content.0"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#, "tools.0.type"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"f","input":{}}]}]}"#, "messages.0.content.0"),
            (br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tool_choice":{"type":"tool"}}"#, "tool_choice.name"),
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
    fn converts_tool_use_and_results() {
        let req: MessagesRequest = parse_json(
            br#"{"model":"m","max_tokens":50,
                 "tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
                 "tool_choice":{"type":"any"},
                 "messages":[
                   {"role":"user","content":"Weather in Paris?"},
                   {"role":"assistant","content":[{"type":"text","text":"Let me check."},
                     {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
                   {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"21C"}]},
                     {"type":"text","text":"And tomorrow?"}]}]}"#,
        )
        .unwrap();
        let (_, r, _) = req.into_request().unwrap();
        assert_eq!(r.constraints.tool_choice, ToolChoice::Required);
        assert_eq!(r.constraints.tools[0].name, "get_weather");
        let Prompt::Chat(m) = r.prompt else { panic!() };
        assert_eq!(m[1].content, "Let me check.");
        assert_eq!(m[1].tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(m[2].role, Role::Tool);
        assert_eq!(m[2].tool_call_id.as_deref(), Some("toolu_1"));
        assert_eq!(m[2].content, "21C");
        assert_eq!(m[3].content, "And tomorrow?");
    }
}
