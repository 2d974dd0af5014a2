//! The admin API (`/admin/...`), guarded by the admin token, and the tenants' view of
//! their own usage (`GET /v1/usage`, with any of their keys).
//!
//! Tenants, keys (API keys shown once at creation; AWS access key pairs), model grants,
//! quotas and usage. Errors use the OpenAI error shape. A tenant's own view only ever
//! queries its own tenant id: there is no parameter through which it could ask for
//! another's.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use basalt_auth::{sha256, Principal};
use basalt_store::{GuardrailRef, Quota, Store, StoreError, UsageQuery};
use basalt_types::{BasaltError, ErrorKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::OpenAiError;
use crate::AppState;

type Shared = State<Arc<AppState>>;

fn store_error(e: StoreError) -> OpenAiError {
    let kind = match e {
        StoreError::NotFound(_) => ErrorKind::NotFound,
        StoreError::Conflict(_) | StoreError::Invalid(_) => ErrorKind::InvalidRequest,
        StoreError::Backend(_) => ErrorKind::Internal,
    };
    OpenAiError(BasaltError::new(kind, e.to_string()))
}

fn store(state: &AppState) -> Result<Arc<dyn Store>, OpenAiError> {
    state
        .platform
        .as_ref()
        .map(|p| Arc::clone(&p.store))
        .ok_or_else(|| {
            OpenAiError(BasaltError::new(
                ErrorKind::NotFound,
                "this server runs without a store: there is no admin API",
            ))
        })
}

/// Runs `f` against the store, its errors in the admin API's shape.
async fn with_store<T, F>(
    state: &AppState,
    f: impl FnOnce(Arc<dyn Store>) -> F,
) -> Result<T, OpenAiError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    f(store(state)?).await.map_err(store_error)
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/admin/tenants/{tenant}",
            get(get_tenant).patch(update_tenant),
        )
        .route(
            "/admin/tenants/{tenant}/keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/tenants/{tenant}/keys/{key}", delete(revoke_key))
        .route(
            "/admin/tenants/{tenant}/access-keys",
            get(list_access_keys).post(create_access_key),
        )
        .route(
            "/admin/tenants/{tenant}/access-keys/{key}",
            delete(revoke_access_key),
        )
        .route("/admin/tenants/{tenant}/models", get(list_grants))
        .route(
            "/admin/tenants/{tenant}/models/{model}",
            put(grant).delete(revoke_grant),
        )
        .route("/admin/tenants/{tenant}/quotas", get(list_quotas))
        .route("/admin/tenants/{tenant}/quotas/{model}", put(set_quota))
        .route(
            "/admin/tenants/{tenant}/guardrail",
            put(enforce_guardrail).delete(lift_guardrail),
        )
        .route("/admin/usage", get(admin_usage))
        .route("/admin/replicas", get(list_replicas))
}

/// `GET /admin/replicas`: the replicas sharing this database that are alive, with what
/// each serves and its load (empty for a single process on its own database).
async fn list_replicas(State(state): Shared) -> Result<Json<Value>, OpenAiError> {
    let replicas = with_store(&state, |s| async move { s.replicas().await }).await?;
    Ok(Json(json!({ "replicas": replicas })))
}

/// Admin bodies are small JSON objects.
pub const ADMIN_BODY_LIMIT: usize = 64 << 10;

/// Only requests bearing the admin token get through, with their bodies read (under
/// [`ADMIN_BODY_LIMIT`] and the server's deadline) so that a bad body is answered in the
/// JSON error shape like everything else.
pub async fn require_admin(
    State((state, rules)): State<(Arc<AppState>, crate::routes::auth::BodyRules)>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (token, &state.admin_token_sha256) {
        (Some(t), Some(expected)) => basalt_auth::constant_time_eq(&sha256(t.as_bytes()), expected),
        _ => false,
    };
    if ok {
        let (parts, body) = request.into_parts();
        let rules = crate::routes::auth::BodyRules {
            limit: rules.limit.min(ADMIN_BODY_LIMIT),
            ..rules
        };
        match crate::routes::auth::read_body(body, rules).await {
            Ok(bytes) => {
                next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                    .await
            }
            Err(e) => OpenAiError(e).into_response(),
        }
    } else {
        OpenAiError(BasaltError::new(
            ErrorKind::Unauthenticated,
            "the admin API needs `Authorization: Bearer <admin token>`",
        ))
        .into_response()
    }
}

