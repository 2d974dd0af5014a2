//! The OpenAI dialect: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, and the
//! Responses API ([`responses`]).

use basalt_types::{
    BasaltError, ChatMessage, ErrorKind, GenerateRequest, OutputConstraints, OutputFormat, Prompt,
    Role, SamplingParams, ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::check_range;

pub mod files;
mod response;
pub mod responses;
pub use response::*;

/// Most alternatives per token the API returns (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u8 = 20;
/// Most choices per request.
pub const MAX_N: u32 = 16;
/// Most sequences one completions request may start (prompts times `n`): each is a
/// sequence in the engine, and a request beyond what the engine could ever queue must be a
/// 400, not a 429 that no retry could cure.
pub const MAX_SEQUENCES: usize = 64;
const MAX_STOP_SEQUENCES: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Calls an assistant message made.
    #[serde(default)]
    pub tool_calls: Vec<ToolCallIn>,
    /// For `tool` messages: the call answered.
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub function: FunctionCallIn,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCallIn {
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct ToolIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionIn,
}

#[derive(Debug, Deserialize)]
pub struct FunctionIn {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    /// Accepted: Basalt always enforces the schema.
    pub strict: Option<bool>,
}

/// Sampling fields shared by both generation endpoints (OpenAI's plus llama.cpp-style
/// extensions `top_k`, `min_p`, `repetition_penalty`).
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stop: Option<StopField>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    /// Token id (as a string) to a bias in -100..=100 added to its logit.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u8>,
    #[serde(default)]
    pub tools: Vec<ToolIn>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    /// Accepted; Basalt's models make at most one call per turn.
    pub parallel_tool_calls: Option<bool>,
    /// For a thinking model: `none` / `minimal` switch its reasoning off, `low` / `medium` /
    /// `high` on (the block ends when the model ends it).
    pub reasoning_effort: Option<String>,
    /// Variables for the model's chat template, as vLLM and llama.cpp's server take them;
    /// `enable_thinking` (Qwen 3's switch) is the one Basalt reads.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Filled by [`parse_chat`] from the body's sampling keys.
    #[serde(skip)]
    pub sampling: SamplingFields,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: PromptField,
    pub max_tokens: Option<u32>,
    /// Legacy completions: the number of alternatives per token (0-5).
    pub logprobs: Option<u8>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
    /// Honoured only where it changes nothing (`best_of == n`): choosing the best of more
    /// candidates than are returned is not implemented, and says so.
    pub best_of: Option<u32>,
    /// Filled by [`parse_completion`] from the body's sampling keys.
    #[serde(skip)]
    pub sampling: SamplingFields,
}

/// The body keys that belong to [`SamplingFields`].
const SAMPLING_KEYS: &[&str] = &[
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "n",
    "stop",
    "stream",
    "stream_options",
    "logit_bias",
];
/// Most entries in `logit_bias`.
const MAX_LOGIT_BIAS: usize = 1024;

/// Splits a body into its sampling part and the rest, and parses both with field paths
/// intact (serde's `flatten` would lose them, and errors would no longer name the field).
fn parse_split<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<(T, SamplingFields), BasaltError> {
    let value: Value = crate::parse_json(body)?;
    let Value::Object(mut rest) = value else {
        return Err(BasaltError::invalid(
            "body",
            "The request body must be a JSON object.",
        ));
    };
    let mut sampling = serde_json::Map::new();
    for key in SAMPLING_KEYS {
        if let Some(v) = rest.remove(*key) {
            if !v.is_null() {
                sampling.insert((*key).to_string(), v);
            }
        }
    }
    let sampling: SamplingFields = crate::from_value(Value::Object(sampling))?;
    let request: T = crate::from_value(Value::Object(rest))?;
    Ok((request, sampling))
}

pub fn parse_chat(body: &[u8]) -> Result<ChatCompletionRequest, BasaltError> {
    let (mut r, sampling): (ChatCompletionRequest, _) = parse_split(body)?;
    r.sampling = sampling;
    Ok(r)
}

pub fn parse_completion(body: &[u8]) -> Result<CompletionRequest, BasaltError> {
    let (mut r, sampling): (CompletionRequest, _) = parse_split(body)?;
    r.sampling = sampling;
    Ok(r)
}

