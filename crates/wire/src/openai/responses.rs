//! OpenAI's Responses API (`/v1/responses`) as data: the request (a string or typed input
//! items, `instructions`, function tools, `text.format`), the items a conversation is made
//! of (kept by the server and returned as they are), the response object and its typed
//! stream events. Turning a conversation into the one [`GenerateRequest`] happens here;
//! storing conversations and running them is the server's.

use std::collections::BTreeMap;

use basalt_types::{
    BasaltError, ChatMessage, ErrorKind, FinishReason, GenerateRequest, OutputConstraints,
    OutputFormat, Prompt, Role, SamplingParams, ToolCall, ToolChoice, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::check_range;

/// `POST /v1/responses`. Fields Basalt has no use for (`reasoning`, `include`,
/// `service_tier`, ...) are accepted and ignored, as OpenAI's own models ignore the ones
/// that do not apply to them.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Option<Input>,
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub text: Option<TextConfig>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    pub store: Option<bool>,
    pub previous_response_id: Option<String>,
    pub truncation: Option<Truncation>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub parallel_tool_calls: Option<bool>,
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TextConfig {
    pub format: Option<Value>,
}

/// What happens when the conversation outgrows the model's context: `disabled` fails the
/// request (400), `auto` drops the oldest items until it fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    Auto,
    #[default]
    Disabled,
}

/// One item of a conversation: what a user or the model said, a call the model made, a
/// call's result. Input and output items share these shapes, which is what lets a stored
/// response's output be the next request's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    Message {
        id: String,
        role: String,
        status: String,
        content: Vec<Part>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: String,
    },
    FunctionCallOutput {
        id: String,
        call_id: String,
        output: String,
        status: String,
    },
}

impl Item {
    pub fn id(&self) -> &str {
        match self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. } => id,
        }
    }

    /// The assistant's answer text as an output message.
    pub fn answer(id: String, text: String) -> Self {
        Item::Message {
            id,
            role: "assistant".into(),
            status: "completed".into(),
            content: vec![Part::OutputText {
                text,
                annotations: Vec::new(),
            }],
        }
    }

    pub fn call(id: String, call: &ToolCall) -> Self {
        Item::FunctionCall {
            id,
            call_id: call.id.clone(),
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            status: "completed".into(),
        }
    }
}

/// A part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
        #[serde(default)]
        annotations: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

impl Part {
    fn text(&self) -> &str {
        match self {
            Part::InputText { text } | Part::OutputText { text, .. } => text,
            Part::Refusal { refusal } => refusal,
        }
    }
}

fn invalid(param: impl Into<String>, message: impl Into<String>) -> BasaltError {
    BasaltError::invalid(param, message)
}

fn field<'a>(item: &'a Value, i: usize, name: &str) -> Result<&'a str, BasaltError> {
    item.get(name).and_then(Value::as_str).ok_or_else(|| {
        invalid(
            format!("input[{i}].{name}"),
            format!("`{name}` is a required string"),
        )
    })
}

/// Text content: a string, or parts of text (`input_text`, `output_text`, `refusal`).
fn parts(content: &Value, assistant: bool, param: &str) -> Result<Vec<Part>, BasaltError> {
    match content {
        Value::String(text) if assistant => Ok(vec![Part::OutputText {
            text: text.clone(),
            annotations: Vec::new(),
        }]),
        Value::String(text) => Ok(vec![Part::InputText { text: text.clone() }]),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
                let text = || {
                    part.get("text")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| {
                            invalid(format!("{param}[{j}].text"), "`text` is a required string")
                        })
                };
                match kind {
                    "input_text" | "text" => Ok(Part::InputText { text: text()? }),
                    "output_text" => Ok(Part::OutputText {
                        text: text()?,
                        annotations: Vec::new(),
                    }),
                    "refusal" => Ok(Part::Refusal {
                        refusal: part
                            .get("refusal")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    }),
                    other => Err(BasaltError::new(
                        ErrorKind::UnsupportedForModel,
                        format!(
                            "content of type `{other}` is not supported by this model (text only)"
                        ),
                    )
                    .with_param(format!("{param}[{j}]"))),
                }
            })
            .collect(),
        _ => Err(invalid(
            param,
            "`content` is a string or a list of content parts",
        )),
    }
}

