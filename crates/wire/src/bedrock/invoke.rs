//! `InvokeModel` and `InvokeModelWithResponseStream` with provider-native bodies, and
//! `CountTokens`.
//!
//! Our text models take Meta Llama's text body on Bedrock: `{prompt, temperature, top_p,
//! max_gen_len}` in, `{generation, prompt_token_count, generation_token_count, stop_reason}`
//! out. The prompt is used verbatim (the caller applies the chat format), as on Bedrock.

use basalt_types::{
    BasaltError, FinishReason, GenerateRequest, OutputConstraints, Prompt, SamplingParams, Usage,
};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::converse::{
    ConverseTokensRequest, DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P,
};
use super::output::{InvocationMetrics, LlamaGeneration};
use crate::check_range;

/// Meta's Bedrock limit on `max_gen_len`.
pub const MAX_GEN_LEN: u32 = 2048;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlamaBody {
    pub prompt: String,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_gen_len: Option<u32>,
    /// Accepted as Meta documents it for images; our models take none.
    pub images: Option<Vec<Value>>,
    /// Which parts of the prompt a guardrail checks: those between input tags with this
    /// suffix ([`TaggedPrompt`]).
    #[serde(rename = "amazon-bedrock-guardrailConfig")]
    pub guardrail_config: Option<BodyGuardrailConfig>,
}

/// `amazon-bedrock-guardrailConfig` in an `InvokeModel` body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BodyGuardrailConfig {
    pub tag_suffix: String,
    /// `SYNCHRONOUS` or `ASYNCHRONOUS`; Basalt checks streams synchronously either way.
    pub stream_processing_mode: Option<String>,
}

/// A prompt with guardrail input tags (`<amazon-bedrock-guardrails-guardContent_SUFFIX>`
/// ... `</amazon-bedrock-guardrails-guardContent_SUFFIX>`): the tagged texts, which a
/// guardrail checks, and the text around them. The model sees the prompt without the tags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedPrompt {
    /// Untagged text, then a tagged text, alternately, starting and ending with untagged
    /// text (possibly empty): `parts[1]`, `parts[3]`, ... are the tagged ones.
    pub parts: Vec<String>,
}

impl TaggedPrompt {
    /// Splits `prompt` at its tags; an unclosed or stray tag is a 400.
    pub fn parse(prompt: &str, suffix: &str) -> Result<Self, BasaltError> {
        if !(1..=20).contains(&suffix.len()) || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BasaltError::invalid(
                "amazon-bedrock-guardrailConfig.tagSuffix",
                "a tag suffix is 1 to 20 letters or digits",
            ));
        }
        let open = format!("<amazon-bedrock-guardrails-guardContent_{suffix}>");
        let close = format!("</amazon-bedrock-guardrails-guardContent_{suffix}>");
        let mut parts = Vec::new();
        let mut rest = prompt;
        while let Some(start) = rest.find(&open) {
            let (before, after) = rest.split_at(start);
            let after = &after[open.len()..];
            let end = after.find(&close).ok_or_else(|| {
                BasaltError::invalid("prompt", format!("a guardrail tag `{open}` is not closed"))
            })?;
            parts.push(before.to_string());
            parts.push(after[..end].to_string());
            rest = &after[end + close.len()..];
        }
        if rest.contains(&close) || parts.iter().step_by(2).any(|p| p.contains(&close)) {
            return Err(BasaltError::invalid(
                "prompt",
                format!("`{close}` closes no guardrail tag"),
            ));
        }
        parts.push(rest.to_string());
        Ok(Self { parts })
    }

    /// Whether the prompt had any tag.
    pub fn is_tagged(&self) -> bool {
        self.parts.len() > 1
    }

    /// The tagged texts, to check (and mask) in place.
    pub fn tagged_mut(&mut self) -> Vec<&mut String> {
        self.parts.iter_mut().skip(1).step_by(2).collect()
    }

    /// The prompt without its tags.
    pub fn untagged(&self) -> String {
        self.parts.concat()
    }
}

