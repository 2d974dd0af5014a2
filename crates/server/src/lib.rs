//! Basalt's HTTP server: one axum router per API surface over the engine.
//!
//! Handlers parse a dialect's body (`basalt-wire`), hand canonical requests to the model's
//! engine, and encode its events back into the dialect, streaming or not. They never do
//! model compute on the async runtime: tokenisation runs on the blocking pool, generation on
//! each model's scheduler thread. A client that disconnects drops its event receivers, which
//! cancels its sequences in the engine.

mod anthropic;
mod auth;
mod bedrock;
mod openai;
mod state;

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

use basalt_engine::EventReceiver;
use basalt_types::{
    BasaltError, ErrorKind, FinishReason, GenerateEvent, GenerateRequest, ToolCall, Usage,
};

pub use state::{AppState, ServedModel};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted; larger ones get a 413.
    pub body_limit: usize,
    /// How often an idle stream sends a keep-alive comment.
    pub keep_alive: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: 4 << 20,
            keep_alive: Duration::from_secs(15),
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
    if error.kind == ErrorKind::Overloaded {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// The whole HTTP application.
pub fn router(state: Arc<AppState>, config: ServerConfig) -> Router {
    let guard = |dialect| {
        axum::middleware::from_fn_with_state(
            (Arc::clone(&state), dialect, config.body_limit),
            auth::require,
        )
    };
    Router::new()
        .merge(openai::routes(config.clone()).route_layer(guard(auth::Dialect::OpenAi)))
        .merge(anthropic::routes(config.clone()).route_layer(guard(auth::Dialect::Anthropic)))
        .merge(bedrock::routes(config.clone()).route_layer(guard(auth::Dialect::Bedrock)))
        .route("/health", get(|| async { "ok" }))
        .fallback(|uri: axum::http::Uri| async move {
            OpenAiError(BasaltError::new(
                ErrorKind::NotFound,
                format!("No route for {uri}"),
            ))
        })
        .with_state(state)
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

/// Tokenises the prompt on the blocking pool and queues the request on the model's
/// scheduler; returns the prompt's token count (dialects report it up front) and the events.
pub(crate) async fn start_generation(
    model: Arc<ServedModel>,
    request: GenerateRequest,
) -> Result<(u32, EventReceiver), BasaltError> {
    tokio::task::spawn_blocking(move || {
        let prepared = model.engine.prepare(request)?;
        let n = prepared.prompt_tokens.len() as u32;
        Ok::<_, BasaltError>((n, model.engine.enqueue(prepared)?))
    })
    .await
    .map_err(|e| BasaltError::internal(format!("tokenizer task failed: {e}")))?
}

/// A whole generation, for the non-streaming routes.
pub(crate) struct Completed {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub reason: FinishReason,
    pub usage: Usage,
    pub stop_sequence: Option<String>,
}

pub(crate) async fn collect_text(mut rx: EventReceiver) -> Result<Completed, BasaltError> {
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