/// The request's input as conversation items, each with an id (the client's, or one from
/// `new_id`, called with the item's id prefix).
pub fn input_items(
    input: Option<&Input>,
    mut new_id: impl FnMut(&str) -> String,
) -> Result<Vec<Item>, BasaltError> {
    let list = match input {
        None => return Ok(Vec::new()),
        Some(Input::Text(text)) => {
            return Ok(vec![Item::Message {
                id: new_id("msg_"),
                role: "user".into(),
                status: "completed".into(),
                content: vec![Part::InputText { text: text.clone() }],
            }])
        }
        Some(Input::Items(list)) => list,
    };
    let mut items = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        if !value.is_object() {
            return Err(invalid(format!("input[{i}]"), "an input item is an object"));
        }
        // A message may leave out its type (OpenAI's "easy input message").
        let kind = match value.get("type").and_then(Value::as_str) {
            Some(kind) => kind,
            None if value.get("role").is_some() => "message",
            None => return Err(invalid(format!("input[{i}].type"), "`type` is required")),
        };
        let id = |prefix: &str, new_id: &mut dyn FnMut(&str) -> String| {
            value
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| new_id(prefix), str::to_string)
        };
        let item = match kind {
            "message" => {
                let role = field(value, i, "role")?;
                if !matches!(role, "user" | "assistant" | "system" | "developer") {
                    return Err(invalid(
                        format!("input[{i}].role"),
                        format!("role `{role}` is not one of user, assistant, system, developer"),
                    ));
                }
                let content = value.get("content").unwrap_or(&Value::Null);
                Item::Message {
                    id: id("msg_", &mut new_id),
                    role: role.to_string(),
                    status: "completed".into(),
                    content: parts(content, role == "assistant", &format!("input[{i}].content"))?,
                }
            }
            "function_call" => Item::FunctionCall {
                id: id("fc_", &mut new_id),
                call_id: field(value, i, "call_id")?.to_string(),
                name: field(value, i, "name")?.to_string(),
                arguments: field(value, i, "arguments")?.to_string(),
                status: "completed".into(),
            },
            "function_call_output" => {
                let output = match value.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(list @ Value::Array(_)) => {
                        parts(list, false, &format!("input[{i}].output"))?
                            .iter()
                            .map(Part::text)
                            .collect()
                    }
                    _ => {
                        return Err(invalid(
                            format!("input[{i}].output"),
                            "`output` is a string or a list of text parts",
                        ))
                    }
                };
                Item::FunctionCallOutput {
                    id: id("fco_", &mut new_id),
                    call_id: field(value, i, "call_id")?.to_string(),
                    output,
                    status: "completed".into(),
                }
            }
            "item_reference" => {
                return Err(invalid(
                    format!("input[{i}]"),
                    "item references are not supported: continue a conversation with \
                     `previous_response_id`",
                ))
            }
            other => {
                return Err(BasaltError::new(
                    ErrorKind::UnsupportedForModel,
                    format!(
                        "input items of type `{other}` are not supported (message, \
                         function_call and function_call_output are)"
                    ),
                )
                .with_param(format!("input[{i}].type")))
            }
        };
        items.push(item);
    }
    Ok(items)
}

