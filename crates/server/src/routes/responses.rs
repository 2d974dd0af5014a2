//! OpenAI's Responses API: `POST /v1/responses` (stored, continued with
//! `previous_response_id`, streamed as typed events), `GET` and `DELETE /v1/responses/{id}`,
//! and `GET /v1/responses/{id}/input_items`.
//!
//! A response is kept in the platform store as an object of kind `response`, together with
//! the input its model read, so continuing a conversation reads one row: the next request's
//! context is that input followed by the response's output. Every read is the tenant's own;
//! another tenant's id is not found. One fold of the engine's events ([`Encoder`]) makes
//! both the streamed events and the whole response, so the two cannot disagree.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use basalt_auth::Principal;
use basalt_engine::EventReceiver;
use basalt_store::StoredObject;
use basalt_types::{BasaltError, ErrorKind, FinishReason, GenerateEvent};
use basalt_wire::openai::responses::{
    self as wire, Deleted, Item, ItemList, Part, ResponseObject, ResponsesRequest, Sequenced,
    StreamEvent, Truncation,
};
use bytes::Bytes;
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};

use crate::error::{body_error, OpenAiError};
use crate::generation::{request_id, start_generation, unix_now, Call, Metering};
use crate::{AppState, ServedModel};

type Shared = State<Arc<AppState>>;

/// The store's kind for responses.
const KIND: &str = "response";

/// A stored response: the object as returned, and the input its model read (the previous
/// response's conversation, then this request's input, less what truncation dropped).
#[derive(Serialize, Deserialize)]
struct Stored {
    response: ResponseObject,
    input: Vec<Item>,
}

impl Stored {
    /// The conversation a continuation starts from.
    fn conversation(self) -> Vec<Item> {
        let mut items = self.input;
        items.extend(self.response.output);
        items
    }
}

fn not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("Response with id '{id}' not found."),
    )
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<Stored, BasaltError> {
    let platform = state.platform.as_ref().ok_or_else(|| not_found(id))?;
    let object = platform
        .store
        .object(&principal.tenant, KIND, id)
        .await
        .map_err(|e| crate::files::lookup_error(e, not_found(id)))?;
    serde_json::from_str(&object.body)
        .map_err(|e| BasaltError::internal(format!("stored response {id} is unreadable: {e}")))
}

/// Keeps a finished response, when it asked to be kept and the server has a store.
async fn keep(state: &AppState, principal: &Principal, stored: &Stored) -> Result<(), BasaltError> {
    let Some(platform) = state.platform.as_ref().filter(|_| stored.response.store) else {
        return Ok(());
    };
    let body = serde_json::to_string(stored)
        .map_err(|e| BasaltError::internal(format!("cannot store the response: {e}")))?;
    platform
        .store
        .put_object(&StoredObject {
            tenant_id: principal.tenant.clone(),
            kind: KIND.into(),
            id: stored.response.id.clone(),
            created_at: stored.response.created_at as i64,
            body,
        })
        .await
        .map_err(|e| BasaltError::internal(e.to_string()))
}

pub(crate) async fn create(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
    keep_alive: std::time::Duration,
) -> Result<Response, OpenAiError> {
    let body = body.map_err(body_error)?;
    let call = Call::new(principal, "openai", "responses", "resp_").with_body(&state, &body);
    let request: ResponsesRequest = basalt_wire::parse_json(&body)?;
    let settings = request.settings()?;
    let model = state.model(&request.model)?;
    let mut conversation = match &request.previous_response_id {
        Some(id) => load(&state, &call.principal, id)
            .await
            .map_err(|e| e.with_param("previous_response_id"))?
            .conversation(),
        None => Vec::new(),
    };
    conversation.extend(wire::input_items(request.input.as_ref(), request_id)?);
    if conversation.is_empty() {
        return Err(BasaltError::invalid("input", "`input` is required").into());
    }
    let (rx, metering, first) =
        start(&state, &call, &model, &request, &settings, &conversation).await?;
    let response =
        ResponseObject::started(call.request_id.clone(), unix_now(), &request, &settings);
    let encoder = Encoder::new(response, conversation.split_off(first));
    if request.stream {
        let events = stream_events(state, call.principal, encoder, rx, metering);
        return Ok(Sse::new(events)
            .keep_alive(KeepAlive::new().interval(keep_alive))
            .into_response());
    }
    let stored = encoder.run(rx).await;
    metering.settled().await;
    keep(&state, &call.principal, &stored).await?;
    Ok(Json(stored.response).into_response())
}

