//! `Converse` and `ConverseStream`: Bedrock's model-independent chat API.
//!
//! Content blocks arrive typed ([`super::content`]). Text (and guard content, which is text
//! a guardrail should look at) reaches the model, as do tool uses and tool results; cache
//! points are accepted as hints; media blocks are refused naming the block, since our text
//! models cannot see them. `toolConfig` and `outputConfig` become output constraints.

use basalt_types::{
    BasaltError, CachePoint, ChatMessage, FinishReason, GenerateRequest, OutputConstraints,
    OutputFormat, Prompt, Role, SamplingParams, ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::content::{
    unions, CacheTtl, ContentBlock, GuardContent, InputSchema, SystemBlock, Tool, ToolChoiceMember,
    ToolConfig, ToolResult, ToolResultContent, ToolUse,
};
use super::guardrails::GuardrailConfig;
pub use super::output::{ConverseResponse, ConverseStreamEvent};
use crate::check_range;

/// Generation cap when the caller gives no `maxTokens` (Bedrock's Meta models default
/// to 512 as well).
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// Meta's documented Bedrock defaults, used for every text model.
pub const DEFAULT_TEMPERATURE: f32 = 0.5;
pub const DEFAULT_TOP_P: f32 = 0.9;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: String,
    #[serde(deserialize_with = "unions")]
    pub content: Vec<ContentBlock>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InferenceConfig {
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stop_sequences: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, deserialize_with = "unions")]
    pub system: Vec<SystemBlock>,
    #[serde(default)]
    pub inference_config: InferenceConfig,
    pub tool_config: Option<ToolConfig>,
    /// Applied by the server around the generation (`crate::bedrock::guardrails`).
    pub guardrail_config: Option<GuardrailConfig>,
    pub output_config: Option<Value>,
    pub prompt_variables: Option<Value>,
    #[serde(default)]
    pub additional_model_request_fields: Map<String, Value>,
    /// Accepted for compatibility (used for log filtering on Bedrock); not interpreted.
    pub request_metadata: Option<Value>,
    pub additional_model_response_field_paths: Option<Vec<String>>,
    pub performance_config: Option<PerformanceConfig>,
    pub service_tier: Option<ServiceTier>,
}

/// `serviceTier`: how urgently the request is served. `flex` runs it below interactive
/// work at the batch price; the others run it as usual. Echoed in the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTier {
    #[serde(rename = "type")]
    pub kind: ServiceTierType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceTierType {
    Priority,
    Default,
    Flex,
    Reserved,
}

/// `performanceConfig`: accepted and echoed; every request already runs on the engine's
/// fastest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerformanceConfig {
    pub latency: Latency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Latency {
    Standard,
    Optimized,
}

/// What a response echoes of the request's tier and performance settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Echo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<ServiceTier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance_config: Option<PerformanceConfig>,
}

/// The `converse` part of a `CountTokens` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConverseTokensRequest {
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(default, deserialize_with = "unions")]
    pub system: Vec<SystemBlock>,
    pub tool_config: Option<ToolConfig>,
    #[serde(default)]
    pub additional_model_request_fields: Map<String, Value>,
}

impl ConverseRequest {
    /// The texts a guardrail evaluates on input, to read and to replace with their masked
    /// form, and the characters of text the request carries in all: the `guardContent`
    /// blocks to be guarded (not grounding sources or queries) if there are any, else the
    /// system prompt's and the user messages' text.
    pub fn guarded_texts(&mut self) -> (Vec<&mut String>, u64) {
        let mut total = 0u64;
        let mut guard_content = Vec::new();
        let mut plain = Vec::new();
        for block in &mut self.system {
            match block {
                SystemBlock::Text(t) => plain.push(t),
                SystemBlock::GuardContent(GuardContent::Text(g)) => {
                    if is_guarded(&g.qualifiers) {
                        guard_content.push(&mut g.text);
                    } else {
                        total += g.text.chars().count() as u64;
                    }
                }
                _ => {}
            }
        }
        for message in &mut self.messages {
            let user = message.role == "user";
            for block in &mut message.content {
                match block {
                    ContentBlock::Text(t) => {
                        if user {
                            plain.push(t);
                        } else {
                            total += t.chars().count() as u64;
                        }
                    }
                    ContentBlock::GuardContent(GuardContent::Text(g)) => {
                        if is_guarded(&g.qualifiers) {
                            guard_content.push(&mut g.text);
                        } else {
                            total += g.text.chars().count() as u64;
                        }
                    }
                    _ => {}
                }
            }
        }
        total += guard_content
            .iter()
            .chain(&plain)
            .map(|t| t.chars().count() as u64)
            .sum::<u64>();
        if guard_content.is_empty() {
            (plain, total)
        } else {
            (guard_content, total)
        }
    }

