//! A generation's lifecycle, end to end, for every API surface: model access, quota
//! admission, the usage record begun at admission, the engine's queue in the tenant's fair
//! lane, metering when the sequence ends however it ends (durable before the response's
//! last bytes), quota settlement, metrics and invocation logs. A route parses its dialect,
//! calls [`start_generation`], and encodes the events; a new policy step (a guardrail)
//! plugs in here, once, for all of them.
//!
//! This module never knows a dialect's shapes.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use basalt_auth::Principal;
use basalt_engine::{Accounting, Admission, EventReceiver, Outcome, Priority};
use basalt_store::UsageRecord;
use basalt_types::{
    BasaltError, FinishReason, GenerateEvent, GenerateRequest, TokenLogprob, ToolCall, Usage,
};
use tokio::sync::oneshot;

use crate::offload::off_runtime;
use crate::{invocation_log, metrics, platform, AppState, ServedModel};

/// Who made a request, through which surface, and when: what metering needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub principal: Principal,
    /// The request body, kept while invocation logging is on: whether this tenant logs
    /// is read with the rest of its record at admission.
    pub input_body: Option<bytes::Bytes>,
    /// `openai`, `anthropic`, `bedrock`.
    pub surface: &'static str,
    /// The API operation (`chat.completions`, `messages`, `Converse`, ...).
    pub operation: &'static str,
    pub request_id: String,
    pub started: Instant,
    /// The guardrail verdicts on this call's answers, one per sequence in the order they
    /// are started, for the invocation log: a guarded sequence's log waits for its verdict.
    pub guardrail_verdicts: Arc<Mutex<VecDeque<oneshot::Receiver<GuardrailVerdict>>>>,
    /// Interactive, or background work (a batch job's record, a Bedrock `flex` request)
    /// that runs below interactive work at the batch price.
    pub tier: Tier,
}

/// How urgent a call is, and what it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Tier {
    #[default]
    Standard,
    /// Bedrock's `serviceTier: flex`: a request answered when capacity allows.
    Flex,
    /// A record of a batch job.
    Batch,
}

impl Tier {
    pub fn background(self) -> bool {
        self != Tier::Standard
    }
}

tokio::task_local! {
    /// The tier of the calls a background job makes: set only by the server around a job's
    /// records ([`in_tier`]), never by a request, so no client can claim the batch price.
    static TIER: Tier;
}

/// Runs `f` with every call it makes in `tier`: a job runs its records through the same
/// route code as HTTP requests, and their calls come out as the job's.
pub(crate) async fn in_tier<F: std::future::Future>(tier: Tier, f: F) -> F::Output {
    TIER.scope(tier, f).await
}

/// What background work costs against the same request made interactively (Bedrock and
/// OpenAI both bill batch inference at half the on-demand price).
pub(crate) const BATCH_PRICE: f64 = 0.5;

/// What a guardrail made of one answer, for the invocation log: the text the API returned,
/// whether it intervened or blocked, and the trace (Bedrock's `guardrail` trace object).
#[derive(Debug)]
pub(crate) struct GuardrailVerdict {
    pub text: String,
    pub intervened: bool,
    pub blocked: bool,
    pub trace: serde_json::Value,
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
            surface,
            operation,
            request_id,
            started: Instant::now(),
            guardrail_verdicts: Arc::default(),
            tier: TIER.try_with(|t| *t).unwrap_or_default(),
        }
    }

    pub fn with_tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    /// The cost of `usage` on `model_id` for this call, at the batch price for a batch.
    pub fn cost(
        &self,
        platform: Option<&platform::Platform>,
        model_id: &str,
        usage: &Usage,
    ) -> f64 {
        let cost = platform.map_or(0.0, |p| p.cost(model_id, usage));
        if self.tier.background() {
            cost * BATCH_PRICE
        } else {
            cost
        }
    }

    /// Keeps the body (a reference, not a copy) for the invocation log, when the server
    /// logs invocations; admission reads whether this tenant does.
    pub fn with_body(mut self, state: &AppState, body: &bytes::Bytes) -> Self {
        if state.invocation_log.is_some() && self.principal.managed {
            self.input_body = Some(body.clone());
        }
        self
    }
}

/// Resolves when the request's usage is recorded. Routes await it before sending the last
/// bytes of a response, so an answered request is always in the usage records.
pub(crate) struct Metering(oneshot::Receiver<()>);

