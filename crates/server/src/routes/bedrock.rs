//! Amazon Bedrock routes: the runtime (`/model/{modelId}/converse`, `converse-stream`,
//! `invoke`, `invoke-with-response-stream`, `count-tokens`) and the catalog part of the
//! control plane (`/foundation-models`).
//!
//! Streams are AWS event-stream frames; an error after the first frame becomes an exception
//! frame, as Bedrock sends it. Dropping a stream cancels the generation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_catalog::Modality;
use basalt_engine::EventReceiver;
use basalt_types::{BasaltError, ErrorKind, GenerateEvent, GenerateRequest, Usage};
use basalt_wire::bedrock::control::{self, FoundationModel, ListFilters};
use basalt_wire::bedrock::converse::{
    self, events, ConverseRequest, ConverseResponse, Echo, ServiceTierType,
};
use basalt_wire::bedrock::invoke::{self, CountTokensRequest, LlamaBody};
use basalt_wire::bedrock::output::GUARDRAIL_INTERVENED;
use basalt_wire::bedrock::{self as wire, eventstream};
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};

use crate::blocks::{BlockEvent, Blocks};
use crate::error::{body_error, BedrockError};
use crate::generation::{collect_text, start_generation, Call, Metering, Tier};
use crate::guardrail::{
    self, CallGuard, GroundingInputs, GuardedAnswer, Guards, Selection, Window, WithGuardrail,
};
use crate::offload::off_runtime;
use crate::routes::{embeddings, images};
use crate::{AppState, ServedEmbedder, ServedImageModel, ServedModel, ServerConfig};

type Shared = State<Arc<AppState>>;
type BodyResult = Result<Bytes, BytesRejection>;

const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

pub fn routes(config: ServerConfig) -> Router<Arc<AppState>> {
    Router::new()
        .route("/model/{model_id}/converse", post(converse))
        .route("/model/{model_id}/converse-stream", post(converse_stream))
        .route("/model/{model_id}/invoke", post(invoke))
        .route(
            "/model/{model_id}/invoke-with-response-stream",
            post(invoke_stream),
        )
        .route("/model/{model_id}/count-tokens", post(count_tokens))
        .route("/foundation-models", get(list_foundation_models))
        .route("/foundation-models/{model_id}", get(get_foundation_model))
        .layer(DefaultBodyLimit::max(config.body_limit))
}

/// An image model under any id Bedrock clients use for it.
fn resolve_image_model(state: &AppState, raw: &str) -> Option<Arc<ServedImageModel>> {
    wire::model_id_candidates(raw)
        .iter()
        .find_map(|id| state.image_model(id))
}

/// An embedding model under any id Bedrock clients use for it.
fn resolve_embedder(state: &AppState, raw: &str) -> Option<Arc<ServedEmbedder>> {
    wire::model_id_candidates(raw)
        .iter()
        .find_map(|id| state.embedder(id))
}

/// Finds a served model by any id Bedrock clients use for it (plain id, ARN, profile).
fn resolve(state: &AppState, raw: &str) -> Result<Arc<ServedModel>, BasaltError> {
    if resolve_embedder(state, raw).is_some() {
        return Err(BasaltError::invalid(
            "modelId",
            format!("`{raw}` is an embedding model: call InvokeModel with a Titan or Cohere embedding body"),
        ));
    }
    if resolve_image_model(state, raw).is_some() {
        return Err(BasaltError::invalid(
            "modelId",
            format!(
                "`{raw}` is an image model: call InvokeModel with a Titan or Stability image body"
            ),
        ));
    }
    wire::model_id_candidates(raw)
        .iter()
        .find_map(|id| state.model(id).ok())
        .ok_or_else(|| {
            BasaltError::new(
                ErrorKind::ModelNotFound,
                format!("The model `{raw}` does not exist or is not served here"),
            )
            .with_param("modelId")
        })
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), v);
    }
    resp
}

fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// The start `InvokeModel` and its stream share: meter the call from here, keep the body
/// for the invocation log, resolve the model, parse the body with `parse`, guard its input
/// with the guardrail the `X-Amzn-Bedrock-Guardrail*` headers name, and queue the
/// generation (held by the guardrail when there is one; replaced by its message when it
/// blocks the input).
async fn start(
    state: &Arc<AppState>,
    principal: Principal,
    operation: &'static str,
    model_id: &str,
    headers: &HeaderMap,
    body: BodyResult,
    parse: impl FnOnce(&[u8]) -> Result<(GenerateRequest, Option<String>), BasaltError>,
) -> Result<(Call, u32, EventReceiver, Metering, Guards), BasaltError> {
    let call = Call::new(principal, "bedrock", operation, "");
    let body = body.map_err(body_error)?;
    let call = call.with_body(state, &body);
    let model = resolve(state, model_id)?;
    let (mut request, tag_suffix) = parse(&body)?;
    let config = guardrail::requested(headers, &body)?;
    let model_id = &model.entry.manifest.id;
    let mut guards = match &tag_suffix {
        Some(suffix) => {
            Guards::check_tagged(state, &call, model_id, config, &mut request, suffix).await?
        }
        None => {
            Guards::check_inputs(
                state,
                &call,
                model_id,
                config,
                std::slice::from_mut(&mut request),
            )
            .await?
        }
    };
    if let Some(message) = guards.blocked_message() {
        let rx = guardrail::blocked(&message);
        return Ok((call, 0, rx, Metering::none(), guards));
    }
    let (input_tokens, rx, metering) = start_generation(state, &call, model, request).await?;
    // The stream's answer is released in checked windows, the whole one in one piece.
    let streamed = operation == "InvokeModelWithResponseStream";
    let rx = guards
        .hold_all(state, vec![rx], streamed)
        .pop()
        .ok_or_else(|| BasaltError::internal("a generation went missing"))?;
    Ok((call, input_tokens, rx, metering, guards))
}

/// A native (Meta) body: the generation, and the guardrail tag suffix it names.
fn parse_llama(body: &[u8]) -> Result<(GenerateRequest, Option<String>), BasaltError> {
    let body = wire::parse_json::<LlamaBody>(body)?;
    let suffix = body.guardrail_config.as_ref().map(|c| c.tag_suffix.clone());
    Ok((body.into_request()?, suffix))
}

/// A Converse body parsed, with its guardrails (the one it names, the tenant's enforced
/// one) applied to the input.
async fn converse_request(
    state: &AppState,
    call: &Call,
    model_id: &str,
    body: &[u8],
) -> Result<(ConverseRequest, Option<CallGuard>), BasaltError> {
    let mut request: ConverseRequest = wire::parse_json(body)?;
    let selection = Selection::of(state, &call.principal, request.guardrail_config.take()).await;
    let (sources, query) = request.grounding_texts();
    let (texts, total) = request.guarded_texts();
    let guard = CallGuard::check_input(state, call, model_id, selection, texts, total)
        .await?
        .map(|g| g.with_grounding(GroundingInputs { sources, query }));
    Ok((request, guard))
}

/// The opening of a Converse call every variant shares: meter from here, keep the body for
/// the invocation log, resolve the model, parse the body and guard its input.
async fn open_converse(
    state: &Arc<AppState>,
    principal: Principal,
    operation: &'static str,
    model_id: &str,
    body: BodyResult,
) -> Result<(Call, Arc<ServedModel>, ConverseRequest, Option<CallGuard>), BasaltError> {
    let call = Call::new(principal, "bedrock", operation, "");
    let body = body.map_err(body_error)?;
    let call = call.with_body(state, &body);
    let model = resolve(state, model_id)?;
    let (request, guard) = converse_request(state, &call, &model.entry.manifest.id, &body).await?;
    // `flex` requests wait for capacity interactive ones leave, at the batch price.
    let call = match request.service_tier.map(|t| t.kind) {
        Some(ServiceTierType::Flex) => call.with_tier(Tier::Flex),
        _ => call,
    };
    Ok((call, model, request, guard))
}

/// What a Converse response echoes of its request.
fn echo_of(request: &ConverseRequest) -> Echo {
    Echo {
        service_tier: request.service_tier,
        performance_config: request.performance_config,
    }
}

