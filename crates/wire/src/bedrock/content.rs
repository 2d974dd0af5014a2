//! Converse's request content as typed unions: messages' and system prompts' content blocks,
//! tool results, and the tool configuration.
//!
//! Bedrock's unions are objects with exactly one member, which is serde's externally tagged
//! enum. Where one sits in a list (or an optional field) of a request body, [`unions`] reads
//! it, so that a block with no member, two members or an unknown one is refused with the
//! path of the block (`messages.0.content.1`) and what was wrong with it. Blocks
//! Basalt's text models cannot take (images, documents, video, audio) parse, so that the
//! conversion can refuse them as unsupported for the model rather than malformed; their
//! bodies are skipped unread.

use serde::de::{DeserializeOwned, Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// One union: an object with exactly one member, then read as `T` (an externally tagged
/// enum). Reading the object whole first keeps a second member a data error at this
/// union's path, not a syntax error in the body.
struct Union<T>(T);

impl<'de, T: DeserializeOwned> Deserialize<'de> for Union<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let object = Map::<String, Value>::deserialize(d)?;
        if object.len() != 1 {
            let members: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(D::Error::custom(format!(
                "must have exactly one member, not {} ({})",
                members.len(),
                members.join(", ")
            )));
        }
        serde_path_to_error::deserialize(Value::Object(object))
            .map(Union)
            .map_err(|e| {
                let path = e.path().to_string();
                D::Error::custom(format!("{path}: {}", e.into_inner()))
            })
    }
}

/// A list of unions (`#[serde(deserialize_with = "unions")]`).
pub(crate) fn unions<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let list = Vec::<Union<T>>::deserialize(d)?;
    Ok(list.into_iter().map(|Union(t)| t).collect())
}

/// An optional union (`#[serde(default, deserialize_with = "optional_union")]`).
pub(crate) fn optional_union<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Option::<Union<T>>::deserialize(d)?.map(|Union(t)| t))
}

/// A message's content block.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContentBlock {
    Text(String),
    /// Text a guardrail should evaluate; the model sees it as text.
    GuardContent(GuardContent),
    /// Cache the prompt up to here.
    CachePoint(CachePointBlock),
    ToolUse(ToolUse),
    ToolResult(ToolResult),
    Image(IgnoredAny),
    Document(IgnoredAny),
    Video(IgnoredAny),
    Audio(IgnoredAny),
    ReasoningContent(IgnoredAny),
}

impl ContentBlock {
    /// The block's member name, as the API spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            ContentBlock::Text(_) => "text",
            ContentBlock::GuardContent(_) => "guardContent",
            ContentBlock::CachePoint(_) => "cachePoint",
            ContentBlock::ToolUse(_) => "toolUse",
            ContentBlock::ToolResult(_) => "toolResult",
            ContentBlock::Image(_) => "image",
            ContentBlock::Document(_) => "document",
            ContentBlock::Video(_) => "video",
            ContentBlock::Audio(_) => "audio",
            ContentBlock::ReasoningContent(_) => "reasoningContent",
        }
    }
}

/// A system prompt's content block.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SystemBlock {
    Text(String),
    GuardContent(GuardContent),
    CachePoint(CachePointBlock),
}

/// `cachePoint`: keep the prompt up to here in the cache, for `ttl` (default 5 minutes).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePointBlock {
    #[serde(rename = "type")]
    pub kind: CachePointType,
    #[serde(default)]
    pub ttl: Option<CacheTtl>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CachePointType {
    Default,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub enum CacheTtl {
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

impl CacheTtl {
    pub fn duration(self) -> std::time::Duration {
        match self {
            CacheTtl::FiveMinutes => std::time::Duration::from_secs(300),
            CacheTtl::OneHour => std::time::Duration::from_secs(3600),
        }
    }

    /// How Bedrock spells it in `cacheDetails`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }
}

impl CachePointBlock {
    pub fn ttl(&self) -> CacheTtl {
        self.ttl.unwrap_or(CacheTtl::FiveMinutes)
    }
}

/// `guardContent`: text (with qualifiers saying what it is to a grounding check), or an
/// image, which text models cannot take.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GuardContent {
    Text(GuardText),
    Image(IgnoredAny),
}

#[derive(Debug, Deserialize)]
pub struct GuardText {
    pub text: String,
    /// `grounding_source`, `query`, `guard_content`.
    #[serde(default)]
    pub qualifiers: Vec<String>,
}

/// A tool call the assistant made, replayed in the conversation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub tool_use_id: String,
    pub name: String,
    #[serde(default)]
    pub input: Option<Value>,
}

