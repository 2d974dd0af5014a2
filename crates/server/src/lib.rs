//! Basalt's HTTP server: one axum router per API surface (OpenAI, Anthropic, Bedrock, admin)
//! over the engines, behind one authentication layer.
//!
//! Handlers parse a dialect's body (`basalt-wire`), go through the platform layer (model
//! access, quotas, metering: [`platform`]), hand canonical requests to the model's engine,
//! and encode its events back into the dialect, streaming or not. They never do model
//! compute on the async runtime: tokenisation, embeddings and images run on the blocking
//! pool or their own threads, generation on each model's scheduler thread. A client that
//! disconnects drops its event receivers, which cancels its sequences in the engine; what
//! they computed is still metered.

#![forbid(unsafe_code)]

mod admin;
mod anthropic;
mod auth;
mod bedrock;
mod embeddings;
mod images;
pub mod invocation_log;
pub mod listener;
pub mod metrics;
mod openai;
pub mod platform;
mod state;

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

use basalt_auth::Principal;
use basalt_engine::{Accounting, EventReceiver};
use basalt_types::{
    BasaltError, ErrorKind, FinishReason, GenerateEvent, GenerateRequest, ToolCall, Usage,
};

pub use state::{AppState, ServedEmbedder, ServedImageModel, ServedModel};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get a 413.
    pub body_limit: usize,
    /// How long a client has to send a whole request body; slower ones get a 408.
    pub body_read_timeout: Duration,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 4 << 20,
            body_read_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
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
}

/// An error on an OpenAI-dialect route, rendered in OpenAI's error shape.
pub struct OpenAiError(pub BasaltError);

impl From<BasaltError> for OpenAiError {
    fn from(e: BasaltError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        error_response(&self.0, basalt_wire::openai::error_body(&self.0))
    }
}