impl LlamaBody {
    pub fn into_request(self) -> Result<GenerateRequest, BasaltError> {
        if self.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(BasaltError::new(
                basalt_types::ErrorKind::UnsupportedForModel,
                "this model accepts text only; `images` are not supported",
            )
            .with_param("images"));
        }
        if self.prompt.is_empty() {
            return Err(BasaltError::invalid("prompt", "`prompt` must not be empty"));
        }
        check_range("temperature", self.temperature, 0.0, 1.0)?;
        check_range("top_p", self.top_p, 0.0, 1.0)?;
        let max = self.max_gen_len.unwrap_or(DEFAULT_MAX_TOKENS);
        if !(1..=MAX_GEN_LEN).contains(&max) {
            return Err(BasaltError::invalid(
                "max_gen_len",
                format!("`max_gen_len` must be between 1 and {MAX_GEN_LEN}, got {max}"),
            ));
        }
        Ok(GenerateRequest {
            prompt: Prompt::Text(self.prompt),
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(DEFAULT_TEMPERATURE),
                top_p: self.top_p.unwrap_or(DEFAULT_TOP_P),
                ..Default::default()
            },
            max_tokens: Some(max),
            stop: Vec::new(),
            logprobs: None,
            constraints: Default::default(),
            cache_points: Vec::new(),
            thinking: None,
        })
    }
}

/// Meta's `stop_reason`: `stop` when the model ended, `length` when a limit did.
pub fn llama_stop_reason(r: FinishReason) -> &'static str {
    match r {
        FinishReason::EndOfTurn
        | FinishReason::StopSequence
        | FinishReason::ToolUse
        | FinishReason::GuardrailIntervened => "stop",
        FinishReason::MaxTokens | FinishReason::ContextWindow => "length",
    }
}

/// The complete `InvokeModel` response body.
pub fn llama_response<'a>(
    text: &'a str,
    reason: FinishReason,
    usage: &Usage,
) -> LlamaGeneration<'a> {
    LlamaGeneration {
        generation: text,
        prompt_token_count: Some(usage.input_tokens),
        generation_token_count: usage.output_tokens,
        stop_reason: Some(llama_stop_reason(reason)),
        invocation_metrics: None,
    }
}

/// One streamed chunk's native body: the prompt's token count only on the first chunk, the
/// stop reason only on the last.
pub fn llama_chunk(
    text: &str,
    prompt_token_count: Option<u32>,
    generation_token_count: u32,
    stop_reason: Option<FinishReason>,
) -> LlamaGeneration<'_> {
    LlamaGeneration {
        generation: text,
        prompt_token_count,
        generation_token_count,
        stop_reason: stop_reason.map(llama_stop_reason),
        invocation_metrics: None,
    }
}

/// What every stream's last chunk carries, as Bedrock adds it.
pub fn invocation_metrics(usage: &Usage, latency_ms: u64, first_byte_ms: u64) -> InvocationMetrics {
    InvocationMetrics {
        input_token_count: usage.input_tokens,
        output_token_count: usage.output_tokens,
        invocation_latency: latency_ms,
        first_byte_latency: first_byte_ms,
    }
}

/// A `chunk` event's payload: the native body, base64-encoded in `bytes`.
#[derive(Debug, Serialize)]
pub struct ChunkPayload {
    pub bytes: String,
}

