//! The tool-call protocol between Basalt and a model, in three parts that must agree:
//!
//! 1. the prompt: the offered tools are described in the system message, past calls are
//!    written back as the model would have written them, and tool results come back as user
//!    turns (our models' templates know nothing of tools, so the conversation stays
//!    renderable by any template);
//! 2. the grammar: the answer is either a call, in exactly the format the prompt teaches
//!    (`<tool_call>\n{"name": "...", "arguments": {...}}\n</tool_call>`, the Hermes layout
//!    small instruct models have seen), with arguments valid against the tool's schema, or
//!    (when the model may choose) text that does not start a call; JSON output formats are a
//!    schema rule of their own;
//! 3. the parser: turns the streamed answer back into tool-call events, the name as soon as
//!    it is complete and the arguments as they are generated.
//!
//! Nothing here knows an API dialect: dialects map their tool shapes to `basalt-types`.

use basalt_grammar::{json_rule, lark_literal};
use basalt_types::{
    BasaltError, ChatMessage, GenerateEvent, OutputConstraints, OutputFormat, Role, ToolChoice,
    ToolSpec,
};
use serde_json::Value;

const CALL_OPEN: &str = "<tool_call>\n";
const NAME_OPEN: &str = "{\"name\": \"";
const ARGUMENTS_OPEN: &str = "\", \"arguments\": ";
/// What follows the arguments object.
const CALL_CLOSE: &str = "}\n</tool_call>";

/// Checks what the grammar and the prompt rely on: valid, unique names, object schemas,
/// and a named choice that names an offered tool.
pub fn validate(c: &OutputConstraints) -> Result<(), BasaltError> {
    for (i, tool) in c.tools.iter().enumerate() {
        let name_ok = !tool.name.is_empty()
            && tool.name.len() <= 64
            && tool
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !name_ok {
            return Err(BasaltError::invalid(
                format!("tools.{i}.name"),
                format!(
                    "tool names must match [a-zA-Z0-9_-]{{1,64}}, got `{}`",
                    tool.name
                ),
            ));
        }
        if c.tools[..i].iter().any(|t| t.name == tool.name) {
            return Err(BasaltError::invalid(
                format!("tools.{i}.name"),
                format!("tool `{}` is defined twice", tool.name),
            ));
        }
        parameters(tool, i)?;
    }
    if let ToolChoice::Named(name) = &c.tool_choice {
        if !c.tools.iter().any(|t| &t.name == name) {
            return Err(BasaltError::invalid(
                "tool_choice",
                format!("tool_choice names `{name}`, which is not among the tools"),
            ));
        }
    }
    if matches!(c.tool_choice, ToolChoice::Required | ToolChoice::Named(_)) && c.tools.is_empty() {
        return Err(BasaltError::invalid(
            "tool_choice",
            "a tool call is required but no tools were given",
        ));
    }
    Ok(())
}

fn parameters(tool: &ToolSpec, i: usize) -> Result<Value, BasaltError> {
    let v: Value = serde_json::from_str(&tool.parameters).map_err(|e| {
        BasaltError::invalid(
            format!("tools.{i}.parameters"),
            format!("not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(BasaltError::invalid(
            format!("tools.{i}.parameters"),
            "the parameters must be a JSON Schema object",
        ));
    }
    Ok(v)
}

/// Whether the model may (or must) answer with a tool call.
pub fn calls_possible(c: &OutputConstraints) -> bool {
    !c.tools.is_empty() && c.tool_choice != ToolChoice::None
}

/// The request parameter a constraint comes from, for the errors it causes: the tools when
/// the model may call one, else the answer's format.
pub fn constraint_param(c: &OutputConstraints) -> &'static str {
    if calls_possible(c) {
        "tools"
    } else {
        "response_format"
    }
}

/// The grammar the answer must follow, or `None` for free text.
pub fn grammar(c: &OutputConstraints) -> Result<Option<String>, BasaltError> {
    let answer = match &c.format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(schema_rule(
            &serde_json::json!({"type": "object"}),
            "response_format",
        )?),
        OutputFormat::JsonSchema { schema, .. } => {
            let v: Value = serde_json::from_str(schema).map_err(|e| {
                BasaltError::invalid("response_format", format!("the schema is not JSON: {e}"))
            })?;
            Some(schema_rule(&v, "response_format")?)
        }
    };
    if !calls_possible(c) {
        return Ok(answer.map(|a| format!("start: {a}\n")));
    }
    let mut lark = String::new();
    let mut calls = Vec::new();
    for (i, tool) in c.tools.iter().enumerate() {
        let allowed = match &c.tool_choice {
            ToolChoice::Named(n) => n == &tool.name,
            _ => true,
        };
        if !allowed {
            continue;
        }
        let args = schema_rule(&parameters(tool, i)?, &format!("tools.{i}.parameters"))?;
        let head = format!("{CALL_OPEN}{NAME_OPEN}{}{ARGUMENTS_OPEN}", tool.name);
        lark.push_str(&format!(
            "call_{i}: {} {args} {}\n",
            lark_literal(&head),
            lark_literal(CALL_CLOSE)
        ));
        calls.push(format!("call_{i}"));
    }
    let mut start = calls.join(" | ");
    if c.tool_choice == ToolChoice::Auto {
        match answer {
            Some(a) => start = format!("{a} | {start}"),
            None => {
                // Free text, as long as it does not look like the start of a call.
                start = format!("TEXT | {start} | \"\"");
                lark.push_str("TEXT: /[^<](.|\\n)*/\n");
            }
        }
    }
    Ok(Some(format!("start: {start}\n{lark}")))
}

