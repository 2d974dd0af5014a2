//! Retrieve and generate: a question answered by a chat model from a knowledge base's
//! passages, with citations and a conversation kept per session.
//!
//! The passages are found as `Retrieve` finds them; the model is asked through the
//! `Converse` route (so access, quotas, metering and a guardrail apply as to any call),
//! with a prompt holding the numbered passages. Citations are attributed after the fact:
//! each sentence of the answer is embedded and cited to the retrieved passages nearest it,
//! which works with any model, however small, rather than trusting it to write citation
//! markup. A session keeps the turns so far (stored, expiring), and a follow-up question
//! is asked after them.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use basalt_auth::Principal;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::bedrock::eventstream;
use basalt_wire::bedrock::knowledge::{
    Citation, GeneratedResponsePart, GenerationConfiguration, KnowledgeBase, RagOutput,
    RetrieveAndGenerateRequest, RetrieveAndGenerateResponse, RetrievedReference, Span,
    TextResponsePart,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::generation::Call;
use crate::knowledge::{self as kb, Found, KB_KIND};
use crate::AppState;

/// The store's kind for sessions.
const SESSION_KIND: &str = "kb-session";
/// How long a session is kept after its last turn.
const SESSION_TTL_SECS: i64 = 24 * 3600;
/// Turns of a session replayed before a follow-up question.
const TURNS_KEPT: usize = 5;
/// A sentence cites the passages whose similarity to it is within this of the best one's.
const CITATION_MARGIN: f32 = 0.05;
/// At most this many passages back one part of the answer.
const REFERENCES_PER_PART: usize = 3;

const DEFAULT_PROMPT: &str = "You answer questions using the search results below. Use \
only what they say; if they do not hold the answer, say that you could not find it. Keep \
the answer short.\n\nSearch results:\n$search_results$";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Session {
    knowledge_base_id: String,
    turns: Vec<(String, String)>,
    expires_at: i64,
}

fn session_not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("Session with Id {id} is not valid. Please check and try again."),
    )
}

/// A question made ready to ask: its knowledge base, session, the passages found and the
/// `Converse` body that asks the model.
struct Prepared {
    knowledge_base: KnowledgeBase,
    session_id: String,
    session: Session,
    call: Call,
    question: String,
    found: Vec<Found>,
    model_id: String,
    body: Value,
}

async fn prepare(
    state: &Arc<AppState>,
    principal: &Principal,
    request: RetrieveAndGenerateRequest,
) -> Result<Prepared, BasaltError> {
    let config = request.retrieve_and_generate_configuration.ok_or_else(|| {
        BasaltError::invalid(
            "retrieveAndGenerateConfiguration",
            "retrieveAndGenerateConfiguration is required",
        )
    })?;
    if config.kind != "KNOWLEDGE_BASE" {
        return Err(BasaltError::invalid(
            "retrieveAndGenerateConfiguration.type",
            format!("{} is not available here (use KNOWLEDGE_BASE)", config.kind),
        ));
    }
    let kb_config = config.knowledge_base_configuration.ok_or_else(|| {
        BasaltError::invalid(
            "retrieveAndGenerateConfiguration.knowledgeBaseConfiguration",
            "a KNOWLEDGE_BASE request needs knowledgeBaseConfiguration",
        )
    })?;
    let question = request.input.text;
    if question.trim().is_empty() {
        return Err(BasaltError::invalid("input.text", "the question is empty"));
    }
    let tenant = principal.tenant.as_str();
    let kb_id = kb_config.knowledge_base_id.as_str();
    let knowledge_base: KnowledgeBase =
        kb::load(state, tenant, KB_KIND, kb_id, kb::kb_not_found(kb_id)).await?;
    let (session_id, session) = match request.session_id {
        Some(id) => {
            let session: Session =
                kb::load(state, tenant, SESSION_KIND, &id, session_not_found(&id)).await?;
            if session.expires_at < basalt_store::now() || session.knowledge_base_id != kb_id {
                return Err(session_not_found(&id));
            }
            (id, session)
        }
        None => (
            uuid_like(),
            Session {
                knowledge_base_id: kb_id.to_string(),
                ..Session::default()
            },
        ),
    };
    let call = Call::new(principal.clone(), "bedrock", "retrieveAndGenerate", "rag-");
    let (found, _) = kb::search(
        state,
        &call,
        &knowledge_base,
        question.clone(),
        &kb_config
            .retrieval_configuration
            .vector_search_configuration,
        0,
    )
    .await?;
    let body = converse_body(
        &kb_config.generation_configuration,
        &session.turns,
        &question,
        &found,
    )?;
    let model_id = kb_config
        .model_arn
        .rsplit('/')
        .next()
        .unwrap_or(&kb_config.model_arn)
        .to_string();
    Ok(Prepared {
        knowledge_base,
        session_id,
        session,
        call,
        question,
        found,
        model_id,
        body,
    })
}