pub(crate) async fn converse(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
    body: BodyResult,
) -> Result<Response, BedrockError> {
    let (call, model, request, mut guard) =
        open_converse(&state, principal, "Converse", &model_id, body).await?;
    let echo = echo_of(&request);
    let started = call.started;
    if let Some(message) = guard
        .as_ref()
        .and_then(|g| g.input_blocked())
        .map(str::to_string)
    {
        let mut out = ConverseResponse::new(
            "",
            &message,
            &[],
            GUARDRAIL_INTERVENED,
            &Usage::default(),
            millis(started),
        );
        out.trace = guard.and_then(CallGuard::trace);
        out.echo = echo;
        return Ok(with_request_id(Json(out).into_response(), &call.request_id));
    }
    let (_, rx, metering) = start_generation(&state, &call, model, request.into_request()?).await?;
    let done = collect_text(rx, metering).await?;
    let mut stop = converse::stop_reason(done.reason());
    let mut text = done.text.clone();
    let mut calls = done.calls.as_slice();
    if let Some(g) = guard.as_mut() {
        let guarded = g.check_output_with_models(&state, &done.text).await?;
        if guarded.intervened {
            stop = GUARDRAIL_INTERVENED;
        }
        if guarded.blocked {
            calls = &[];
        }
        text = guarded.text;
    }
    let mut out = ConverseResponse::new(
        &done.reasoning,
        &text,
        calls,
        stop,
        &done.usage,
        millis(started),
    );
    out.trace = guard.and_then(CallGuard::trace);
    out.echo = echo;
    Ok(with_request_id(Json(out).into_response(), &call.request_id))
}

pub(crate) async fn converse_stream(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
    body: BodyResult,
) -> Result<Response, BedrockError> {
    let (call, model, request, guard) =
        open_converse(&state, principal, "ConverseStream", &model_id, body).await?;
    let echo = echo_of(&request);
    if guard
        .as_ref()
        .is_some_and(CallGuard::checks_output_with_models)
    {
        return Err(BasaltError::invalid(
            "guardrailConfig",
            "this guardrail checks answers with a model (contextual grounding, denied topics \
             or content filters), which judges whole answers: call Converse for it",
        )
        .into());
    }
    let started = call.started;
    if let Some(message) = guard
        .as_ref()
        .and_then(|g| g.input_blocked())
        .map(str::to_string)
    {
        let trace = guard.and_then(CallGuard::trace);
        let frames = vec![
            frame(events::message_start()),
            frame(events::text_delta(0, &message)),
            frame(events::block_stop(0)),
            frame(events::message_stop_because(GUARDRAIL_INTERVENED)),
            frame(events::metadata_traced(
                &Usage::default(),
                millis(started),
                trace,
                echo,
            )),
        ];
        let frames = stream::iter(frames).map(|f| Ok::<_, Infallible>(Bytes::from(f)));
        return Ok(event_stream_response(frames, &[], &call.request_id));
    }
    let (_, rx, metering) = start_generation(&state, &call, model, request.into_request()?).await?;
    let mut encoder = ConverseStreamEncoder {
        blocks: Blocks::default(),
        guard,
        window: Window::default(),
        text_index: None,
        held: Vec::new(),
        streamed: String::new(),
        reasoning_index: None,
        started,
        echo,
    };
    let opening = vec![frame(events::message_start())];
    let frames = generation_frames(rx, metering, opening, move |event| encoder.encode(event));
    Ok(event_stream_response(frames, &[], &call.request_id))
}

/// Turns a generation's events into `ConverseStream` frames, through its guardrail if it
/// has one: in `sync` mode the answer is held until the guardrail has seen all of it, then
/// sent as it checked out (masked, or the blocked message in place of it); in `async` mode
/// it streams as it comes and the guardrail's verdict ends it.
struct ConverseStreamEncoder {
    /// Text blocks open with their first delta; tool-use blocks with a start event.
    blocks: Blocks,
    guard: Option<CallGuard>,
    /// `sync` mode: the answer's text, released in checked windows.
    window: Window,
    /// `sync` mode: the first text block, where released text goes.
    text_index: Option<usize>,
    /// `sync` mode: tool-use frames and block stops, held until the whole answer is checked.
    held: Vec<HeldBlock>,
    /// What `async` mode has sent of the answer's text, for the guardrail at the end.
    streamed: String,
    /// The reasoning block's index: reasoning is not the answer a guardrail checks, so it
    /// is never held, and neither is its block's end.
    reasoning_index: Option<usize>,
    started: Instant,
    /// The request's `serviceTier` and `performanceConfig`, for the metadata event.
    echo: Echo,
}

enum HeldBlock {
    Frame(Vec<u8>),
    Stop { index: usize },
}