fn schema_rule(schema: &Value, param: &str) -> Result<String, BasaltError> {
    json_rule(schema).map_err(|e| BasaltError::invalid(param, e.to_string()))
}

/// The conversation as the model's template will see it: tools described in the system
/// message, calls and results written out in the protocol's format.
pub fn render_conversation(messages: &[ChatMessage], c: &OutputConstraints) -> Vec<ChatMessage> {
    let has_history = messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool);
    if c.tools.is_empty() && !has_history {
        return messages.to_vec();
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    let instructions = (!c.tools.is_empty()).then(|| tool_instructions(c));
    let mut system_seen = false;
    for m in messages {
        match m.role {
            Role::System if !system_seen => {
                system_seen = true;
                let mut content = m.content.clone();
                if let Some(i) = &instructions {
                    content.push_str("\n\n");
                    content.push_str(i);
                }
                out.push(ChatMessage::text(Role::System, content));
            }
            Role::Assistant if !m.tool_calls.is_empty() => {
                let mut content = m.content.clone();
                for call in &m.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(&format_call(&call.name, &call.arguments));
                }
                out.push(ChatMessage::text(Role::Assistant, content));
            }
            Role::Tool => {
                let content = format!("<tool_response>\n{}\n</tool_response>", m.content);
                // Consecutive results answer one turn's calls: keep them in one user turn.
                match out.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last.content.ends_with("</tool_response>") =>
                    {
                        last.content.push('\n');
                        last.content.push_str(&content);
                    }
                    _ => out.push(ChatMessage::text(Role::User, content)),
                }
            }
            _ => out.push(ChatMessage::text(m.role, m.content.clone())),
        }
    }
    if let (Some(i), false) = (instructions, system_seen) {
        out.insert(0, ChatMessage::text(Role::System, i));
    }
    out
}

fn format_call(name: &str, arguments: &str) -> String {
    // Normalise the arguments to compact JSON when they parse, as the model writes them.
    let args = serde_json::from_str::<Value>(arguments)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| arguments.to_string());
    format!("{CALL_OPEN}{NAME_OPEN}{name}{ARGUMENTS_OPEN}{args}{CALL_CLOSE}")
}