impl Metering {
    /// Nothing to record: an answer given without the model (a guardrail's blocked-input
    /// message).
    pub fn none() -> Self {
        let (done, settled) = oneshot::channel();
        let _ = done.send(());
        Metering(settled)
    }

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
    let platform = state.platform.as_deref();
    let principal = &call.principal;
    // The tenant, its grants and quotas come from the store's cache, at once when warm.
    let tenant = match platform {
        Some(p) if principal.managed => p.store.tenant(&principal.tenant).await.ok(),
        _ => None,
    };
    if let Some(p) = platform {
        p.check_access(principal, &model_id).await?;
    }
    // Tokenising is the blocking pool's work, not the runtime's.
    let engine_model = Arc::clone(&model);
    let prepared = off_runtime(move || engine_model.engine.prepare(request)).await??;
    let (lane, reservation, begun) = match platform {
        Some(p) => {
            let tokens = (prepared.prompt_tokens.len() + prepared.max_tokens) as u64;
            let r = p.admit(principal, &model_id, tokens).await?;
            let lane = p.lane(principal, tenant.as_ref()).await;
            (lane, r, begin_usage(p, call, &model_id, &prepared).await)
        }
        None => (None, None, None),
    };
    let logs = tenant.is_some_and(|t| t.log_invocations);
    let input_tokens = prepared.prompt_tokens.len() as u32;
    let (acc_tx, acc_rx) = oneshot::channel();
    let admission = Admission {
        tenant: lane,
        accounting: Some(acc_tx),
        priority: match call.tier.background() {
            true => Priority::Batch,
            false => Priority::Interactive,
        },
    };
    let rx = match model.engine.enqueue(prepared, admission) {
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
            let record = usage_record(call, &model_id, &acc, 0.0);
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
        (Some(_), Some(_)) if logs => {
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
/// none. A failure is logged: the request still runs, and is recorded whole when it ends.
async fn begin_usage(
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
    let mut record = usage_record(call, model_id, &acc, 0.0);
    record.status = basalt_store::IN_PROGRESS.to_string();
    match platform.store.begin_usage(&record).await {
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
    let cost = call.cost(state.platform.as_deref(), model_id, &usage);
    let mut record = usage_record(call, model_id, &acc, cost);
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
    let written = match begun {
        Some(id) => p.store.complete_usage(id, &record).await,
        None => p.store.record_usage(&record).await,
    };
    if let Some(r) = reservation {
        p.settle(r, used, cost);
    }
    if let Err(e) = written {
        tracing::error!(request = %record.request_id, error = %e, "cannot record usage");
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
    transcript: Option<oneshot::Receiver<Answer>>,
) -> Metering {
    let (done_tx, done_rx) = oneshot::channel();
    // This sequence's guardrail verdict, if a guardrail checks it.
    let verdict = call
        .guardrail_verdicts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop_front();
    tokio::spawn(async move {
        if let Ok(acc) = accounting.await {
            if let (Some(t), Some(log)) = (transcript, state.invocation_log.clone()) {
                match verdict {
                    // The verdict comes after the sequence ends, and the route may wait
                    // for this metering first: the guarded log is written on its own.
                    Some(verdict) => {
                        let (state, call, model_id) =
                            (Arc::clone(&state), call.clone(), model_id.clone());
                        let usage = acc.usage;
                        tokio::spawn(async move {
                            if let Ok(t) = t.await {
                                let verdict = verdict.await.ok();
                                let answer = guarded_answer(t, verdict.as_ref());
                                write_invocation_log(
                                    &state, &log, &call, &model_id, usage, answer, verdict,
                                )
                                .await;
                            }
                        });
                    }
                    None => {
                        if let Ok(t) = t.await {
                            write_invocation_log(
                                &state, &log, &call, &model_id, acc.usage, t, None,
                            )
                            .await;
                        }
                    }
                }
            }
            let cost = call.cost(state.platform.as_deref(), &model_id, &acc.usage);
            let record = usage_record(&call, &model_id, &acc, cost);
            persist_usage(&state, record, reservation, begun).await;
        }
        let _ = done_tx.send(());
    });
    Metering(done_rx)
}

/// A generation's events folded into its whole answer: the one fold of the event stream,
/// which the non-streaming routes, OpenAI's choices and the invocation log all use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Answer {
    /// A thinking model's reasoning, before its answer.
    pub reasoning: String,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub calls: Vec<ToolCall>,
    /// Set when the generation finished; `None` while it runs, or if it failed.
    pub finish: Option<FinishReason>,
    pub usage: Usage,
    pub stop_sequence: Option<String>,
    pub error: Option<BasaltError>,
}

impl Answer {
    /// Folds one event in; true once the generation has ended, finished or failed.
    pub fn apply(&mut self, event: &GenerateEvent) -> bool {
        match event {
            GenerateEvent::Reasoning { text } => {
                self.reasoning.push_str(text);
                false
            }
            GenerateEvent::Text { text, logprobs } => {
                self.text.push_str(text);
                self.logprobs.extend(logprobs.iter().cloned());
                false
            }
            GenerateEvent::ToolCallStart { id, name, .. } => {
                self.calls.push(ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
                false
            }
            GenerateEvent::ToolArguments { index, json } => {
                if let Some(call) = self.calls.get_mut(*index as usize) {
                    call.arguments.push_str(json);
                }
                false
            }
            GenerateEvent::Finished {
                reason,
                usage,
                stop_sequence,
            } => {
                self.finish = Some(*reason);
                self.usage = *usage;
                self.stop_sequence.clone_from(stop_sequence);
                true
            }
            GenerateEvent::Failed { error, usage } => {
                self.error = Some(error.clone());
                self.usage = *usage;
                true
            }
        }
    }

    /// Reads a generation to its end: its answer, or the error it failed with.
    pub async fn collect(mut rx: EventReceiver) -> Result<Answer, BasaltError> {
        let mut answer = Answer::default();
        while let Some(event) = rx.recv().await {
            if answer.apply(&event) {
                break;
            }
        }
        match (answer.error.take(), answer.finish) {
            (Some(e), _) => Err(e),
            (None, Some(_)) => Ok(answer),
            (None, None) => Err(BasaltError::internal(
                "the engine stopped before finishing the request",
            )),
        }
    }

    /// Why it finished (a collected answer always has a reason).
    pub fn reason(&self) -> FinishReason {
        self.finish.unwrap_or(FinishReason::EndOfTurn)
    }
}

/// Collects a whole generation; returns once its usage is recorded, whatever the outcome,
/// so the response that follows is never ahead of the bill.
pub(crate) async fn collect_text(
    rx: EventReceiver,
    metering: Metering,
) -> Result<Answer, BasaltError> {
    let done = Answer::collect(rx).await;
    metering.settled().await;
    done
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A unique id with a dialect's prefix (`chatcmpl-`, `msg_`).
pub(crate) fn request_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}{:016x}", h.finish())
}

/// The usage record of a finished sequence.
pub(crate) fn usage_record(
    call: &Call,
    model_id: &str,
    acc: &Accounting,
    cost: f64,
) -> UsageRecord {
    let status = match acc.outcome {
        Outcome::Finished(_) => "ok".to_string(),
        Outcome::Cancelled => "cancelled".to_string(),
        Outcome::Failed(kind) => format!("error:{kind:?}").to_ascii_lowercase(),
    };
    UsageRecord {
        request_id: call.request_id.clone(),
        tenant_id: call.principal.tenant.clone(),
        key_id: call.principal.key_id.clone(),
        model_id: model_id.to_string(),
        surface: match call.tier {
            Tier::Standard => call.surface.to_string(),
            Tier::Flex => format!("{}.flex", call.surface),
            Tier::Batch => format!("{}.batch", call.surface),
        },
        operation: call.operation.to_string(),
        input_tokens: acc.usage.input_tokens as u64,
        cached_input_tokens: acc.usage.cached_input_tokens as u64,
        output_tokens: acc.usage.output_tokens as u64,
        latency_ms: call.started.elapsed().as_millis() as u64,
        time_to_first_token_ms: acc
            .first_token
            .map(|t| t.saturating_duration_since(call.started).as_millis() as u64),
        status,
        cost_usd: cost,
        guardrail_units: Default::default(),
        created_at: basalt_store::now(),
    }
}

/// A logged response body with the guardrail's fields, as `InvokeModel` bodies carry them.
fn with_guardrail_fields(
    mut body: serde_json::Value,
    verdict: Option<GuardrailVerdict>,
) -> serde_json::Value {
    if let (Some(v), Some(fields)) = (verdict, body.as_object_mut()) {
        let action = if v.intervened { "INTERVENED" } else { "NONE" };
        fields.insert("amazon-bedrock-guardrailAction".into(), action.into());
        fields.insert(
            "amazon-bedrock-trace".into(),
            serde_json::json!({"guardrail": v.trace}),
        );
    }
    body
}

/// The answer as the API returned it once the guardrail had its say.
fn guarded_answer(mut answer: Answer, verdict: Option<&GuardrailVerdict>) -> Answer {
    if let Some(v) = verdict.filter(|v| v.intervened) {
        answer.text.clone_from(&v.text);
        answer.logprobs.clear();
        answer.finish = Some(FinishReason::GuardrailIntervened);
        if v.blocked {
            answer.calls.clear();
        }
    }
    answer
}

async fn write_invocation_log(
    state: &AppState,
    log: &Arc<invocation_log::InvocationLog>,
    call: &Call,
    model_id: &str,
    usage: Usage,
    answer: Answer,
    verdict: Option<GuardrailVerdict>,
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
        input_tokens: usage.input_tokens as u64,
        output: with_guardrail_fields(
            invocation_log::response_body(
                call.operation,
                &call.request_id,
                model_id,
                &answer,
                call.started.elapsed().as_millis() as u64,
            ),
            verdict,
        ),
        output_tokens: usage.output_tokens as u64,
    };
    let log = Arc::clone(log);
    let written = tokio::task::spawn_blocking(move || log.write(&entry)).await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::error!(request = %call.request_id, "cannot write the invocation log");
    }
}