    /// The texts qualified for a contextual grounding check: the grounding sources, and
    /// the query (the last one given).
    pub fn grounding_texts(&self) -> (Vec<String>, Option<String>) {
        let blocks = self
            .system
            .iter()
            .filter_map(|b| match b {
                SystemBlock::GuardContent(GuardContent::Text(g)) => Some(g),
                _ => None,
            })
            .chain(self.messages.iter().flat_map(|m| {
                m.content.iter().filter_map(|b| match b {
                    ContentBlock::GuardContent(GuardContent::Text(g)) => Some(g),
                    _ => None,
                })
            }));
        let (mut sources, mut query) = (Vec::new(), None);
        for g in blocks {
            if g.qualifiers.iter().any(|q| q == "grounding_source") {
                sources.push(g.text.clone());
            }
            if g.qualifiers.iter().any(|q| q == "query") {
                query = Some(g.text.clone());
            }
        }
        (sources, query)
    }

    pub fn into_request(self) -> Result<GenerateRequest, BasaltError> {
        refuse_unsupported(
            &self.prompt_variables,
            "promptVariables",
            "prompt management",
        )?;
        let mut constraints = tool_constraints(self.tool_config.as_ref(), "toolConfig")?;
        constraints.format = output_format(self.output_config.as_ref())?;
        let cfg = self.inference_config;
        if cfg.max_tokens == Some(0) {
            return Err(BasaltError::invalid(
                "inferenceConfig.maxTokens",
                "must be at least 1",
            ));
        }
        check_range("inferenceConfig.temperature", cfg.temperature, 0.0, 1.0)?;
        check_range("inferenceConfig.topP", cfg.top_p, 0.0, 1.0)?;
        if let Some(i) = cfg.stop_sequences.iter().position(String::is_empty) {
            return Err(BasaltError::invalid(
                format!("inferenceConfig.stopSequences.{i}"),
                "stop sequences must not be empty",
            ));
        }
        let mut sampling = SamplingParams {
            temperature: cfg.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            top_p: cfg.top_p.unwrap_or(DEFAULT_TOP_P),
            ..Default::default()
        };
        let thinking = additional_fields(&self.additional_model_request_fields, &mut sampling)?;
        let mut cache_points = Vec::new();
        // Tools render into the system turn, so a point after them covers the system too.
        let tools_point = self
            .tool_config
            .iter()
            .flat_map(|c| &c.tools)
            .find_map(|t| match t {
                Tool::CachePoint(p) => Some(p.ttl()),
                Tool::ToolSpec(_) => None,
            });
        let messages = conversation(self.system, self.messages, &mut cache_points)?;
        if let Some(ttl) = tools_point {
            let system = messages
                .iter()
                .take_while(|m| m.role == Role::System)
                .count();
            cache_points.push(CachePoint {
                messages: system,
                ttl: ttl.duration(),
            });
        }
        Ok(GenerateRequest {
            prompt: Prompt::Chat(messages),
            sampling,
            max_tokens: Some(cfg.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
            stop: cfg.stop_sequences,
            logprobs: None,
            constraints,
            cache_points,
            thinking,
        })
    }
}

impl ConverseTokensRequest {
    pub fn into_prompt(self) -> Result<(Prompt, OutputConstraints), BasaltError> {
        let constraints = tool_constraints(self.tool_config.as_ref(), "input.converse.toolConfig")?;
        additional_fields(
            &self.additional_model_request_fields,
            &mut SamplingParams::default(),
        )?;
        Ok((
            Prompt::Chat(conversation(self.system, self.messages, &mut Vec::new())?),
            constraints,
        ))
    }
}

/// `toolConfig` as constraints.
fn tool_constraints(
    config: Option<&ToolConfig>,
    param: &str,
) -> Result<OutputConstraints, BasaltError> {
    let mut c = OutputConstraints::default();
    let Some(config) = config else {
        return Ok(c);
    };
    for (i, tool) in config.tools.iter().enumerate() {
        let Tool::ToolSpec(spec) = tool else {
            continue; // a cache point
        };
        let Some(InputSchema::Json(schema)) = &spec.input_schema else {
            return Err(BasaltError::invalid(
                format!("{param}.tools.{i}.toolSpec.inputSchema"),
                "`inputSchema.json` is required",
            ));
        };
        c.tools.push(ToolSpec {
            name: spec.name.clone(),
            description: spec.description.clone(),
            parameters: crate::schema_text(Some(schema)),
        });
    }
    c.tool_choice = match &config.tool_choice {
        None | Some(ToolChoiceMember::Auto(_)) => ToolChoice::Auto,
        Some(ToolChoiceMember::Any(_)) => ToolChoice::Required,
        Some(ToolChoiceMember::Tool(t)) => ToolChoice::Named(t.name.clone()),
    };
    Ok(c)
}

/// `outputConfig.textFormat`: a JSON Schema (sent as a string) the answer must follow.
fn output_format(config: Option<&Value>) -> Result<OutputFormat, BasaltError> {
    let Some(format) = config
        .and_then(|c| c.get("textFormat"))
        .filter(|v| !v.is_null())
    else {
        return Ok(OutputFormat::Text);
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return Err(BasaltError::invalid(
            "outputConfig.textFormat.type",
            "the only output format is json_schema",
        ));
    }
    let spec = format.pointer("/structure/jsonSchema").ok_or_else(|| {
        BasaltError::invalid(
            "outputConfig.textFormat.structure",
            "`structure.jsonSchema` is required",
        )
    })?;
    let schema = spec.get("schema").and_then(Value::as_str).ok_or_else(|| {
        BasaltError::invalid(
            "outputConfig.textFormat.structure.jsonSchema.schema",
            "`schema` must be the JSON Schema as a string",
        )
    })?;
    serde_json::from_str::<Value>(schema).map_err(|e| {
        BasaltError::invalid(
            "outputConfig.textFormat.structure.jsonSchema.schema",
            format!("not valid JSON: {e}"),
        )
    })?;
    Ok(OutputFormat::JsonSchema {
        name: spec.get("name").and_then(Value::as_str).map(str::to_string),
        schema: schema.to_string(),
    })
}

fn refuse_unsupported(v: &Option<Value>, param: &str, what: &str) -> Result<(), BasaltError> {
    match v {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(BasaltError::invalid(
            param,
            format!("{what} is not supported by Basalt's Converse yet"),
        )),
    }
}

/// `additionalModelRequestFields`: the sampling knobs our models have beyond
/// `inferenceConfig`, and the reasoning switch, which is returned: `thinking` and
/// `reasoning_config` / `reasoningConfig` as `{"type": "enabled" | "disabled"}` (the
/// shapes Bedrock's Claude and Nova take), or Qwen's `enable_thinking: bool`. Unknown keys
/// are an error, as Bedrock's models answer them.
fn additional_fields(
    fields: &Map<String, Value>,
    sampling: &mut SamplingParams,
) -> Result<Option<bool>, BasaltError> {
    let mut thinking = None;
    for (key, value) in fields {
        let param = format!("additionalModelRequestFields.{key}");
        let number = || {
            value
                .as_f64()
                .ok_or_else(|| BasaltError::invalid(param.as_str(), "must be a number"))
        };
        match key.as_str() {
            "top_k" | "topK" => {
                let k = value.as_u64().ok_or_else(|| {
                    BasaltError::invalid(param.as_str(), "must be a non-negative integer")
                })?;
                sampling.top_k = k.min(1 << 20) as usize;
            }
            "seed" => {
                sampling.seed = Some(value.as_u64().ok_or_else(|| {
                    BasaltError::invalid(param.as_str(), "must be a non-negative integer")
                })?);
            }
            "min_p" => {
                let v = number()? as f32;
                check_range(&param, Some(v), 0.0, 1.0)?;
                sampling.min_p = v;
            }
            "repetition_penalty" => {
                let v = number()? as f32;
                check_range(&param, Some(v), 0.0, 10.0)?;
                sampling.repetition_penalty = v;
            }
            "frequency_penalty" | "presence_penalty" => {
                let v = number()? as f32;
                check_range(&param, Some(v), -2.0, 2.0)?;
                if key == "frequency_penalty" {
                    sampling.frequency_penalty = v;
                } else {
                    sampling.presence_penalty = v;
                }
            }
            "enable_thinking" => {
                thinking = Some(value.as_bool().ok_or_else(|| {
                    BasaltError::invalid(param.as_str(), "must be true or false")
                })?);
            }
            "thinking" | "reasoning_config" | "reasoningConfig" => {
                thinking = Some(match value.get("type").and_then(Value::as_str) {
                    Some("enabled") => true,
                    Some("disabled") => false,
                    _ => {
                        return Err(BasaltError::invalid(
                            format!("{param}.type"),
                            "must be `enabled` or `disabled`",
                        ))
                    }
                });
            }
            _ => {
                return Err(BasaltError::invalid(
                    param,
                    format!(
                        "`{key}` is not a parameter of this model (supported: top_k, seed, min_p, \
                         repetition_penalty, frequency_penalty, presence_penalty, thinking, \
                         reasoning_config, enable_thinking)"
                    ),
                ))
            }
        }
    }
    Ok(thinking)
}

/// The conversation as chat messages, and the cache points in it: a `cachePoint` block
/// counts the messages before it, the one it ends included (one inside a message or the
/// system prompt counts from the message before: the cache keeps whole messages).
fn conversation(
    system: Vec<SystemBlock>,
    messages: Vec<Message>,
    cache_points: &mut Vec<CachePoint>,
) -> Result<Vec<ChatMessage>, BasaltError> {
    if messages.is_empty() {
        return Err(BasaltError::invalid(
            "messages",
            "A conversation must contain at least one message",
        ));
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    let mut system_text = Vec::new();
    // A point and whether text followed it in the same message.
    let mut point: Option<(CacheTtl, bool)> = None;
    for (i, block) in system.into_iter().enumerate() {
        let param = format!("system.{i}");
        let text = match block {
            SystemBlock::Text(t) => Some(t),
            SystemBlock::GuardContent(g) => Some(guard_text(g, &param)?),
            SystemBlock::CachePoint(p) => {
                point = Some((p.ttl(), false));
                None
            }
        };
        if let Some(t) = text {
            system_text.push(non_blank(t, &param)?);
            point = point.map(|(ttl, _)| (ttl, true));
        }
    }
    if !system_text.is_empty() {
        out.push(ChatMessage::text(Role::System, system_text.join("\n")));
    }
    let mut close_point = |point: &mut Option<(CacheTtl, bool)>, before: usize, after: usize| {
        if let Some((ttl, text_after)) = point.take() {
            let messages = if text_after { before } else { after };
            cache_points.push(CachePoint {
                messages,
                ttl: ttl.duration(),
            });
        }
    };
    close_point(&mut point, 0, out.len());
    for (i, m) in messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(BasaltError::invalid(
                    format!("messages.{i}.role"),
                    format!("role `{other}` is not valid (use user or assistant)"),
                ))
            }
        };
        if i == 0 && role != Role::User {
            return Err(BasaltError::invalid(
                "messages.0.role",
                "A conversation must start with a user message",
            ));
        }
        if m.content.is_empty() {
            return Err(BasaltError::invalid(
                format!("messages.{i}.content"),
                "a message needs at least one content block",
            ));
        }
        let mut message = ChatMessage::text(role, String::new());
        let before = out.len();
        for (j, block) in m.content.into_iter().enumerate() {
            let param = format!("messages.{i}.content.{j}");
            if !matches!(block, ContentBlock::CachePoint(_)) {
                point = point.map(|(ttl, _)| (ttl, true));
            }
            match block {
                ContentBlock::Text(t) => message.content.push_str(&non_blank(t, &param)?),
                ContentBlock::GuardContent(g) => {
                    let t = guard_text(g, &param)?;
                    message.content.push_str(&non_blank(t, &param)?);
                }
                ContentBlock::CachePoint(p) => {
                    // The later of two points in one message is the one that counts.
                    close_point(&mut point, before, before);
                    point = Some((p.ttl(), false));
                }
                ContentBlock::ToolUse(tool_use) => {
                    if role != Role::Assistant {
                        return Err(BasaltError::invalid(
                            param,
                            "only assistant messages hold toolUse blocks",
                        ));
                    }
                    message.tool_calls.push(tool_call(tool_use));
                }
                // A thinking model's earlier reasoning, sent back as the API asks: templates
                // leave past reasoning out of the prompt, and so does Basalt.
                ContentBlock::ReasoningContent(_) if role == Role::Assistant => {}
                ContentBlock::ToolResult(result) => {
                    if role != Role::User {
                        return Err(BasaltError::invalid(
                            param,
                            "only user messages hold toolResult blocks",
                        ));
                    }
                    out.push(tool_result_message(result, &param)?);
                }
                media => return Err(text_only(media.kind(), "content blocks", &param)),
            }
        }
        if !message.content.is_empty() || !message.tool_calls.is_empty() {
            out.push(message);
        }
        close_point(&mut point, before, out.len());
    }
    Ok(out)
}