fn tool_instructions(c: &OutputConstraints) -> String {
    let mut s = String::from(
        "You can call functions to help answer. Each is described below as JSON: its name, \
         what it does, and a JSON Schema of its arguments.\n<tools>\n",
    );
    for t in &c.tools {
        let params: Value = serde_json::from_str(&t.parameters)
            .unwrap_or_else(|_| Value::Object(Default::default()));
        let desc = serde_json::json!({
            "name": t.name,
            "description": t.description.clone().unwrap_or_default(),
            "parameters": params,
        });
        s.push_str(&desc.to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\nTo call a function, reply with only this, and nothing else:\n<tool_call>\n\
         {\"name\": \"<function name>\", \"arguments\": {<arguments as JSON>}}\n</tool_call>",
    );
    match &c.tool_choice {
        ToolChoice::Required => s.push_str("\nYou must call one of the functions now."),
        ToolChoice::Named(n) => s.push_str(&format!("\nYou must call `{n}` now.")),
        _ => s.push_str("\nIf no function is needed, answer the user directly."),
    }
    s
}

/// A fresh id for a tool call (`call_` and 16 hex digits, unique per process run).
pub fn new_call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("call_{:016x}", h.finish())
}

/// Where the parser is in the answer.
#[derive(Debug, PartialEq)]
enum State {
    /// Passing text through (no tools, or the model chose to answer).
    Text,
    /// Not yet known whether the answer is text or a call (auto mode).
    Undecided,
    /// Inside a call, before its name is complete.
    Name,
    /// Streaming the arguments; the tail that may be `CALL_CLOSE` is held back.
    Arguments,
    /// The call is complete.
    Done,
}

/// Turns the answer's text into text or tool-call events as it streams.
#[derive(Debug)]
pub struct OutputParser {
    state: State,
    buffer: String,
    call_id: String,
    calls: u32,
}

impl OutputParser {
    pub fn new(c: &OutputConstraints, call_id: String) -> Self {
        let state = if !calls_possible(c) {
            State::Text
        } else if c.tool_choice == ToolChoice::Auto {
            State::Undecided
        } else {
            State::Name
        };
        Self {
            state,
            buffer: String::new(),
            call_id,
            calls: 0,
        }
    }

    /// Whether the answer is (so far) plain text rather than a tool call.
    pub fn is_text(&self) -> bool {
        matches!(self.state, State::Text | State::Undecided)
    }

    /// Whether the answer contained a complete tool call.
    pub fn called(&self) -> bool {
        self.state == State::Done
    }

    pub fn push(&mut self, text: &str) -> Vec<GenerateEvent> {
        let mut events = Vec::new();
        if self.state == State::Text {
            if !text.is_empty() {
                events.push(GenerateEvent::Text {
                    text: text.to_string(),
                    logprobs: Vec::new(),
                });
            }
            return events;
        }
        self.buffer.push_str(text);
        loop {
            match self.state {
                State::Undecided => {
                    if self.buffer.is_empty() {
                        return events;
                    }
                    if CALL_OPEN.starts_with(self.buffer.as_str())
                        && self.buffer.len() < CALL_OPEN.len()
                    {
                        return events; // could still become a call
                    }
                    if self.buffer.starts_with(CALL_OPEN) {
                        self.state = State::Name;
                    } else {
                        self.state = State::Text;
                        let text = std::mem::take(&mut self.buffer);
                        events.push(GenerateEvent::Text {
                            text,
                            logprobs: Vec::new(),
                        });
                        return events;
                    }
                }
                State::Name => {
                    let head = format!("{CALL_OPEN}{NAME_OPEN}");
                    let Some(rest) = self.buffer.strip_prefix(&head) else {
                        return events;
                    };
                    let Some(end) = rest.find(ARGUMENTS_OPEN) else {
                        return events;
                    };
                    let name = rest[..end].to_string();
                    let after = rest[end + ARGUMENTS_OPEN.len()..].to_string();
                    events.push(GenerateEvent::ToolCallStart {
                        index: self.calls,
                        id: self.call_id.clone(),
                        name,
                    });
                    self.buffer = after;
                    self.state = State::Arguments;
                }
                State::Arguments => {
                    if let Some(end) = self.buffer.find(CALL_CLOSE) {
                        let json = self.buffer[..end].to_string();
                        self.push_arguments(&mut events, json);
                        self.buffer.clear();
                        self.calls += 1;
                        self.state = State::Done;
                        return events;
                    }
                    // Everything except a tail that might be the start of CALL_CLOSE.
                    let mut keep = self.buffer.len().saturating_sub(CALL_CLOSE.len() - 1);
                    while !self.buffer.is_char_boundary(keep) {
                        keep -= 1;
                    }
                    let json: String = self.buffer.drain(..keep).collect();
                    self.push_arguments(&mut events, json);
                    return events;
                }
                State::Text | State::Done => return events,
            }
        }
    }

    fn push_arguments(&self, events: &mut Vec<GenerateEvent>, json: String) {
        if !json.is_empty() {
            events.push(GenerateEvent::ToolArguments {
                index: self.calls,
                json,
            });
        }
    }

    /// The end of the answer: whatever is still held back comes out. An answer cut off
    /// (by `max_tokens`) before a call's name was complete is reported as the text it is.
    pub fn finish(&mut self) -> Vec<GenerateEvent> {
        let rest = std::mem::take(&mut self.buffer);
        match self.state {
            State::Arguments => {
                let mut events = Vec::new();
                self.push_arguments(&mut events, rest);
                events
            }
            State::Undecided | State::Name if !rest.is_empty() => vec![GenerateEvent::Text {
                text: rest,
                logprobs: Vec::new(),
            }],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: Some("Current weather in a city".into()),
            parameters:
                r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
                    .into(),
        }
    }

    fn constraints(choice: ToolChoice) -> OutputConstraints {
        OutputConstraints {
            tools: vec![weather()],
            tool_choice: choice,
            format: OutputFormat::Text,
        }
    }

    fn run(p: &mut OutputParser, pieces: &[&str]) -> Vec<GenerateEvent> {
        let mut out: Vec<GenerateEvent> = pieces.iter().flat_map(|t| p.push(t)).collect();
        out.extend(p.finish());
        out
    }

    fn arguments(events: &[GenerateEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                GenerateEvent::ToolArguments { json, .. } => Some(json.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn parses_a_streamed_call_token_by_token() {
        let answer = format_call("get_weather", r#"{"city": "Paris"}"#);
        // Split at every character, the worst case for the parser.
        let pieces: Vec<String> = answer.chars().map(String::from).collect();
        let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
        let mut p = OutputParser::new(&constraints(ToolChoice::Required), "call_1".into());
        let events = run(&mut p, &refs);
        assert!(p.called());
        assert_eq!(
            events[0],
            GenerateEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "get_weather".into()
            }
        );
        assert_eq!(arguments(&events), r#"{"city":"Paris"}"#);
        assert!(events
            .iter()
            .all(|e| !matches!(e, GenerateEvent::Text { .. })));
    }

    #[test]
    fn auto_mode_passes_text_through() {
        let mut p = OutputParser::new(&constraints(ToolChoice::Auto), "c".into());
        let events = run(&mut p, &["Hel", "lo <b>"]);
        assert!(!p.called());
        let text: String = events
            .iter()
            .map(|e| match e {
                GenerateEvent::Text { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(text, "Hello <b>");
        let mut p = OutputParser::new(&constraints(ToolChoice::Auto), "c".into());
        let events = run(
            &mut p,
            &[
                "<tool",
                "_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>",
            ],
        );
        assert!(p.called());
        assert_eq!(arguments(&events), "{}");
    }

    #[test]
    fn a_cut_off_call_is_reported_as_what_it_is() {
        let mut p = OutputParser::new(&constraints(ToolChoice::Required), "c".into());
        let events = run(&mut p, &["<tool_call>\n{\"name\": \"get_wea"]);
        assert!(!p.called());
        assert!(
            matches!(&events[0], GenerateEvent::Text { text, .. } if text.ends_with("get_wea"))
        );
        let mut p = OutputParser::new(&constraints(ToolChoice::Required), "c".into());
        let events = run(
            &mut p,
            &["<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"ci"],
        );
        assert!(!p.called());
        assert_eq!(arguments(&events), "{\"ci");
    }

    #[test]
    fn grammars_for_each_choice() {
        let g = grammar(&constraints(ToolChoice::Required))
            .unwrap()
            .unwrap();
        assert!(g.starts_with("start: call_0\n"), "{g}");
        let g = grammar(&constraints(ToolChoice::Auto)).unwrap().unwrap();
        assert!(g.contains("TEXT |"), "{g}");
        assert_eq!(grammar(&constraints(ToolChoice::None)).unwrap(), None);
        assert_eq!(grammar(&OutputConstraints::default()).unwrap(), None);
        let json = OutputConstraints {
            format: OutputFormat::JsonSchema {
                name: None,
                schema: r#"{"type":"object"}"#.into(),
            },
            ..Default::default()
        };
        assert!(grammar(&json).unwrap().unwrap().starts_with("start: %json"));
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = constraints(ToolChoice::Named("nope".into()));
        assert_eq!(
            validate(&c).unwrap_err().param.as_deref(),
            Some("tool_choice")
        );
        c.tool_choice = ToolChoice::Auto;
        c.tools.push(weather());
        assert_eq!(
            validate(&c).unwrap_err().param.as_deref(),
            Some("tools.1.name")
        );
        c.tools[1].name = "bad name".into();
        assert_eq!(
            validate(&c).unwrap_err().param.as_deref(),
            Some("tools.1.name")
        );
        c.tools[1].name = "ok".into();
        c.tools[1].parameters = "[1]".into();
        assert_eq!(
            validate(&c).unwrap_err().param.as_deref(),
            Some("tools.1.parameters")
        );
    }

    #[test]
    fn history_is_rendered_in_the_protocol() {
        let mut call_msg = ChatMessage::text(Role::Assistant, "");
        call_msg.tool_calls.push(basalt_types::ToolCall {
            id: "c1".into(),
            name: "get_weather".into(),
            arguments: r#"{ "city" : "Paris" }"#.into(),
        });
        let mut result = ChatMessage::text(Role::Tool, r#"{"temp": 21}"#);
        result.tool_call_id = Some("c1".into());
        let msgs = vec![
            ChatMessage::text(Role::System, "Be brief."),
            ChatMessage::text(Role::User, "Weather in Paris?"),
            call_msg,
            result,
        ];
        let out = render_conversation(&msgs, &constraints(ToolChoice::Auto));
        assert!(out[0]
            .content
            .starts_with("Be brief.\n\nYou can call functions"));
        assert!(out[0].content.contains("\"get_weather\""));
        assert_eq!(
            out[2].content,
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"
        );
        assert_eq!(out[3].role, Role::User);
        assert!(out[3]
            .content
            .contains("<tool_response>\n{\"temp\": 21}\n</tool_response>"));
    }
}
