#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The Bedrock surface over HTTP (no socket): runtime operations against the real default
//! models, event-stream framing, Bedrock's error shapes, and authentication on every
//! dialect (bearer, `x-api-key`, SigV4) against a keyed server.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use basalt_auth::{sigv4, Authenticator, StaticKeys};
use basalt_server::{router, AppState, ServerConfig};
use basalt_wire::bedrock::eventstream;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::*;

/// Model ids travel percent-encoded in the path, as botocore sends them.
fn path(model: &str, op: &str) -> String {
    let encoded = model.replace(':', "%3A").replace('/', "%2F");
    format!("/model/{encoded}/{op}")
}

async fn raw(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes.to_vec())
}

fn json_post(uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn question() -> Value {
    json!({
        "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        "system": [{"text": "You are a helpful assistant."}],
        "inferenceConfig": {"maxTokens": 24, "temperature": 0},
    })
}

#[tokio::test]
async fn converse_answers_with_usage_and_metrics() {
    let (status, body) = post(&path(SMOL, "converse"), question()).await;
    assert_eq!(status, 200, "{body}");
    let text = body["output"]["message"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(body["output"]["message"]["role"], "assistant");
    assert_eq!(body["stopReason"], "end_turn");
    let u = &body["usage"];
    assert_eq!(
        u["totalTokens"].as_u64().unwrap(),
        u["inputTokens"].as_u64().unwrap() + u["outputTokens"].as_u64().unwrap()
    );
    assert!(body["metrics"]["latencyMs"].is_u64());
}

#[tokio::test]
async fn converse_stream_frames_decode_in_order() {
    let (status, headers, bytes) =
        raw(json_post(&path(SMOL, "converse-stream"), &question())).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let messages = eventstream::decode_all(&bytes).unwrap();
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m.header(":event-type").unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"messageStart"));
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["contentBlockStop", "messageStop", "metadata"]
    );
    assert!(kinds[1..kinds.len() - 3]
        .iter()
        .all(|k| *k == "contentBlockDelta"));
    let payloads: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    let text: String = payloads[1..payloads.len() - 3]
        .iter()
        .map(|p| p["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(text.contains("Paris"), "{text}");
    // Each delta carries the text of at least one token; usage counts every token.
    let usage = &payloads[payloads.len() - 1]["usage"];
    assert!(usage["outputTokens"].as_u64().unwrap() >= (payloads.len() - 4) as u64);
    assert_eq!(payloads[payloads.len() - 2]["stopReason"], "end_turn");
}

#[tokio::test]
async fn invoke_model_with_the_llama_body() {
    let body = json!({"prompt": "The capital of France is", "max_gen_len": 6, "temperature": 0});
    let (status, headers, bytes) = raw(json_post(&path(GEMMA, "invoke"), &body)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["generation_token_count"], 6);
    assert_eq!(v["stop_reason"], "length");
    let prompt_tokens = v["prompt_token_count"].as_u64().unwrap();
    assert_eq!(
        headers["x-amzn-bedrock-input-token-count"],
        prompt_tokens.to_string().as_str()
    );
    assert_eq!(headers["x-amzn-bedrock-output-token-count"], "6");

    // The stream tells the same story, chunk by chunk, and ends with the metrics.
    let (status, headers, bytes) = raw(json_post(
        &path(GEMMA, "invoke-with-response-stream"),
        &body,
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amzn-bedrock-content-type"], "application/json");
    let chunks: Vec<Value> = eventstream::decode_all(&bytes)
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m.header(":event-type"), Some("chunk"));
            let outer: Value = serde_json::from_slice(&m.payload).unwrap();
            let inner = base64::engine::general_purpose::STANDARD
                .decode(outer["bytes"].as_str().unwrap())
                .unwrap();
            serde_json::from_slice(&inner).unwrap()
        })
        .collect();
    let text: String = chunks
        .iter()
        .map(|c| c["generation"].as_str().unwrap())
        .collect();
    assert_eq!(text, v["generation"].as_str().unwrap());
    assert_eq!(chunks[0]["prompt_token_count"], prompt_tokens);
    let last = chunks.last().unwrap();
    assert_eq!(last["stop_reason"], "length");
    let metrics = &last["amazon-bedrock-invocationMetrics"];
    assert_eq!(metrics["inputTokenCount"], prompt_tokens);
    assert_eq!(metrics["outputTokenCount"], 6);
}