/// Starts the model on the conversation. Under `truncation: auto`, a conversation too long
/// for the model loses its oldest items (never starting on a call's orphaned result) until
/// it fits; returns the index of the first item kept.
async fn start(
    state: &Arc<AppState>,
    call: &Call,
    model: &Arc<ServedModel>,
    request: &ResponsesRequest,
    settings: &wire::Settings,
    conversation: &[Item],
) -> Result<(EventReceiver, Metering, usize), BasaltError> {
    let mut first = 0;
    loop {
        let messages = wire::messages(request.instructions.as_deref(), &conversation[first..]);
        match start_generation(state, call, Arc::clone(model), settings.request(messages)).await {
            Ok((_, rx, metering)) => return Ok((rx, metering, first)),
            Err(e)
                if e.kind == ErrorKind::ContextLengthExceeded
                    && request.truncation == Some(Truncation::Auto)
                    && first + 1 < conversation.len() =>
            {
                first += 1;
                while first + 1 < conversation.len()
                    && matches!(conversation[first], Item::FunctionCallOutput { .. })
                {
                    first += 1;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The item being streamed.
enum Open {
    Text {
        id: String,
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Folds the engine's events into the response, and into the stream events that tell it.
struct Encoder {
    stored: Stored,
    open: Option<Open>,
    done: bool,
}

impl Encoder {
    fn new(response: ResponseObject, input: Vec<Item>) -> Self {
        Self {
            stored: Stored { response, input },
            open: None,
            done: false,
        }
    }

    fn opening(&self) -> Vec<StreamEvent> {
        let response = self.stored.response.clone();
        vec![
            StreamEvent::Created {
                response: response.clone(),
            },
            StreamEvent::InProgress { response },
        ]
    }

    /// The index the next output item gets.
    fn next_index(&self) -> usize {
        self.stored.response.output.len()
    }

    /// Ends the open item (as `status`), adding it to the output.
    fn close(&mut self, status: &str, events: &mut Vec<StreamEvent>) {
        let output_index = self.next_index();
        let item = match self.open.take() {
            None => return,
            Some(Open::Text { id, text }) => {
                let part = Part::OutputText {
                    text: text.clone(),
                    annotations: Vec::new(),
                };
                events.push(StreamEvent::OutputTextDone {
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    text: text.clone(),
                    logprobs: Vec::new(),
                });
                events.push(StreamEvent::ContentPartDone {
                    item_id: id.clone(),
                    output_index,
                    content_index: 0,
                    part,
                });
                let mut item = Item::answer(id, text);
                if let Item::Message { status: s, .. } = &mut item {
                    *s = status.into();
                }
                item
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
            }) => {
                events.push(StreamEvent::FunctionCallArgumentsDone {
                    item_id: id.clone(),
                    output_index,
                    name: name.clone(),
                    arguments: arguments.clone(),
                });
                Item::FunctionCall {
                    id,
                    call_id,
                    name,
                    arguments,
                    status: "completed".into(),
                }
            }
        };
        events.push(StreamEvent::OutputItemDone {
            output_index,
            item: item.clone(),
        });
        self.stored.response.output.push(item);
    }

    fn event(&mut self, event: GenerateEvent) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        if self.done {
            return events;
        }
        match event {
            // The Responses API returns reasoning as encrypted or summarised items, which
            // Basalt does not make: a thinking model's answer comes without its reasoning.
            GenerateEvent::Reasoning { .. } => {}
            GenerateEvent::Text { text, .. } => {
                if !matches!(self.open, Some(Open::Text { .. })) {
                    self.close("completed", &mut events);
                    let id = request_id("msg_");
                    let mut item = Item::answer(id.clone(), String::new());
                    if let Item::Message {
                        status, content, ..
                    } = &mut item
                    {
                        *status = "in_progress".into();
                        content.clear();
                    }
                    events.push(StreamEvent::OutputItemAdded {
                        output_index: self.next_index(),
                        item,
                    });
                    events.push(StreamEvent::ContentPartAdded {
                        item_id: id.clone(),
                        output_index: self.next_index(),
                        content_index: 0,
                        part: Part::OutputText {
                            text: String::new(),
                            annotations: Vec::new(),
                        },
                    });
                    self.open = Some(Open::Text {
                        id,
                        text: String::new(),
                    });
                }
                if let Some(Open::Text { id, text: all }) = &mut self.open {
                    all.push_str(&text);
                    events.push(StreamEvent::OutputTextDelta {
                        item_id: id.clone(),
                        output_index: self.stored.response.output.len(),
                        content_index: 0,
                        delta: text,
                        logprobs: Vec::new(),
                    });
                }
            }
            GenerateEvent::ToolCallStart {
                id: call_id, name, ..
            } => {
                self.close("completed", &mut events);
                let id = request_id("fc_");
                events.push(StreamEvent::OutputItemAdded {
                    output_index: self.next_index(),
                    item: Item::FunctionCall {
                        id: id.clone(),
                        call_id: call_id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        status: "in_progress".into(),
                    },
                });
                self.open = Some(Open::Call {
                    id,
                    call_id,
                    name,
                    arguments: String::new(),
                });
            }
            GenerateEvent::ToolArguments { json, .. } => {
                let output_index = self.next_index();
                if let Some(Open::Call { id, arguments, .. }) = &mut self.open {
                    arguments.push_str(&json);
                    events.push(StreamEvent::FunctionCallArgumentsDelta {
                        item_id: id.clone(),
                        output_index,
                        delta: json,
                    });
                }
            }
            GenerateEvent::Finished { reason, usage, .. } => {
                let cut_short = matches!(
                    reason,
                    FinishReason::MaxTokens
                        | FinishReason::ContextWindow
                        | FinishReason::GuardrailIntervened
                );
                self.close(
                    if cut_short { "incomplete" } else { "completed" },
                    &mut events,
                );
                self.stored.response.finish(reason, &usage);
                let response = self.stored.response.clone();
                events.push(match response.status.as_str() {
                    "incomplete" => StreamEvent::Incomplete { response },
                    _ => StreamEvent::Completed { response },
                });
                self.done = true;
            }
            GenerateEvent::Failed { error, usage } => {
                self.close("incomplete", &mut events);
                self.stored.response.fail(&error, &usage);
                events.push(StreamEvent::Failed {
                    response: self.stored.response.clone(),
                });
                self.done = true;
            }
        }
        events
    }

    /// The end of a generation whose events stopped without one.
    fn cut_off(&mut self) -> Vec<StreamEvent> {
        self.event(GenerateEvent::Failed {
            error: BasaltError::internal("the engine stopped before finishing the request"),
            usage: Default::default(),
        })
    }

    /// Reads the whole generation: the response as stored.
    async fn run(mut self, mut rx: EventReceiver) -> Stored {
        while !self.done {
            match rx.recv().await {
                Some(event) => drop(self.event(event)),
                None => drop(self.cut_off()),
            }
        }
        self.stored
    }
}

fn sse(event: &StreamEvent, sequence_number: u64) -> Event {
    let data = serde_json::to_string(&Sequenced {
        event,
        sequence_number,
    })
    .unwrap_or_default();
    Event::default().event(event.name()).data(data)
}

/// The stream of events. The last one (`response.completed`, `.incomplete` or `.failed`)
/// goes out only once the usage is recorded and the response stored. Dropping the stream
/// (client gone) drops the receiver, which cancels the generation; nothing is stored then.
fn stream_events(
    state: Arc<AppState>,
    principal: Principal,
    encoder: Encoder,
    rx: EventReceiver,
    metering: Metering,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let pending = encoder.opening();
    let context = (state, principal, encoder, rx, Some(metering), pending, 0u64);
    stream::unfold(context, |mut c| async move {
        let (state, principal, encoder, rx, metering, pending, sequence) = &mut c;
        loop {
            if !pending.is_empty() {
                let event = pending.remove(0);
                let terminal = matches!(
                    event,
                    StreamEvent::Completed { .. }
                        | StreamEvent::Incomplete { .. }
                        | StreamEvent::Failed { .. }
                );
                if terminal {
                    if let Some(m) = metering.take() {
                        m.settled().await;
                    }
                    if let Err(e) = keep(state, principal, &encoder.stored).await {
                        tracing::error!(response = %encoder.stored.response.id, error = %e,
                                        "cannot store the response");
                    }
                }
                let out = sse(&event, *sequence);
                *sequence += 1;
                return Some((Ok(out), c));
            }
            if encoder.done {
                return None;
            }
            let events = match rx.recv().await {
                Some(event) => encoder.event(event),
                None => encoder.cut_off(),
            };
            pending.extend(events);
        }
    })
}

pub(crate) async fn get(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ResponseObject>, OpenAiError> {
    Ok(Json(load(&state, &principal, &id).await?.response))
}

pub(crate) async fn delete(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let platform = state.platform.as_ref().ok_or_else(|| not_found(&id))?;
    platform
        .store
        .delete_object(&principal.tenant, KIND, &id)
        .await
        .map_err(|e| crate::files::lookup_error(e, not_found(&id)))?;
    Ok(Json(Deleted {
        id: &id,
        object: "response",
        deleted: true,
    })
    .into_response())
}

#[derive(Deserialize)]
pub(crate) struct ItemsQuery {
    limit: Option<usize>,
    order: Option<String>,
    after: Option<String>,
}

pub(crate) async fn input_items(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    query: Result<Query<ItemsQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let Query(q) = query.map_err(|e| BasaltError::invalid("query", e.body_text()))?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(BasaltError::invalid("limit", "`limit` is 1 to 100").into());
    }
    let mut items = load(&state, &principal, &id).await?.input;
    match q.order.as_deref() {
        None | Some("desc") => items.reverse(),
        Some("asc") => {}
        Some(_) => return Err(BasaltError::invalid("order", "`order` is asc or desc").into()),
    }
    let start = match &q.after {
        Some(after) => {
            items.iter().position(|i| i.id() == after).ok_or_else(|| {
                BasaltError::invalid("after", format!("no input item `{after}` in this response"))
            })? + 1
        }
        None => 0,
    };
    let page = &items[start.min(items.len())..];
    let (page, has_more) = match page.len() > limit {
        true => (&page[..limit], true),
        false => (page, false),
    };
    Ok(Json(ItemList {
        object: "list",
        data: page,
        first_id: page.first().map(Item::id),
        last_id: page.last().map(Item::id),
        has_more,
    })
    .into_response())
}