/// What the server needs to run a request: one canonical request per choice (`n` and
/// multiple prompts fan out), plus how to stream.
#[derive(Debug)]
pub struct Plan {
    pub model: String,
    pub requests: Vec<GenerateRequest>,
    pub stream: bool,
    pub include_usage: bool,
    /// Completions with `echo`: text to put before each choice's output.
    pub echo: Vec<String>,
    /// Consecutive requests that share one prompt (`n`): usage counts that prompt once.
    pub choices_per_prompt: usize,
}

impl SamplingFields {
    fn validate(&self) -> Result<(), BasaltError> {
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        check_range("min_p", self.min_p, 0.0, 1.0)?;
        check_range("repetition_penalty", self.repetition_penalty, 0.0, 10.0)?;
        check_range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?;
        check_range("presence_penalty", self.presence_penalty, -2.0, 2.0)?;
        if let Some(n) = self.n {
            if n == 0 || n > MAX_N {
                return Err(BasaltError::invalid(
                    "n",
                    format!("`n` must be between 1 and {MAX_N}, got {n}"),
                ));
            }
        }
        if self.top_p == Some(0.0) {
            return Err(BasaltError::invalid(
                "top_p",
                "`top_p` must be greater than 0",
            ));
        }
        self.logit_bias()?;
        if self.stream_options.is_some() && !self.stream {
            return Err(BasaltError::invalid(
                "stream_options",
                "`stream_options` is only allowed when `stream` is true",
            ));
        }
        Ok(())
    }

    fn stops(&self) -> Result<Vec<String>, BasaltError> {
        let stops = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(BasaltError::invalid(
                "stop",
                format!("at most {MAX_STOP_SEQUENCES} stop sequences are allowed"),
            ));
        }
        Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
    }

    /// Sampling parameters for choice `index`: each choice gets its own seed (derived from
    /// the request's) so `n` choices differ but stay reproducible.
    /// `logit_bias` as token ids and biases; whether each id is in the model's vocabulary is
    /// the engine's to check.
    fn logit_bias(&self) -> Result<Vec<(u32, f32)>, BasaltError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        if map.len() > MAX_LOGIT_BIAS {
            return Err(BasaltError::invalid(
                "logit_bias",
                format!("at most {MAX_LOGIT_BIAS} tokens may be biased"),
            ));
        }
        map.iter()
            .map(|(token, &bias)| {
                let id = token.parse::<u32>().map_err(|_| {
                    BasaltError::invalid(
                        "logit_bias",
                        format!("`{token}` is not a token id (a non-negative integer)"),
                    )
                })?;
                check_range("logit_bias", Some(bias), -100.0, 100.0)?;
                Ok((id, bias))
            })
            .collect()
    }

    fn params(&self, index: u32) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            top_k: self.top_k.unwrap_or(0) as usize,
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            seed: self.seed.map(|s| (s as u64).wrapping_add(index as u64)),
            // Validated in `validate`, which every plan runs first.
            logit_bias: self.logit_bias().unwrap_or_default(),
        }
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

fn max_tokens(param: &str, v: Option<u32>) -> Result<Option<u32>, BasaltError> {
    match v {
        Some(0) => Err(BasaltError::invalid(
            param,
            format!("`{param}` must be at least 1"),
        )),
        v => Ok(v),
    }
}

