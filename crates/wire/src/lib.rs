//! API dialects as pure data (OpenAI, Anthropic Messages, Amazon Bedrock).
//!
//! Each dialect module parses its request bodies (naming the offending field on error),
//! converts them into `basalt-types`' canonical requests, and builds its response bodies,
//! stream chunks and error bodies from canonical events. Nothing here does I/O, so every
//! wire shape is testable with plain values.

#![forbid(unsafe_code)]

pub mod anthropic;
pub mod bedrock;
pub mod embeddings;
pub mod images;
pub mod openai;

use basalt_types::BasaltError;
use serde::de::DeserializeOwned;

/// How an error names the field at fault: OpenAI and Anthropic write `messages[0].content`,
/// Bedrock `messages.0.content`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldPath {
    Indexed,
    Dotted,
}

/// Parses a JSON body, turning a serde error into a 400 that names the field at fault
/// (`messages[0].content`), as API users expect.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, BasaltError> {
    parse_json_naming(body, FieldPath::Indexed)
}

/// [`parse_json`], naming fields in the given style.
pub fn parse_json_naming<T: DeserializeOwned>(
    body: &[u8],
    style: FieldPath,
) -> Result<T, BasaltError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| path_error(e, style))
}

/// Like [`parse_json`], for an already-parsed JSON value.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, BasaltError> {
    serde_path_to_error::deserialize(value).map_err(|e| path_error(e, FieldPath::Indexed))
}

fn path_error(e: serde_path_to_error::Error<serde_json::Error>, style: FieldPath) -> BasaltError {
    let path = match style {
        FieldPath::Indexed => e.path().to_string(),
        FieldPath::Dotted => dotted(e.path()),
    };
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        BasaltError::invalid(
            "body",
            format!("The request body is not valid JSON: {inner}"),
        )
    } else if path == "." || path.is_empty() {
        BasaltError::invalid("body", format!("Invalid request body: {inner}"))
    } else {
        BasaltError::invalid(path.clone(), format!("Invalid value for `{path}`: {inner}"))
    }
}

fn dotted(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let parts: Vec<String> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Map { key } => Some(key.clone()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect();
    parts.join(".")
}

/// A JSON Schema as the JSON text canonical types carry; a missing schema means "an object
/// with any properties", which is what every API assumes for a tool without parameters.
pub(crate) fn schema_text(schema: Option<&serde_json::Value>) -> String {
    match schema {
        Some(v) if !v.is_null() => v.to_string(),
        _ => r#"{"type":"object","properties":{}}"#.to_string(),
    }
}

/// A tool call's arguments as a JSON value for dialects that send objects, not text. A call
/// cut off by `max_tokens` has unparseable arguments; it is reported as an empty object
/// (the stop reason says why).
pub(crate) fn arguments_value(arguments: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(arguments)
        .ok()
        .filter(serde_json::Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// A parameter outside its documented range is a 400 that names it, in every dialect.
pub(crate) fn check_range(
    param: &str,
    v: Option<f32>,
    lo: f32,
    hi: f32,
) -> Result<(), BasaltError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(BasaltError::invalid(
            param,
            format!("`{param}` must be between {lo} and {hi}, got {x}"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        items: Vec<Inner>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Outer>(br#"{"items":[{"n":1},{"n":"x"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("items[1].n"));
        let e = parse_json::<Outer>(b"{not json").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("body"));
        assert!(e.message.contains("not valid JSON"));
        let e = parse_json::<Outer>(b"{}").unwrap_err();
        assert!(e.message.contains("items"), "{}", e.message);
    }
}
