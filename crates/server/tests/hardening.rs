#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! What an attacker or a careless client sent, and what each got before it was fixed: a
//! schema that overflowed a runtime thread's stack and aborted the server, schemas that
//! answered 500 with the grammar engine's state, a prompt list that occupied the engine for
//! minutes, a prompt that could never fit answered 429, admin bodies answered in plain text,
//! fields accepted and silently ignored. Each test here failed on that code.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use basalt_catalog::Catalog;
use basalt_engine::EngineConfig;
use basalt_server::platform::{Platform, Prices};
use basalt_server::{router, AppState, ServerConfig};
use basalt_store::{SecretBox, SqliteStore, Store, UsageQuery};
use common::{GEMMA, SMOL};
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

const ADMIN_TOKEN: &str = "bat-test-admin";

/// SmolLM2 and Gemma (mapped, so every test's copy shares the page cache) with `kv_bytes`
/// of KV cache.
fn models(kv_bytes: usize) -> AppState {
    let catalog = Catalog::open(&common::models_dir()).unwrap();
    let config = EngineConfig {
        kv_budget_bytes: kv_bytes,
        map_weights: true,
        ..Default::default()
    };
    let (state, failed) =
        AppState::load(&catalog, &[SMOL.into(), GEMMA.into()], &config, |_, _| {});
    assert!(failed.is_empty(), "{failed:?}");
    state
}

/// The models behind a router with the default body limit (4 MiB), a store of its own and
/// an admin token.
fn app() -> (axum::Router, Arc<SqliteStore>, Arc<AppState>) {
    let store = Arc::new(SqliteStore::in_memory(SecretBox::new(&[5; 32])).unwrap());
    let state = models(64 << 20)
        .with_platform(Arc::new(Platform::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Prices::new(),
        )))
        .with_admin_token_hash(basalt_auth::sha256(ADMIN_TOKEN.as_bytes()));
    let state = Arc::new(state);
    (
        router(Arc::clone(&state), ServerConfig::default()),
        store,
        state,
    )
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Body) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post(app: &axum::Router, uri: &str, body: &Value) -> (StatusCode, Value) {
    let (status, text) = call(app, "POST", uri, Body::from(body.to_string())).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, value)
}

fn converse_uri(model: &str, op: &str) -> String {
    format!("/model/{}/{op}", model.replace(':', "%3A"))
}