/// A conversation as chat messages: `instructions` first (as a system message), a model's
/// function calls joined to the assistant message they follow, each result a tool message.
pub fn messages(instructions: Option<&str>, items: &[Item]) -> Vec<ChatMessage> {
    let mut messages = Vec::with_capacity(items.len() + 1);
    if let Some(text) = instructions.filter(|t| !t.is_empty()) {
        messages.push(ChatMessage::text(Role::System, text));
    }
    for item in items {
        match item {
            Item::Message { role, content, .. } => {
                let role = match role.as_str() {
                    "assistant" => Role::Assistant,
                    "system" | "developer" => Role::System,
                    _ => Role::User,
                };
                let text: String = content.iter().map(Part::text).collect();
                messages.push(ChatMessage::text(role, text));
            }
            Item::FunctionCall {
                call_id,
                name,
                arguments,
                ..
            } => {
                let call = ToolCall {
                    id: call_id.clone(),
                    name: name.clone(),
                    arguments: arguments.clone(),
                };
                match messages.last_mut() {
                    Some(last) if last.role == Role::Assistant => last.tool_calls.push(call),
                    _ => {
                        let mut message = ChatMessage::text(Role::Assistant, "");
                        message.tool_calls.push(call);
                        messages.push(message);
                    }
                }
            }
            Item::FunctionCallOutput {
                call_id, output, ..
            } => {
                let mut message = ChatMessage::text(Role::Tool, output.clone());
                message.tool_call_id = Some(call_id.clone());
                messages.push(message);
            }
        }
    }
    messages
}

/// What a request asks of the model besides its conversation: tools, the tool choice, the
/// output format, sampling and length; and the same, normalised, as the response echoes it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub constraints: OutputConstraints,
    pub sampling: SamplingParams,
    pub max_output_tokens: Option<u32>,
    /// `tools`, `tool_choice` and `text` as the response object reports them.
    pub tools_echo: Vec<Value>,
    pub tool_choice_echo: Value,
    pub text_echo: Value,
}

impl ResponsesRequest {
    pub fn settings(&self) -> Result<Settings, BasaltError> {
        check_range("temperature", self.temperature, 0.0, 2.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        if self.top_p == Some(0.0) {
            return Err(invalid("top_p", "`top_p` must be greater than 0"));
        }
        if self.max_output_tokens == Some(0) {
            return Err(invalid(
                "max_output_tokens",
                "`max_output_tokens` must be at least 1",
            ));
        }
        let mut tools = Vec::with_capacity(self.tools.len());
        let mut tools_echo = Vec::with_capacity(self.tools.len());
        for (i, tool) in self.tools.iter().enumerate() {
            match tool.get("type").and_then(Value::as_str) {
                Some("function") => {}
                other => {
                    return Err(BasaltError::new(
                        ErrorKind::UnsupportedForModel,
                        format!(
                            "tool type `{}` is not supported (function tools are)",
                            other.unwrap_or("")
                        ),
                    )
                    .with_param(format!("tools[{i}].type")))
                }
            }
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    invalid(format!("tools[{i}].name"), "a function tool needs a `name`")
                })?;
            let description = tool.get("description").and_then(Value::as_str);
            tools.push(ToolSpec {
                name: name.to_string(),
                description: description.map(str::to_string),
                parameters: crate::schema_text(tool.get("parameters")),
            });
            tools_echo.push(json!({
                "type": "function",
                "name": name,
                "description": description,
                "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
                // Basalt always holds the arguments to the schema.
                "strict": true,
            }));
        }
        let (tool_choice, tool_choice_echo) = match &self.tool_choice {
            None => (ToolChoice::Auto, json!("auto")),
            Some(Value::String(s)) => match s.as_str() {
                "auto" => (ToolChoice::Auto, json!("auto")),
                "none" => (ToolChoice::None, json!("none")),
                "required" => (ToolChoice::Required, json!("required")),
                other => {
                    return Err(invalid(
                        "tool_choice",
                        format!(
                            "`{other}` is not a tool choice (auto, none, required or a function)"
                        ),
                    ))
                }
            },
            Some(v) => match (
                v.get("type").and_then(Value::as_str),
                v.get("name").and_then(Value::as_str),
            ) {
                (Some("function"), Some(name)) => (
                    ToolChoice::Named(name.to_string()),
                    json!({"type": "function", "name": name}),
                ),
                _ => {
                    return Err(invalid(
                        "tool_choice",
                        "a named tool choice is {\"type\": \"function\", \"name\": ...}",
                    ))
                }
            },
        };
        if let ToolChoice::Named(name) = &tool_choice {
            if !tools.iter().any(|t| &t.name == name) {
                return Err(invalid(
                    "tool_choice",
                    format!("no function tool is named `{name}`"),
                ));
            }
        }
        let format_value = self.text.as_ref().and_then(|t| t.format.clone());
        let (format, format_echo) = match &format_value {
            None => (OutputFormat::Text, json!({"type": "text"})),
            Some(f) => match f.get("type").and_then(Value::as_str) {
                Some("text") => (OutputFormat::Text, json!({"type": "text"})),
                Some("json_object") => (OutputFormat::JsonObject, json!({"type": "json_object"})),
                Some("json_schema") => {
                    let schema = f.get("schema").ok_or_else(|| {
                        invalid(
                            "text.format.schema",
                            "a json_schema format needs its `schema`",
                        )
                    })?;
                    let name = f.get("name").and_then(Value::as_str).map(str::to_string);
                    (
                        OutputFormat::JsonSchema {
                            name: name.clone(),
                            schema: crate::schema_text(Some(schema)),
                        },
                        json!({"type": "json_schema", "name": name, "schema": schema,
                               "strict": true,
                               "description": f.get("description").cloned().unwrap_or(Value::Null)}),
                    )
                }
                _ => {
                    return Err(invalid(
                        "text.format.type",
                        "`type` is text, json_object or json_schema",
                    ))
                }
            },
        };
        Ok(Settings {
            constraints: OutputConstraints {
                tools,
                tool_choice,
                format,
            },
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(1.0),
                top_p: self.top_p.unwrap_or(1.0),
                ..SamplingParams::default()
            },
            max_output_tokens: self.max_output_tokens,
            tools_echo,
            tool_choice_echo,
            text_echo: json!({"format": format_echo}),
        })
    }
}