/// An error response: the error's status, a dialect's JSON body, `Retry-After` when the
/// client should retry; server-side failures are logged.
pub(crate) fn error_response(error: &BasaltError, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %error.message, "request failed");
    }
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let retry = match (error.retry_after_secs, error.kind) {
        (Some(s), _) => Some(s),
        (None, ErrorKind::Overloaded) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The whole HTTP application.
pub fn router(state: Arc<AppState>, config: ServerConfig) -> Router {
    let guard = |dialect| {
        axum::middleware::from_fn_with_state(
            (Arc::clone(&state), dialect, config.body_rules()),
            auth::require,
        )
    };
    Router::new()
        .merge(openai::routes(config.clone()).route_layer(guard(auth::Dialect::OpenAi)))
        .merge(anthropic::routes(config.clone()).route_layer(guard(auth::Dialect::Anthropic)))
        .merge(bedrock::routes(config.clone()).route_layer(guard(auth::Dialect::Bedrock)))
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

async fn write_invocation_log(
    state: &AppState,
    log: &Arc<invocation_log::InvocationLog>,
    call: &Call,
    model_id: &str,
    acc: &Accounting,
    transcript: invocation_log::Transcript,
) {
    let input_body = call
        .input_body
        .as_ref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .unwrap_or(serde_json::Value::Null);
    let entry = invocation_log::Entry {
        timestamp: unix_now() as i64,
        tenant: call.principal.tenant.clone(),
        key_id: call.principal.key_id.clone(),
        region: state.region.clone(),
        request_id: call.request_id.clone(),
        operation: call.operation,
        model_id: model_id.to_string(),
        input_body,
        input_tokens: acc.usage.input_tokens as u64,
        output: transcript,
        output_tokens: acc.usage.output_tokens as u64,
    };
    let log = Arc::clone(log);
    let written = tokio::task::spawn_blocking(move || log.write(&entry)).await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::error!(request = %call.request_id, "cannot write the invocation log");
    }
}

/// Counts every response by API surface and status, rejections included.
async fn count_responses(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let surface = if path.starts_with("/v1/messages") {
        "anthropic"
    } else if path.starts_with("/v1/") {
        "openai"
    } else if path.starts_with("/model/") || path.starts_with("/foundation-models") {
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

fn body_error(rejection: axum::extract::rejection::BytesRejection) -> BasaltError {
    if rejection.status().as_u16() == 413 {
        BasaltError::new(
            ErrorKind::PayloadTooLarge,
            "The request body is larger than the server accepts.",
        )
        .with_param("body")
    } else {
        BasaltError::invalid("body", format!("Cannot read the request body: {rejection}"))
    }
}

/// Who made a request, through which surface, and when: what metering needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub principal: Principal,
    /// The request body, kept only for tenants that log invocations.
    pub input_body: Option<bytes::Bytes>,
    /// The caller's tenant record, read once per request (by [`Call::with_body`]) for its
    /// logging choice and its fair-share weight.
    pub tenant: Option<basalt_store::Tenant>,
    /// `openai`, `anthropic`, `bedrock`.
    pub surface: &'static str,
    /// The API operation (`chat.completions`, `messages`, `Converse`, ...).
    pub operation: &'static str,
    pub request_id: String,
    pub started: Instant,
}

impl Call {
    /// `id_prefix` makes the request id the dialect's own response id (`chatcmpl-`,
    /// `msg_`), so what a client sees is what the usage record says.
    pub fn new(
        principal: Principal,
        surface: &'static str,
        operation: &'static str,
        id_prefix: &str,
    ) -> Self {
        let request_id = request_id(id_prefix);
        Self {
            principal,
            input_body: None,
            tenant: None,
            surface,
            operation,
            request_id,
            started: Instant::now(),
        }
    }

    /// Reads the caller's tenant (once), and keeps the body for the invocation log if the
    /// tenant logs invocations.
    pub fn with_body(mut self, state: &AppState, body: &bytes::Bytes) -> Self {
        if let (Some(p), true) = (&state.platform, self.principal.managed) {
            self.tenant = p.store.tenant(&self.principal.tenant).ok();
        }
        let logs = self.tenant.as_ref().is_some_and(|t| t.log_invocations);
        if state.invocation_log.is_some() && logs {
            self.input_body = Some(body.clone());
        }
        self
    }
}

/// Resolves when the request's usage is recorded. Routes await it before sending the last
/// bytes of a response, so an answered request is always in the usage records.
pub(crate) struct Metering(oneshot::Receiver<()>);

impl Metering {
    pub async fn settled(self) {
        let _ = self.0.await;
    }
}

/// Checks model access, admits the request under the caller's quotas, tokenises the prompt
/// on the blocking pool and queues it on the model's scheduler in the caller's fair-share
/// lane; returns the prompt's token count (dialects report it up front), the events, and
/// the metering of the sequence, which records its exact usage however it ends.
pub(crate) async fn start_generation(
    state: &Arc<AppState>,
    call: &Call,
    model: Arc<ServedModel>,
    request: GenerateRequest,
) -> Result<(u32, EventReceiver, Metering), BasaltError> {
    let model_id = model.entry.manifest.id.clone();
    let platform = state.platform.clone();
    if let Some(p) = &platform {
        p.check_access(&call.principal, &model_id)?;
    }
    let principal = call.principal.clone();
    let tenant = call.tenant.clone();
    let engine_model = Arc::clone(&model);
    let admitted_call = call.clone();
    let (prepared, reservation, begun) = tokio::task::spawn_blocking(move || {
        let mut prepared = engine_model.engine.prepare(request)?;
        let model_id = &engine_model.entry.manifest.id;
        let (reservation, begun) = match &platform {
            Some(p) => {
                let tokens = (prepared.prompt_tokens.len() + prepared.max_tokens) as u64;
                let r = p.admit(&principal, model_id, tokens)?;
                prepared.tenant = p.lane(&principal, tenant.as_ref());
                (r, begin_usage(p, &admitted_call, model_id, &prepared))
            }
            None => (None, None),
        };
        Ok::<_, BasaltError>((prepared, reservation, begun))
    })
    .await
    .map_err(|e| BasaltError::internal(format!("tokenizer task failed: {e}")))??;
    let input_tokens = prepared.prompt_tokens.len() as u32;
    let (acc_tx, acc_rx) = oneshot::channel();
    let mut prepared = prepared;
    prepared.accounting = Some(acc_tx);
    let rx = match model.engine.enqueue(prepared) {
        Ok(rx) => rx,
        Err(e) => {
            // Dropping the request dropped its accounting sender: record the refusal here.
            let acc = Accounting {
                usage: Usage {
                    input_tokens,
                    ..Usage::default()
                },
                first_token: None,
                outcome: basalt_engine::Outcome::Failed(e.kind),
            };
            let record = platform::usage_record(call, &model_id, &acc, 0.0);
            match begun {
                Some(_) => persist_usage(state, record, reservation, begun).await,
                None => {
                    if let (Some(p), Some(r)) = (&state.platform, reservation) {
                        p.settle(r, 0, 0.0);
                    }
                }
            }
            return Err(e);
        }
    };
    // Tenants that opted into invocation logging get their transcript copied on the way.
    let (rx, transcript) = match (&state.invocation_log, &call.input_body) {
        (Some(_), Some(_)) => {
            let (rx, t) = invocation_log::tap(rx);
            (rx, Some(t))
        }
        _ => (rx, None),
    };
    let metering = spawn_metering(
        Arc::clone(state),
        call.clone(),
        model_id,
        acc_rx,
        (reservation, begun),
        transcript,
    );
    Ok((input_tokens, rx, metering))
}

/// Writes a request's usage record as soon as it is admitted ([`basalt_store::IN_PROGRESS`],
/// its prompt's tokens), so a crash while it runs leaves an `interrupted` record rather than
/// none. Runs on the blocking pool. A failure is logged: the request still runs, and is
/// recorded whole when it ends.
fn begin_usage(
    platform: &platform::Platform,
    call: &Call,
    model_id: &str,
    prepared: &basalt_engine::PreparedRequest,
) -> Option<i64> {
    let acc = Accounting {
        usage: Usage {
            input_tokens: prepared.prompt_tokens.len() as u32,
            ..Usage::default()
        },
        first_token: None,
        outcome: basalt_engine::Outcome::Cancelled,
    };
    let mut record = platform::usage_record(call, model_id, &acc, 0.0);
    record.status = basalt_store::IN_PROGRESS.to_string();
    match platform.store.begin_usage(&record) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::error!(request = %call.request_id, error = %e, "cannot record usage");
            None
        }
    }
}

