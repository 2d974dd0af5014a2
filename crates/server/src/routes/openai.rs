//! OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`, and
//! the Responses API's (`responses`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::HeaderMap;
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

use crate::error::{body_error, OpenAiError};
use crate::generation::{start_generation, unix_now, Answer, Call, Metering};
use crate::guardrail::{self, Guards, WithGuardrail};
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
                move |s: Shared,
                      p: Extension<Principal>,
                      h: HeaderMap,
                      b: Result<Bytes, BytesRejection>| {
                    generate(s, p, h, b, Surface::Chat, keep_alive)
                },
            ),
        )
        .route(
            "/v1/completions",
            post(
                move |s: Shared,
                      p: Extension<Principal>,
                      h: HeaderMap,
                      b: Result<Bytes, BytesRejection>| {
                    generate(s, p, h, b, Surface::Completion, keep_alive)
                },
            ),
        )
        .route(
            "/v1/responses",
            post(
                move |s: Shared, p: Extension<Principal>, b: Result<Bytes, BytesRejection>| {
                    crate::routes::responses::create(s, p, b, keep_alive)
                },
            ),
        )
        .route(
            "/v1/responses/{id}",
            get(crate::routes::responses::get).delete(crate::routes::responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(crate::routes::responses::input_items),
        )
        .layer(DefaultBodyLimit::max(config.body_limit))
}

fn card(manifest: &basalt_catalog::Manifest, created: u64) -> ModelCard {
    ModelCard {
        id: manifest.id.clone(),
        object: "model",
        created,
        owned_by: manifest.provider.clone(),
    }
}

/// The models the caller may use (a tenant sees only those granted to it).
async fn list_models(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
) -> Result<Json<wire::ModelList>, OpenAiError> {
    let listed = state.listed_models();
    let ids = listed.iter().map(|m| m.id.clone()).collect();
    let usable = state.usable(&principal, ids).await;
    Ok(Json(wire::model_list(
        listed
            .iter()
            .filter(|m| usable.contains(&m.id))
            .map(|m| card(m, state.started))
            .collect(),
    )))
}

async fn get_model(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, OpenAiError> {
    let Some(manifest) = state.listed_models().into_iter().find(|m| m.id == id) else {
        return Err(BasaltError::model_not_found(&id).into());
    };
    if state.usable(&principal, vec![id.clone()]).await.is_empty() {
        return Err(BasaltError::model_not_found(&id).into());
    }
    Ok(Json(card(&manifest, state.started)))
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    Chat,
    Completion,
}

/// A completion or chat completion, through the guardrail the request names (Bedrock's
/// headers or a `guardrailConfig` body field): a blocked input is answered with the
/// guardrail's message, and an intervention ends a choice with `content_filter`. A batch
/// job runs its records through here too (in its tier), so they are answered exactly as
/// the same requests over HTTP would be.
pub(crate) async fn generate(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
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
    let mut plan = match surface {
        Surface::Chat => wire::parse_chat(&body)?.into_plan()?,
        Surface::Completion => wire::parse_completion(&body)?.into_plan()?,
    };
    let model = state.model(&plan.model)?;
    let config = guardrail::requested(&headers, &body)?;
    let mut guards =
        Guards::check_inputs(&state, &call, &plan.model, config, &mut plan.requests).await?;
    let (receivers, meterings) = match guards.blocked_message() {
        Some(message) => (
            plan.requests
                .iter()
                .map(|_| guardrail::blocked(&message))
                .collect(),
            Vec::new(),
        ),
        None => {
            let (receivers, meterings) = submit_all(&state, &call, &model, &plan).await?;
            (guards.hold_all(&state, receivers, plan.stream), meterings)
        }
    };
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
        let result = collect(meta, plan, receivers, guards).await;
        for m in meterings {
            m.settled().await;
        }
        Ok(result?)
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
            total.cache_write_input_tokens += g.cache_write_input_tokens;
            total.output_tokens += g.output_tokens;
            total.reasoning_tokens += g.reasoning_tokens;
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

    /// A response or chunk of this request, around `choices`.
    fn completion<C>(
        &self,
        streaming: bool,
        choices: Vec<C>,
        usage: Option<Option<wire::CompletionUsage>>,
    ) -> wire::Completion<'_, C> {
        wire::Completion {
            id: &self.id,
            object: self.object(streaming),
            created: self.created,
            model: &self.model,
            system_fingerprint: "basalt",
            choices,
            usage,
        }
    }
}

