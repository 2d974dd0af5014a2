#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! HTTP-level behaviour of the OpenAI and Anthropic surfaces, driven through the router with
//! `tower::ServiceExt::oneshot` (no socket), against the real default models.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

mod common;
use common::*;

/// Reads an SSE body into its `data:` payloads.
async fn sse(body: Value) -> (StatusCode, Vec<String>) {
    let req = Request::builder()
        .method("POST")
        .uri(if body.get("messages").is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        })
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let data = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    (status, data)
}

fn chat(content: &str) -> Value {
    json!({"model": SMOL, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": content}
    ], "temperature": 0, "max_tokens": 24})
}

#[tokio::test]
async fn lists_models() {
    let (status, body) = send("GET", "/v1/models", Body::empty()).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&SMOL) && ids.contains(&GEMMA), "{body}");
    let (status, one) = send("GET", &format!("/v1/models/{GEMMA}"), Body::empty()).await;
    assert_eq!(status, 200);
    assert_eq!(one["owned_by"], "Google");
}

#[tokio::test]
async fn chat_answers_and_reports_usage() {
    let (status, body) = post(
        "/v1/chat/completions",
        chat("What is the capital of France?"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn seeds_reproduce_and_n_gives_choices() {
    let mut req = chat("Tell me a story.");
    req["temperature"] = json!(1.0);
    req["seed"] = json!(1234);
    req["n"] = json!(2);
    req["max_tokens"] = json!(12);
    let (_, a) = post("/v1/chat/completions", req.clone()).await;
    let (_, b) = post("/v1/chat/completions", req).await;
    assert_eq!(a["choices"].as_array().unwrap().len(), 2);
    assert_eq!(
        a["choices"][0]["message"], b["choices"][0]["message"],
        "same seed, same text"
    );
    assert_eq!(a["choices"][1]["message"], b["choices"][1]["message"]);
    assert_eq!(
        a["usage"]["completion_tokens"],
        json!(24),
        "two choices of 12 tokens"
    );
}

#[tokio::test]
async fn logprobs_and_stop_sequences() {
    let mut req = chat("Count from one to ten, separated by commas.");
    req["logprobs"] = json!(true);
    req["top_logprobs"] = json!(3);
    req["max_tokens"] = json!(8);
    let (status, body) = post("/v1/chat/completions", req).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert!(!content.is_empty());
    for t in content {
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(t["top_logprobs"].as_array().unwrap().len(), 3);
    }

    let (_, body) = post(
        "/v1/completions",
        json!({"model": GEMMA, "prompt": "1, 2, 3, 4,", "max_tokens": 20, "temperature": 0, "stop": [" 7"]}),
    )
    .await;
    let text = body["choices"][0]["text"].as_str().unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop", "{body}");
    assert!(!text.contains('7') && text.contains('6'), "{text:?}");
}

#[tokio::test]
async fn streams_chat_with_usage_chunk() {
    let mut req = chat("What is the capital of France?");
    req["stream"] = json!(true);
    req["stream_options"] = json!({"include_usage": true});
    let (status, data) = sse(req).await;
    assert_eq!(status, 200);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(text.contains("Paris"), "{text}");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let finish = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect::<Vec<_>>();
    assert_eq!(finish, vec!["stop"]);
}

#[tokio::test]
async fn errors_use_openai_shape_and_status() {
    // Malformed JSON.
    let (status, body) = send("POST", "/v1/chat/completions", "{not json").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "body");
    // A bad parameter names its field.
    let mut req = chat("hi");
    req["temperature"] = json!("hot");
    let (status, body) = post("/v1/chat/completions", req).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "temperature", "{body}");
    // Unknown model.
    let mut req = chat("hi");
    req["model"] = json!("nope.nothing-v1:0");
    let (status, body) = post("/v1/chat/completions", req).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    // Chat with a base model that has no chat template.
    let mut req = chat("hi");
    req["model"] = json!(GEMMA);
    let (status, body) = post("/v1/chat/completions", req).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("chat template"),
        "{body}"
    );
    // Prompt longer than the context window (SmolLM2: 8192 tokens), under the body limit.
    let long = "word ".repeat(9000);
    let (status, body) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": long, "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    // max_tokens beyond the room left in the context.
    let (status, body) = post(
        "/v1/completions",
        json!({"model": SMOL, "prompt": "hi", "max_tokens": 9000}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "max_tokens");
    // Body over the limit.
    let huge = json!({"model": SMOL, "prompt": "x".repeat(BODY_LIMIT * 2)});
    let (status, body) = post("/v1/completions", huge).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Unknown route.
    let (status, body) = send("GET", "/v2/nothing", Body::empty()).await;
    assert_eq!(status, 404);
    assert!(body["error"]["message"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_streams_with_disconnects_return_kv_memory() {
    let state = state();
    let mut tasks = Vec::new();
    for i in 0..16 {
        tasks.push(tokio::spawn(async move {
            let body = json!({"model": SMOL, "messages": [{"role": "user", "content": format!("Write a long story about dragon number {i}.")}],
                "temperature": 0.8, "seed": i, "max_tokens": 48, "stream": true});
            let req = Request::builder().method("POST").uri("/v1/chat/completions").body(Body::from(body.to_string())).unwrap();
            let resp = app().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let mut body = resp.into_body();
            let mut received = 0;
            // Every third client hangs up after a few chunks.
            let limit = if i % 3 == 0 { 3 } else { usize::MAX };
            while let Some(frame) = body.frame().await {
                let frame = frame.unwrap();
                if let Some(bytes) = frame.data_ref() {
                    received += 1;
                    if String::from_utf8_lossy(bytes).contains("[DONE]") {
                        return (i, true);
                    }
                }
                if received >= limit {
                    drop(body);
                    return (i, false);
                }
            }
            (i, false)
        }));
    }
    let mut completed = 0;
    for t in tasks {
        let (i, done) = t.await.unwrap();
        if i % 3 != 0 {
            assert!(done, "stream {i} did not finish");
            completed += 1;
        }
    }
    assert_eq!(completed, 10);
    // The engine frees a cancelled sequence's KV memory at its next step.
    for _ in 0..200 {
        if state.kv_bytes_in_use() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(state.kv_bytes_in_use(), 0, "KV memory must return to idle");
    // And the server still answers.
    let (status, _) = post("/v1/chat/completions", chat("hi")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn anthropic_messages_answer_and_count_tokens() {
    let body = json!({"model": SMOL, "max_tokens": 24, "temperature": 0,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": "What is the capital of France?"}]});
    let (status, msg) = post("/v1/messages", body.clone()).await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["type"], "message");
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert!(
        msg["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Paris"),
        "{msg}"
    );
    assert_eq!(msg["stop_reason"], "end_turn");
    let (status, count) = post(
        "/v1/messages/count_tokens",
        json!({"model": SMOL, "system": body["system"], "messages": body["messages"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(count["input_tokens"], msg["usage"]["input_tokens"]);

    // A stop sequence is reported as such, with the sequence.
    let mut stopped = body.clone();
    stopped["stop_sequences"] = json!(["Paris"]);
    let (_, msg) = post("/v1/messages", stopped).await;
    assert_eq!(msg["stop_reason"], "stop_sequence", "{msg}");
    assert_eq!(msg["stop_sequence"], "Paris");
    assert!(!msg["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Paris"));

    // Streaming: the named events, in order.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let req = Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .body(Body::from(streamed.to_string()))
        .unwrap();
    let resp = app().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    // Pings may come anywhere; the text block opens with the first text.
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..names.len() - 3]
        .iter()
        .all(|n| *n == "content_block_delta"));

    // Errors in Anthropic's shape.
    let (status, err) = post(
        "/v1/messages",
        json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["type"], "not_found_error");
    let (status, err) = post(
        "/v1/messages",
        json!({"model": SMOL, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["type"], "error");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("image"),
        "{err}"
    );
}