/// Meters a request that did not go through the generation engine (embeddings): the usage
/// record is written before this returns, so before the response is sent.
pub(crate) async fn record_now(
    state: &Arc<AppState>,
    call: &Call,
    model_id: &str,
    usage: Usage,
    status: &str,
    reservation: Option<platform::Reservation>,
) {
    let acc = Accounting {
        usage,
        first_token: None,
        outcome: basalt_engine::Outcome::Cancelled, // replaced by `status` below
    };
    let cost = state
        .platform
        .as_ref()
        .map_or(0.0, |p| p.cost(model_id, &usage));
    let mut record = platform::usage_record(call, model_id, &acc, cost);
    record.status = status.to_string();
    persist_usage(state, record, reservation, None).await;
}

/// Records a finished request everywhere it is counted: the metrics, the durable usage
/// record (before this returns; completing the one begun at admission, if any), and the
/// settlement of its quota reservation.
async fn persist_usage(
    state: &Arc<AppState>,
    record: basalt_store::UsageRecord,
    reservation: Option<platform::Reservation>,
    begun: Option<i64>,
) {
    state.metrics.observe(&metrics::Observation {
        model: &record.model_id,
        surface: &record.surface,
        status: &record.status,
        input_tokens: record.input_tokens,
        output_tokens: record.output_tokens,
        latency_s: record.latency_ms as f64 / 1000.0,
        ttft_s: record.time_to_first_token_ms.map(|t| t as f64 / 1000.0),
    });
    let Some(p) = state.platform.clone() else {
        return;
    };
    let used = record.input_tokens + record.output_tokens;
    let cost = record.cost_usd;
    let request_id = record.request_id.clone();
    let written = tokio::task::spawn_blocking(move || {
        let result = match begun {
            Some(id) => p.store.complete_usage(id, &record),
            None => p.store.record_usage(&record),
        };
        if let Some(r) = reservation {
            p.settle(r, used, cost);
        }
        result
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(request = %request_id, error = %e, "cannot record usage"),
        Err(e) => tracing::error!(request = %request_id, error = %e, "usage task failed"),
    }
}

/// Waits for a sequence's accounting, writes its usage record (durably) and metrics, and
/// returns the unused part of its quota reservation. Runs on its own task, so a client
/// that disconnects is still billed for what was computed.
fn spawn_metering(
    state: Arc<AppState>,
    call: Call,
    model_id: String,
    accounting: oneshot::Receiver<Accounting>,
    (reservation, begun): (Option<platform::Reservation>, Option<i64>),
    transcript: Option<oneshot::Receiver<invocation_log::Transcript>>,
) -> Metering {
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(acc) = accounting.await {
            if let (Some(t), Some(log)) = (transcript, state.invocation_log.clone()) {
                if let Ok(t) = t.await {
                    write_invocation_log(&state, &log, &call, &model_id, &acc, t).await;
                }
            }
            let cost = state
                .platform
                .as_ref()
                .map_or(0.0, |p| p.cost(&model_id, &acc.usage));
            let record = platform::usage_record(&call, &model_id, &acc, cost);
            persist_usage(&state, record, reservation, begun).await;
        }
        let _ = done_tx.send(());
    });
    Metering(done_rx)
}

