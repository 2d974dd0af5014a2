#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! Guardrails over HTTP, between tenants: each sees, applies, versions and deletes only its
//! own, and another tenant's id is a 404 (not a 403, so ids do not leak); bad requests are
//! Bedrock validation errors naming the member.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use basalt_auth::{Authenticator, ChainedKeys};
use basalt_server::platform::{Platform, Prices};
use basalt_server::{router, AppState, ServerConfig};
use basalt_store::{SecretBox, SqliteStore, Store, StoreKeys};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// A server with no models, a store, and an API key for each of two tenants.
async fn two_tenants() -> (axum::Router, String, String) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory(SecretBox::new(&[8; 32])).unwrap());
    let mut keys = Vec::new();
    for name in ["alpha", "beta"] {
        let t = store.create_tenant(name, 1).await.unwrap();
        keys.push(store.create_api_key(&t.id, "k", None).await.unwrap().key);
    }
    let auth = Authenticator::with_mode(
        Arc::new(ChainedKeys(vec![Arc::new(StoreKeys(Arc::clone(&store)))])),
        false,
    );
    let state = AppState::new(Vec::new())
        .with_platform(Arc::new(Platform::new(store, Prices::new())))
        .with_auth(auth);
    let app = router(Arc::new(state), ServerConfig::default());
    let beta = keys.pop().unwrap();
    (app, keys.pop().unwrap(), beta)
}

async fn call(
    app: &axum::Router,
    key: &str,
    method: &str,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let error_type = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if let Some(t) = error_type {
        v["errorType"] = json!(t);
    }
    (status, v)
}

fn guardrail() -> Value {
    json!({"name": "mine", "blockedInputMessaging": "no", "blockedOutputsMessaging": "no",
           "sensitiveInformationPolicyConfig": {"piiEntitiesConfig": [{"type": "EMAIL", "action": "BLOCK"}]}})
}

#[tokio::test]
async fn another_tenants_guardrail_is_not_found_anywhere() {
    let (app, alpha, beta) = two_tenants().await;
    let (status, created) = call(&app, &alpha, "POST", "/guardrails", guardrail()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["guardrailId"].as_str().unwrap().to_string();
    let arn = created["guardrailArn"].as_str().unwrap().to_string();
    let apply = json!({"source": "INPUT", "content": [{"text": {"text": "mail a@b.io"}}]});

    let (status, mine) = call(
        &app,
        &alpha,
        "GET",
        &format!("/guardrails/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(mine["guardrailArn"], arn);
    let (status, applied) = call(
        &app,
        &alpha,
        "POST",
        &format!("/guardrail/{id}/version/DRAFT/apply"),
        apply.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(applied["action"], "GUARDRAIL_INTERVENED");

    for (method, uri, body) in [
        ("GET", format!("/guardrails/{id}"), Value::Null),
        ("PUT", format!("/guardrails/{id}"), guardrail()),
        ("POST", format!("/guardrails/{id}"), json!({})),
        ("DELETE", format!("/guardrails/{id}"), Value::Null),
        (
            "POST",
            format!("/guardrail/{id}/version/DRAFT/apply"),
            apply.clone(),
        ),
        (
            "POST",
            format!("/guardrail/{}/version/DRAFT/apply", arn.replace('/', "%2F")),
            apply.clone(),
        ),
    ] {
        let (status, body) = call(&app, &beta, method, &uri, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {uri}: {body}");
        assert_eq!(
            body["errorType"], "ResourceNotFoundException",
            "{method} {uri}"
        );
    }
    let (_, listed) = call(&app, &beta, "GET", "/guardrails", Value::Null).await;
    assert_eq!(listed["guardrails"], json!([]));
    // Names are per tenant.
    let (status, _) = call(&app, &beta, "POST", "/guardrails", guardrail()).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // And alpha's guardrail is still there.
    let (status, _) = call(
        &app,
        &alpha,
        "GET",
        &format!("/guardrails/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_requests_are_validation_errors_naming_the_member() {
    let (app, alpha, _) = two_tenants().await;
    let mut long_regex = guardrail();
    long_regex["sensitiveInformationPolicyConfig"] =
        json!({"regexesConfig": [{"name": "r", "pattern": "a".repeat(501), "action": "BLOCK"}]});
    let mut unknown_pii = guardrail();
    unknown_pii["sensitiveInformationPolicyConfig"]["piiEntitiesConfig"][0]["type"] =
        json!("SHOE_SIZE");
    for (body, member) in [
        (
            long_regex,
            "sensitiveInformationPolicyConfig.regexesConfig.0.pattern",
        ),
        (
            unknown_pii,
            "sensitiveInformationPolicyConfig.piiEntitiesConfig.0.type",
        ),
        (json!({"name": "x"}), "blockedInputMessaging"),
    ] {
        let (status, v) = call(&app, &alpha, "POST", "/guardrails", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["errorType"], "ValidationException");
        assert!(
            v["message"].as_str().unwrap().contains(member),
            "{member}: {v}"
        );
    }
    let (_, created) = call(&app, &alpha, "POST", "/guardrails", guardrail()).await;
    let id = created["guardrailId"].as_str().unwrap();
    for (uri, body) in [
        (
            format!("/guardrail/{id}/version/0/apply"),
            json!({"source": "INPUT", "content": []}),
        ),
        (
            format!("/guardrail/{id}/version/DRAFT/apply"),
            json!({"source": "SIDEWAYS", "content": []}),
        ),
        (
            format!("/guardrail/{id}/version/DRAFT/apply"),
            json!({"source": "INPUT", "content": [{"text": {"text": "a"}, "image": {}}]}),
        ),
    ] {
        let (status, v) = call(&app, &alpha, "POST", &uri, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {v}");
    }
    let (status, _) = call(
        &app,
        &alpha,
        "GET",
        &format!("/guardrails/{id}?guardrailVersion=7"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