impl Settings {
    /// The request for a conversation under these settings.
    pub fn request(&self, messages: Vec<ChatMessage>) -> GenerateRequest {
        GenerateRequest {
            prompt: Prompt::Chat(messages),
            sampling: self.sampling.clone(),
            max_tokens: self.max_output_tokens,
            stop: Vec::new(),
            logprobs: None,
            constraints: self.constraints.clone(),
            cache_points: Vec::new(),
            thinking: None,
        }
    }
}

/// The response object (`"object": "response"`), as returned, stored and streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: String,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<Item>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Reasoning,
    pub store: bool,
    pub temperature: f32,
    pub text: Value,
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    pub top_p: f32,
    pub truncation: Truncation,
    pub usage: Option<ResponseUsage>,
    pub user: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: String,
}

/// Basalt's models do not reason in a separate channel: always empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    pub effort: Option<String>,
    pub summary: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResponseUsage {
    pub input_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u32,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u32,
}

impl ResponseUsage {
    pub fn of(usage: &Usage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            input_tokens_details: InputTokensDetails {
                cached_tokens: usage.cached_input_tokens,
            },
            output_tokens: usage.output_tokens,
            output_tokens_details: OutputTokensDetails {
                reasoning_tokens: 0,
            },
            total_tokens: usage.input_tokens + usage.output_tokens,
        }
    }
}

impl ResponseObject {
    /// A response to `request` that has not produced anything yet.
    pub fn started(
        id: String,
        created_at: u64,
        request: &ResponsesRequest,
        settings: &Settings,
    ) -> Self {
        Self {
            id,
            object: "response".into(),
            created_at,
            status: "in_progress".into(),
            error: None,
            incomplete_details: None,
            instructions: request.instructions.clone(),
            max_output_tokens: request.max_output_tokens,
            model: request.model.clone(),
            output: Vec::new(),
            parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
            previous_response_id: request.previous_response_id.clone(),
            reasoning: Reasoning::default(),
            store: request.store.unwrap_or(true),
            temperature: settings.sampling.temperature,
            text: settings.text_echo.clone(),
            tool_choice: settings.tool_choice_echo.clone(),
            tools: settings.tools_echo.clone(),
            top_p: settings.sampling.top_p,
            truncation: request.truncation.unwrap_or_default(),
            usage: None,
            user: request.user.clone(),
            metadata: request.metadata.clone(),
        }
    }

