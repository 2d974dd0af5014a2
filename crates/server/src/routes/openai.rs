//! OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_engine::EventReceiver;
use basalt_types::{BasaltError, GenerateEvent, Usage};
use basalt_wire::openai::{self as wire, ModelCard, Plan};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use crate::error::{body_error, OpenAiError};
use crate::generation::{start_generation, unix_now, Answer, Call, Metering};
use crate::{AppState, ServedModel, ServerConfig};

type Shared = State<Arc<AppState>>;

pub fn routes(config: ServerConfig) -> Router<Arc<AppState>> {
    let keep_alive = config.keep_alive;
    Router::new()
        .route("/v1/models", get(list_models))
        .route(
            "/v1/embeddings",
            post(crate::routes::embeddings::openai_embeddings),
        )
        .route(
            "/v1/images/generations",
            post(crate::routes::images::openai_images),
        )
        .route("/v1/models/{*id}", get(get_model))
        .route(
            "/v1/chat/completions",
            post(
                move |s: Shared, p: Extension<Principal>, b: Result<Bytes, BytesRejection>| {
                    generate(s, p, b, Surface::Chat, keep_alive)
                },
            ),
        )
        .route(
            "/v1/completions",
            post(
                move |s: Shared, p: Extension<Principal>, b: Result<Bytes, BytesRejection>| {
                    generate(s, p, b, Surface::Completion, keep_alive)
                },
            ),
        )
        .layer(DefaultBodyLimit::max(config.body_limit))
}

fn card(entry: &basalt_catalog::Entry, created: u64) -> ModelCard {
    ModelCard {
        id: entry.manifest.id.clone(),
        object: "model",
        created,
        owned_by: entry.manifest.provider.clone(),
    }
}

/// The models the caller may use (a tenant sees only those granted to it).
async fn list_models(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, OpenAiError> {
    let ids = state.entries().map(|e| e.manifest.id.clone()).collect();
    let usable = state.usable(&principal, ids).await;
    Ok(Json(wire::model_list(
        state
            .entries()
            .filter(|e| usable.contains(&e.manifest.id))
            .map(|e| card(e, state.started))
            .collect(),
    )))
}

async fn get_model(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, OpenAiError> {
    let entry = match state.entries().find(|e| e.manifest.id == id) {
        Some(e) => e.clone(),
        None => return Err(BasaltError::model_not_found(&id).into()),
    };
    if state.usable(&principal, vec![id.clone()]).await.is_empty() {
        return Err(BasaltError::model_not_found(&id).into());
    }
    Ok(Json(card(&entry, state.started)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Surface {
    Chat,
    Completion,
}

async fn generate(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
    surface: Surface,
    keep_alive: std::time::Duration,
) -> Result<Response, OpenAiError> {
    let call = match surface {
        Surface::Chat => Call::new(principal, "openai", "chat.completions", "chatcmpl-"),
        Surface::Completion => Call::new(principal, "openai", "completions", "cmpl-"),
    };
    let body = body.map_err(body_error)?;
    let call = call.with_body(&state, &body);
    let plan = match surface {
        Surface::Chat => wire::parse_chat(&body)?.into_plan()?,
        Surface::Completion => wire::parse_completion(&body)?.into_plan()?,
    };
    let model = state.model(&plan.model)?;
    let (receivers, meterings) = submit_all(&state, &call, &model, &plan).await?;
    let meta = ResponseMeta {
        id: call.request_id.clone(),
        created: unix_now(),
        model: plan.model.clone(),
        surface,
        choices_per_prompt: plan.choices_per_prompt,
    };
    if plan.stream {
        let events = stream_events(meta, plan, receivers, meterings);
        Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(keep_alive))
            .into_response())
    } else {
        let result = collect(meta, plan, receivers).await;
        for m in meterings {
            m.settled().await;
        }
        Ok(Json(result?).into_response())
    }
}

/// Submits every choice of the plan (each metered as its own sequence).
async fn submit_all(
    state: &Arc<AppState>,
    call: &Call,
    model: &Arc<ServedModel>,
    plan: &Plan,
) -> Result<(Vec<EventReceiver>, Vec<Metering>), BasaltError> {
    let mut receivers = Vec::with_capacity(plan.requests.len());
    let mut meterings = Vec::with_capacity(plan.requests.len());
    for request in &plan.requests {
        let (_, rx, metering) =
            start_generation(state, call, Arc::clone(model), request.clone()).await?;
        receivers.push(rx);
        meterings.push(metering);
    }
    Ok((receivers, meterings))
}

struct ResponseMeta {
    id: String,
    created: u64,
    model: String,
    surface: Surface,
    /// For completions with several prompts: choices `i*k..(i+1)*k` share prompt `i`.
    choices_per_prompt: usize,
}

impl ResponseMeta {
    fn total_usage(&self, per_choice: &[Usage]) -> Usage {
        let mut total = Usage::default();
        for group in per_choice.chunks(self.choices_per_prompt.max(1)) {
            let g = wire::sum_usage(group, true);
            total.input_tokens += g.input_tokens;
            total.cached_input_tokens += g.cached_input_tokens;
            total.output_tokens += g.output_tokens;
        }
        total
    }

    fn object(&self, streaming: bool) -> &'static str {
        match (self.surface, streaming) {
            (Surface::Chat, false) => "chat.completion",
            (Surface::Chat, true) => "chat.completion.chunk",
            (Surface::Completion, _) => "text_completion",
        }
    }
}

async fn collect(
    meta: ResponseMeta,
    plan: Plan,
    receivers: Vec<EventReceiver>,
) -> Result<Value, BasaltError> {
    let mut results = Vec::with_capacity(receivers.len());
    for rx in receivers {
        results.push(Answer::collect(rx).await?);
    }
    let usage = meta.total_usage(&results.iter().map(|r| r.usage).collect::<Vec<_>>());
    let want_logprobs = plan.requests.first().is_some_and(|r| r.logprobs.is_some());
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let finish = r.finish.map(wire::finish_reason);
            match meta.surface {
                Surface::Chat => json!({
                    "index": i,
                    "message": chat_message(r),
                    "logprobs": if want_logprobs { json!({"content": wire::chat_logprobs(&r.logprobs)}) } else { Value::Null },
                    "finish_reason": finish,
                }),
                Surface::Completion => {
                    let echo = plan.echo.get(i).map(String::as_str).unwrap_or("");
                    json!({
                        "index": i,
                        "text": format!("{echo}{}", r.text),
                        "logprobs": if want_logprobs { wire::completion_logprobs(&r.logprobs, echo.len()) } else { Value::Null },
                        "finish_reason": finish,
                    })
                }
            }
        })
        .collect();
    Ok(json!({
        "id": meta.id,
        "object": meta.object(false),
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": "basalt",
        "choices": choices,
        "usage": wire::usage_json(&usage),
    }))
}