impl ChatCompletionRequest {
    pub fn into_plan(self) -> Result<Plan, BasaltError> {
        self.sampling.validate()?;
        let constraints = self.constraints()?;
        if self.messages.is_empty() {
            return Err(BasaltError::invalid(
                "messages",
                "`messages` must contain at least one message",
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => Role::Tool,
                other => {
                    return Err(BasaltError::invalid(
                        format!("messages[{i}].role"),
                        format!("role `{other}` is not supported (use system, developer, user, assistant or tool)"),
                    ))
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    let mut text = String::new();
                    for (j, p) in parts.into_iter().enumerate() {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(BasaltError::new(
                                    ErrorKind::UnsupportedForModel,
                                    format!("content part of type `{kind}` is not supported by this model (text only)"),
                                ).with_param(format!("messages[{i}].content[{j}]")))
                            }
                        }
                    }
                    text
                }
            };
            let mut message = ChatMessage::text(role, content);
            if role == Role::Tool {
                message.tool_call_id = Some(m.tool_call_id.ok_or_else(|| {
                    BasaltError::invalid(
                        format!("messages[{i}].tool_call_id"),
                        "`tool` messages need the `tool_call_id` they answer",
                    )
                })?);
            }
            for (j, call) in m.tool_calls.into_iter().enumerate() {
                if role != Role::Assistant {
                    return Err(BasaltError::invalid(
                        format!("messages[{i}].tool_calls"),
                        "only assistant messages carry tool calls",
                    ));
                }
                if call.kind.as_deref().is_some_and(|k| k != "function") {
                    return Err(BasaltError::invalid(
                        format!("messages[{i}].tool_calls[{j}].type"),
                        "tool calls must be of type `function`",
                    ));
                }
                message.tool_calls.push(ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments,
                });
            }
            messages.push(message);
        }
        if self.top_logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
            return Err(BasaltError::invalid(
                "top_logprobs",
                format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}"),
            ));
        }
        if self.top_logprobs.is_some() && !self.logprobs {
            return Err(BasaltError::invalid(
                "top_logprobs",
                "`top_logprobs` requires `logprobs` to be true",
            ));
        }
        let limit = max_tokens("max_completion_tokens", self.max_completion_tokens)?
            .or(max_tokens("max_tokens", self.max_tokens)?);
        let stop = self.sampling.stops()?;
        let logprobs = self.logprobs.then(|| self.top_logprobs.unwrap_or(0));
        let thinking = thinking_switch(
            self.reasoning_effort.as_deref(),
            self.chat_template_kwargs.as_ref(),
        )?;
        let n = self.sampling.n.unwrap_or(1);
        let requests = (0..n)
            .map(|i| GenerateRequest {
                prompt: Prompt::Chat(messages.clone()),
                sampling: self.sampling.params(i),
                max_tokens: limit,
                stop: stop.clone(),
                logprobs,
                constraints: constraints.clone(),
                cache_points: Vec::new(),
                thinking,
            })
            .collect();
        Ok(Plan {
            model: self.model,
            requests,
            stream: self.sampling.stream,
            include_usage: self.sampling.include_usage(),
            echo: Vec::new(),
            choices_per_prompt: n as usize,
        })
    }
}

impl ChatCompletionRequest {
    /// `tools`, `tool_choice` and `response_format` as canonical constraints.
    fn constraints(&self) -> Result<OutputConstraints, BasaltError> {
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.iter().enumerate() {
            if t.kind != "function" {
                return Err(BasaltError::invalid(
                    format!("tools[{i}].type"),
                    format!("tool type `{}` is not supported (use function)", t.kind),
                ));
            }
            tools.push(ToolSpec {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                parameters: crate::schema_text(t.function.parameters.as_ref()),
            });
        }
        let tool_choice = match &self.tool_choice {
            None => ToolChoice::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => {
                    return Err(BasaltError::invalid(
                        "tool_choice",
                        format!("`{other}` is not a tool choice (use auto, none, required or a named function)"),
                    ))
                }
            },
            Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
                Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                    ToolChoice::Named(name.to_string())
                }
                _ => {
                    return Err(BasaltError::invalid(
                        "tool_choice",
                        "a named tool choice is {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    ))
                }
            },
        };
        let format = match &self.response_format {
            None => OutputFormat::Text,
            Some(v) => match v.get("type").and_then(Value::as_str) {
                Some("text") => OutputFormat::Text,
                Some("json_object") => OutputFormat::JsonObject,
                Some("json_schema") => {
                    let spec = v.get("json_schema").ok_or_else(|| {
                        BasaltError::invalid(
                            "response_format.json_schema",
                            "`json_schema` is required when the type is json_schema",
                        )
                    })?;
                    OutputFormat::JsonSchema {
                        name: spec.get("name").and_then(Value::as_str).map(str::to_string),
                        schema: crate::schema_text(spec.get("schema")),
                    }
                }
                _ => {
                    return Err(BasaltError::invalid(
                        "response_format.type",
                        "`type` must be text, json_object or json_schema",
                    ))
                }
            },
        };
        Ok(OutputConstraints {
            tools,
            tool_choice,
            format,
        })
    }
}