impl ConverseStreamEncoder {
    fn encode(&mut self, event: &GenerateEvent) -> Vec<Vec<u8>> {
        let hold = self.guard.as_ref().is_some_and(CallGuard::holds_output);
        let mut out = Vec::new();
        for step in self.blocks.frame(event) {
            match step {
                BlockEvent::ReasoningStart { index } => self.reasoning_index = Some(index),
                BlockEvent::ReasoningDelta { index, text } => {
                    out.push(frame(events::reasoning_delta(index, text)))
                }
                BlockEvent::Stop { index } if self.reasoning_index == Some(index) => {
                    out.push(frame(events::block_stop(index)))
                }
                BlockEvent::TextStart { .. } => {}
                BlockEvent::TextDelta { index, text } if hold => {
                    let index = *self.text_index.get_or_insert(index);
                    let released = match &self.guard {
                        Some(guard) => self.window.push(text, |s| guard.peek_output(s)),
                        None => None,
                    };
                    if let Some(released) = released {
                        out.push(frame(events::text_delta(index, &released)));
                    }
                }
                BlockEvent::TextDelta { index, text } => {
                    if self.guard.is_some() {
                        self.streamed.push_str(text);
                    }
                    out.push(frame(events::text_delta(index, text)))
                }
                BlockEvent::ToolStart { index, id, name } => {
                    let f = frame(events::tool_start(index, id, name));
                    self.emit_or_hold(hold, f, &mut out);
                }
                BlockEvent::ToolDelta { index, json } => {
                    let f = frame(events::tool_input_delta(index, json));
                    self.emit_or_hold(hold, f, &mut out);
                }
                BlockEvent::Stop { index } if hold => self.held.push(HeldBlock::Stop { index }),
                BlockEvent::Stop { index } => out.push(frame(events::block_stop(index))),
            }
        }
        if let GenerateEvent::Finished { reason, usage, .. } = event {
            if let Some(BlockEvent::Stop { index }) = self.blocks.finish() {
                if hold {
                    self.held.push(HeldBlock::Stop { index });
                } else {
                    out.push(frame(events::block_stop(index)));
                }
            }
            let mut stop = converse::stop_reason(*reason);
            if let Some(mut guard) = self.guard.take() {
                let intervened = if hold {
                    let (rest, verdict) = self.window.finish(&mut guard);
                    out.extend(self.release(&rest, &verdict));
                    verdict.intervened
                } else {
                    guard.check_output(&self.streamed).intervened
                };
                if intervened {
                    stop = GUARDRAIL_INTERVENED;
                }
                out.push(frame(events::message_stop_because(stop)));
                let trace = guard.trace();
                out.push(frame(events::metadata_traced(
                    usage,
                    millis(self.started),
                    trace,
                    self.echo,
                )));
                return out;
            }
            out.push(frame(events::message_stop_because(stop)));
            out.push(frame(events::metadata(
                usage,
                millis(self.started),
                self.echo,
            )));
        }
        out
    }

    fn emit_or_hold(&mut self, hold: bool, f: Vec<u8>, out: &mut Vec<Vec<u8>>) {
        if hold {
            self.held.push(HeldBlock::Frame(f));
        } else {
            out.push(f);
        }
    }

    /// The end of a `sync` answer as the guardrail let it out: the rest of its text in the
    /// first text block, then the held tool-use frames and block stops; or, when it
    /// blocked, its message and the text block's end.
    fn release(&mut self, rest: &str, verdict: &GuardedAnswer) -> Vec<Vec<u8>> {
        let held = std::mem::take(&mut self.held);
        let index = self.text_index.unwrap_or(0);
        if verdict.blocked {
            return vec![
                frame(events::text_delta(index, rest)),
                frame(events::block_stop(index)),
            ];
        }
        let mut out = Vec::new();
        if !rest.is_empty() {
            out.push(frame(events::text_delta(index, rest)));
        }
        for h in held {
            match h {
                HeldBlock::Frame(f) => out.push(f),
                HeldBlock::Stop { index } => out.push(frame(events::block_stop(index))),
            }
        }
        out
    }
}