async fn collect(
    meta: ResponseMeta,
    plan: Plan,
    receivers: Vec<EventReceiver>,
    guards: Guards,
) -> Result<Response, BasaltError> {
    let mut results = Vec::with_capacity(receivers.len());
    for rx in receivers {
        results.push(Answer::collect(rx).await?);
    }
    let guardrail = guards.body_fields().await;
    let usage = meta.total_usage(&results.iter().map(|r| r.usage).collect::<Vec<_>>());
    let usage = Some(Some(wire::CompletionUsage::of(&usage)));
    let want_logprobs = plan.requests.first().is_some_and(|r| r.logprobs.is_some());
    let finish = |r: &Answer| r.finish.map(wire::finish_reason);
    let response = match meta.surface {
        Surface::Chat => {
            let choices = results
                .iter()
                .enumerate()
                .map(|(index, r)| wire::ChatChoice {
                    index,
                    message: wire::AssistantMessage::new(&r.reasoning, &r.text, &r.calls),
                    logprobs: want_logprobs.then(|| wire::chat_logprobs(&r.logprobs)),
                    finish_reason: finish(r),
                })
                .collect();
            Json(WithGuardrail {
                body: meta.completion(false, choices, usage),
                guardrail,
            })
            .into_response()
        }
        Surface::Completion => {
            let choices = results
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    let echo = plan.echo.get(index).map(String::as_str).unwrap_or("");
                    wire::TextChoice {
                        index,
                        text: format!("{echo}{}", r.text).into(),
                        logprobs: want_logprobs
                            .then(|| wire::completion_logprobs(&r.logprobs, echo.len())),
                        finish_reason: finish(r),
                    }
                })
                .collect();
            Json(WithGuardrail {
                body: meta.completion(false, choices, usage),
                guardrail,
            })
            .into_response()
        }
    };
    Ok(response)
}

fn receiver_stream(index: usize, rx: EventReceiver) -> impl Stream<Item = (usize, GenerateEvent)> {
    stream::unfold(rx, move |mut rx| async move {
        rx.recv().await.map(|ev| ((index, ev), rx))
    })
}

/// Turns one streamed request's engine events into OpenAI chunks, each serialised as the
/// data of one server-sent event.
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

    /// One chunk around `choice`: `usage` is null on every chunk of a stream that ends
    /// with a usage chunk, and absent otherwise.
    fn chunk<C: serde::Serialize>(&self, choice: Option<C>) -> String {
        let usage = self.include_usage.then_some(None);
        let chunk = self
            .meta
            .completion(true, choice.into_iter().collect(), usage);
        serde_json::to_string(&chunk).unwrap_or_default()
    }

    /// A chat chunk with this delta for choice `i`.
    fn delta(
        &self,
        i: usize,
        delta: wire::Delta<'_>,
        logprobs: Option<wire::ChatLogprobs<'_>>,
        finish_reason: Option<&'static str>,
    ) -> String {
        self.chunk(Some(wire::ChunkChoice {
            index: i,
            delta,
            logprobs,
            finish_reason,
        }))
    }

    /// A completion chunk with this text for choice `i`.
    fn text(
        &self,
        i: usize,
        text: &str,
        logprobs: Option<wire::CompletionLogprobs<'_>>,
        finish_reason: Option<&'static str>,
    ) -> String {
        self.chunk(Some(wire::TextChoice {
            index: i,
            text: text.into(),
            logprobs,
            finish_reason,
        }))
    }

    /// The assistant role for chat; the echoed prompt for completions that asked for it.
    fn opening(&self, echo: &[String]) -> Vec<String> {
        (0..self.usages.len())
            .filter_map(|i| match self.meta.surface {
                Surface::Chat => Some(self.delta(i, wire::Delta::opening(), None, None)),
                Surface::Completion => echo
                    .get(i)
                    .filter(|e| !e.is_empty())
                    .map(|e| self.text(i, e, None, None)),
            })
            .collect()
    }

    fn event(&mut self, i: usize, event: GenerateEvent) -> Option<String> {
        if self.failed {
            return None;
        }
        match event {
            // Only a chat has reasoning (a text prompt is never split).
            GenerateEvent::Reasoning { text } => {
                Some(self.delta(i, wire::Delta::reasoning(&text), None, None))
            }
            GenerateEvent::Text { text, logprobs } => {
                let chunk = match self.meta.surface {
                    Surface::Chat => {
                        let lp = self.want_logprobs.then(|| wire::chat_logprobs(&logprobs));
                        self.delta(i, wire::Delta::text(&text), lp, None)
                    }
                    Surface::Completion => {
                        let lp = self
                            .want_logprobs
                            .then(|| wire::completion_logprobs(&logprobs, self.offsets[i]));
                        self.text(i, &text, lp, None)
                    }
                };
                self.offsets[i] += text.len();
                Some(chunk)
            }
            GenerateEvent::ToolCallStart { index, id, name } => Some(self.delta(
                i,
                wire::Delta::tool_call_start(index, &id, &name),
                None,
                None,
            )),
            GenerateEvent::ToolArguments { index, json } => {
                Some(self.delta(i, wire::Delta::tool_arguments(index, &json), None, None))
            }
            GenerateEvent::Finished { reason, usage, .. } => {
                self.usages[i] = usage;
                let finish = Some(wire::finish_reason(reason));
                Some(match self.meta.surface {
                    Surface::Chat => self.delta(i, wire::Delta::default(), None, finish),
                    Surface::Completion => self.text(i, "", None, finish),
                })
            }
            GenerateEvent::Failed { error, .. } => {
                // OpenAI reports a failure inside a stream as an `error` object.
                self.failed = true;
                Some(serde_json::to_string(&wire::error_body(&error)).unwrap_or_default())
            }
        }
    }

    /// The usage chunk (when asked for), with the total over every choice.
    fn closing(&self) -> Option<String> {
        self.include_usage.then(|| {
            let usage = wire::CompletionUsage::of(&self.meta.total_usage(&self.usages));
            let chunk =
                self.meta
                    .completion::<wire::ChunkChoice<'_>>(true, Vec::new(), Some(Some(usage)));
            serde_json::to_string(&chunk).unwrap_or_default()
        })
    }
}

fn data(json: String) -> Event {
    Event::default().data(json)
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
