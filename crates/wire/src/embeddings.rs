//! Embedding request and response bodies: OpenAI's `POST /v1/embeddings`, and the Bedrock
//! `InvokeModel` bodies of Amazon Titan text embeddings v2 and Cohere embed.
//!
//! Every dialect converts to the same canonical form, [`EmbedRequest`]: texts, and whether
//! the caller accepts truncation (Titan and Cohere say so explicitly; for OpenAI the
//! extension field `truncate` does, default true, and each result says if it was cut).

use basalt_types::BasaltError;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

/// Most texts in one OpenAI request (OpenAI's limit).
pub const MAX_OPENAI_INPUTS: usize = 2048;
/// Most texts in one Cohere request (Cohere's limit on Bedrock).
pub const MAX_COHERE_TEXTS: usize = 96;

/// What any dialect asks of an embedding model.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    pub texts: Vec<String>,
    pub allow_truncation: bool,
    /// Requested vector size; `None` means the model's own.
    pub dimensions: Option<u32>,
}

/// One result, as the dialects render it.
pub struct EmbeddingOut<'a> {
    pub vector: &'a [f32],
    pub truncated: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OpenAiInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingsRequest {
    pub model: String,
    pub input: OpenAiInput,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u32>,
    pub user: Option<String>,
    /// Extension: `false` makes an over-long input an error instead of truncating it.
    pub truncate: Option<bool>,
}

impl OpenAiEmbeddingsRequest {
    /// The canonical request and whether vectors go back as base64.
    pub fn into_request(self) -> Result<(String, EmbedRequest, bool), BasaltError> {
        let texts = match self.input {
            OpenAiInput::One(t) => vec![t],
            OpenAiInput::Many(v) => v,
            OpenAiInput::Tokens(_) | OpenAiInput::TokenBatches(_) => {
                return Err(BasaltError::invalid(
                    "input",
                    "token-id inputs are not supported: send text (the model uses its own tokenizer)",
                ))
            }
        };
        if texts.is_empty() || texts.len() > MAX_OPENAI_INPUTS {
            return Err(BasaltError::invalid(
                "input",
                format!("`input` must hold 1 to {MAX_OPENAI_INPUTS} texts"),
            ));
        }
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            return Err(BasaltError::invalid(
                format!("input[{i}]"),
                "inputs must not be empty strings",
            ));
        }
        let base64 = match self.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(BasaltError::invalid(
                    "encoding_format",
                    format!("`{other}` is not an encoding format (float or base64)"),
                ))
            }
        };
        Ok((
            self.model,
            EmbedRequest {
                texts,
                allow_truncation: self.truncate.unwrap_or(true),
                dimensions: self.dimensions,
            },
            base64,
        ))
    }
}