async fn list_tenants(State(state): Shared) -> Result<Json<Value>, OpenAiError> {
    let tenants = with_store(&state, |s| async move { s.tenants().await }).await?;
    Ok(Json(json!({ "tenants": tenants })))
}

#[derive(Deserialize)]
struct NewTenant {
    name: String,
    #[serde(default = "one")]
    weight: u32,
    /// Models to grant at once (`*` for all).
    #[serde(default)]
    models: Vec<String>,
}

fn one() -> u32 {
    1
}

fn default_key_name() -> String {
    "default".into()
}

async fn create_tenant(
    State(state): Shared,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let req: NewTenant = basalt_wire::parse_json(&body)?;
    let tenant = with_store(&state, move |s| async move {
        let t = s.create_tenant(&req.name, req.weight).await?;
        for m in &req.models {
            s.grant_model(&t.id, m).await?;
        }
        Ok(t)
    })
    .await?;
    // With a tenant there are keys to check: local mode ends now, not at the next restart.
    state.auth.require_credentials();
    Ok((StatusCode::CREATED, Json(tenant)).into_response())
}

async fn get_tenant(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let t = with_store(&state, move |s| async move { s.tenant(&tenant).await }).await?;
    Ok(Json(json!(t)))
}

#[derive(Deserialize)]
struct TenantUpdate {
    status: Option<String>,
    weight: Option<u32>,
    log_invocations: Option<bool>,
}

async fn update_tenant(
    State(state): Shared,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, OpenAiError> {
    let u: TenantUpdate = basalt_wire::parse_json(&body)?;
    let t = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.update_tenant(&id, u.status.as_deref(), u.weight, u.log_invocations)
            .await
    })
    .await?;
    Ok(Json(json!(t)))
}

/// The guardrail enforced on every model call of a tenant, named as a request names one
/// (an id or ARN of the tenant's own guardrail, and a version).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnforcedGuardrail {
    guardrail_identifier: String,
    guardrail_version: String,
}

async fn enforce_guardrail(
    State(state): Shared,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, OpenAiError> {
    let e: EnforcedGuardrail = basalt_wire::parse_json(&body)?;
    if !basalt_wire::bedrock::guardrails::valid_version(&e.guardrail_version) {
        return Err(BasaltError::invalid(
            "guardrailVersion",
            "a guardrail version is DRAFT or a number from 1",
        )
        .into());
    }
    let guardrail = GuardrailRef {
        id: basalt_wire::bedrock::guardrails::guardrail_id(&e.guardrail_identifier).to_string(),
        version: e.guardrail_version,
    };
    let t = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.set_enforced_guardrail(&id, Some(&guardrail)).await
    })
    .await?;
    Ok(Json(json!(t)))
}

async fn lift_guardrail(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let t = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.set_enforced_guardrail(&id, None).await
    })
    .await?;
    Ok(Json(json!(t)))
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(default = "default_key_name")]
    name: String,
    /// Seconds since the epoch after which the key stops working.
    expires_at: Option<i64>,
}

async fn create_key(
    State(state): Shared,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, OpenAiError> {
    let req: NewKey = if body.is_empty() {
        NewKey {
            name: default_key_name(),
            expires_at: None,
        }
    } else {
        basalt_wire::parse_json(&body)?
    };
    let key = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.create_api_key(&id, &req.name, req.expires_at).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn list_keys(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let keys = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.api_keys(&id).await
    })
    .await?;
    Ok(Json(json!({ "keys": keys })))
}