/// What the `Converse` routes take: the call is the caller's own, as if sent over HTTP.
type ConverseArgs = (
    State<Arc<AppState>>,
    Extension<Principal>,
    Path<String>,
    Result<Bytes, axum::extract::rejection::BytesRejection>,
);

impl Prepared {
    fn converse_args(&self, state: &Arc<AppState>) -> ConverseArgs {
        (
            State(Arc::clone(state)),
            Extension(self.call.principal.clone()),
            Path(self.model_id.clone()),
            Ok(Bytes::from(self.body.to_string())),
        )
    }

    /// Records the turn in the session (the last few kept, the expiry pushed back).
    async fn remember(&mut self, state: &AppState, answer: &str) -> Result<(), BasaltError> {
        self.session
            .turns
            .push((std::mem::take(&mut self.question), answer.to_string()));
        let excess = self.session.turns.len().saturating_sub(TURNS_KEPT);
        self.session.turns.drain(..excess);
        self.session.expires_at = basalt_store::now() + SESSION_TTL_SECS;
        kb::save(
            state,
            &self.call.principal.tenant,
            SESSION_KIND,
            &self.session_id,
            &self.session,
        )
        .await
    }
}

/// Answers a `RetrieveAndGenerate` request.
pub(crate) async fn retrieve_and_generate(
    state: &Arc<AppState>,
    principal: &Principal,
    request: RetrieveAndGenerateRequest,
) -> Result<RetrieveAndGenerateResponse, BasaltError> {
    let mut prepared = prepare(state, principal, request).await?;
    let (s, p, m, b) = prepared.converse_args(state);
    let response = crate::routes::bedrock::converse(s, p, m, b)
        .await
        .map_err(|e| e.error)?;
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| BasaltError::internal(e.to_string()))?;
    let answer: Value =
        serde_json::from_slice(&bytes).map_err(|e| BasaltError::internal(e.to_string()))?;
    let text = answer["output"]["message"]["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default();
    let intervened = answer["stopReason"].as_str() == Some("guardrail_intervened");
    let citations = if intervened {
        Vec::new()
    } else {
        cite(state, &prepared, &text).await?
    };
    prepared.remember(state, &text).await?;
    Ok(RetrieveAndGenerateResponse {
        output: RagOutput { text },
        citations,
        session_id: prepared.session_id,
        guardrail_action: intervened.then_some("INTERVENED"),
    })
}

/// The exceptions `RetrieveAndGenerateStream`'s union has; another is sent as the internal
/// one.
const STREAM_EXCEPTIONS: &[&str] = &[
    "accessDeniedException",
    "badGatewayException",
    "conflictException",
    "dependencyFailedException",
    "internalServerException",
    "resourceNotFoundException",
    "serviceQuotaExceededException",
    "throttlingException",
    "validationException",
];