impl CompletionRequest {
    pub fn into_plan(self) -> Result<Plan, BasaltError> {
        self.sampling.validate()?;
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(BasaltError::invalid(
                "suffix",
                "`suffix` (fill-in-the-middle) is not supported",
            ));
        }
        if self.logprobs.is_some_and(|k| k > 5) {
            return Err(BasaltError::invalid(
                "logprobs",
                "`logprobs` must be between 0 and 5",
            ));
        }
        let prompts = match self.prompt {
            PromptField::One(p) => vec![p],
            PromptField::Many(v) if v.is_empty() => {
                return Err(BasaltError::invalid(
                    "prompt",
                    "`prompt` must not be an empty list",
                ))
            }
            PromptField::Many(v) => v,
        };
        let n = self.sampling.n.unwrap_or(1);
        if let Some(best_of) = self.best_of.filter(|&b| b != n) {
            return Err(BasaltError::invalid(
                "best_of",
                format!(
                    "`best_of` ({best_of}) other than `n` ({n}) is not supported: Basalt does not \
                     choose among hidden candidates"
                ),
            ));
        }
        if prompts.len() * n as usize > MAX_SEQUENCES {
            return Err(BasaltError::invalid(
                "prompt",
                format!(
                    "{} prompts with n = {n} make {} completions; at most {MAX_SEQUENCES} are \
                     allowed per request",
                    prompts.len(),
                    prompts.len() * n as usize
                ),
            ));
        }
        // OpenAI's default for the legacy completions endpoint.
        let limit = Some(max_tokens("max_tokens", self.max_tokens)?.unwrap_or(16));
        let stop = self.sampling.stops()?;
        let mut requests = Vec::new();
        let mut echo = Vec::new();
        for prompt in &prompts {
            for i in 0..n {
                requests.push(GenerateRequest {
                    prompt: Prompt::Text(prompt.clone()),
                    sampling: self.sampling.params(i),
                    max_tokens: limit,
                    stop: stop.clone(),
                    logprobs: self.logprobs,
                    constraints: Default::default(),
                    cache_points: Vec::new(),
                    thinking: None,
                });
                echo.push(if self.echo {
                    prompt.clone()
                } else {
                    String::new()
                });
            }
        }
        Ok(Plan {
            model: self.model,
            requests,
            stream: self.sampling.stream,
            include_usage: self.sampling.include_usage(),
            echo,
            choices_per_prompt: n as usize,
        })
    }
}

/// Adds up the usage of several choices: the prompt is counted once per distinct prompt.
/// The reasoning switch of a chat request: `chat_template_kwargs.enable_thinking` if given,
/// else `reasoning_effort`; `None` keeps the model's default.
fn thinking_switch(
    effort: Option<&str>,
    template_kwargs: Option<&serde_json::Map<String, Value>>,
) -> Result<Option<bool>, BasaltError> {
    if let Some(v) = template_kwargs.and_then(|k| k.get("enable_thinking")) {
        return match v.as_bool() {
            Some(b) => Ok(Some(b)),
            None => Err(BasaltError::invalid(
                "chat_template_kwargs.enable_thinking",
                "must be true or false",
            )),
        };
    }
    match effort {
        None => Ok(None),
        Some("none" | "minimal") => Ok(Some(false)),
        Some("low" | "medium" | "high") => Ok(Some(true)),
        Some(other) => Err(BasaltError::invalid(
            "reasoning_effort",
            format!("`{other}` is not one of none, minimal, low, medium, high"),
        )),
    }
}