/// The assistant message of a chat choice: its text, or its tool calls (content null).
fn chat_message(r: &Answer) -> Value {
    let mut m = json!({"role": "assistant", "content": r.text, "refusal": null});
    if !r.calls.is_empty() {
        m["tool_calls"] = wire::tool_calls_json(&r.calls);
        if r.text.is_empty() {
            m["content"] = Value::Null;
        }
    }
    m
}

fn receiver_stream(index: usize, rx: EventReceiver) -> impl Stream<Item = (usize, GenerateEvent)> {
    stream::unfold(rx, move |mut rx| async move {
        rx.recv().await.map(|ev| ((index, ev), rx))
    })
}

/// Turns one streamed request's engine events into OpenAI chunks.
struct ChunkEncoder {
    meta: ResponseMeta,
    want_logprobs: bool,
    include_usage: bool,
    /// Per choice: its usage once finished, and the text offset for completion logprobs.
    usages: Vec<Usage>,
    offsets: Vec<usize>,
    /// After a failure nothing more is sent but the closing lines.
    failed: bool,
}

impl ChunkEncoder {
    fn new(meta: ResponseMeta, plan: &Plan, choices: usize) -> Self {
        Self {
            meta,
            want_logprobs: plan.requests.first().is_some_and(|r| r.logprobs.is_some()),
            include_usage: plan.include_usage,
            usages: vec![Usage::default(); choices],
            offsets: (0..choices)
                .map(|i| plan.echo.get(i).map_or(0, String::len))
                .collect(),
            failed: false,
        }
    }

