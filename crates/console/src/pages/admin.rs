//! Administration, the operator's only: tenants (create, weight, status, invocation
//! logging, an enforced guardrail), API keys and AWS key pairs (created and shown once,
//! listed, revoked, with expiry), model grants and quotas. Each change goes through the
//! same store methods and rules as the admin API, so the console can do nothing it cannot.
//! Every handler starts with `require_operator` (a tenant gets a 404) and every change
//! with the form's CSRF token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use basalt_store::{GuardrailRef, Quota, Store, Tenant};
use minijinja::{context, Value};
use serde::Deserialize;

use crate::page::{self, ConsoleError, ConsoleForm};
use crate::session::Viewer;
use crate::{Console, Shared};

pub(crate) fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route("/console/tenants", get(list).post(create))
        .route("/console/tenants/{tenant}", get(show))
        .route("/console/tenants/{tenant}/settings", post(update))
        .route("/console/tenants/{tenant}/keys", post(create_key))
        .route(
            "/console/tenants/{tenant}/keys/{key}/revoke",
            post(revoke_key),
        )
        .route(
            "/console/tenants/{tenant}/access-keys",
            post(create_access_key),
        )
        .route(
            "/console/tenants/{tenant}/access-keys/{key}/revoke",
            post(revoke_access_key),
        )
        .route("/console/tenants/{tenant}/grants", post(grant))
        .route(
            "/console/tenants/{tenant}/grants/revoke",
            post(revoke_grant),
        )
        .route("/console/tenants/{tenant}/quotas", post(set_quota))
        .route("/console/tenants/{tenant}/guardrail", post(set_guardrail))
}

fn store(console: &Console) -> Result<Arc<dyn Store>, ConsoleError> {
    console
        .app
        .platform
        .as_ref()
        .map(|p| Arc::clone(&p.store))
        .ok_or(ConsoleError::NotFound)
}

/// What every change to a tenant checks first, in this order: that the viewer is the
/// operator (a tenant gets a 404), the form's token and origin; then the tenant (404 if
/// none). Returns the store and the tenant.
async fn tenant_change(
    console: &Console,
    viewer: &Viewer,
    headers: &HeaderMap,
    csrf: &str,
    tenant: &str,
) -> Result<(Arc<dyn Store>, Tenant), ConsoleError> {
    viewer.require_operator()?;
    viewer.check_form(console, headers, csrf)?;
    let store = store(console)?;
    let tenant = store.tenant(tenant).await?;
    Ok((store, tenant))
}

/// Only the CSRF token: the forms whose other fields are in the path.
#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

fn back_to(tenant_id: &str) -> Response {
    Redirect::to(&format!("/console/tenants/{tenant_id}")).into_response()
}

async fn list(State(console): Shared, viewer: Viewer) -> Result<Html<String>, ConsoleError> {
    viewer.require_operator()?;
    let tenants = store(&console)?.tenants().await?;
    page::render(
        &console,
        "tenants.html",
        &viewer,
        context! { nav => "tenants", tenants => Value::from_serialize(&tenants) },
    )
}

#[derive(Deserialize)]
struct NewTenant {
    #[serde(default)]
    csrf: String,
    name: String,
    weight: Option<String>,
    /// `on` grants every model at once (`*`).
    all_models: Option<String>,
}

async fn create(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<NewTenant>,
) -> Result<Response, ConsoleError> {
    viewer.require_operator()?;
    viewer.check_form(&console, &headers, &form.csrf)?;
    let weight = parse_optional::<u32>("weight", form.weight.as_deref())?.unwrap_or(1);
    let store = store(&console)?;
    let tenant = store.create_tenant(form.name.trim(), weight).await?;
    if form.all_models.is_some() {
        store.grant_model(&tenant.id, "*").await?;
    }
    // With a tenant there are keys to check: local mode ends now, as with the admin API.
    console.app.auth.require_credentials();
    Ok(back_to(&tenant.id))
}

async fn show(
    State(console): Shared,
    viewer: Viewer,
    Path(tenant): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    viewer.require_operator()?;
    let store = store(&console)?;
    let tenant = store.tenant(&tenant).await?;
    let keys = store.api_keys(&tenant.id).await?;
    let access_keys = store.access_keys(&tenant.id).await?;
    let grants = store.granted_models(&tenant.id).await?;
    let quotas: Vec<Value> = store
        .quotas(&tenant.id)
        .await?
        .into_iter()
        .map(|(model, q)| context! { model => model, quota => Value::from_serialize(&q) })
        .collect();
    let models: Vec<String> = console
        .app
        .listed_models()
        .into_iter()
        .map(|m| m.id)
        .collect();
    page::render(
        &console,
        "tenant.html",
        &viewer,
        context! {
            nav => "tenants",
            tenant => Value::from_serialize(&tenant),
            keys => Value::from_serialize(&keys),
            access_keys => Value::from_serialize(&access_keys),
            grants => grants,
            quotas => quotas,
            models => models,
            now => crate::session::unix_now(),
        },
    )
}

#[derive(Deserialize)]
struct Settings {
    #[serde(default)]
    csrf: String,
    status: Option<String>,
    weight: Option<String>,
    /// A checkbox: present when ticked.
    log_invocations: Option<String>,
}

async fn update(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<Settings>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let weight = parse_optional::<u32>("weight", form.weight.as_deref())?;
    let id = target.id;
    store
        .update_tenant(
            &id,
            form.status.as_deref().filter(|s| !s.is_empty()),
            weight,
            Some(form.log_invocations.is_some()),
        )
        .await?;
    Ok(back_to(&id))
}

#[derive(Deserialize)]
struct NewKey {
    #[serde(default)]
    csrf: String,
    name: Option<String>,
    /// Days until the key stops working; empty for never.
    expires_in_days: Option<String>,
}