pub fn sum_usage(parts: &[Usage], prompts_shared: bool) -> Usage {
    let mut total = Usage::default();
    for (i, u) in parts.iter().enumerate() {
        if !prompts_shared || i == 0 {
            total.input_tokens += u.input_tokens;
            total.cached_input_tokens += u.cached_input_tokens;
            total.cache_write_input_tokens += u.cache_write_input_tokens;
        }
        total.output_tokens += u.output_tokens;
        total.reasoning_tokens += u.reasoning_tokens;
    }
    total
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: String,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

pub fn model_list(models: Vec<ModelCard>) -> ModelList {
    ModelList {
        object: "list",
        data: models,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_fans_out_n_and_maps_fields() {
        let req = parse_chat(
            br#"{"model":"m","messages":[{"role":"developer","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi "},{"type":"text","text":"there"}]}],
                "n":2,"seed":7,"stop":"END","max_completion_tokens":5,"logprobs":true,"top_logprobs":3,
                "stream":true,"stream_options":{"include_usage":true},"temperature":0}"#,
        )
        .unwrap();
        let plan = req.into_plan().unwrap();
        assert_eq!(plan.requests.len(), 2);
        assert!(plan.stream && plan.include_usage);
        let r = &plan.requests[1];
        assert_eq!(r.sampling.seed, Some(8));
        assert_eq!(r.max_tokens, Some(5));
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.logprobs, Some(3));
        match &r.prompt {
            Prompt::Chat(m) => {
                assert_eq!(m[0].role, Role::System);
                assert_eq!(m[1].content, "hi there");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_thinking_switch_comes_from_effort_or_template_kwargs() {
        let thinking =
            |body: &[u8]| parse_chat(body).unwrap().into_plan().unwrap().requests[0].thinking;
        let m = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(thinking(format!("{{{m}}}").as_bytes()), None);
        assert_eq!(
            thinking(format!(r#"{{{m},"reasoning_effort":"none"}}"#).as_bytes()),
            Some(false)
        );
        assert_eq!(
            thinking(format!(r#"{{{m},"reasoning_effort":"high"}}"#).as_bytes()),
            Some(true)
        );
        // The template's own switch wins over the effort.
        assert_eq!(
            thinking(
                format!(r#"{{{m},"reasoning_effort":"high","chat_template_kwargs":{{"enable_thinking":false}}}}"#)
                    .as_bytes()
            ),
            Some(false)
        );
    }

    #[test]
    fn bad_parameters_name_their_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model":"m","messages":[],"n":1}"#, "messages"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#, "temperature"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#, "n"),
            (br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#, "messages[0].tool_call_id"),
            (br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#, "messages[0].role"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_logprobs":2}"#, "top_logprobs"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#, "max_tokens"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
                "messages[0].content[0]",
            ),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#, "stop"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#, "temperature"),
            (br#"{"model":"m","messages":[{"role":"user","content":5}]}"#, "messages[0].content"),
            (br#"[1,2]"#, "body"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#, "tools[0]"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"code","function":{"name":"f"}}]}"#, "tools[0].type"),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"maybe"}"#, "tool_choice"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}"#,
                "response_format.type",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}"#,
                "response_format.json_schema",
            ),
            (br#"{"model":"m","messages":[{"role":"user","content":"x"}],"reasoning_effort":"max"}"#, "reasoning_effort"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"chat_template_kwargs":{"enable_thinking":"yes"}}"#,
                "chat_template_kwargs.enable_thinking",
            ),
        ];
        for (body, param) in cases {
            let err = parse_chat(body).and_then(|r| r.into_plan()).unwrap_err();
            assert_eq!(
                err.param.as_deref(),
                Some(*param),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(err.status(), 400);
        }
    }

    #[test]
    fn tools_choices_formats_and_history() {
        let plan = parse_chat(
            br#"{"model":"m","messages":[
                  {"role":"user","content":"Weather?"},
                  {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"w","arguments":"{\"city\":\"Oslo\"}"}}]},
                  {"role":"tool","tool_call_id":"c1","content":"cold"}],
                 "tools":[{"type":"function","function":{"name":"w","parameters":{"type":"object"}}}],
                 "tool_choice":{"type":"function","function":{"name":"w"}},
                 "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#,
        )
        .unwrap()
        .into_plan()
        .unwrap();
        let r = &plan.requests[0];
        assert_eq!(r.constraints.tool_choice, ToolChoice::Named("w".into()));
        assert!(
            matches!(&r.constraints.format, OutputFormat::JsonSchema { name: Some(n), .. } if n == "x")
        );
        let Prompt::Chat(m) = &r.prompt else { panic!() };
        assert_eq!(m[1].tool_calls[0].name, "w");
        assert_eq!(m[2].role, Role::Tool);
        assert_eq!(m[2].tool_call_id.as_deref(), Some("c1"));
        let required = parse_chat(br#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"required","tools":[]}"#)
            .unwrap()
            .into_plan()
            .unwrap();
        assert_eq!(
            required.requests[0].constraints.tool_choice,
            ToolChoice::Required
        );
    }

    #[test]
    fn completions_default_to_16_tokens_and_fan_out_prompts() {
        let req =
            parse_completion(br#"{"model":"m","prompt":["a","b"],"n":2,"echo":true}"#).unwrap();
        let plan = req.into_plan().unwrap();
        assert_eq!(plan.requests.len(), 4);
        assert_eq!(plan.requests[0].max_tokens, Some(16));
        assert_eq!(plan.echo, vec!["a", "a", "b", "b"]);
        assert_eq!(plan.choices_per_prompt, 2);
    }
}