pub(crate) async fn invoke(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: BodyResult,
) -> Result<Response, BedrockError> {
    check_json_media(&headers)?;
    if let Some(served) = resolve_image_model(&state, &model_id) {
        let call = Call::new(principal, "bedrock", "InvokeModel", "");
        let body = body.map_err(body_error)?;
        let out = images::invoke(&state, &call, served, &body).await?;
        return Ok(with_request_id(Json(out).into_response(), &call.request_id));
    }
    if let Some(served) = resolve_embedder(&state, &model_id) {
        let call = Call::new(principal, "bedrock", "InvokeModel", "");
        let started = call.started;
        let body = body.map_err(body_error)?;
        let (out, tokens) = embeddings::invoke(&state, &call, served, &body).await?;
        let mut resp = with_request_id(Json(out).into_response(), &call.request_id);
        let h = resp.headers_mut();
        for (name, value) in [
            ("x-amzn-bedrock-input-token-count", tokens as u64),
            ("x-amzn-bedrock-invocation-latency", millis(started)),
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
        return Ok(resp);
    }
    let (call, _, rx, metering, guards) = start(
        &state,
        principal,
        "InvokeModel",
        &model_id,
        &headers,
        body,
        parse_llama,
    )
    .await?;
    let started = call.started;
    let done = collect_text(rx, metering).await?;
    let out = WithGuardrail {
        body: invoke::llama_response(&done.text, done.reason(), &done.usage),
        guardrail: guards.body_fields().await,
    };
    let mut resp = with_request_id(Json(out).into_response(), &call.request_id);
    let h = resp.headers_mut();
    for (name, value) in [
        (
            "x-amzn-bedrock-input-token-count",
            done.usage.input_tokens as u64,
        ),
        (
            "x-amzn-bedrock-output-token-count",
            done.usage.output_tokens as u64,
        ),
        ("x-amzn-bedrock-invocation-latency", millis(started)),
    ] {
        h.insert(HeaderName::from_static(name), HeaderValue::from(value));
    }
    Ok(resp)
}

async fn invoke_stream(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    body: BodyResult,
) -> Result<Response, BedrockError> {
    check_json_media(&headers)?;
    // A guardrail holds the answer until it has seen it (Bedrock's synchronous mode).
    let (call, input_tokens, rx, metering, _guards) = start(
        &state,
        principal,
        "InvokeModelWithResponseStream",
        &model_id,
        &headers,
        body,
        parse_llama,
    )
    .await?;
    let started = call.started;
    // Meta's chunks count generated tokens so far; the first chunk names the prompt size.
    let mut first_byte_ms = None;
    let mut chunks_sent = 0u32;
    let frames = generation_frames(rx, metering, Vec::new(), move |event| {
        let native = match event {
            GenerateEvent::Text { text, .. } if !text.is_empty() => {
                first_byte_ms.get_or_insert_with(|| millis(started));
                chunks_sent += 1;
                let prompt = (chunks_sent == 1).then_some(input_tokens);
                invoke::llama_chunk(text, prompt, chunks_sent, None)
            }
            GenerateEvent::Finished { reason, usage, .. } => {
                let prompt = (chunks_sent == 0).then_some(input_tokens);
                let mut last = invoke::llama_chunk("", prompt, usage.output_tokens, Some(*reason));
                let first = *first_byte_ms.get_or_insert_with(|| millis(started));
                last.invocation_metrics =
                    Some(invoke::invocation_metrics(usage, millis(started), first));
                last
            }
            // Native bodies take no tools, so no tool calls come back.
            _ => return Vec::new(),
        };
        let payload = serde_json::to_string(&invoke::chunk_payload(&native)).unwrap_or_default();
        vec![eventstream::event("chunk", payload.as_bytes())]
    });
    Ok(event_stream_response(
        frames,
        &[("x-amzn-bedrock-content-type", "application/json")],
        &call.request_id,
    ))
}

async fn count_tokens(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
    body: BodyResult,
) -> Result<Json<Value>, BedrockError> {
    let body = body.map_err(body_error)?;
    let (prompt, constraints) = wire::parse_json::<CountTokensRequest>(&body)?.into_prompt()?;
    let model = resolve(&state, &model_id)?;
    if let Some(p) = &state.platform {
        p.check_access(&principal, &model.entry.manifest.id).await?;
    }
    let tokens = off_runtime(move || model.engine.tokenize_prompt(&prompt, &constraints)).await??;
    Ok(Json(json!({"inputTokens": tokens.len()})))
}

/// `InvokeModel` bodies are JSON; so are the responses we can produce.
fn check_json_media(headers: &HeaderMap) -> Result<(), BasaltError> {
    let is_json = |name: header::HeaderName, wildcard: bool| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| {
                let v = v.split(';').next().unwrap_or("").trim();
                v.eq_ignore_ascii_case("application/json") || (wildcard && v == "*/*")
            })
    };
    if !is_json(header::CONTENT_TYPE, false) {
        return Err(BasaltError::invalid(
            "contentType",
            "The body must be application/json",
        ));
    }
    if !is_json(header::ACCEPT, true) {
        return Err(BasaltError::invalid(
            "accept",
            "This model can only answer application/json",
        ));
    }
    Ok(())
}