async fn create_key(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<NewKey>,
) -> Result<Html<String>, ConsoleError> {
    let (store, t) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let days = parse_optional::<u32>("expires_in_days", form.expires_in_days.as_deref())?;
    let expires_at = match days {
        Some(0) => {
            return Err(ConsoleError::BadRequest(
                "a key expires in at least one day (leave it empty for never)".into(),
            ))
        }
        Some(d) => Some(crate::session::unix_now() + i64::from(d) * 86_400),
        None => None,
    };
    let name = form
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let key = store
        .create_api_key(&t.id, name.unwrap_or("default"), expires_at)
        .await?;
    // The one response that ever carries the secret; pages are never cached.
    page::render(
        &console,
        "secret.html",
        &viewer,
        context! {
            nav => "tenants",
            tenant => Value::from_serialize(&t),
            what => "API key",
            id => key.info.id,
            secret => key.key,
            access_key_id => Value::from(()),
        },
    )
}

async fn revoke_key(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
    ConsoleForm(form): ConsoleForm<Token>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let id = target.id;
    store.revoke_api_key(&id, &key).await?;
    Ok(back_to(&id))
}

async fn create_access_key(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<Token>,
) -> Result<Html<String>, ConsoleError> {
    let (store, t) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let key = store.create_access_key(&t.id).await?;
    page::render(
        &console,
        "secret.html",
        &viewer,
        context! {
            nav => "tenants",
            tenant => Value::from_serialize(&t),
            what => "AWS access key",
            id => key.info.access_key_id,
            access_key_id => key.info.access_key_id,
            secret => key.secret_access_key,
        },
    )
}

async fn revoke_access_key(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
    ConsoleForm(form): ConsoleForm<Token>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let id = target.id;
    store.revoke_access_key(&id, &key).await?;
    Ok(back_to(&id))
}

#[derive(Deserialize)]
struct ModelForm {
    #[serde(default)]
    csrf: String,
    model: String,
}

async fn grant(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<ModelForm>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let served = console
        .app
        .listed_models()
        .iter()
        .any(|m| m.id == form.model);
    if form.model != "*" && !served {
        return Err(ConsoleError::BadRequest(format!(
            "no model {} is served",
            form.model
        )));
    }
    let id = target.id;
    store.grant_model(&id, &form.model).await?;
    Ok(back_to(&id))
}

async fn revoke_grant(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<ModelForm>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let id = target.id;
    store.revoke_model(&id, &form.model).await?;
    Ok(back_to(&id))
}

#[derive(Deserialize)]
struct QuotaForm {
    #[serde(default)]
    csrf: String,
    model: String,
    requests_per_minute: Option<String>,
    tokens_per_minute: Option<String>,
    tokens_per_day: Option<String>,
    monthly_budget_usd: Option<String>,
}

async fn set_quota(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<QuotaForm>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let quota = Quota {
        requests_per_minute: parse_optional(
            "requests_per_minute",
            form.requests_per_minute.as_deref(),
        )?,
        tokens_per_minute: parse_optional("tokens_per_minute", form.tokens_per_minute.as_deref())?,
        tokens_per_day: parse_optional("tokens_per_day", form.tokens_per_day.as_deref())?,
        monthly_budget_usd: parse_optional(
            "monthly_budget_usd",
            form.monthly_budget_usd.as_deref(),
        )?,
    };
    if quota == Quota::default() {
        // As the admin API: a quota replaces the whole one, and clearing every limit at
        // once is more likely a slip than a wish.
        return Err(ConsoleError::BadRequest(
            "name at least one limit; a limit left empty is no limit".into(),
        ));
    }
    let id = target.id;
    store.set_quota(&id, form.model.trim(), &quota).await?;
    Ok(back_to(&id))
}

#[derive(Deserialize)]
struct GuardrailForm {
    #[serde(default)]
    csrf: String,
    /// Empty lifts the enforced guardrail.
    guardrail_identifier: String,
    guardrail_version: Option<String>,
}

async fn set_guardrail(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    ConsoleForm(form): ConsoleForm<GuardrailForm>,
) -> Result<Response, ConsoleError> {
    let (store, target) = tenant_change(&console, &viewer, &headers, &form.csrf, &tenant).await?;
    let identifier = form.guardrail_identifier.trim();
    let guardrail = if identifier.is_empty() {
        None
    } else {
        let version = form.guardrail_version.as_deref().map_or("DRAFT", str::trim);
        if !basalt_wire::bedrock::guardrails::valid_version(version) {
            return Err(ConsoleError::BadRequest(
                "a guardrail version is DRAFT or a number from 1".into(),
            ));
        }
        Some(GuardrailRef {
            id: basalt_wire::bedrock::guardrails::guardrail_id(identifier).to_string(),
            version: version.to_string(),
        })
    };
    let id = target.id;
    store
        .set_enforced_guardrail(&id, guardrail.as_ref())
        .await?;
    Ok(back_to(&id))
}

/// A number from a form field; empty (or absent) is `None`.
fn parse_optional<T: std::str::FromStr>(
    field: &str,
    value: Option<&str>,
) -> Result<Option<T>, ConsoleError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ConsoleError::BadRequest(format!("{field} must be a number, not {v:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_no_limit_and_bad_ones_are_refused() {
        assert_eq!(parse_optional::<u32>("x", None).ok(), Some(None));
        assert_eq!(parse_optional::<u32>("x", Some("  ")).ok(), Some(None));
        assert_eq!(parse_optional::<u32>("x", Some("12")).ok(), Some(Some(12)));
        assert!(parse_optional::<u32>("x", Some("-1")).is_err());
        assert!(parse_optional::<f64>("x", Some("1.5")).is_ok());
    }
}
