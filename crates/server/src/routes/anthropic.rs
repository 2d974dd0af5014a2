//! Anthropic Messages routes: `POST /v1/messages` (streamed as named SSE events or not) and
//! `POST /v1/messages/count_tokens`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_types::{BasaltError, GenerateEvent};
use basalt_wire::anthropic::{self as wire, CountTokensRequest, MessagesRequest};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use crate::blocks::{BlockEvent, Blocks};
use crate::error::{body_error, AnthropicError};
use crate::generation::{collect_text, start_generation, Call, Metering};
use crate::guardrail::{self, Guards, WithGuardrail};
use crate::offload::off_runtime;
use crate::{AppState, ServerConfig};

type Shared = State<Arc<AppState>>;

pub fn routes(config: ServerConfig) -> Router<Arc<AppState>> {
    let keep_alive = config.keep_alive;
    Router::new()
        .route(
            "/v1/messages",
            post(
                move |s: Shared,
                      p: Extension<Principal>,
                      h: HeaderMap,
                      b: Result<Bytes, BytesRejection>| {
                    messages(s, p, h, b, keep_alive)
                },
            ),
        )
        .route("/v1/messages/count_tokens", post(count_tokens))
        .layer(DefaultBodyLimit::max(config.body_limit))
}

/// A message, through the guardrail the request names (Bedrock's headers or a
/// `guardrailConfig` body field): a blocked input is answered with the guardrail's message,
/// and an intervention ends the message with `stop_reason: refusal`.
async fn messages(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    keep_alive: std::time::Duration,
) -> Result<Response, AnthropicError> {
    let call = Call::new(principal, "anthropic", "messages", "msg_");
    let body = body.map_err(body_error)?;
    let call = call.with_body(&state, &body);
    let (model_id, request, stream) =
        basalt_wire::parse_json::<MessagesRequest>(&body)?.into_request()?;
    let model = state.model(&model_id)?;
    let config = guardrail::requested(&headers, &body)?;
    let mut requests = [request];
    let mut guards = Guards::check_inputs(&state, &call, &model_id, config, &mut requests).await?;
    let [request] = requests;
    let (input_tokens, rx, metering) = match guards.blocked_message() {
        Some(message) => (0, guardrail::blocked(&message), Metering::none()),
        None => {
            let (input_tokens, rx, metering) =
                start_generation(&state, &call, model, request).await?;
            let mut held = guards.hold_all(&state, vec![rx], stream);
            match held.pop() {
                Some(rx) => (input_tokens, rx, metering),
                None => return Err(BasaltError::internal("a generation went missing").into()),
            }
        }
    };
    let id = call.request_id.clone();
    if stream {
        return Ok(
            Sse::new(event_stream(id, model_id, input_tokens, rx, metering))
                .keep_alive(KeepAlive::new().interval(keep_alive))
                .into_response(),
        );
    }
    let done = collect_text(rx, metering).await?;
    let msg = wire::message(
        &id,
        &model_id,
        &done.reasoning,
        &done.text,
        &done.calls,
        done.reason(),
        done.stop_sequence.as_deref(),
        &done.usage,
    );
    Ok(Json(WithGuardrail {
        body: msg,
        guardrail: guards.body_fields().await,
    })
    .into_response())
}

/// One server-sent event, named by its `type`.
fn sse(event: &wire::StreamEvent<'_>) -> Result<Event, Infallible> {
    let data = serde_json::to_string(event).unwrap_or_default();
    Ok(Event::default().event(event.name()).data(data))
}

/// `message_start` and `ping`; then content blocks, each opened by `content_block_start`
/// with its first delta (text deltas, or a `tool_use` block and its `input_json_delta`s)
/// and closed by `content_block_stop`; then `message_delta` (stop reason, output tokens) and
/// `message_stop`. A failure mid-way is an `error` event. Dropping the stream cancels the
/// generation.
fn event_stream(
    id: String,
    model: String,
    input_tokens: u32,
    rx: basalt_engine::EventReceiver,
    metering: Metering,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening = vec![
        sse(&wire::message_start(&id, &model, input_tokens)),
        sse(&wire::StreamEvent::Ping),
    ];
    let body = stream::unfold(
        Some((rx, Blocks::default(), metering)),
        |state| async move {
            let (mut rx, mut blocks, metering) = state?;
            let mut events = Vec::new();
            let event = rx.recv().await?;
            for step in blocks.frame(&event) {
                events.push(match step {
                    BlockEvent::ReasoningStart { index } => sse(&wire::thinking_block_start(index)),
                    BlockEvent::ReasoningDelta { index, text } => {
                        sse(&wire::thinking_delta(index, text))
                    }
                    BlockEvent::TextStart { index } => sse(&wire::text_block_start(index)),
                    BlockEvent::TextDelta { index, text } => sse(&wire::text_delta(index, text)),
                    BlockEvent::ToolStart { index, id, name } => {
                        sse(&wire::tool_block_start(index, id, name))
                    }
                    BlockEvent::ToolDelta { index, json } => {
                        sse(&wire::input_json_delta(index, json))
                    }
                    BlockEvent::Stop { index } => sse(&wire::block_stop(index)),
                });
            }
            match event {
                GenerateEvent::Finished {
                    reason,
                    usage,
                    stop_sequence,
                } => {
                    metering.settled().await;
                    if !blocks.any() {
                        // An empty answer is still one (empty) text block.
                        events.push(sse(&wire::text_block_start(0)));
                        events.push(sse(&wire::block_stop(0)));
                    }
                    if let Some(BlockEvent::Stop { index }) = blocks.finish() {
                        events.push(sse(&wire::block_stop(index)));
                    }
                    events.push(sse(&wire::message_delta(
                        reason,
                        stop_sequence.as_deref(),
                        &usage,
                    )));
                    events.push(sse(&wire::StreamEvent::MessageStop));
                    return Some((stream::iter(events), None));
                }
                GenerateEvent::Failed { error, .. } => {
                    metering.settled().await;
                    events.push(sse(&wire::error_event(&error)));
                    return Some((stream::iter(events), None));
                }
                _ => {}
            }
            Some((stream::iter(events), Some((rx, blocks, metering))))
        },
    );
    use futures_util::StreamExt;
    stream::iter(opening).chain(body.flatten())
}

async fn count_tokens(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AnthropicError> {
    let body = body.map_err(body_error)?;
    let (model_id, prompt, constraints) =
        basalt_wire::parse_json::<CountTokensRequest>(&body)?.into_prompt()?;
    let model = state.model(&model_id)?;
    if let Some(p) = &state.platform {
        p.check_access(&principal, &model_id).await?;
    }
    let tokens = off_runtime(move || model.engine.tokenize_prompt(&prompt, &constraints)).await??;
    Ok(Json(json!({"input_tokens": tokens.len()})))
}