/// Answers a `RetrieveAndGenerateStream` request: the answer's text as `output` events as
/// the model writes it, then a `citation` event per cited part, the session id in the
/// `x-amzn-bedrock-knowledge-base-session-id` header. A client that leaves stops the
/// generation.
pub(crate) async fn retrieve_and_generate_stream(
    state: &Arc<AppState>,
    principal: &Principal,
    request: RetrieveAndGenerateRequest,
) -> Result<Response, BasaltError> {
    let mut prepared = prepare(state, principal, request).await?;
    let (s, p, m, b) = prepared.converse_args(state);
    let response = crate::routes::bedrock::converse_stream(s, p, m, b)
        .await
        .map_err(|e| e.error)?;
    let session_header = HeaderValue::from_str(&prepared.session_id)
        .map_err(|e| BasaltError::internal(e.to_string()))?;
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let mut upstream = response.into_body().into_data_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut text = String::new();
        let mut intervened = false;
        'read: while let Some(chunk) = upstream.next().await {
            let Ok(chunk) = chunk else { break };
            buffer.extend_from_slice(&chunk);
            let Ok((messages, used)) = eventstream::decode_prefix(&buffer) else {
                break;
            };
            buffer.drain(..used);
            for m in messages {
                let frame = match (m.header(":message-type"), m.header(":event-type")) {
                    (Some("event"), Some("contentBlockDelta")) => {
                        let delta: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                        let Some(piece) = delta["delta"]["text"].as_str() else {
                            continue;
                        };
                        text.push_str(piece);
                        eventstream::event(
                            "output",
                            json!({ "text": piece }).to_string().as_bytes(),
                        )
                    }
                    (Some("event"), Some("messageStop")) => {
                        let stop: Value = serde_json::from_slice(&m.payload).unwrap_or_default();
                        intervened = stop["stopReason"].as_str() == Some("guardrail_intervened");
                        continue;
                    }
                    (Some("exception"), _) => {
                        let kind = m
                            .header(":exception-type")
                            .filter(|k| STREAM_EXCEPTIONS.contains(k))
                            .unwrap_or("internalServerException");
                        let _ = tx
                            .send(Bytes::from(eventstream::exception(kind, &m.payload)))
                            .await;
                        return;
                    }
                    _ => continue,
                };
                if tx.send(Bytes::from(frame)).await.is_err() {
                    // The client left: dropping the upstream body cancels the generation.
                    break 'read;
                }
            }
        }
        drop(upstream);
        if tx.is_closed() {
            return;
        }
        let mut tail = Vec::new();
        if intervened {
            tail.push(eventstream::event(
                "guardrail",
                br#"{"action":"INTERVENED"}"#,
            ));
        } else {
            match cite(&state, &prepared, &text).await {
                Ok(citations) => {
                    for c in citations {
                        let payload = serde_json::to_vec(&c).unwrap_or_default();
                        tail.push(eventstream::event("citation", &payload));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "citations for a streamed answer failed"),
            }
        }
        if let Err(e) = prepared.remember(&state, &text).await {
            tracing::error!(error = %e, "cannot record a knowledge base session's turn");
        }
        for frame in tail {
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
    });
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(frames));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    headers.insert(
        HeaderName::from_static("x-amzn-bedrock-knowledge-base-session-id"),
        session_header,
    );
    Ok(response)
}