    /// Ends the response: its status from why the generation finished, and its usage.
    pub fn finish(&mut self, reason: FinishReason, usage: &Usage) {
        let incomplete = match reason {
            FinishReason::MaxTokens | FinishReason::ContextWindow => Some("max_output_tokens"),
            FinishReason::GuardrailIntervened => Some("content_filter"),
            FinishReason::EndOfTurn | FinishReason::StopSequence | FinishReason::ToolUse => None,
        };
        self.status = match incomplete {
            Some(_) => "incomplete",
            None => "completed",
        }
        .into();
        self.incomplete_details = incomplete.map(|r| IncompleteDetails { reason: r.into() });
        if let Some(Item::Message { status, .. }) = self.output.last_mut() {
            if incomplete.is_some() {
                *status = "incomplete".into();
            }
        }
        self.usage = Some(ResponseUsage::of(usage));
    }

    /// Ends the response as failed.
    pub fn fail(&mut self, error: &BasaltError, usage: &Usage) {
        self.status = "failed".into();
        self.error = Some(ResponseError {
            code: match error.kind {
                ErrorKind::Overloaded | ErrorKind::QuotaExceeded => "rate_limit_exceeded",
                ErrorKind::Internal => "server_error",
                _ => "invalid_prompt",
            }
            .into(),
            message: error.message.clone(),
        });
        self.usage = Some(ResponseUsage::of(usage));
    }
}

/// One server-sent event of a streamed response: its type is the SSE event name, and the
/// data carries it again with a sequence number.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created { response: ResponseObject },
    #[serde(rename = "response.in_progress")]
    InProgress { response: ResponseObject },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { output_index: usize, item: Item },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: Part,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: Part,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { output_index: usize, item: Item },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: usize,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: usize,
        name: String,
        arguments: String,
    },
    #[serde(rename = "response.completed")]
    Completed { response: ResponseObject },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: ResponseObject },
    #[serde(rename = "response.failed")]
    Failed { response: ResponseObject },
}

impl StreamEvent {
    /// The SSE event name: the `type` the event serialises with.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Created { .. } => "response.created",
            StreamEvent::InProgress { .. } => "response.in_progress",
            StreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            StreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            StreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            StreamEvent::OutputTextDone { .. } => "response.output_text.done",
            StreamEvent::ContentPartDone { .. } => "response.content_part.done",
            StreamEvent::OutputItemDone { .. } => "response.output_item.done",
            StreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            StreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            StreamEvent::Completed { .. } => "response.completed",
            StreamEvent::Incomplete { .. } => "response.incomplete",
            StreamEvent::Failed { .. } => "response.failed",
        }
    }
}

/// An event with its place in the stream.
#[derive(Debug, Serialize)]
pub struct Sequenced<'a> {
    #[serde(flatten)]
    pub event: &'a StreamEvent,
    pub sequence_number: u64,
}

/// `GET /v1/responses/{id}/input_items`: a page of items.
#[derive(Debug, Serialize)]
pub struct ItemList<'a> {
    pub object: &'static str,
    pub data: &'a [Item],
    pub first_id: Option<&'a str>,
    pub last_id: Option<&'a str>,
    pub has_more: bool,
}