pub fn chunk_payload(native: &impl Serialize) -> ChunkPayload {
    let json = serde_json::to_string(native).unwrap_or_default();
    ChunkPayload {
        bytes: base64::engine::general_purpose::STANDARD.encode(json),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountTokensRequest {
    pub input: CountTokensInput,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CountTokensInput {
    pub converse: Option<ConverseTokensRequest>,
    pub invoke_model: Option<InvokeModelTokensRequest>,
}

#[derive(Debug, Deserialize)]
pub struct InvokeModelTokensRequest {
    /// The `InvokeModel` body, base64-encoded as blobs are in JSON.
    pub body: String,
}

impl CountTokensRequest {
    /// The prompt whose tokens are counted (with any tools described), exactly as the
    /// matching invocation would see it.
    pub fn into_prompt(self) -> Result<(Prompt, OutputConstraints), BasaltError> {
        match (self.input.converse, self.input.invoke_model) {
            (Some(c), None) => c.into_prompt(),
            (None, Some(i)) => {
                let body = base64::engine::general_purpose::STANDARD
                    .decode(i.body.as_bytes())
                    .map_err(|e| {
                        BasaltError::invalid("input.invokeModel.body", format!("not base64: {e}"))
                    })?;
                let native: LlamaBody = super::parse_json(&body).map_err(|e| {
                    let p = e.param.clone().unwrap_or_default();
                    e.with_param(format!("input.invokeModel.body.{p}"))
                })?;
                Ok((native.into_request()?.prompt, OutputConstraints::default()))
            }
            _ => Err(BasaltError::invalid(
                "input",
                "`input` must have exactly one of `converse` or `invokeModel`",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guardrail_tags_split_the_prompt_and_leave_the_model_an_untagged_one() {
        let open = "<amazon-bedrock-guardrails-guardContent_x1>";
        let close = "</amazon-bedrock-guardrails-guardContent_x1>";
        let prompt = format!("Context. {open}Is it safe?{close} Then {open}B{close}.");
        let mut t = TaggedPrompt::parse(&prompt, "x1").unwrap();
        assert!(t.is_tagged());
        assert_eq!(
            t.tagged_mut()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>(),
            ["Is it safe?", "B"]
        );
        *t.tagged_mut()[1] = "{NAME}".into();
        assert_eq!(t.untagged(), "Context. Is it safe? Then {NAME}.");
        assert!(!TaggedPrompt::parse("plain", "x1").unwrap().is_tagged());
        for bad in [format!("{open}unclosed"), format!("stray{close}")] {
            assert_eq!(
                TaggedPrompt::parse(&bad, "x1")
                    .unwrap_err()
                    .param
                    .as_deref(),
                Some("prompt")
            );
        }
        assert!(TaggedPrompt::parse("p", "bad suffix!").is_err());
    }
    use crate::bedrock::parse_json;

    #[test]
    fn llama_body() {
        let r = parse_json::<LlamaBody>(br#"{"prompt":"Hello","temperature":0.1,"max_gen_len":9}"#)
            .unwrap()
            .into_request()
            .unwrap();
        assert_eq!(r.prompt, Prompt::Text("Hello".into()));
        assert_eq!(r.max_tokens, Some(9));
        assert_eq!(r.sampling.top_p, DEFAULT_TOP_P);
        let e = parse_json::<LlamaBody>(br#"{"prompt":"x","topP":0.3}"#).unwrap_err();
        assert!(e.message.contains("topP"), "{}", e.message);
        let e = parse_json::<LlamaBody>(br#"{"prompt":"x","max_gen_len":5000}"#)
            .unwrap()
            .into_request()
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_gen_len"));
    }

    #[test]
    fn stream_chunks_carry_base64_native_bodies() {
        let native = llama_chunk("hi", Some(4), 1, None);
        let payload = chunk_payload(&native);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&payload.bytes)
            .unwrap();
        let back: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(back["generation"], "hi");
        assert_eq!(back["prompt_token_count"], 4);
        assert!(back["stop_reason"].is_null());
    }

    #[test]
    fn count_tokens_inputs() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"prompt":"abc"}"#);
        let body = format!(r#"{{"input":{{"invokeModel":{{"body":"{b64}"}}}}}}"#);
        let p = parse_json::<CountTokensRequest>(body.as_bytes())
            .unwrap()
            .into_prompt()
            .unwrap()
            .0;
        assert_eq!(p, Prompt::Text("abc".into()));
        let p = parse_json::<CountTokensRequest>(
            br#"{"input":{"converse":{"messages":[{"role":"user","content":[{"text":"hi"}]}]}}}"#,
        )
        .unwrap()
        .into_prompt()
        .unwrap()
        .0;
        assert!(matches!(p, Prompt::Chat(m) if m[0].content == "hi"));
        let e = parse_json::<CountTokensRequest>(br#"{"input":{}}"#)
            .unwrap()
            .into_prompt()
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        let bad = base64::engine::general_purpose::STANDARD.encode(br#"{"prompt":"a","x":1}"#);
        let body = format!(r#"{{"input":{{"invokeModel":{{"body":"{bad}"}}}}}}"#);
        let e = parse_json::<CountTokensRequest>(body.as_bytes())
            .unwrap()
            .into_prompt()
            .unwrap_err();
        assert!(e.param.unwrap().starts_with("input.invokeModel.body"));
    }
}