/// An id shaped like Bedrock's session ids (a UUID), from the request-id generator.
fn uuid_like() -> String {
    let hex: String = crate::generation::request_id("")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_lowercase())
        .chain(std::iter::repeat('0'))
        .take(32)
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The `Converse` body that asks the model: the prompt template with the passages (and
/// the question, where the template places it), after the session's turns.
fn converse_body(
    generation: &GenerationConfiguration,
    turns: &[(String, String)],
    question: &str,
    found: &[Found],
) -> Result<Value, BasaltError> {
    let results: String = found
        .iter()
        .enumerate()
        .map(|(i, f)| format!("[{}] {}\n", i + 1, f.result.content.text.trim()))
        .collect();
    let template = generation
        .prompt_template
        .as_ref()
        .and_then(|t| t.text_prompt_template.as_deref())
        .unwrap_or(DEFAULT_PROMPT);
    if !template.contains("$search_results$") {
        return Err(BasaltError::invalid(
            "generationConfiguration.promptTemplate.textPromptTemplate",
            "the prompt template must contain $search_results$",
        ));
    }
    let filled = template
        .replace("$search_results$", &results)
        .replace("$output_format_instructions$", "");
    let mut messages = Vec::new();
    for (q, a) in turns {
        messages.push(json!({"role": "user", "content": [{"text": q}]}));
        if !a.trim().is_empty() {
            messages.push(json!({"role": "assistant", "content": [{"text": a}]}));
        }
    }
    // A template that places the question is the whole prompt; otherwise it is the system
    // prompt and the question follows as the user's turn.
    let system = if template.contains("$query$") {
        messages.push(
            json!({"role": "user", "content": [{"text": filled.replace("$query$", question)}]}),
        );
        None
    } else {
        messages.push(json!({"role": "user", "content": [{"text": question}]}));
        Some(json!([{ "text": filled }]))
    };
    let mut body = json!({ "messages": messages });
    if let Some(system) = system {
        body["system"] = system;
    }
    if let Some(config) = generation
        .inference_config
        .text_inference_config
        .as_ref()
        .filter(|c| !c.is_null())
    {
        body["inferenceConfig"] = config.clone();
    }
    if let Some(fields) = &generation.additional_model_request_fields {
        body["additionalModelRequestFields"] = Value::Object(fields.clone());
    }
    if let Some(g) = &generation.guardrail_configuration {
        body["guardrailConfig"] =
            json!({"guardrailIdentifier": g.guardrail_id, "guardrailVersion": g.guardrail_version});
    }
    Ok(body)
}

/// Cites each run of sentences to the retrieved passages nearest it.
async fn cite(
    state: &Arc<AppState>,
    prepared: &Prepared,
    text: &str,
) -> Result<Vec<Citation>, BasaltError> {
    let (call, knowledge_base, found) = (&prepared.call, &prepared.knowledge_base, &prepared.found);
    let spans = basalt_knowledge::sentence_spans(text);
    if spans.is_empty() || found.is_empty() {
        return Ok(Vec::new());
    }
    let chars: Vec<char> = text.chars().collect();
    let pieces: Vec<String> = spans
        .iter()
        .map(|&(s, e)| chars[s..e].iter().collect())
        .collect();
    let served = kb::embedder_of(state, knowledge_base)?;
    let vectors = kb::embed_texts(state, call, &served, pieces).await?;
    // Per sentence: the passages it cites, best first.
    let cited: Vec<Vec<usize>> = vectors
        .iter()
        .map(|v| {
            let mut scored: Vec<(f32, usize)> = found
                .iter()
                .enumerate()
                .map(|(i, f)| (dot(v, &f.vector), i))
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            let best = scored.first().map_or(0.0, |s| s.0);
            scored
                .into_iter()
                .take_while(|(score, _)| *score >= best - CITATION_MARGIN)
                .take(REFERENCES_PER_PART)
                .map(|(_, i)| i)
                .collect()
        })
        .collect();
    // Consecutive sentences citing the same passages are one part.
    let mut citations: Vec<Citation> = Vec::new();
    let mut last: Option<&Vec<usize>> = None;
    for (&(s, e), refs) in spans.iter().zip(&cited) {
        if let (Some(prev), Some(part)) = (last, citations.last_mut()) {
            if prev == refs {
                let span = &mut part.generated_response_part.text_response_part;
                span.span.end = e - 1;
                span.text = chars[span.span.start..e].iter().collect();
                continue;
            }
        }
        citations.push(Citation {
            generated_response_part: GeneratedResponsePart {
                text_response_part: TextResponsePart {
                    text: chars[s..e].iter().collect(),
                    span: Span {
                        start: s,
                        end: e - 1,
                    },
                },
            },
            retrieved_references: refs
                .iter()
                .filter_map(|&i| found.get(i))
                .map(|f| RetrievedReference {
                    content: f.result.content.clone(),
                    location: f.result.location.clone(),
                    metadata: f.result.metadata.clone(),
                })
                .collect(),
        });
        last = Some(refs);
    }
    Ok(citations)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_look_like_uuids() {
        let id = uuid_like();
        let parts: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
    }
}
