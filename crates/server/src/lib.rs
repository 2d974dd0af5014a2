//! Basalt's HTTP server: one axum router per API surface (OpenAI, Anthropic, Bedrock, admin)
//! over the engines, behind one authentication layer.
//!
//! The layout is the architecture, and its arrows point one way, from routes to services
//! to state: `routes/` holds one file per surface plus `admin` and the `auth` layer;
//! `generation` owns a generation's lifecycle (access, quota admission, the engine queue,
//! metering, invocation logs) for every surface; `platform` holds quotas, grants and
//! prices; `error` renders errors in each dialect; `blocks` numbers content blocks for the
//! dialects that frame them; `listener` accepts connections; `state` is what is loaded.
//!
//! Handlers parse a dialect's body (`basalt-wire`), go through `generation`, hand
//! canonical requests to the model's engine, and encode its events back into the dialect,
//! streaming or not. They never do model
//! compute on the async runtime: tokenisation, embeddings and images run on the blocking
//! pool or their own threads, generation on each model's scheduler thread. A client that
//! disconnects drops its event receivers, which cancels its sequences in the engine; what
//! they computed is still metered.

#![forbid(unsafe_code)]

pub mod batch;
mod blocks;
mod error;
mod files;
pub mod forward;
mod generation;
mod guardrail;
mod invocation_jobs;
pub mod invocation_log;
mod knowledge;
pub mod limits;
pub use knowledge::resume_ingestion;
pub mod listener;
pub mod metrics;
mod offload;
pub mod platform;
mod rag;
pub mod replica;
mod routes;
mod state;

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use basalt_types::{BasaltError, ErrorKind};

pub use state::{AppState, ServedEmbedder, ServedImageModel, ServedModel};

use error::OpenAiError;
use routes::{admin, anthropic, auth, bedrock, guardrails, openai};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get a 413.
    pub body_limit: usize,
    /// How long a client has to send a whole request body; slower ones get a 408.
    pub body_read_timeout: Duration,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
    /// Largest file upload accepted (`/v1/files`); larger ones get a 413.
    pub file_limit: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 4 << 20,
            body_read_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
            file_limit: 200 << 20,
        }
    }
}

impl ServerConfig {
    fn body_rules(&self) -> auth::BodyRules {
        auth::BodyRules {
            limit: self.body_limit,
            deadline: self.body_read_timeout,
        }
    }

    /// The rules for file uploads: a larger limit, the same deadline.
    fn upload_rules(&self) -> auth::BodyRules {
        auth::BodyRules {
            limit: self.file_limit,
            deadline: self.body_read_timeout,
        }
    }
}

/// The whole HTTP application.
pub fn router(state: Arc<AppState>, config: ServerConfig) -> Router {
    let guard = |dialect| {
        axum::middleware::from_fn_with_state(
            (Arc::clone(&state), dialect, config.body_rules()),
            auth::require,
        )
    };
    // Inside authentication: a request for a model only another replica serves goes there.
    let forward = |dialect| {
        axum::middleware::from_fn_with_state(
            (Arc::clone(&state), dialect),
            forward::to_a_replica_serving_the_model,
        )
    };
    let uploads = || {
        axum::middleware::from_fn_with_state(
            (
                Arc::clone(&state),
                auth::Dialect::OpenAi,
                config.upload_rules(),
            ),
            auth::require,
        )
    };
    Router::new()
        .merge(
            openai::routes(config.clone())
                .route_layer(forward(auth::Dialect::OpenAi))
                .route_layer(guard(auth::Dialect::OpenAi)),
        )
        .merge(
            anthropic::routes(config.clone())
                .route_layer(forward(auth::Dialect::Anthropic))
                .route_layer(guard(auth::Dialect::Anthropic)),
        )
        .merge(
            bedrock::routes(config.clone())
                .route_layer(forward(auth::Dialect::Bedrock))
                .route_layer(guard(auth::Dialect::Bedrock)),
        )
        .merge(routes::files::routes(&config).route_layer(uploads()))
        // Bedrock's runtime serves the OpenAI and Anthropic APIs under these prefixes;
        // clients pointed at a Bedrock endpoint work unchanged.
        .nest(
            "/openai",
            openai::routes(config.clone())
                .route_layer(forward(auth::Dialect::OpenAi))
                .route_layer(guard(auth::Dialect::OpenAi))
                .merge(routes::files::routes(&config).route_layer(uploads())),
        )
        .nest(
            "/anthropic",
            anthropic::routes(config.clone())
                .route_layer(forward(auth::Dialect::Anthropic))
                .route_layer(guard(auth::Dialect::Anthropic)),
        )
        .merge(guardrails::routes(config.clone()).route_layer(guard(auth::Dialect::Bedrock)))
        .merge(routes::invocation_jobs::routes().route_layer(guard(auth::Dialect::Bedrock)))
        .merge(routes::knowledge_bases::routes().route_layer(guard(auth::Dialect::Bedrock)))
        .merge(routes::knowledge_documents::routes().route_layer(guard(auth::Dialect::Bedrock)))
        .merge(
            Router::new()
                .route("/v1/usage", get(admin::own_usage))
                .route_layer(guard(auth::Dialect::OpenAi)),
        )
        .merge(
            admin::routes()
                .layer(axum::extract::DefaultBodyLimit::disable())
                .route_layer(axum::middleware::from_fn_with_state(
                    (Arc::clone(&state), config.body_rules()),
                    admin::require_admin,
                )),
        )
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            count_responses,
        ))
        .fallback(|uri: axum::http::Uri| async move {
            OpenAiError(BasaltError::new(
                ErrorKind::NotFound,
                format!("No route for {uri}"),
            ))
        })
        .with_state(state)
}

/// Counts every response by API surface and status, rejections included.
async fn count_responses(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let surface = if path.starts_with("/v1/messages") || path.starts_with("/anthropic/") {
        "anthropic"
    } else if path.starts_with("/v1/") || path.starts_with("/openai/") {
        "openai"
    } else if path.starts_with("/model/")
        || path.starts_with("/foundation-models")
        || path.starts_with("/guardrail")
    {
        "bedrock"
    } else if path.starts_with("/admin/") {
        "admin"
    } else {
        "other"
    };
    let response = next.run(request).await;
    state
        .metrics
        .count_response(surface, response.status().as_u16());
    response
}

/// Ready when at least one model is loaded (a load balancer should not send traffic to a
/// server that can answer nothing).
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if state.entries().next().is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no models loaded").into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let gauges: Vec<metrics::ModelGauges> = state
        .models()
        .map(|m| {
            let stats = m.engine.stats();
            metrics::ModelGauges {
                model: m.entry.manifest.id.clone(),
                waiting: stats.waiting,
                running: stats.running,
                kv_bytes: m.engine.kv_bytes_in_use(),
                prefix_cache_bytes: m.engine.kv_bytes_cached(),
            }
        })
        .collect();
    let mut resp = state.metrics.render(&gauges).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
