#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Every dialect's request parser against mutated valid bodies: whatever a client sends, the
//! parser returns a plan or a client error (4xx) naming what is wrong; it never panics and
//! never calls a bad body the server's fault.

use basalt_fuzz::{mutate_bytes, mutate_json, Budget, Rng};
use basalt_types::BasaltError;
use basalt_wire::bedrock::converse::{ConverseRequest, ConverseTokensRequest};
use basalt_wire::bedrock::invoke::{CountTokensRequest, LlamaBody};
use basalt_wire::{anthropic, embeddings, images, openai, parse_json};
use serde_json::{json, Value};

type Parser = fn(&[u8]) -> Result<(), BasaltError>;

fn openai_chat(b: &[u8]) -> Result<(), BasaltError> {
    openai::parse_chat(b)?.into_plan().map(drop)
}
fn openai_completion(b: &[u8]) -> Result<(), BasaltError> {
    openai::parse_completion(b)?.into_plan().map(drop)
}
fn anthropic_messages(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<anthropic::MessagesRequest>(b)?
        .into_request()
        .map(drop)
}
fn anthropic_count(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<anthropic::CountTokensRequest>(b)?
        .into_prompt()
        .map(drop)
}
fn converse(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<ConverseRequest>(b)?.into_request().map(drop)
}
fn converse_tokens(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<ConverseTokensRequest>(b)?
        .into_prompt()
        .map(drop)
}
fn count_tokens(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<CountTokensRequest>(b)?.into_prompt().map(drop)
}
fn llama(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<LlamaBody>(b)?.into_request().map(drop)
}
fn openai_embeddings(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<embeddings::OpenAiEmbeddingsRequest>(b)?
        .into_request()
        .map(drop)
}
fn native_embeddings(b: &[u8]) -> Result<(), BasaltError> {
    match embeddings::parse_native(b)? {
        embeddings::NativeEmbedBody::Titan(r) => r.into_request().map(drop),
        embeddings::NativeEmbedBody::Cohere(r) => r.into_request().map(drop),
    }
}
fn openai_images(b: &[u8]) -> Result<(), BasaltError> {
    parse_json::<images::OpenAiImagesRequest>(b)?
        .into_request("m")
        .map(drop)
}
fn native_images(b: &[u8]) -> Result<(), BasaltError> {
    match images::parse_native(b)? {
        images::NativeImageBody::Titan(r) => r.into_request().map(drop),
        images::NativeImageBody::Stability(r) => r.into_request().map(drop),
    }
}

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"},
           "unit": {"enum": ["C", "F"]}}, "required": ["city"]})
}

/// One valid body per parser, using as many of its features as possible.
fn seeds() -> Vec<(&'static str, Parser, Value)> {
    vec![
        (
            "openai chat",
            openai_chat as Parser,
            json!({
            "model": "m", "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                  "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "20C"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}],
            "tool_choice": "auto", "temperature": 0.5, "top_p": 0.9, "n": 2, "stop": ["\n\n"],
            "max_tokens": 32, "logprobs": true, "top_logprobs": 2, "seed": 1, "stream": true,
            "stream_options": {"include_usage": true}, "logit_bias": {"42": -5},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": weather_schema()}}}),
        ),
        (
            "openai completion",
            openai_completion,
            json!({
            "model": "m", "prompt": ["a", "b"], "n": 2, "max_tokens": 8, "echo": true,
            "logprobs": 2, "best_of": 2, "stop": "x", "temperature": 0}),
        ),
        (
            "anthropic messages",
            anthropic_messages,
            json!({
            "model": "m", "max_tokens": 64, "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "Weather?"},
                         {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "20C"}]}],
            "tools": [{"name": "get_weather", "input_schema": weather_schema()}],
            "tool_choice": {"type": "any"}, "stop_sequences": ["END"], "temperature": 0.3,
            "top_k": 5, "stream": true, "thinking": {"type": "disabled"}}),
        ),
        (
            "anthropic count_tokens",
            anthropic_count,
            json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
        ),
        (
            "converse",
            converse,
            json!({
            "messages": [{"role": "user", "content": [{"text": "Weather?"}]},
                         {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Paris"}}}]},
                         {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "20C"}]}}]}],
            "system": [{"text": "Be brief."}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": weather_schema()}}}],
                           "toolChoice": {"auto": {}}},
            "additionalModelRequestFields": {"top_k": 5}}),
        ),
        (
            "converse count",
            converse_tokens,
            json!({
            "messages": [{"role": "user", "content": [{"text": "hi"}]}], "system": [{"text": "s"}]}),
        ),
        (
            "bedrock count_tokens",
            count_tokens,
            json!({
            "input": {"converse": {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}}}),
        ),
        (
            "llama body",
            llama,
            json!({
            "prompt": "<|begin_of_text|>Hi", "max_gen_len": 32, "temperature": 0.5, "top_p": 0.9}),
        ),
        (
            "openai embeddings",
            openai_embeddings,
            json!({
            "model": "m", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 384}),
        ),
        (
            "titan embeddings",
            native_embeddings,
            json!({
            "inputText": "hello", "dimensions": 384, "normalize": true}),
        ),
        (
            "cohere embeddings",
            native_embeddings,
            json!({
            "texts": ["a", "b"], "input_type": "search_document", "truncate": "END",
            "embedding_types": ["float"]}),
        ),
        (
            "openai images",
            openai_images,
            json!({
            "model": "m", "prompt": "a face", "n": 1, "size": "256x256",
            "response_format": "b64_json", "seed": 3, "steps": 4}),
        ),
        (
            "titan images",
            native_images,
            json!({
            "taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a face", "negativeText": "blur"},
            "imageGenerationConfig": {"numberOfImages": 1, "width": 512, "height": 512, "cfgScale": 7.5, "seed": 1}}),
        ),
        (
            "stability images",
            native_images,
            json!({
            "text_prompts": [{"text": "a face", "weight": 1.0}, {"text": "blur", "weight": -1.0}],
            "cfg_scale": 7, "steps": 10, "seed": 4, "width": 512, "height": 512}),
        ),
    ]
}

fn check(name: &str, parse: Parser, body: &[u8]) {
    if let Err(e) = parse(body) {
        assert!(
            (400..500).contains(&e.status()),
            "{name}: a client's body got {} ({}): {}",
            e.status(),
            e.message,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
    }
}

#[test]
fn the_seeds_are_valid() {
    for (name, parse, seed) in seeds() {
        parse(seed.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn mutated_json_bodies_are_parsed_or_refused_as_client_errors() {
    let seeds = seeds();
    let ran = Budget::new(6_000, 20).run(0x5EED_0001, |i, rng: &mut Rng| {
        let (name, parse, seed) = &seeds[i % seeds.len()];
        let body = mutate_json(seed, rng).to_string();
        check(name, *parse, body.as_bytes());
    });
    assert!(ran >= seeds.len(), "only {ran} cases ran");
}

#[test]
fn mutated_bytes_are_parsed_or_refused_as_client_errors() {
    let seeds: Vec<_> = seeds()
        .into_iter()
        .map(|(n, p, v)| (n, p, v.to_string().into_bytes()))
        .collect();
    let ran = Budget::new(6_000, 10).run(0x5EED_0002, |i, rng: &mut Rng| {
        let (name, parse, seed) = &seeds[i % seeds.len()];
        check(name, *parse, &mutate_bytes(seed, rng));
    });
    assert!(ran >= seeds.len(), "only {ran} cases ran");
}
