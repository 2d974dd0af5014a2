//! What the HTTP test binaries share: one server state over the real default models, and
//! helpers that send a request through the router without a socket.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use basalt_catalog::Catalog;
use basalt_engine::EngineConfig;
use basalt_server::{router, AppState, ServerConfig};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SMOL: &str = "huggingface.smollm2-135m-instruct-v1:0";
pub const GEMMA: &str = "google.gemma-3-270m-v1:0";
pub const MINILM: &str = "sentence-transformers.all-minilm-l6-v2-v1:0";
pub const DCGAN: &str = "basalt.dcgan-faces-v1:0";
pub const BODY_LIMIT: usize = 64 << 10;

pub fn models_dir() -> PathBuf {
    std::env::var_os("BASALT_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(basalt_catalog::default_models_dir)
}

/// One server state for the whole test binary: loading is cheap (mmap) but there is no
/// reason to start a scheduler thread per test.
pub fn state() -> Arc<AppState> {
    static STATE: OnceLock<Arc<AppState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let catalog = Catalog::open(&models_dir()).unwrap();
            let config = EngineConfig {
                kv_budget_bytes: 256 << 20,
                ..Default::default()
            };
            let (state, failed) = AppState::load(
                &catalog,
                &[SMOL.into(), GEMMA.into(), MINILM.into(), DCGAN.into()],
                &config,
                |_, _| {},
            );
            assert!(failed.is_empty(), "{failed:?}");
            assert_eq!(
                state.models().count(),
                2,
                "run scripts/fetch-models first (make test does)"
            );
            Arc::new(state)
        })
        .clone()
}

pub fn app() -> axum::Router {
    router(
        state(),
        ServerConfig {
            body_limit: BODY_LIMIT,
            ..Default::default()
        },
    )
}

pub async fn send(method: &str, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    let resp = app().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

pub async fn post(uri: &str, body: Value) -> (StatusCode, Value) {
    send("POST", uri, body.to_string()).await
}