/// A refusal of content a text model cannot take.
fn text_only(kind: &str, what: &str, param: &str) -> BasaltError {
    BasaltError::new(
        basalt_types::ErrorKind::UnsupportedForModel,
        format!("{param}: this model accepts text only; `{kind}` {what} are not supported"),
    )
    .with_param(param)
}

fn guard_text(g: GuardContent, param: &str) -> Result<String, BasaltError> {
    match g {
        GuardContent::Text(t) => Ok(t.text),
        GuardContent::Image(_) => Err(text_only("image", "guard contents", param)),
    }
}

/// Bedrock refuses a text block with nothing in it, in these words.
fn non_blank(text: String, param: &str) -> Result<String, BasaltError> {
    if text.trim().is_empty() {
        return Err(BasaltError::invalid(
            param,
            "The text field in the content block is blank. Add text to the text field, and try again.",
        ));
    }
    Ok(text)
}

fn tool_call(tool_use: ToolUse) -> ToolCall {
    ToolCall {
        id: tool_use.tool_use_id,
        name: tool_use.name,
        arguments: tool_use.input.unwrap_or_else(|| json!({})).to_string(),
    }
}

fn tool_result_message(result: ToolResult, param: &str) -> Result<ChatMessage, BasaltError> {
    let mut content = String::new();
    for (k, part) in result.content.into_iter().enumerate() {
        match part {
            ToolResultContent::Text(t) => content.push_str(&t),
            ToolResultContent::Json(j) => content.push_str(&j.to_string()),
            media => {
                return Err(text_only(
                    media.kind(),
                    "tool results",
                    &format!("{param}.toolResult.content.{k}"),
                ))
            }
        }
    }
    if result.status.as_deref() == Some("error") {
        content = format!("Error: {content}");
    }
    let mut message = ChatMessage::text(Role::Tool, content);
    message.tool_call_id = Some(result.tool_use_id);
    Ok(message)
}