async fn revoke_key(
    State(state): Shared,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, OpenAiError> {
    with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.revoke_api_key(&id, &key).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_access_key(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Response, OpenAiError> {
    let key = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.create_access_key(&id).await
    })
    .await?;
    Ok((StatusCode::CREATED, Json(key)).into_response())
}

async fn list_access_keys(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let keys = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.access_keys(&id).await
    })
    .await?;
    Ok(Json(json!({ "access_keys": keys })))
}

async fn revoke_access_key(
    State(state): Shared,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, OpenAiError> {
    with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.revoke_access_key(&id, &key).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_grants(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let models = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.granted_models(&id).await
    })
    .await?;
    Ok(Json(json!({ "models": models })))
}

async fn grant(
    State(state): Shared,
    Path((tenant, model)): Path<(String, String)>,
) -> Result<StatusCode, OpenAiError> {
    if model != "*" && state.model(&model).is_err() {
        return Err(BasaltError::model_not_found(&model).into());
    }
    with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.grant_model(&id, &model).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn revoke_grant(
    State(state): Shared,
    Path((tenant, model)): Path<(String, String)>,
) -> Result<StatusCode, OpenAiError> {
    with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.revoke_model(&id, &model).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_quotas(
    State(state): Shared,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    let quotas = with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.quotas(&id).await
    })
    .await?;
    let quotas: Vec<Value> = quotas
        .into_iter()
        .map(|(model, q)| json!({"model": model, "quota": q}))
        .collect();
    Ok(Json(json!({ "quotas": quotas })))
}

async fn set_quota(
    State(state): Shared,
    Path((tenant, model)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, OpenAiError> {
    // A PUT replaces the whole quota, and a limit left out is no limit; an empty object
    // would clear every limit at once, which is more likely a client's mistake than a wish.
    let fields: serde_json::Map<String, Value> = basalt_wire::parse_json(&body)?;
    if fields.is_empty() {
        return Err(BasaltError::invalid(
            "body",
            "name at least one limit; a PUT replaces the whole quota, and a limit left out \
             (or null) is no limit",
        )
        .into());
    }
    let q: Quota = basalt_wire::from_value(Value::Object(fields))?;
    with_store(&state, move |s| async move {
        let id = s.tenant(&tenant).await?.id;
        s.set_quota(&id, &model, &q).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
pub struct UsageParams {
    tenant: Option<String>,
    model: Option<String>,
    /// Seconds since the epoch, inclusive.
    from: Option<i64>,
    /// Seconds since the epoch, exclusive.
    to: Option<i64>,
    limit: Option<u32>,
}

async fn usage_report(state: &AppState, q: UsageQuery) -> Result<Json<Value>, OpenAiError> {
    let (records, totals) = with_store(state, move |s| async move {
        let totals = s.usage_totals(&q).await?;
        Ok((s.usage(&q).await?, totals))
    })
    .await?;
    Ok(Json(json!({ "totals": totals, "records": records })))
}

async fn admin_usage(
    State(state): Shared,
    Query(p): Query<UsageParams>,
) -> Result<Json<Value>, OpenAiError> {
    let tenant_id = match p.tenant {
        Some(t) => Some(
            with_store(&state, move |s| async move { s.tenant(&t).await })
                .await?
                .id,
        ),
        None => None,
    };
    usage_report(
        &state,
        UsageQuery {
            tenant_id,
            model_id: p.model,
            from: p.from,
            to: p.to,
            limit: p.limit,
        },
    )
    .await
}

/// `GET /v1/usage`: the calling tenant's own usage, never anyone else's.
pub async fn own_usage(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Query(p): Query<UsageParams>,
) -> Result<Json<Value>, OpenAiError> {
    if p.tenant.as_ref().is_some_and(|t| t != &principal.tenant) {
        return Err(BasaltError::new(
            ErrorKind::PermissionDenied,
            "a key can only read its own tenant's usage",
        )
        .into());
    }
    usage_report(
        &state,
        UsageQuery {
            tenant_id: Some(principal.tenant),
            model_id: p.model,
            from: p.from,
            to: p.to,
            limit: p.limit,
        },
    )
    .await
}
