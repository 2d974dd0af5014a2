//! Invocation logs, for tenants that opted in: the latest entries, newest first. A tenant
//! reads its own; the operator picks a tenant.

use axum::extract::{Query, State};
use axum::response::Html;
use minijinja::{context, Value};
use serde::Deserialize;

use crate::page::{self, ConsoleError};
use crate::session::Viewer;
use crate::Shared;

/// Entries one page shows.
const SHOWN: usize = 50;

#[derive(Deserialize)]
pub(crate) struct Params {
    tenant: Option<String>,
}

pub(crate) async fn show(
    State(console): Shared,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Result<Html<String>, ConsoleError> {
    let Some(platform) = &console.app.platform else {
        return Err(ConsoleError::NotFound);
    };
    let tenants = match viewer.own_tenant() {
        Some(_) => Vec::new(),
        None => platform.store.tenants().await?,
    };
    let tenant = match viewer.own_tenant() {
        Some(own) => Some(platform.store.tenant(own).await),
        None => match params.tenant.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(platform.store.tenant(t).await),
            None => None,
        },
    };
    // The local user (no tenant row) has no log to read.
    let tenant = match tenant {
        Some(Ok(t)) => Some(t),
        Some(Err(basalt_store::StoreError::NotFound(_))) if viewer.own_tenant().is_some() => None,
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let entries = match (&tenant, &console.app.invocation_log) {
        (Some(t), Some(log)) => {
            let (log, id) = (std::sync::Arc::clone(log), t.id.clone());
            tokio::task::spawn_blocking(move || log.recent(&id, SHOWN))
                .await
                .map_err(|e| ConsoleError::Internal(format!("reading the log: {e}")))?
                .map_err(|e| ConsoleError::Internal(format!("reading the log: {e}")))?
        }
        _ => Vec::new(),
    };
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let pretty = |v: Option<&serde_json::Value>| {
                v.map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
            };
            context! {
                timestamp => e.get("timestamp").and_then(|v| v.as_str()),
                operation => e.get("operation").and_then(|v| v.as_str()),
                model => e.get("modelId").and_then(|v| v.as_str()),
                request_id => e.get("requestId").and_then(|v| v.as_str()),
                input_tokens => e.pointer("/input/inputTokenCount").and_then(|v| v.as_u64()),
                output_tokens => e.pointer("/output/outputTokenCount").and_then(|v| v.as_u64()),
                input => pretty(e.pointer("/input/inputBodyJson")),
                output => pretty(e.pointer("/output/outputBodyJson")),
            }
        })
        .collect();
    page::render(
        &console,
        "logs.html",
        &viewer,
        context! {
            nav => "logs",
            tenant => Value::from_serialize(&tenant),
            tenants => Value::from_serialize(&tenants),
            entries => entries,
        },
    )
}