pub use super::output::stop_reason;

/// The `Converse` response: a text block, or the tool calls the model made.
pub fn response<'a>(
    reasoning: &'a str,
    text: &'a str,
    calls: &'a [ToolCall],
    reason: FinishReason,
    usage: &Usage,
    latency_ms: u64,
) -> ConverseResponse<'a> {
    ConverseResponse::new(
        reasoning,
        text,
        calls,
        stop_reason(reason),
        usage,
        latency_ms,
    )
}

/// `ConverseStream` events. Text arrives as deltas of its content block (text blocks need
/// no start event); the stream ends with `messageStop` and `metadata`.
pub mod events {
    use super::*;
    use crate::bedrock::output::{
        BlockDelta, BlockStart, BlockStop, ConverseStreamEvent as Event, ConverseTrace, Delta,
        MessageStart, MessageStop, Metrics, Start, StreamMetadata, TokenUsage,
    };

    pub fn message_start() -> Event<'static> {
        Event::MessageStart(MessageStart { role: "assistant" })
    }

    /// Reasoning arrives as deltas of its block, which (like text) needs no start event.
    pub fn reasoning_delta(index: usize, text: &str) -> Event<'_> {
        Event::ContentBlockDelta(BlockDelta {
            content_block_index: index,
            delta: Delta::ReasoningContent(crate::bedrock::output::ReasoningDelta { text }),
        })
    }

    pub fn text_delta(index: usize, text: &str) -> Event<'_> {
        Event::ContentBlockDelta(BlockDelta {
            content_block_index: index,
            delta: Delta::Text(text),
        })
    }

    /// A tool-use block opens with its id and name.
    pub fn tool_start<'a>(index: usize, id: &'a str, name: &'a str) -> Event<'a> {
        Event::ContentBlockStart(BlockStart {
            content_block_index: index,
            start: Start::ToolUse {
                tool_use_id: id,
                name,
            },
        })
    }

    pub fn tool_input_delta(index: usize, partial_json: &str) -> Event<'_> {
        Event::ContentBlockDelta(BlockDelta {
            content_block_index: index,
            delta: Delta::ToolUse {
                input: partial_json,
            },
        })
    }

    pub fn block_stop(index: usize) -> Event<'static> {
        Event::ContentBlockStop(BlockStop {
            content_block_index: index,
        })
    }

    pub fn message_stop(reason: FinishReason) -> Event<'static> {
        message_stop_because(stop_reason(reason))
    }

    /// `messageStop` with a stop reason the engine does not give (`guardrail_intervened`).
    pub fn message_stop_because(stop_reason: &'static str) -> Event<'static> {
        Event::MessageStop(MessageStop { stop_reason })
    }

    pub fn metadata(usage: &Usage, latency_ms: u64, echo: Echo) -> Event<'static> {
        metadata_traced(usage, latency_ms, None, echo)
    }

    pub fn metadata_traced(
        usage: &Usage,
        latency_ms: u64,
        trace: Option<ConverseTrace>,
        echo: Echo,
    ) -> Event<'static> {
        Event::Metadata(StreamMetadata {
            usage: TokenUsage::of(usage),
            metrics: Metrics { latency_ms },
            trace,
            echo,
        })
    }
}