#[tokio::test]
async fn count_tokens_matches_what_invocation_reports() {
    let (_, converse) = post(&path(SMOL, "converse"), question()).await;
    let (status, counted) = post(
        &path(SMOL, "count-tokens"),
        json!({"input": {"converse": {
            "messages": question()["messages"], "system": question()["system"]}}}),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted["inputTokens"], converse["usage"]["inputTokens"]);
    let native = base64::engine::general_purpose::STANDARD.encode(br#"{"prompt":"Hello there"}"#);
    let (status, counted) = post(
        &path(GEMMA, "count-tokens"),
        json!({"input": {"invokeModel": {"body": native}}}),
    )
    .await;
    assert_eq!(status, 200, "{counted}");
    // BOS + "Hello" + " there".
    assert_eq!(counted["inputTokens"], 3);
}

#[tokio::test]
async fn model_ids_resolve_as_arns_and_profiles() {
    for id in [
        format!("arn:aws:bedrock:eu-west-1::foundation-model/{SMOL}"),
        format!("us.{SMOL}"),
    ] {
        let body = json!({"messages": [{"role": "user", "content": [{"text": "Hi"}]}],
                          "inferenceConfig": {"maxTokens": 2}});
        let (status, v) = post(&path(&id, "converse"), body).await;
        assert_eq!(status, 200, "{id}: {v}");
    }
}

#[tokio::test]
async fn errors_use_bedrock_shapes() {
    let cases = [
        (
            path("nope.model-v1:0", "converse"),
            question(),
            404,
            "ResourceNotFoundException",
        ),
        (
            path(SMOL, "converse"),
            json!({"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "AA=="}}}]}]}),
            400,
            "ValidationException",
        ),
        (
            path(SMOL, "converse"),
            json!({"messages": [{"role": "user", "content": [{"text": "x"}]}], "inferenceConfig": {"temperature": 3}}),
            400,
            "ValidationException",
        ),
        (
            path(SMOL, "invoke"),
            json!({"prompt": "x", "bogus": 1}),
            400,
            "ValidationException",
        ),
        (
            path(SMOL, "converse"),
            json!({"messages": [{"role": "user", "content": [{"text": "x ".repeat(9000)}]}]}),
            400,
            "ValidationException",
        ),
    ];
    for (uri, body, status, name) in cases {
        let (got, headers, bytes) = raw(json_post(&uri, &body)).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(got.as_u16(), status, "{uri}: {v}");
        assert_eq!(headers["x-amzn-errortype"], name, "{uri}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // The image error names the offending block.
    let (_, v) = post(
        &path(SMOL, "converse"),
        json!({"messages": [{"role": "user", "content": [{"text": "x"}, {"document": {"name": "d", "format": "txt", "source": {"bytes": "AA=="}}}]}]}),
    )
    .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("messages.0.content.1"),
        "{v}"
    );
    // Malformed JSON is a validation error too, never a 500.
    let req = Request::builder()
        .method("POST")
        .uri(path(SMOL, "converse"))
        .body(Body::from("{not json"))
        .unwrap();
    let (status, headers, _) = raw(req).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-amzn-errortype"], "ValidationException");
}

#[tokio::test]
async fn lists_and_describes_foundation_models() {
    let (status, v) = send(
        "GET",
        "/foundation-models?byOutputModality=TEXT",
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = v["modelSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["modelId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&SMOL) && ids.contains(&GEMMA), "{v}");
    let (_, images) = send(
        "GET",
        "/foundation-models?byOutputModality=IMAGE",
        Body::empty(),
    )
    .await;
    assert_eq!(images["modelSummaries"][0]["modelId"], DCGAN);
    let (_, none) = send(
        "GET",
        "/foundation-models?byInferenceType=PROVISIONED",
        Body::empty(),
    )
    .await;
    assert_eq!(none["modelSummaries"], json!([]));
    let (_, google) = send("GET", "/foundation-models?byProvider=google", Body::empty()).await;
    assert_eq!(google["modelSummaries"].as_array().unwrap().len(), 1);
    let (status, one) = send(
        "GET",
        &format!("/foundation-models/{}", GEMMA.replace(':', "%3A")),
        Body::empty(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["modelDetails"]["responseStreamingSupported"], true);
    assert_eq!(one["modelDetails"]["modelLifecycle"]["status"], "ACTIVE");
}

// ---------------------------------------------------------------------------------------
// Authentication, on a keyed server with no models: a request that gets past
// authentication meets a 404 for its unknown model; one that does not is a 401/403.

const API_KEY: &str = "sk-basalt-test";
const ACCESS_KEY: &str = "AKIDBASALT";
const SECRET: &str = "basalt-secret/key";

fn keyed_app() -> axum::Router {
    let keys = StaticKeys::new(
        "acme",
        &[API_KEY.to_string()],
        &[(ACCESS_KEY.to_string(), SECRET.to_string())],
    );
    let state = AppState::new(Vec::new()).with_auth(Authenticator::new(Arc::new(keys)));
    router(Arc::new(state), ServerConfig::default())
}

async fn keyed(req: Request<Body>) -> (u16, axum::http::HeaderMap, Value) {
    let resp = keyed_app().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn signed(uri: &str, body: &str, secret: &str, now: i64) -> Request<Body> {
    let date = sigv4::format_amz_date(now);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", "localhost:8080".parse().unwrap());
    headers.insert("x-amz-date", date.parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    let (raw_path, raw_query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let wire = sigv4::WireRequest {
        method: "POST",
        raw_path,
        raw_query,
        authority: None,
        headers: &headers,
        body: body.as_bytes(),
    };
    let auth = sigv4::sign(
        &wire,
        ACCESS_KEY,
        secret,
        "us-east-1",
        "bedrock",
        &["content-type", "host", "x-amz-date"],
    )
    .unwrap();
    let mut req = Request::builder().method("POST").uri(uri);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    req.header("authorization", auth)
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn every_dialect_authenticates_through_one_layer() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = question().to_string();
    let uri = path(SMOL, "converse");

    // Bedrock: bearer, SigV4, and the ways to get either wrong.
    let bearer = |key: &str| {
        Request::builder()
            .method("POST")
            .uri(&uri)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body.clone()))
            .unwrap()
    };
    assert_eq!(keyed(bearer(API_KEY)).await.0, 404);
    let (status, headers, v) = keyed(bearer("sk-wrong")).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(headers["x-amzn-errortype"], "UnrecognizedClientException");
    assert_eq!(keyed(signed(&uri, &body, SECRET, now)).await.0, 404);
    let (status, headers, _) = keyed(signed(&uri, &body, "wrong", now)).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");
    let (status, headers, v) = keyed(signed(&uri, &body, SECRET, now - 3600)).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-amzn-errortype"], "InvalidSignatureException");
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
    // A body changed after signing.
    let mut tampered = signed(&uri, &body, SECRET, now);
    *tampered.body_mut() = Body::from(body.replace("France", "Spain"));
    assert_eq!(keyed(tampered).await.0, 403);
    let unsigned = Request::builder()
        .method("POST")
        .uri(&uri)
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, headers, _) = keyed(unsigned).await;
    assert_eq!(status, 403);
    assert_eq!(
        headers["x-amzn-errortype"],
        "MissingAuthenticationTokenException"
    );

    // OpenAI: bearer; a bad key is OpenAI's 401.
    let openai = |key: &str| {
        Request::builder()
            .method("GET")
            .uri("/v1/models")
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(keyed(openai(API_KEY)).await.0, 200);
    let (status, _, v) = keyed(openai("sk-wrong")).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["code"], "invalid_api_key");

    // Anthropic: x-api-key; a bad key is Anthropic's authentication_error.
    let anthropic = |key: &str| {
        Request::builder()
            .method("POST")
            .uri("/v1/messages")
            .header("x-api-key", key)
            .body(Body::from(
                json!({"model": SMOL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            ))
            .unwrap()
    };
    assert_eq!(keyed(anthropic(API_KEY)).await.0, 404);
    let (status, _, v) = keyed(anthropic("nope")).await;
    assert_eq!(status, 401);
    assert_eq!(v["error"]["type"], "authentication_error");

    // Health stays open for load balancers.
    let health = Request::builder()
        .uri("/health")
        .body(Body::empty())
        .unwrap();
    assert_eq!(keyed_app().oneshot(health).await.unwrap().status(), 200);
}

#[tokio::test]
async fn converse_stream_frames_a_tool_call() {
    let body = json!({
        "messages": [{"role": "user", "content": [{"text": "Add 2 and 3."}]}],
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "add", "inputSchema": {"json": {
                "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"], "additionalProperties": false}}}}],
            "toolChoice": {"any": {}}},
        "inferenceConfig": {"maxTokens": 60, "temperature": 0},
    });
    let (status, _, bytes) = raw(json_post(&path(SMOL, "converse-stream"), &body)).await;
    assert_eq!(status, 200);
    let messages = eventstream::decode_all(&bytes).unwrap();
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m.header(":event-type").unwrap())
        .collect();
    assert_eq!(kinds[..2], ["messageStart", "contentBlockStart"]);
    let payloads: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(payloads[1]["start"]["toolUse"]["name"], "add");
    let input: String = payloads
        .iter()
        .filter_map(|p| p["delta"]["toolUse"]["input"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&input).unwrap();
    assert!(args["a"].is_i64() && args["b"].is_i64(), "{args}");
    let stop = payloads
        .iter()
        .find(|p| p.get("stopReason").is_some())
        .unwrap();
    assert_eq!(stop["stopReason"], "tool_use");

    // A schema that cannot be compiled is the caller's error, not ours.
    let mut bad = body.clone();
    bad["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"] = json!({"type": "bogus"});
    let (status, headers, _) = raw(json_post(&path(SMOL, "converse"), &bad)).await;
    assert_eq!(status, 400);
    assert_eq!(headers["x-amzn-errortype"], "ValidationException");
}

#[tokio::test]
async fn embeddings_on_every_surface_agree() {
    // OpenAI: two texts, floats.
    let (status, v) = post(
        "/v1/embeddings",
        json!({"model": MINILM, "input": ["A man is eating food.", "A man is eating a piece of bread."]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let a: Vec<f64> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
    let b: Vec<f64> = serde_json::from_value(v["data"][1]["embedding"].clone()).unwrap();
    assert_eq!(a.len(), 384);
    let cos: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((cos - 0.755).abs() < 0.001, "{cos}");
    let prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(prompt_tokens, 8 + 11);

    // Titan: the same vector for the same text, and the token count.
    let (status, t) = post(
        &path(MINILM, "invoke"),
        json!({"inputText": "A man is eating food.", "dimensions": 384}),
    )
    .await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["inputTextTokenCount"], 8);
    let titan: Vec<f64> = serde_json::from_value(t["embedding"].clone()).unwrap();
    let diff = titan
        .iter()
        .zip(&a)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-6, "{diff}");
    // normalize: false returns the raw pooled vector (longer than 1).
    let (_, raw) = post(
        &path(MINILM, "invoke"),
        json!({"inputText": "A man is eating food.", "normalize": false}),
    )
    .await;
    let raw: Vec<f64> = serde_json::from_value(raw["embedding"].clone()).unwrap();
    assert!(raw.iter().map(|x| x * x).sum::<f64>().sqrt() > 1.01);

    // Cohere: several texts, floats.
    let (status, c) = post(
        &path(MINILM, "invoke"),
        json!({"texts": ["A man is eating food.", "hello"], "input_type": "search_document"}),
    )
    .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["response_type"], "embeddings_floats");
    assert_eq!(c["embeddings"].as_array().unwrap().len(), 2);

    // Wrong dimensions, refused truncation, text-model bodies: clear 400s.
    let (status, e) = post(
        &path(MINILM, "invoke"),
        json!({"inputText": "x", "dimensions": 1024}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let long = "word ".repeat(400);
    let (status, e) = post(&path(MINILM, "invoke"), json!({"inputText": long})).await;
    assert_eq!(status, 400, "{e}");
    let (status, e) = post(
        &path(MINILM, "invoke"),
        json!({"texts": [long], "input_type": "search_query", "truncate": "NONE"}),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let (status, v) = post("/v1/embeddings", json!({"model": MINILM, "input": long})).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["truncated"], true);
    assert_eq!(v["usage"]["prompt_tokens"], 256);
    let (status, _) = post("/v1/embeddings", json!({"model": SMOL, "input": "x"})).await;
    assert_eq!(status, 400);
    let (status, _) = post(&path(MINILM, "converse"), question()).await;
    assert_eq!(status, 400);

    // The catalog lists it with its modality.
    let (_, list) = send(
        "GET",
        "/foundation-models?byOutputModality=EMBEDDING",
        Body::empty(),
    )
    .await;
    assert_eq!(list["modelSummaries"][0]["modelId"], MINILM);
    assert_eq!(
        list["modelSummaries"][0]["responseStreamingSupported"],
        false
    );
}

/// The RGB pixels of one of Basalt's PNGs (IHDR size, then the stored-deflate IDAT).
fn png_pixels(png: &[u8]) -> (u32, u32, Vec<u8>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    let idat_len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
    assert_eq!(&png[37..41], b"IDAT");
    let z = &png[41..41 + idat_len];
    // zlib header, then stored blocks: [final, len, !len, bytes]...
    let mut raw = Vec::new();
    let mut i = 2;
    loop {
        let last = z[i] & 1 == 1;
        let len = u16::from_le_bytes([z[i + 1], z[i + 2]]) as usize;
        raw.extend_from_slice(&z[i + 5..i + 5 + len]);
        i += 5 + len;
        if last {
            break;
        }
    }
    let row = w as usize * 3 + 1;
    assert_eq!(raw.len(), row * h as usize);
    let pixels = raw.chunks(row).flat_map(|r| r[1..].to_vec()).collect();
    (w, h, pixels)
}

#[tokio::test]
async fn images_on_every_surface() {
    let b64 = |v: &Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let (status, v) = post(
        "/v1/images/generations",
        json!({"model": DCGAN, "prompt": "a face", "n": 2, "size": "96x80", "seed": 1}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let a = png_pixels(&b64(&v["data"][0]["b64_json"]));
    let b = png_pixels(&b64(&v["data"][1]["b64_json"]));
    assert_eq!((a.0, a.1), (96, 80));
    let (min, max) =
        a.2.iter()
            .fold((255, 0), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert!(max - min > 50, "a flat image: {min}..{max}");
    assert_ne!(a.2, b.2, "different seeds must give different images");
    // The same seed gives the same image, on any surface.
    let (_, t) = post(
        &path(DCGAN, "invoke"),
        json!({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a face"},
               "imageGenerationConfig": {"numberOfImages": 1, "width": 96, "height": 80, "seed": 1}}),
    )
    .await;
    assert_eq!(png_pixels(&b64(&t["images"][0])).2, a.2);
    let (status, s) = post(
        &path(DCGAN, "invoke"),
        json!({"text_prompts": [{"text": "a face"}], "seed": 2, "width": 96, "height": 80}),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["artifacts"][0]["seed"], 2);
    assert_eq!(png_pixels(&b64(&s["artifacts"][0]["base64"])).2, b.2);
    // Sizes and counts are validated.
    let (status, _) = post(
        "/v1/images/generations",
        json!({"model": DCGAN, "prompt": "x", "size": "4096x4096"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        "/v1/images/generations",
        json!({"model": DCGAN, "prompt": "x", "n": 50}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, e) = post(&path(DCGAN, "converse"), question()).await;
    assert_eq!(status, 400, "{e}");
}