/// The same schema as each surface takes it: OpenAI's `response_format`, Anthropic's tool
/// `input_schema`, Converse's `outputConfig` and its streaming twin.
fn surfaces(schema: &Value) -> Vec<(String, Value)> {
    let user = "Describe Paris.";
    vec![
        (
            "/v1/chat/completions".into(),
            json!({
            "model": SMOL, "max_tokens": 16,
            "messages": [{"role": "user", "content": user}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}),
        ),
        (
            "/v1/messages".into(),
            json!({
            "model": SMOL, "max_tokens": 16,
            "messages": [{"role": "user", "content": user}],
            "tools": [{"name": "describe", "input_schema": schema}],
            "tool_choice": {"type": "any"}}),
        ),
        (
            converse_uri(SMOL, "converse"),
            json!({
            "messages": [{"role": "user", "content": [{"text": user}]}],
            "inferenceConfig": {"maxTokens": 16},
            "outputConfig": {"textFormat": {"type": "json_schema",
                "structure": {"jsonSchema": {"name": "x", "schema": schema.to_string()}}}}}),
        ),
        (
            converse_uri(SMOL, "converse-stream"),
            json!({
            "messages": [{"role": "user", "content": [{"text": user}]}],
            "inferenceConfig": {"maxTokens": 16},
            "toolConfig": {"tools": [{"toolSpec": {"name": "describe",
                "inputSchema": {"json": schema}}}], "toolChoice": {"any": {}}}}),
        ),
    ]
}

/// The server still answers: liveness, and a real generation.
async fn still_serving(app: &axum::Router) {
    let (status, _) = call(app, "GET", "/health", Body::empty()).await;
    assert_eq!(status, 200);
    let (status, v) = post(
        app,
        "/v1/completions",
        &json!({
        "model": GEMMA, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

fn error_message(v: &Value) -> String {
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_wide_enough_to_overflow_a_stack_is_a_400_naming_the_limit() {
    let (app, _, _) = app();
    let props: Map<String, Value> = (0..7000)
        .map(|i| (format!("p{i}"), json!({"type": "string"})))
        .collect();
    let required: Vec<String> = (0..7000).map(|i| format!("p{i}")).collect();
    let schema = json!({"type": "object", "properties": props, "required": required});
    for (uri, body) in surfaces(&schema) {
        let (status, v) = post(&app, &uri, &body).await;
        assert_eq!(status, 400, "{uri}: {v}");
        assert!(
            error_message(&v).contains("5000 object properties"),
            "{uri}: {v}"
        );
    }
    still_serving(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsatisfiable_schemas_are_400s_without_the_engines_internals() {
    let (app, _, _) = app();
    let schemas = [
        json!({"type": "object", "properties": {"x": {"$ref": "#"}}, "required": ["x"]}),
        json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}},
               "required": ["next"]}}, "$ref": "#/$defs/n"}),
        json!({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
        json!({"type": "object", "properties": {"s": {"type": "string",
               "pattern": "^((a{1000}){1000}){1000}$"}}, "required": ["s"]}),
    ];
    for schema in &schemas {
        for (uri, body) in surfaces(schema) {
            let (status, v) = post(&app, &uri, &body).await;
            let text = v.to_string();
            if status == 200 {
                // Only the pattern may compile (the lexer builds it lazily); then the model
                // writes `a`s until the token limit, which is a valid, if useless, answer.
                assert!(schema.to_string().contains("pattern"), "{uri}: {text}");
                continue;
            }
            assert_eq!(status, 400, "{uri} {schema}: {text}");
            assert!(text.len() < 1500, "{uri}: {} bytes of error", text.len());
            for internal in ["Earley", "lexer state", "Backtrace", "grammar:"] {
                assert!(!text.contains(internal), "{uri}: {text}");
            }
        }
    }
    still_serving(&app).await;
}

#[tokio::test]
async fn a_completion_fan_out_beyond_what_can_run_is_a_400() {
    let (app, _, _) = app();
    for prompts in [250, 10_000] {
        let list: Vec<String> = (0..prompts).map(|i| format!("Prompt {i}")).collect();
        let (status, v) = post(
            &app,
            "/v1/completions",
            &json!({
            "model": GEMMA, "prompt": list, "max_tokens": 4}),
        )
        .await;
        assert_eq!(status, 400, "{prompts} prompts: {v}");
        assert_eq!(v["error"]["param"], "prompt", "{v}");
        assert!(error_message(&v).contains("at most 64"), "{v}");
    }
    let (status, v) = post(
        &app,
        "/v1/completions",
        &json!({
        "model": GEMMA, "prompt": ["a", "b"], "n": 16, "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "32 sequences are within the limit: {v}");
}

/// SmolLM2 and Gemma with 2 MiB of KV cache each: 80 positions of SmolLM2.
fn tiny_kv_app() -> axum::Router {
    router(Arc::new(models(2 << 20)), ServerConfig::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_can_never_fit_the_kv_budget_is_a_400_and_a_failure_deep_in_the_engine_is_survived(
) {
    let app = tiny_kv_app();
    let long = "word ".repeat(700);
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        &json!({
        "model": SMOL, "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(error_message(&v).contains("KV cache holds at most"), "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");

    // A generation that runs out of KV memory mid-way fails in the engine's scheduler
    // thread; the process, the scheduler and the next request carry on.
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        &json!({
        "model": SMOL, "max_tokens": 200, "temperature": 0,
        "messages": [{"role": "user", "content": "Tell me a long story."}]}),
    )
    .await;
    assert_eq!(status, 429, "{v}");
    assert!(error_message(&v).contains("KV-cache"), "{v}");
    let (status, _) = call(&app, "GET", "/health", Body::empty()).await;
    assert_eq!(status, 200);
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        &json!({
        "model": SMOL, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Without a limit, the answer stops where the KV budget ends instead of failing.
    let (status, v) = post(
        &app,
        "/v1/chat/completions",
        &json!({
        "model": SMOL, "temperature": 0,
        "messages": [{"role": "user", "content": "Count to a thousand."}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
}

#[tokio::test]
async fn admin_bodies_and_names_are_checked_in_the_json_error_shape() {
    let (app, _, _) = app();
    let (status, v) = post(
        &app,
        "/admin/tenants",
        &json!({"name": "acme", "models": ["*"]}),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    let huge = json!({"name": "x".repeat(200_000)}).to_string();
    let (status, text) = call(&app, "POST", "/admin/tenants", Body::from(huge)).await;
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).expect("a JSON error body");
    assert!(v["error"]["message"].is_string(), "{v}");

    for name in ["", "   ", "bad\u{0}name", "tab\tname", &"n".repeat(101)] {
        let (status, v) = post(&app, "/admin/tenants/acme/keys", &json!({"name": name})).await;
        assert_eq!(status, 400, "{name:?}: {v}");
    }
    let (status, v) = post(&app, "/admin/tenants/acme/keys", &json!({"name": "ci"})).await;
    assert_eq!(status, 201, "{v}");
    let (status, text) = call(&app, "POST", "/admin/tenants/acme/keys", Body::empty()).await;
    assert_eq!(status, 201, "{text}");
    assert!(
        text.contains("\"default\""),
        "a key created without a name: {text}"
    );

    let (status, text) = call(
        &app,
        "PUT",
        "/admin/tenants/acme/quotas/*",
        Body::from("{}"),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = call(
        &app,
        "PUT",
        "/admin/tenants/acme/quotas/*",
        Body::from(r#"{"requests_per_minute": 60}"#),
    )
    .await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_fields_are_honoured_or_refused_never_ignored() {
    let (app, _, state) = app();
    // best_of: only where it changes nothing.
    let (status, v) = post(
        &app,
        "/v1/completions",
        &json!({
        "model": GEMMA, "prompt": "Hi", "max_tokens": 2, "best_of": 3}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "best_of", "{v}");
    let (status, v) = post(
        &app,
        "/v1/completions",
        &json!({
        "model": GEMMA, "prompt": "Hi", "max_tokens": 2, "best_of": 2, "n": 2}),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    // logit_bias: a token pushed up by 100 is every token of a greedy answer.
    let gemma = state.model(GEMMA).unwrap();
    let token = gemma.engine.tokenizer().encode(" banana", false, false)[0];
    let piece = String::from_utf8(gemma.engine.tokenizer().token_bytes(token)).unwrap();
    let (status, v) = post(
        &app,
        "/v1/completions",
        &json!({
        "model": GEMMA, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0,
        "logit_bias": {token.to_string(): 100}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], piece.repeat(3), "{v}");
    for bad in [json!({"99999999": 1}), json!({"x": 1}), json!({"5": 101})] {
        let (status, v) = post(
            &app,
            "/v1/completions",
            &json!({
            "model": GEMMA, "prompt": "Hi", "max_tokens": 2, "logit_bias": bad}),
        )
        .await;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["param"], "logit_bias", "{v}");
    }

    // Anthropic's extended thinking: these models have none.
    let messages = json!([{"role": "user", "content": "Hi"}]);
    let (status, v) = post(
        &app,
        "/v1/messages",
        &json!({
        "model": SMOL, "max_tokens": 4, "messages": messages,
        "thinking": {"type": "enabled", "budget_tokens": 1024}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    let (status, v) = post(
        &app,
        "/v1/messages",
        &json!({
        "model": SMOL, "max_tokens": 4, "messages": messages,
        "thinking": {"type": "disabled"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_recorded_when_admitted_and_completed_when_it_ends() {
    let (app, store, _) = app();
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"model": SMOL, "max_tokens": 12, "stream": true, "temperature": 0,
                   "messages": [{"role": "user", "content": "Count to ten."}]})
            .to_string(),
        ))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // The stream has started, so the request was admitted: its record is already there.
    let during = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(during.len(), 1, "{during:?}");
    assert!(
        during[0].status == basalt_store::IN_PROGRESS || during[0].status == "ok",
        "{during:?}"
    );
    assert!(during[0].input_tokens > 0);
    let _ = resp.into_body().collect().await.unwrap();
    let after = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(after.len(), 1, "one record per request: {after:?}");
    assert_eq!(after[0].status, "ok");
    assert_eq!(after[0].output_tokens, 12);
    // A server that died with it in flight would have left it in progress: the next one to
    // start marks it interrupted, keeping the input tokens it knew.
    let mut record = after[0].clone();
    record.status = basalt_store::IN_PROGRESS.into();
    store.begin_usage(&record).await.unwrap();
    assert_eq!(store.interrupt_unfinished_usage().await.unwrap(), 1);
    let marked = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(marked[0].status, basalt_store::INTERRUPTED);
}

#[test]
fn a_model_that_fails_to_load_is_skipped_and_the_others_serve() {
    let real = common::models_dir().join("smollm2-135m-instruct");
    let root = std::env::temp_dir().join(format!("basalt-bad-model-{}", std::process::id()));
    let good = root.join("good");
    let bad = root.join("bad");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::create_dir_all(&bad).unwrap();
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    std::fs::copy(real.join("basalt.toml"), good.join("basalt.toml")).unwrap();
    std::os::unix::fs::symlink(real.join(file), good.join(file)).unwrap();
    // The same file, claiming 2^32 - 1 layers: before, loading it allocated 1.6 TB and
    // aborted the server before it listened.
    let bytes = std::fs::read(real.join(file)).unwrap();
    let key = b"llama.block_count";
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key);
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
        + needle.len()
        + 4;
    let mut patched = bytes.clone();
    patched[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(bad.join(file), &patched).unwrap();
    let manifest = std::fs::read_to_string(real.join("basalt.toml"))
        .unwrap()
        .replace(SMOL, "test.bad-layers-v1:0")
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(bad.join("basalt.toml"), manifest).unwrap();

    let catalog = Catalog::open(&root).unwrap();
    let config = EngineConfig {
        map_weights: true,
        kv_budget_bytes: 8 << 20,
        ..Default::default()
    };
    let (state, failed) = AppState::load(&catalog, &[], &config, |_, _| {});
    std::fs::remove_dir_all(&root).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "test.bad-layers-v1:0");
    assert!(failed[0].1.contains("block_count"), "{failed:?}");
    assert!(state.model(SMOL).is_ok());
}
