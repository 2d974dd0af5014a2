#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Metering of requests that fail mid-stream, on every surface: a server whose KV budget
//! is too small for the generation it is asked for fails the sequence after a few dozen
//! tokens, and the usage record must still hold the tokens the engine computed.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use basalt_catalog::Catalog;
use basalt_engine::EngineConfig;
use basalt_server::platform::{Platform, Prices};
use basalt_server::{router, AppState, ServerConfig};
use basalt_store::{SecretBox, SqliteStore, Store, UsageQuery};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

const SMOL: &str = "huggingface.smollm2-135m-instruct-v1:0";

fn models_dir() -> PathBuf {
    std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir)
}

/// SmolLM2 with room for about 90 tokens of KV cache, and an in-memory store.
fn small_server() -> (axum::Router, Arc<SqliteStore>) {
    let catalog = Catalog::open(&models_dir()).unwrap();
    let config = EngineConfig {
        kv_budget_bytes: 2 << 20,
        ..Default::default()
    };
    let (state, failed) = AppState::load(&catalog, &[SMOL.into()], &config, |_, _| {});
    assert!(failed.is_empty());
    let store = Arc::new(SqliteStore::in_memory(SecretBox::new(&[3; 32])).unwrap());
    let state = state.with_platform(Arc::new(Platform::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Prices::new(),
    )));
    (router(Arc::new(state), ServerConfig::default()), store)
}

async fn body_of(app: &axum::Router, uri: &str, body: serde_json::Value) -> String {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn failed_streams_are_billed_for_what_was_computed() {
    let (app, store) = small_server();
    let long = "Write a very long story about a lighthouse keeper.";
    // Greedy, so no request can draw an early end of text and finish inside the budget
    // (with sampling, one in a few runs did).
    let openai = body_of(
        &app,
        "/v1/chat/completions",
        json!({"model": SMOL, "messages": [{"role": "user", "content": long}],
               "max_tokens": 400, "temperature": 0, "stream": true}),
    )
    .await;
    assert!(openai.contains("KV-cache"), "{openai}");
    let anthropic = body_of(
        &app,
        "/v1/messages",
        json!({"model": SMOL, "max_tokens": 400, "temperature": 0, "stream": true,
               "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert!(anthropic.contains("event: error"), "{anthropic}");
    let bedrock = body_of(
        &app,
        &format!("/model/{}/converse-stream", SMOL.replace(':', "%3A")),
        json!({"messages": [{"role": "user", "content": [{"text": long}]}],
               "inferenceConfig": {"maxTokens": 400, "temperature": 0}}),
    )
    .await;
    assert!(bedrock.contains("throttlingException"), "{bedrock}");

    // Records land before the error reaches the client.
    let records = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert!(r.status.starts_with("error:"), "{r:?}");
        // The prompt and every token generated until the cache ran out: the budget holds
        // ~91 tokens, that is 5 whole blocks of 16, so the 80 cached tokens plus the one
        // sampled token that no longer fits.
        assert_eq!(r.input_tokens + r.output_tokens, 81, "{r:?}");
        assert!(r.output_tokens > 0);
    }
    let surfaces: Vec<&str> = records.iter().map(|r| r.surface.as_str()).collect();
    assert!(
        surfaces.contains(&"openai")
            && surfaces.contains(&"anthropic")
            && surfaces.contains(&"bedrock")
    );
}