/// Whether a `guardContent` block is checked by the guardrail's policies: one without
/// qualifiers, or qualified `guard_content`. Grounding sources and queries are only read by
/// a contextual grounding check.
pub fn is_guarded(qualifiers: &[String]) -> bool {
    qualifiers.is_empty() || qualifiers.iter().any(|q| q == "guard_content")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::parse_json;

    fn request(body: &str) -> Result<GenerateRequest, BasaltError> {
        parse_json::<ConverseRequest>(body.as_bytes())?.into_request()
    }

    #[test]
    fn reasoning_switches_and_past_reasoning_are_read() {
        let m = r#""messages":[{"role":"user","content":[{"text":"x"}]},
                    {"role":"assistant","content":[{"reasoningContent":{"reasoningText":{"text":"hm"}}},{"text":"y"}]},
                    {"role":"user","content":[{"text":"z"}]}]"#;
        let thinking = |extra: &str| request(&format!("{{{m}{extra}}}")).unwrap().thinking;
        assert_eq!(thinking(""), None);
        for (fields, want) in [
            (
                r#"{"thinking":{"type":"enabled","budget_tokens":100}}"#,
                Some(true),
            ),
            (r#"{"reasoning_config":{"type":"disabled"}}"#, Some(false)),
            (r#"{"reasoningConfig":{"type":"enabled"}}"#, Some(true)),
            (r#"{"enable_thinking":false}"#, Some(false)),
        ] {
            assert_eq!(
                thinking(&format!(r#","additionalModelRequestFields":{fields}"#)),
                want,
                "{fields}"
            );
        }
        // The assistant's past reasoning is left out of the prompt.
        let Prompt::Chat(history) = request(&format!("{{{m}}}")).unwrap().prompt else {
            panic!("chat expected")
        };
        assert_eq!(history[1].content, "y");
    }

    #[test]
    fn converts_a_conversation() {
        let r = request(
            r#"{"messages":[{"role":"user","content":[{"text":"Hi "},{"cachePoint":{"type":"default"}},{"text":"there"}]},
                            {"role":"assistant","content":[{"text":"Hello"}]},
                            {"role":"user","content":[{"guardContent":{"text":{"text":"again"}}}]}],
                "system":[{"text":"Be brief."},{"text":"Be kind."}],
                "inferenceConfig":{"maxTokens":7,"temperature":0,"topP":0.5,"stopSequences":["\n"]},
                "additionalModelRequestFields":{"top_k":3,"seed":9}}"#,
        )
        .unwrap();
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.top_k, 3);
        assert_eq!(r.sampling.seed, Some(9));
        assert_eq!(r.stop, ["\n"]);
        let Prompt::Chat(m) = r.prompt else {
            panic!("chat expected")
        };
        assert_eq!(m[0].content, "Be brief.\nBe kind.");
        assert_eq!(m[1].content, "Hi there");
        assert_eq!(m[3].content, "again");
    }

    #[test]
    fn cache_points_count_the_messages_before_them() {
        let points = |body: &str| -> Vec<(usize, u64)> {
            request(body)
                .unwrap()
                .cache_points
                .iter()
                .map(|p| (p.messages, p.ttl.as_secs()))
                .collect()
        };
        // After the system prompt; after the first user turn (1h); inside the last user
        // turn, which counts from the message before it.
        assert_eq!(
            points(
                r#"{"system":[{"text":"Be brief."},{"cachePoint":{"type":"default"}}],
                    "messages":[{"role":"user","content":[{"text":"Hi"},{"cachePoint":{"type":"default","ttl":"1h"}}]},
                                {"role":"assistant","content":[{"text":"Hello"}]},
                                {"role":"user","content":[{"text":"a"},{"cachePoint":{"type":"default"}},{"text":"b"}]}]}"#
            ),
            [(1, 300), (2, 3600), (3, 300)]
        );
        // A point inside the system prompt covers nothing whole; one after the tools covers
        // the system turn they render into.
        assert_eq!(
            points(
                r#"{"system":[{"text":"a"},{"cachePoint":{"type":"default"}},{"text":"b"}],
                    "messages":[{"role":"user","content":[{"text":"Hi"}]}],
                    "toolConfig":{"tools":[{"toolSpec":{"name":"f","inputSchema":{"json":{"type":"object"}}}},
                                           {"cachePoint":{"type":"default"}}]}}"#
            ),
            [(0, 300), (1, 300)]
        );
        for bad in [
            r#"{"type":"forever"}"#,
            r#"{"type":"default","ttl":"2h"}"#,
            r#"{"type":"default","extra":1}"#,
        ] {
            let body = format!(
                r#"{{"messages":[{{"role":"user","content":[{{"text":"Hi"}},{{"cachePoint":{bad}}}]}}]}}"#
            );
            assert!(request(&body).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_match_bedrock_meta_models() {
        let r = request(r#"{"messages":[{"role":"user","content":[{"text":"x"}]}]}"#).unwrap();
        assert_eq!(r.max_tokens, Some(DEFAULT_MAX_TOKENS));
        assert_eq!(r.sampling.temperature, DEFAULT_TEMPERATURE);
        assert_eq!(r.sampling.top_p, DEFAULT_TOP_P);
    }

    #[test]
    fn errors_name_the_member() {
        let cases = [
            (r#"{"messages":[]}"#, "messages"),
            (
                r#"{"messages":[{"role":"assistant","content":[{"text":"x"}]}]}"#,
                "messages.0.role",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"},{"image":{"format":"png","source":{"bytes":"AA=="}}}]}]}"#,
                "messages.0.content.1",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"document":{"name":"d","source":{"bytes":"AA=="}}}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"  "}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x","image":{}}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"temperature":1.5}}"#,
                "inferenceConfig.temperature",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"maxTokens":0}}"#,
                "inferenceConfig.maxTokens",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"additionalModelRequestFields":{"foo":1}}"#,
                "additionalModelRequestFields.foo",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"additionalModelRequestFields":{"thinking":{"type":"on"}}}"#,
                "additionalModelRequestFields.thinking.type",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"additionalModelRequestFields":{"enable_thinking":1}}"#,
                "additionalModelRequestFields.enable_thinking",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"reasoningContent":{"reasoningText":{"text":"x"}}}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"toolConfig":{"tools":[{"toolSpec":{"name":"f"}}]}}"#,
                "toolConfig.tools.0.toolSpec.inputSchema",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"toolConfig":{"tools":[],"toolChoice":{"maybe":{}}}}"#,
                "toolConfig.toolChoice",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{nope"}}}}}"#,
                "outputConfig.textFormat.structure.jsonSchema.schema",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"toolUse":{"toolUseId":"a","name":"f","input":{}}}]}]}"#,
                "messages.0.content.0",
            ),
            (
                r#"{"messages":[{"role":"user","content":[{"text":"x"}]}],"inferenceConfig":{"max_tokens":3}}"#,
                "inferenceConfig.max_tokens",
            ),
        ];
        for (body, param) in cases {
            let e = request(body).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn tools_results_and_output_formats() {
        let r = request(
            r#"{"messages":[{"role":"user","content":[{"text":"Weather?"}]},
                  {"role":"assistant","content":[{"toolUse":{"toolUseId":"t1","name":"w","input":{"city":"Oslo"}}}]},
                  {"role":"user","content":[{"toolResult":{"toolUseId":"t1","content":[{"json":{"temp":3}}]}}]}],
                "toolConfig":{"tools":[{"toolSpec":{"name":"w","description":"weather","inputSchema":{"json":{"type":"object"}}}}],
                              "toolChoice":{"tool":{"name":"w"}}},
                "outputConfig":{"textFormat":{"type":"json_schema","structure":{"jsonSchema":{"schema":"{\"type\":\"object\"}","name":"o"}}}}}"#,
        )
        .unwrap();
        assert_eq!(r.constraints.tool_choice, ToolChoice::Named("w".into()));
        assert_eq!(
            r.constraints.tools[0].description.as_deref(),
            Some("weather")
        );
        assert!(matches!(
            r.constraints.format,
            OutputFormat::JsonSchema { .. }
        ));
        let Prompt::Chat(m) = r.prompt else { panic!() };
        assert_eq!(m[1].tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_eq!(m[2].role, Role::Tool);
        assert_eq!(m[2].content, r#"{"temp":3}"#);
    }

    fn value(v: impl serde::Serialize) -> Value {
        serde_json::to_value(v).unwrap()
    }

    /// The shapes boto3 parses, member for member.
    #[test]
    fn response_and_stream_event_shapes() {
        let usage = Usage {
            input_tokens: 5,
            output_tokens: 3,
            cached_input_tokens: 2,
            ..Usage::default()
        };
        let token_usage = json!({"inputTokens": 5, "outputTokens": 3, "totalTokens": 8,
                                 "cacheReadInputTokens": 2, "cacheWriteInputTokens": 0});
        assert_eq!(
            value(response(
                "",
                "hey",
                &[],
                FinishReason::MaxTokens,
                &usage,
                12
            )),
            json!({"output": {"message": {"role": "assistant", "content": [{"text": "hey"}]}},
                   "stopReason": "max_tokens", "usage": token_usage, "metrics": {"latencyMs": 12}})
        );
        let call = ToolCall {
            id: "t1".into(),
            name: "f".into(),
            arguments: r#"{"a":1}"#.into(),
        };
        let calls = [call];
        assert_eq!(
            value(response("", "", &calls, FinishReason::ToolUse, &usage, 1))["output"]["message"]
                ["content"],
            json!([{"toolUse": {"toolUseId": "t1", "name": "f", "input": {"a": 1}}}])
        );
        // A thinking model's reasoning comes first, as a reasoningContent block.
        assert_eq!(
            value(response("hm", "4", &[], FinishReason::EndOfTurn, &usage, 1))["output"]
                ["message"]["content"],
            json!([{"reasoningContent": {"reasoningText": {"text": "hm"}}}, {"text": "4"}])
        );
        assert_eq!(
            value(events::reasoning_delta(0, "hm")),
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hm"}}})
        );
        let cases = [
            (
                events::message_start(),
                "messageStart",
                json!({"role": "assistant"}),
            ),
            (
                events::text_delta(0, "a"),
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "a"}}),
            ),
            (
                events::tool_start(1, "t1", "f"),
                "contentBlockStart",
                json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
            ),
            (
                events::tool_input_delta(1, "{"),
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{"}}}),
            ),
            (
                events::block_stop(1),
                "contentBlockStop",
                json!({"contentBlockIndex": 1}),
            ),
            (
                events::message_stop(FinishReason::StopSequence),
                "messageStop",
                json!({"stopReason": "stop_sequence"}),
            ),
            (
                events::metadata(&usage, 9, Echo::default()),
                "metadata",
                json!({"usage": token_usage, "metrics": {"latencyMs": 9}}),
            ),
            (
                events::metadata(
                    &usage,
                    9,
                    Echo {
                        service_tier: Some(ServiceTier {
                            kind: ServiceTierType::Flex,
                        }),
                        performance_config: Some(PerformanceConfig {
                            latency: Latency::Optimized,
                        }),
                    },
                ),
                "metadata",
                json!({"usage": token_usage, "metrics": {"latencyMs": 9},
                       "serviceTier": {"type": "flex"},
                       "performanceConfig": {"latency": "optimized"}}),
            ),
        ];
        for (event, name, payload) in cases {
            assert_eq!(event.name(), name);
            assert_eq!(value(&event), payload, "{name}");
        }
    }
}