/// What a tool returned, sent back in a user message.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    pub tool_use_id: String,
    #[serde(default)]
    pub content: Vec<ToolResultContent>,
    /// `success` or `error`.
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolResultContent {
    Text(String),
    Json(Value),
    Image(IgnoredAny),
    Document(IgnoredAny),
    Video(IgnoredAny),
}

impl ToolResultContent {
    pub fn kind(&self) -> &'static str {
        match self {
            ToolResultContent::Text(_) => "text",
            ToolResultContent::Json(_) => "json",
            ToolResultContent::Image(_) => "image",
            ToolResultContent::Document(_) => "document",
            ToolResultContent::Video(_) => "video",
        }
    }
}

/// `toolConfig`: the tools the model may call, and whether it must.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    #[serde(deserialize_with = "unions")]
    pub tools: Vec<Tool>,
    #[serde(default, deserialize_with = "optional_union")]
    pub tool_choice: Option<ToolChoiceMember>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Tool {
    ToolSpec(ToolSpecification),
    CachePoint(CachePointBlock),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpecification {
    pub name: String,
    pub description: Option<String>,
    /// Required; optional here so that its absence is reported under its own name.
    pub input_schema: Option<InputSchema>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InputSchema {
    Json(Value),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ToolChoiceMember {
    Auto(IgnoredAny),
    Any(IgnoredAny),
    Tool(NamedTool),
}

#[derive(Debug, Deserialize)]
pub struct NamedTool {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::parse_json;

    #[derive(Debug, Deserialize)]
    struct Blocks {
        #[serde(deserialize_with = "unions")]
        content: Vec<ContentBlock>,
    }

    fn parse(json: &str) -> Result<Vec<ContentBlock>, basalt_types::BasaltError> {
        parse_json::<Blocks>(json.as_bytes()).map(|b| b.content)
    }

    #[test]
    fn each_block_is_one_typed_member() {
        let blocks = parse(
            r#"{"content":[{"text":"hi"},{"cachePoint":{"type":"default"}},
                {"guardContent":{"text":{"text":"g","qualifiers":["query"]}}},
                {"toolUse":{"toolUseId":"t1","name":"f","input":{"a":1}}},
                {"toolResult":{"toolUseId":"t1","content":[{"json":{"b":2}},{"text":"ok"}],"status":"success"}},
                {"image":{"format":"png","source":{"bytes":"AA=="}}}]}"#,
        )
        .unwrap();
        let kinds: Vec<&str> = blocks.iter().map(ContentBlock::kind).collect();
        assert_eq!(
            kinds,
            [
                "text",
                "cachePoint",
                "guardContent",
                "toolUse",
                "toolResult",
                "image"
            ]
        );
        let ContentBlock::GuardContent(GuardContent::Text(g)) = &blocks[2] else {
            panic!("{:?}", blocks[2]);
        };
        assert_eq!(
            (g.text.as_str(), g.qualifiers.as_slice()),
            ("g", &["query".to_string()][..])
        );
        let ContentBlock::ToolResult(r) = &blocks[4] else {
            panic!("{:?}", blocks[4]);
        };
        assert_eq!(r.content.len(), 2);
        assert_eq!(r.status.as_deref(), Some("success"));
    }

    #[test]
    fn a_malformed_block_is_refused_at_its_own_path() {
        for (json, says) in [
            (
                r#"{"content":[{"text":"a"},{"text":"b","image":{}}]}"#,
                "exactly one member",
            ),
            (
                r#"{"content":[{"text":"a"},{}]}"#,
                "exactly one member, not 0",
            ),
            (
                r#"{"content":[{"text":"a"},{"hologram":{}}]}"#,
                "unknown variant `hologram`",
            ),
            (
                r#"{"content":[{"text":"a"},{"toolUse":{"name":"f"}}]}"#,
                "missing field `toolUseId`",
            ),
            (r#"{"content":[{"text":"a"},{"text":5}]}"#, "invalid type"),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(
                e.param.as_deref(),
                Some("content.1"),
                "{json}: {}",
                e.message
            );
            assert!(e.message.contains(says), "{json}: {}", e.message);
        }
    }
}