/// `DELETE /v1/responses/{id}`.
#[derive(Debug, Serialize)]
pub struct Deleted<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> impl FnMut(&str) -> String {
        let mut n = 0;
        move |prefix: &str| {
            n += 1;
            format!("{prefix}{n}")
        }
    }

    fn request(body: Value) -> ResponsesRequest {
        crate::from_value(body).unwrap()
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let r = request(json!({"model": "m", "input": "Hi", "instructions": "Be brief."}));
        let items = input_items(r.input.as_ref(), ids()).unwrap();
        assert_eq!(
            serde_json::to_value(&items).unwrap(),
            json!([{"type": "message", "id": "msg_1", "role": "user", "status": "completed",
                    "content": [{"type": "input_text", "text": "Hi"}]}])
        );
        let m = messages(r.instructions.as_deref(), &items);
        assert_eq!(
            (m[0].role, m[0].content.as_str()),
            (Role::System, "Be brief.")
        );
        assert_eq!((m[1].role, m[1].content.as_str()), (Role::User, "Hi"));
    }

    #[test]
    fn calls_join_their_assistant_message_and_results_answer_them() {
        let r = request(json!({"model": "m", "input": [
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}", "id": "fc_mine"},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ]}));
        let items = input_items(r.input.as_ref(), ids()).unwrap();
        assert_eq!(items[2].id(), "fc_mine");
        let m = messages(None, &items);
        assert_eq!(m.len(), 3);
        assert_eq!(
            (m[1].role, m[1].content.as_str()),
            (Role::Assistant, "Checking.")
        );
        assert_eq!(m[1].tool_calls[0].name, "weather");
        assert_eq!(
            (m[2].role, m[2].tool_call_id.as_deref()),
            (Role::Tool, Some("call_1"))
        );
        // A call with no assistant text before it opens an assistant message of its own.
        let m = messages(None, &items[2..]);
        assert_eq!((m[0].role, m[0].tool_calls.len()), (Role::Assistant, 1));
    }

    #[test]
    fn bad_items_name_the_field() {
        for (input, param) in [
            (
                json!([{"type": "function_call", "name": "f", "arguments": "{}"}]),
                "input[0].call_id",
            ),
            (json!([{"role": "robot", "content": "x"}]), "input[0].role"),
            (
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
                "input[0].content[0]",
            ),
            (
                json!([{"type": "item_reference", "id": "msg_1"}]),
                "input[0]",
            ),
            (json!([{"type": "web_search_call"}]), "input[0].type"),
            (json!(["text"]), "input[0]"),
        ] {
            let r = request(json!({"model": "m", "input": input}));
            let e = input_items(r.input.as_ref(), ids()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{e:?}");
        }
    }

    #[test]
    fn settings_hold_tools_and_format_and_echo_them() {
        let r = request(json!({"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}}},
            "max_output_tokens": 50, "temperature": 0}));
        let s = r.settings().unwrap();
        assert_eq!(
            s.constraints.tool_choice,
            ToolChoice::Named("weather".into())
        );
        assert!(matches!(
            s.constraints.format,
            OutputFormat::JsonSchema { .. }
        ));
        assert_eq!(
            s.tool_choice_echo,
            json!({"type": "function", "name": "weather"})
        );
        assert_eq!(s.text_echo["format"]["name"], "out");
        for bad in [
            json!({"model": "m", "tools": [{"type": "web_search"}]}),
            json!({"model": "m", "tool_choice": {"type": "function", "name": "nope"}}),
            json!({"model": "m", "text": {"format": {"type": "xml"}}}),
            json!({"model": "m", "temperature": 3}),
            json!({"model": "m", "max_output_tokens": 0}),
        ] {
            assert!(request(bad.clone()).settings().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_response_finishes_by_its_reason_and_round_trips() {
        let r = request(json!({"model": "m", "input": "x"}));
        let s = r.settings().unwrap();
        let mut o = ResponseObject::started("resp_1".into(), 7, &r, &s);
        o.output.push(Item::answer("msg_1".into(), "Hi".into()));
        o.finish(
            FinishReason::MaxTokens,
            &Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            },
        );
        assert_eq!(o.status, "incomplete");
        assert_eq!(
            o.incomplete_details.as_ref().unwrap().reason,
            "max_output_tokens"
        );
        assert_eq!(o.usage.unwrap().total_tokens, 5);
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<ResponseObject>(&text).unwrap(), o);
        let event = StreamEvent::Completed { response: o };
        let v = serde_json::to_value(Sequenced {
            event: &event,
            sequence_number: 9,
        })
        .unwrap();
        assert_eq!(
            (v["type"].as_str(), v["sequence_number"].as_u64()),
            (Some(event.name()), Some(9))
        );
    }
}