fn foundation_model(manifest: &basalt_catalog::Manifest) -> FoundationModel {
    let names = |mods: &[Modality]| {
        mods.iter()
            .map(|m| {
                match m {
                    Modality::Text => "TEXT",
                    Modality::Image => "IMAGE",
                    Modality::Embedding => "EMBEDDING",
                }
                .to_string()
            })
            .collect()
    };
    FoundationModel {
        id: manifest.id.clone(),
        name: manifest.name.clone(),
        provider: manifest.provider.clone(),
        input_modalities: names(&manifest.input_modalities),
        output_modalities: names(&manifest.output_modalities),
        streaming: manifest.output_modalities.contains(&Modality::Text),
    }
}

async fn list_foundation_models(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Query(filters): Query<ListFilters>,
) -> Result<Json<Value>, BedrockError> {
    let listed = state.listed_models();
    let ids = listed.iter().map(|m| m.id.clone()).collect();
    let usable = state.usable(&principal, ids).await;
    let summaries: Vec<Value> = listed
        .iter()
        .filter(|m| usable.contains(&m.id))
        .map(foundation_model)
        .filter(|m| filters.matches(m))
        .map(|m| control::summary(&state.region, &m))
        .collect();
    Ok(Json(json!({ "modelSummaries": summaries })))
}

async fn get_foundation_model(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(model_id): Path<String>,
) -> Result<Json<Value>, BedrockError> {
    let candidates = wire::model_id_candidates(&model_id);
    let manifest = state
        .listed_models()
        .into_iter()
        .find(|m| candidates.contains(&m.id))
        .ok_or_else(|| BasaltError::model_not_found(&model_id))?;
    let usable = state.usable(&principal, vec![manifest.id.clone()]).await;
    if usable.is_empty() {
        return Err(BasaltError::model_not_found(&model_id).into());
    }
    Ok(Json(
        json!({"modelDetails": control::summary(&state.region, &foundation_model(&manifest))}),
    ))
}

/// A `ConverseStream` event as an event-stream frame.
fn frame(event: converse::ConverseStreamEvent<'_>) -> Vec<u8> {
    let payload = serde_json::to_string(&event).unwrap_or_default();
    eventstream::event(event.name(), payload.as_bytes())
}

/// Drives a generation into event-stream frames: `opening`, then what `encode` makes of
/// each engine event up to and including `Finished` (after its usage is recorded); an engine
/// failure becomes an exception frame and ends the stream.
fn generation_frames(
    rx: EventReceiver,
    metering: Metering,
    opening: Vec<Vec<u8>>,
    encode: impl FnMut(&GenerateEvent) -> Vec<Vec<u8>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let body = stream::unfold(Some((rx, encode, metering)), |state| async move {
        let (mut rx, mut encode, metering) = state?;
        let frames = match rx.recv().await {
            Some(event @ GenerateEvent::Finished { .. }) => {
                metering.settled().await;
                return Some((encode(&event), None));
            }
            Some(GenerateEvent::Failed { error, .. }) => {
                metering.settled().await;
                return Some((vec![wire::stream_exception(&error)], None));
            }
            Some(event) => encode(&event),
            None => {
                let error =
                    BasaltError::internal("the engine stopped before finishing the request");
                return Some((vec![wire::stream_exception(&error)], None));
            }
        };
        Some((frames, Some((rx, encode, metering))))
    });
    stream::iter(opening)
        .chain(body.flat_map(stream::iter))
        .map(|f| Ok(Bytes::from(f)))
}

fn event_stream_response(
    frames: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
    extra_headers: &[(&'static str, &'static str)],
    request_id: &str,
) -> Response {
    let mut resp = Response::new(Body::from_stream(frames));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    for (name, value) in extra_headers {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    with_request_id(resp, request_id)
}
