//! Basalt's web console, served by the same binary at `/console` (and `/`).
//!
//! Server-rendered pages from minijinja templates that escape every value as HTML, plus a
//! little plain JavaScript, all embedded in the binary: nothing is built with Node, nothing
//! is loaded from another origin (the Content-Security-Policy allows none). The
//! playgrounds and the guardrail, knowledge-base and job pages call Basalt's public APIs
//! from the browser, as any client would, authenticated by the console session (its cookie
//! and its CSRF token); the administration pages change the store through the same
//! methods and rules as the admin API, and can do nothing it cannot.
//!
//! Layout: `session` (sign-in, the signed cookie, CSRF and origin checks), `page`
//! (templates, security headers, error pages), `assets` (the embedded CSS and scripts),
//! `chart` (server-side SVG), `pages/` (one file per part of the console).
//!
//! This crate must never render model output or stored text as HTML, show a secret after
//! the response that created it, or change state for a request without the session's CSRF
//! token.

#![forbid(unsafe_code)]

mod assets;
mod chart;
mod page;
mod pages;
mod session;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;
use basalt_server::AppState;

/// How the console runs.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Mark cookies `Secure` (the server speaks HTTPS, itself or behind a proxy).
    pub secure_cookies: bool,
    /// How long a sign-in lasts.
    pub session_ttl_secs: i64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            session_ttl_secs: 8 * 3600,
        }
    }
}

/// What every console handler sees.
pub(crate) struct Console {
    pub app: Arc<AppState>,
    pub config: ConsoleConfig,
    pub templates: minijinja::Environment<'static>,
    /// What each GGUF file's matrices are stored as, read once (the catalog page).
    pub weight_types:
        std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, Option<String>>>,
}

pub(crate) type Shared = axum::extract::State<Arc<Console>>;

/// Console forms are a few fields; nothing larger is accepted.
const FORM_LIMIT: usize = 64 << 10;

/// The console's routes, to merge beside the API's.
pub fn routes(app: Arc<AppState>, config: ConsoleConfig) -> Router {
    let console = Arc::new(Console {
        app,
        config,
        templates: page::templates(),
        weight_types: Default::default(),
    });
    use pages::{admin, features, logs, models, overview, playground, usage};
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(overview::show))
        .route("/console/health.json", get(overview::health))
        .route(
            "/console/login",
            get(session::login_page).post(session::sign_in),
        )
        .route("/console/logout", post(session::sign_out))
        .route("/console/chat", get(playground::chat))
        .route("/console/text", get(playground::text))
        .route("/console/embeddings", get(playground::embeddings))
        .route("/console/images", get(playground::images))
        .route("/console/models", get(models::show))
        .route("/console/usage", get(usage::show))
        .route("/console/logs", get(logs::show))
        .route("/console/guardrails", get(features::guardrails))
        .route("/console/knowledge-bases", get(features::knowledge_bases))
        .route("/console/jobs", get(features::jobs))
        .merge(admin::routes())
        .route("/console/assets/{file}", get(assets::serve))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::from_fn(page::security_headers))
        .layer(axum::middleware::from_fn(session::host_from_authority))
        .with_state(console)
}