/// OpenAI's embeddings list; `truncated` is an extension on each item.
pub fn openai_response(
    model: &str,
    items: &[EmbeddingOut<'_>],
    base64: bool,
    prompt_tokens: u32,
) -> Value {
    let data: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = e.vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(e.vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding, "truncated": e.truncated})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TitanRequest {
    pub input_text: String,
    pub dimensions: Option<u32>,
    pub normalize: Option<bool>,
    pub embedding_types: Option<Vec<String>>,
}

impl TitanRequest {
    /// The canonical request, and whether the vector is returned normalised.
    pub fn into_request(self) -> Result<(EmbedRequest, bool, bool), BasaltError> {
        if self.input_text.is_empty() {
            return Err(BasaltError::invalid(
                "inputText",
                "`inputText` must not be empty",
            ));
        }
        let by_type = match self.embedding_types.as_deref() {
            None => false,
            Some(types) => {
                if let Some(t) = types.iter().find(|t| *t != "float") {
                    return Err(BasaltError::invalid(
                        "embeddingTypes",
                        format!("embedding type `{t}` is not supported (float only)"),
                    ));
                }
                true
            }
        };
        Ok((
            EmbedRequest {
                texts: vec![self.input_text],
                // Titan truncates nothing: an over-long input is a validation error.
                allow_truncation: false,
                dimensions: self.dimensions,
            },
            self.normalize.unwrap_or(true),
            by_type,
        ))
    }
}

pub fn titan_response(vector: &[f32], tokens: u32, by_type: bool) -> Value {
    let mut v = json!({"embedding": vector, "inputTextTokenCount": tokens});
    if by_type {
        v["embeddingsByType"] = json!({"float": vector});
    }
    v
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohereRequest {
    pub texts: Vec<String>,
    pub input_type: String,
    pub truncate: Option<String>,
    pub embedding_types: Option<Vec<String>>,
}

impl CohereRequest {
    /// The canonical request, and whether the response is keyed by embedding type.
    pub fn into_request(self) -> Result<(EmbedRequest, bool), BasaltError> {
        if !matches!(
            self.input_type.as_str(),
            "search_document" | "search_query" | "classification" | "clustering"
        ) {
            return Err(BasaltError::invalid(
                "input_type",
                "`input_type` must be search_document, search_query, classification or clustering",
            ));
        }
        if self.texts.is_empty() || self.texts.len() > MAX_COHERE_TEXTS {
            return Err(BasaltError::invalid(
                "texts",
                format!("`texts` must hold 1 to {MAX_COHERE_TEXTS} texts"),
            ));
        }
        let allow_truncation = match self.truncate.as_deref() {
            None | Some("END") => true,
            Some("NONE") => false,
            Some("START") => {
                return Err(BasaltError::invalid(
                    "truncate",
                    "truncating from the START is not supported (use END or NONE)",
                ))
            }
            Some(other) => {
                return Err(BasaltError::invalid(
                    "truncate",
                    format!("`{other}` is not a truncation mode (NONE, START or END)"),
                ))
            }
        };
        let by_type = match self.embedding_types.as_deref() {
            None => false,
            Some(types) => {
                if let Some(t) = types.iter().find(|t| *t != "float") {
                    return Err(BasaltError::invalid(
                        "embedding_types",
                        format!("embedding type `{t}` is not supported (float only)"),
                    ));
                }
                true
            }
        };
        Ok((
            EmbedRequest {
                texts: self.texts,
                allow_truncation,
                dimensions: None,
            },
            by_type,
        ))
    }
}

pub fn cohere_response(id: &str, texts: &[String], vectors: &[&[f32]], by_type: bool) -> Value {
    if by_type {
        json!({"id": id, "texts": texts, "embeddings": {"float": vectors},
               "response_type": "embeddings_by_type"})
    } else {
        json!({"id": id, "texts": texts, "embeddings": vectors, "response_type": "embeddings_floats"})
    }
}

/// Which native embedding body an `InvokeModel` call sent, told apart by its keys.
pub enum NativeEmbedBody {
    Titan(TitanRequest),
    Cohere(CohereRequest),
}

pub fn parse_native(body: &[u8]) -> Result<NativeEmbedBody, BasaltError> {
    let v: Value = crate::parse_json(body)?;
    if v.get("inputText").is_some() {
        Ok(NativeEmbedBody::Titan(crate::from_value(v)?))
    } else if v.get("texts").is_some() {
        Ok(NativeEmbedBody::Cohere(crate::from_value(v)?))
    } else {
        Err(BasaltError::invalid(
            "body",
            "an embedding model takes the Titan body (`inputText`) or the Cohere body (`texts`, `input_type`)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn openai_inputs_and_formats() {
        let (m, r, b64) = parse_json::<OpenAiEmbeddingsRequest>(
            br#"{"model":"e","input":["a","b"],"encoding_format":"base64"}"#,
        )
        .unwrap()
        .into_request()
        .unwrap();
        assert_eq!(
            (m.as_str(), r.texts.len(), b64, r.allow_truncation),
            ("e", 2, true, true)
        );
        for (body, param) in [
            (&br#"{"model":"e","input":[1,2,3]}"#[..], "input"),
            (br#"{"model":"e","input":[]}"#, "input"),
            (br#"{"model":"e","input":["a",""]}"#, "input[1]"),
            (
                br#"{"model":"e","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
        ] {
            let e = parse_json::<OpenAiEmbeddingsRequest>(body)
                .and_then(|r| r.into_request())
                .unwrap_err();
            assert_eq!(
                e.param.as_deref(),
                Some(param),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let out = openai_response(
            "e",
            &[EmbeddingOut {
                vector: &[1.0, -2.0],
                truncated: false,
            }],
            true,
            3,
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(out["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat()
        );
        assert_eq!(out["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn native_bodies() {
        let NativeEmbedBody::Titan(t) =
            parse_native(br#"{"inputText":"hi","dimensions":384,"normalize":false}"#).unwrap()
        else {
            panic!()
        };
        let (r, normalize, _) = t.into_request().unwrap();
        assert!(!normalize && !r.allow_truncation);
        let NativeEmbedBody::Cohere(c) =
            parse_native(br#"{"texts":["a","b"],"input_type":"search_query","truncate":"NONE"}"#)
                .unwrap()
        else {
            panic!()
        };
        let (r, by_type) = c.into_request().unwrap();
        assert!(!r.allow_truncation && !by_type && r.texts.len() == 2);
        assert!(parse_native(br#"{"prompt":"x"}"#).is_err());
        let e = match parse_native(br#"{"texts":["a"],"input_type":"poetry"}"#).unwrap() {
            NativeEmbedBody::Cohere(c) => c.into_request().unwrap_err(),
            _ => panic!(),
        };
        assert_eq!(e.param.as_deref(), Some("input_type"));
        let v = cohere_response("id", &["a".into()], &[&[0.5]], true);
        assert_eq!(v["embeddings"]["float"][0][0], 0.5);
    }
}