    fn chunk(&self, choices: Value) -> Value {
        let mut v = json!({
            "id": self.meta.id,
            "object": self.meta.object(true),
            "created": self.meta.created,
            "model": self.meta.model,
            "system_fingerprint": "basalt",
            "choices": choices,
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn choice(&self, i: usize, text: Option<&str>, logprobs: Value, finish: Option<&str>) -> Value {
        match self.meta.surface {
            Surface::Chat => {
                let delta = text.map_or(json!({}), |t| json!({"content": t}));
                json!({"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
            }
            Surface::Completion => {
                json!({"index": i, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
            }
        }
    }

    /// The assistant role for chat; the echoed prompt for completions that asked for it.
    fn opening(&self, echo: &[String]) -> Vec<Value> {
        (0..self.usages.len())
            .filter_map(|i| match self.meta.surface {
                Surface::Chat => Some(self.chunk(json!([{
                    "index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null,
                }]))),
                Surface::Completion => echo
                    .get(i)
                    .filter(|e| !e.is_empty())
                    .map(|e| self.chunk(json!([self.choice(i, Some(e), Value::Null, None)]))),
            })
            .collect()
    }

    fn event(&mut self, i: usize, event: GenerateEvent) -> Option<Value> {
        if self.failed {
            return None;
        }
        match event {
            GenerateEvent::Text { text, logprobs } => {
                let lp = match (self.want_logprobs, self.meta.surface) {
                    (false, _) => Value::Null,
                    (true, Surface::Chat) => json!({"content": wire::chat_logprobs(&logprobs)}),
                    (true, Surface::Completion) => {
                        wire::completion_logprobs(&logprobs, self.offsets[i])
                    }
                };
                self.offsets[i] += text.len();
                Some(self.chunk(json!([self.choice(i, Some(&text), lp, None)])))
            }
            GenerateEvent::ToolCallStart { index, id, name } => {
                let delta = wire::tool_call_start_delta(index, &id, &name);
                Some(self.chunk(
                    json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": null}]),
                ))
            }
            GenerateEvent::ToolArguments { index, json } => {
                let delta = wire::tool_arguments_delta(index, &json);
                Some(self.chunk(
                    json!([{"index": i, "delta": delta, "logprobs": null, "finish_reason": null}]),
                ))
            }
            GenerateEvent::Finished { reason, usage, .. } => {
                self.usages[i] = usage;
                let choice = self.choice(i, None, Value::Null, Some(wire::finish_reason(reason)));
                Some(self.chunk(json!([choice])))
            }
            GenerateEvent::Failed { error, .. } => {
                // OpenAI reports a failure inside a stream as an `error` object.
                self.failed = true;
                Some(wire::error_body(&error))
            }
        }
    }

    /// The usage chunk (when asked for), with the total over every choice.
    fn closing(&self) -> Option<Value> {
        self.include_usage.then(|| {
            let mut v = self.chunk(json!([]));
            v["usage"] = wire::usage_json(&self.meta.total_usage(&self.usages));
            v
        })
    }
}

fn data(v: Value) -> Event {
    Event::default().data(v.to_string())
}

/// The SSE stream: every choice's events interleaved as they come, then (optionally) a usage
/// chunk, then `[DONE]`. Dropping it (client gone) drops the receivers, which cancels the
/// sequences in the engine.
fn stream_events(
    meta: ResponseMeta,
    plan: Plan,
    receivers: Vec<EventReceiver>,
    meterings: Vec<Metering>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let encoder = ChunkEncoder::new(meta, &plan, receivers.len());
    let pending: VecDeque<Event> = encoder.opening(&plan.echo).into_iter().map(data).collect();
    let merged = stream::select_all(
        receivers
            .into_iter()
            .enumerate()
            .map(|(i, rx)| Box::pin(receiver_stream(i, rx))),
    );
    stream::unfold(
        (merged, encoder, pending, false, meterings),
        |(mut merged, mut encoder, mut pending, mut ended, mut meterings)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((Ok(event), (merged, encoder, pending, ended, meterings)));
                }
                if ended {
                    return None;
                }
                match merged.next().await {
                    Some((i, event)) => pending.extend(encoder.event(i, event).map(data)),
                    None => {
                        // The answer ends only once its usage is recorded.
                        for m in meterings.drain(..) {
                            m.settled().await;
                        }
                        pending.extend(encoder.closing().map(data));
                        pending.push_back(Event::default().data("[DONE]"));
                        ended = true;
                    }
                }
            }
        },
    )
}