/// A whole generation, for the non-streaming routes.
pub(crate) struct Completed {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub reason: FinishReason,
    pub usage: Usage,
    pub stop_sequence: Option<String>,
}

/// Collects a whole generation; returns once its usage is recorded, whatever the outcome,
/// so the response that follows is never ahead of the bill.
pub(crate) async fn collect_text(
    rx: EventReceiver,
    metering: Metering,
) -> Result<Completed, BasaltError> {
    let done = collect_events(rx).await;
    metering.settled().await;
    done
}

async fn collect_events(mut rx: EventReceiver) -> Result<Completed, BasaltError> {
    let mut text = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    while let Some(event) = rx.recv().await {
        match event {
            GenerateEvent::Text { text: t, .. } => text.push_str(&t),
            GenerateEvent::ToolCallStart { id, name, .. } => calls.push(ToolCall {
                id,
                name,
                arguments: String::new(),
            }),
            GenerateEvent::ToolArguments { index, json } => {
                if let Some(call) = calls.get_mut(index as usize) {
                    call.arguments.push_str(&json);
                }
            }
            GenerateEvent::Finished {
                reason,
                usage,
                stop_sequence,
            } => {
                return Ok(Completed {
                    text,
                    calls,
                    reason,
                    usage,
                    stop_sequence,
                })
            }
            GenerateEvent::Failed { error, .. } => return Err(error),
        }
    }
    Err(BasaltError::internal(
        "the engine stopped before finishing the request",
    ))
}

/// What a streamed answer's content blocks are, for dialects that frame them (Anthropic,
/// Bedrock): text, or tool call `n` of the generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    Text,
    Tool(u32),
}

/// Numbers the content blocks of a streamed answer: a block opens with its first event and
/// closes when another one starts or the answer ends.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    open: Option<(Block, usize)>,
    count: usize,
}

/// What entering a block did: the block closed on the way (if any), whether the entered
/// block is new, and its index.
pub(crate) struct Entered {
    pub closed: Option<usize>,
    pub opened: bool,
    pub index: usize,
}

impl Blocks {
    pub fn enter(&mut self, block: Block) -> Entered {
        match self.open {
            Some((b, index)) if b == block => Entered {
                closed: None,
                opened: false,
                index,
            },
            _ => {
                let closed = self.close();
                let index = self.count;
                self.count += 1;
                self.open = Some((block, index));
                Entered {
                    closed,
                    opened: true,
                    index,
                }
            }
        }
    }

    pub fn close(&mut self) -> Option<usize> {
        self.open.take().map(|(_, index)| index)
    }

    /// Whether any block was ever opened.
    pub fn any(&self) -> bool {
        self.count > 0
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unique id with a dialect's prefix (`chatcmpl-`, `msg_`).
fn request_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}{:016x}", h.finish())
}
