//! The first page after sign-in: who you are, what is served, and the engines' load now
//! (refreshed from `health.json` by `overview.js`).

use axum::extract::State;
use axum::response::Html;
use axum::Json;
use minijinja::{context, Value};
use serde::Serialize;

use crate::page::{self, ConsoleError};
use crate::pages::usable_models;
use crate::session::Viewer;
use crate::Shared;

/// One model's engine, now.
#[derive(Serialize)]
pub(crate) struct EngineLoad {
    model: String,
    waiting: usize,
    running: usize,
    kv_bytes_in_use: usize,
    kv_bytes_cached: usize,
    kv_capacity_tokens: usize,
    context_length: usize,
}

fn loads(app: &basalt_server::AppState) -> Vec<EngineLoad> {
    app.models()
        .map(|m| {
            let stats = m.engine.stats();
            EngineLoad {
                model: m.entry.manifest.id.clone(),
                waiting: stats.waiting,
                running: stats.running,
                kv_bytes_in_use: m.engine.kv_bytes_in_use(),
                kv_bytes_cached: m.engine.kv_bytes_cached(),
                kv_capacity_tokens: m.engine.kv_capacity_tokens(),
                context_length: m.engine.context_length(),
            }
        })
        .collect()
}

pub(crate) async fn show(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    let models = usable_models(&console, &viewer).await;
    let replicas = match (&console.app.platform, viewer.role) {
        (Some(p), crate::session::Role::Operator) => p.store.replicas().await.unwrap_or_default(),
        _ => Vec::new(),
    };
    page::render(
        &console,
        "overview.html",
        &viewer,
        context! {
            nav => "overview",
            models => models,
            engines => loads(&console.app),
            replicas => Value::from_serialize(&replicas),
            uptime_secs => crate::session::unix_now() - console.app.started as i64,
        },
    )
}

/// `GET /console/health.json`: the engines' load, for the overview's live table.
pub(crate) async fn health(State(console): Shared, _viewer: Viewer) -> Json<Vec<EngineLoad>> {
    Json(loads(&console.app))
}
