//! Guardrails as the server applies them: finding a tenant's guardrail version in the
//! store, keeping it compiled, and assessing text with it in Bedrock's terms (which blocks
//! are guarded, what the answer says when it intervenes, the usage and coverage).
//!
//! Every surface that applies a guardrail (`ApplyGuardrail`, Converse's `guardrailConfig`,
//! the OpenAI and Anthropic routes through [`requested`]) goes through [`resolve`] and
//! [`Resolved::apply`], a generation through [`CallGuard`]; none of them holds policy of its
//! own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::HeaderMap;
use basalt_auth::Principal;
use basalt_engine::Admission;
use basalt_engine::EventReceiver;
use basalt_guardrails::{
    grounding, judge, text_units, Assessment, ContentClassifier, Guardrail, PolicyUnits, Source,
};
use basalt_store::{GuardrailRef, GuardrailUnits, StoreError, UsageRecord};
use basalt_types::{BasaltError, ErrorKind};
use basalt_types::{
    ChatMessage, FinishReason, GenerateEvent, GenerateRequest, OutputConstraints, OutputFormat,
    Prompt, Role, SamplingParams, Usage,
};
use basalt_wire::bedrock::guardrails::{
    self as wire, AssessmentOut, Coverage, Definition, GuardrailConfig, GuardrailTrace,
    GuardrailUsage, InvocationMetrics, StreamProcessingMode, TextCharacters, Trace,
};
use basalt_wire::bedrock::invoke::TaggedPrompt;
use basalt_wire::bedrock::output::ConverseTrace;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::generation::{Answer, Call, GuardrailVerdict};
use crate::metrics::Metrics;
use crate::offload::off_runtime;
use crate::platform::Platform;
use crate::AppState;
use crate::ServedModel;

/// A guardrail version, compiled, with what the API says about it.
pub(crate) struct Resolved {
    pub id: String,
    pub definition: Definition,
    guardrail: Guardrail,
    /// The built-in content classifier, when it rates this server's content filters (it
    /// serves no guard model): then it runs with the patterns, in [`Resolved::apply`].
    classifier: Option<Arc<ContentClassifier>>,
}

/// Compiled guardrails by (tenant, id, version), with the `updated_at` they were compiled
/// from: a draft edited since is compiled again, a numbered version never changes.
#[derive(Default)]
pub struct GuardrailCache {
    compiled: Mutex<Compiled>,
}

/// (tenant, id, version) to (`updated_at` compiled from, the guardrail).
type Compiled = HashMap<(String, String, String), (i64, Arc<Resolved>)>;

/// Entries kept before the cache is emptied (a flood of distinct versions costs compiles,
/// not memory).
const MAX_COMPILED: usize = 1_000;

/// The 12-digit account a tenant stands for in ARNs: stable, and different per tenant.
pub(crate) fn account_id(tenant: &str) -> String {
    let hash = basalt_auth::sha256(tenant.as_bytes());
    let n = u64::from_le_bytes([
        hash[0], hash[1], hash[2], hash[3], hash[4], hash[5], hash[6], hash[7],
    ]);
    format!("{:012}", n % 1_000_000_000_000)
}

pub(crate) fn arn(state: &AppState, principal: &Principal, id: &str) -> String {
    wire::guardrail_arn(&state.region, &account_id(&principal.tenant), id)
}

/// A store error in the guardrail API's terms: an unknown (or another tenant's) guardrail
/// is `ResourceNotFoundException`.
pub(crate) fn store_error(e: StoreError) -> BasaltError {
    match e {
        StoreError::NotFound(what) => BasaltError::new(
            ErrorKind::NotFound,
            format!("The {what} was not found. Check the guardrail identifier and version."),
        ),
        StoreError::Conflict(m) => BasaltError::new(ErrorKind::InvalidRequest, m),
        StoreError::Invalid(m) => BasaltError::invalid("body", m),
        StoreError::Backend(m) => BasaltError::internal(m),
    }
}

/// The caller's guardrail `identifier` (an id or an ARN) at `version`, compiled.
pub(crate) async fn resolve(
    state: &AppState,
    principal: &Principal,
    identifier: &str,
    version: &str,
) -> Result<Arc<Resolved>, BasaltError> {
    if !wire::valid_version(version) {
        return Err(BasaltError::invalid(
            "guardrailVersion",
            "a guardrail version is DRAFT or a number from 1",
        ));
    }
    let platform = state.platform.as_ref().ok_or_else(|| {
        BasaltError::new(
            ErrorKind::NotFound,
            "this server has no store for guardrails",
        )
    })?;
    let id = wire::guardrail_id(identifier);
    let record = platform
        .store
        .guardrail(&principal.tenant, id, version)
        .await
        .map_err(store_error)?;
    let key = (
        principal.tenant.clone(),
        record.id.clone(),
        record.version.clone(),
    );
    if let Some((at, resolved)) = state.guardrails.lock().get(&key) {
        if *at == record.updated_at {
            return Ok(Arc::clone(resolved));
        }
    }
    let definition: Definition = serde_json::from_str(&record.definition)
        .map_err(|e| BasaltError::internal(format!("stored guardrail is unreadable: {e}")))?;
    let guardrail = Guardrail::compile(&definition.policies)?;
    let resolved = Arc::new(Resolved {
        id: record.id,
        definition,
        guardrail,
        classifier: state.content_classifier(),
    });
    let mut cache = state.guardrails.lock();
    if cache.len() >= MAX_COMPILED {
        cache.clear();
    }
    cache.insert(key, (record.updated_at, Arc::clone(&resolved)));
    Ok(resolved)
}

impl GuardrailCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Compiled> {
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Bedrock headers that name a guardrail on `InvokeModel`, and on the OpenAI and
/// Anthropic routes.
pub(crate) const IDENTIFIER_HEADER: &str = "x-amzn-bedrock-guardrailidentifier";
pub(crate) const VERSION_HEADER: &str = "x-amzn-bedrock-guardrailversion";
pub(crate) const TRACE_HEADER: &str = "x-amzn-bedrock-trace";

/// The guardrail an OpenAI or Anthropic request names, if any: Bedrock's guardrail headers
/// (as `InvokeModel` takes them), or a `guardrailConfig` object in the body, Bedrock's
/// Converse field as LiteLLM passes it through. A name without a version, or a version
/// without a name, is a 400.
pub(crate) fn requested(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<GuardrailConfig>, BasaltError> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim))
            .transpose()
            .map_err(|_| BasaltError::invalid(name, "a guardrail header must be ASCII"))
    };
    let (identifier, version) = (header(IDENTIFIER_HEADER)?, header(VERSION_HEADER)?);
    if let Some(identifier) = identifier {
        let Some(version) = version else {
            return Err(BasaltError::invalid(
                VERSION_HEADER,
                "a guardrail identifier needs a guardrail version",
            ));
        };
        let trace = match header(TRACE_HEADER)?
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("DISABLED") => Trace::Disabled,
            Some("ENABLED") => Trace::Enabled,
            Some("ENABLED_FULL") => Trace::EnabledFull,
            Some(_) => {
                return Err(BasaltError::invalid(
                    TRACE_HEADER,
                    "the trace is ENABLED, DISABLED or ENABLED_FULL",
                ))
            }
        };
        return Ok(Some(GuardrailConfig {
            guardrail_identifier: identifier.to_string(),
            guardrail_version: version.to_string(),
            trace,
            stream_processing_mode: None,
        }));
    }
    if version.is_some() {
        return Err(BasaltError::invalid(
            IDENTIFIER_HEADER,
            "a guardrail version needs a guardrail identifier",
        ));
    }
    // Most bodies name no guardrail: skip a second parse for them.
    if !contains(body, b"\"guardrailConfig\"") {
        return Ok(None);
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Extension {
        guardrail_config: Option<GuardrailConfig>,
    }
    Ok(basalt_wire::parse_json::<Extension>(body)?.guardrail_config)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The trace as a response body carries it (`amazon-bedrock-trace` on `InvokeModel`, the
/// OpenAI and Anthropic routes).
#[derive(serde::Serialize)]
pub(crate) struct BodyTrace {
    pub guardrail: GuardrailTrace,
}

/// What a contextual grounding check reads besides the answer: the grounding sources and
/// the query a request qualified (`grounding_source`, `query`).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroundingInputs {
    pub sources: Vec<String>,
    pub query: Option<String>,
}

impl GroundingInputs {
    pub(crate) fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// Embeds texts with the first embedding model the server serves, for grounding checks.
async fn embed_for_grounding(
    state: &AppState,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, BasaltError> {
    let served = state.embedders().next().cloned().ok_or_else(|| {
        BasaltError::new(
            ErrorKind::UnsupportedForModel,
            "contextual grounding checks need an embedding model, and this server serves none",
        )
    })?;
    let rx = served.embedder.submit(texts, true)?;
    let embedded = rx
        .await
        .map_err(|_| BasaltError::internal("the embedding worker stopped"))??;
    Ok(embedded.into_iter().map(|e| e.vector).collect())
}

/// Asks the guard model `question` (greedy, its answer held to the verdict's JSON schema by
/// the grammar engine) and returns its answer. The judge's tokens are the guardrail's cost,
/// billed in text units, not the tenant's tokens.
async fn ask_guard_model(
    model: &Arc<ServedModel>,
    question: &judge::Question,
) -> Result<String, BasaltError> {
    let request = GenerateRequest {
        prompt: Prompt::Chat(vec![
            ChatMessage::text(Role::System, question.system.clone()),
            ChatMessage::text(Role::User, question.user.clone()),
        ]),
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        max_tokens: Some(256),
        stop: Vec::new(),
        logprobs: None,
        cache_points: Vec::new(),
        thinking: None,
        constraints: OutputConstraints {
            format: OutputFormat::JsonSchema {
                name: Some("verdict".into()),
                schema: question.schema.clone(),
            },
            ..OutputConstraints::default()
        },
    };
    let engine_model = Arc::clone(model);
    let prepared = off_runtime(move || engine_model.engine.prepare(request)).await??;
    let rx = model.engine.enqueue(
        prepared,
        Admission {
            tenant: None,
            accounting: None,
            ..Admission::default()
        },
    )?;
    Ok(Answer::collect(rx).await?.text)
}

impl Resolved {
    /// The guard model's checks (denied topics, content filters, NAME and ADDRESS) of the
    /// texts `applied` holds (as the patterns left them: what they masked, the judge does
    /// not see), folded into `applied`: assessments, units, masks, a block. Nothing is
    /// judged once the patterns blocked.
    pub(crate) async fn judge(
        &self,
        state: &AppState,
        source: Source,
        applied: &mut Applied,
    ) -> Result<(), BasaltError> {
        if applied.blocked || !self.guardrail.judges(source, self.classifier.is_some()) {
            return Ok(());
        }
        for i in 0..applied.outputs.len() {
            let text = applied.outputs[i].clone();
            let Some(question) = self.guardrail.question(source, &text) else {
                return Ok(());
            };
            let model = state.guard_model.as_ref().ok_or_else(|| {
                BasaltError::new(
                    ErrorKind::UnsupportedForModel,
                    "this guardrail needs a guard model: start the server with --guard-model",
                )
            })?;
            let answer = ask_guard_model(model, &question).await?;
            let (assessment, masked, blocked) =
                self.guardrail.judge(source, &question, &answer, &text);
            let units = text_units(text.chars().count() as u64);
            if assessment.topic_policy.is_some() {
                applied.usage.topic_policy_units += units;
            }
            if assessment.content_policy.is_some() {
                applied.usage.content_policy_units += units;
            }
            applied.assessment.invocation_metrics.usage = applied.usage;
            applied.assessment.assessment.absorb(assessment);
            if masked != text {
                applied.intervened = true;
                applied.outputs[i] = masked;
            }
            if blocked {
                applied.blocked = true;
                applied.intervened = true;
                applied.blocked_message = Some(match source {
                    Source::Input => self.definition.blocked_input_messaging.clone(),
                    Source::Output => self.definition.blocked_outputs_messaging.clone(),
                });
                return Ok(());
            }
        }
        Ok(())
    }

    /// The contextual grounding check of `answer` against `inputs`, folded into `applied`
    /// (its assessment, units, and a block when a filter blocks), when this guardrail has a
    /// grounding policy and the request gave a grounding source.
    pub(crate) async fn ground(
        &self,
        state: &AppState,
        answer: &str,
        inputs: &GroundingInputs,
        applied: &mut Applied,
    ) -> Result<(), BasaltError> {
        let Some(config) = self.guardrail.grounding() else {
            return Ok(());
        };
        if inputs.is_empty() || applied.blocked {
            return Ok(());
        }
        let answer_sentences = grounding::sentences(answer);
        let source_sentences: Vec<&str> = inputs
            .sources
            .iter()
            .flat_map(|s| grounding::sentences(s))
            .collect();
        let mut texts: Vec<String> = source_sentences
            .iter()
            .chain(&answer_sentences)
            .map(|s| s.to_string())
            .collect();
        texts.push(answer.to_string());
        texts.extend(inputs.query.clone());
        let vectors = embed_for_grounding(state, texts).await?;
        let (sources, rest) = vectors.split_at(source_sentences.len().min(vectors.len()));
        let (sentences, rest) = rest.split_at(answer_sentences.len().min(rest.len()));
        let whole = rest.first().map_or(&[][..], Vec::as_slice);
        let (grounding_score, relevance) = grounding::scores(&grounding::Embedded {
            answer_sentences: sentences,
            source_sentences: sources,
            answer: whole,
            query: inputs.query.as_ref().and(rest.get(1)).map(Vec::as_slice),
        });
        let (assessment, blocked) = grounding::assess(config, grounding_score, relevance);
        let chars = answer.chars().count()
            + inputs
                .sources
                .iter()
                .map(|s| s.chars().count())
                .sum::<usize>()
            + inputs.query.as_ref().map_or(0, |q| q.chars().count());
        applied.usage.contextual_grounding_policy_units += text_units(chars as u64);
        applied.assessment.invocation_metrics.usage = applied.usage;
        applied.assessment.assessment.absorb(Assessment {
            contextual_grounding_policy: Some(assessment),
            ..Assessment::default()
        });
        if blocked {
            applied.blocked = true;
            applied.intervened = true;
            applied.blocked_message = Some(self.definition.blocked_outputs_messaging.clone());
        }
        Ok(())
    }
}

/// One guarded text's verdict, and everything the APIs report about it.
pub(crate) struct Applied {
    pub intervened: bool,
    pub blocked: bool,
    /// Per text given: the text to use (masked where the guardrail anonymised).
    pub outputs: Vec<String>,
    /// The guardrail's message when it blocked.
    pub blocked_message: Option<String>,
    pub assessment: AssessmentOut,
    pub usage: GuardrailUsage,
    pub coverage: Coverage,
}

impl Resolved {
    /// Assesses `texts` (the guarded ones; `total_chars` counts every text the request
    /// carried, for coverage) flowing in `source`'s direction.
    pub(crate) fn apply(&self, source: Source, texts: &[&str], total_chars: u64) -> Applied {
        let started = Instant::now();
        let mut assessment = Assessment::default();
        let mut units = PolicyUnits::default();
        let (mut blocked, mut intervened) = (false, false);
        let mut outputs = Vec::with_capacity(texts.len());
        for text in texts {
            let outcome = self.guardrail.assess(text, source);
            blocked |= outcome.blocked;
            intervened |= outcome.intervened;
            units += outcome.usage;
            assessment.absorb(outcome.assessment);
            if let Some(classifier) = &self.classifier {
                // It reads the text as the patterns left it: what they masked, it does not see.
                let (rated, blocks) = self.guardrail.classify(source, classifier, &outcome.output);
                if rated.content_policy.is_some() {
                    units.content_policy_units += text_units(text.chars().count() as u64);
                }
                blocked |= blocks;
                intervened |= blocks;
                assessment.absorb(rated);
            }
            outputs.push(outcome.output);
        }
        let guarded: u64 = texts.iter().map(|t| t.chars().count() as u64).sum();
        let coverage = Coverage {
            text_characters: TextCharacters {
                guarded,
                total: total_chars.max(guarded),
            },
        };
        let usage = GuardrailUsage::from(units);
        let blocked_message = blocked.then(|| match source {
            Source::Input => self.definition.blocked_input_messaging.clone(),
            Source::Output => self.definition.blocked_outputs_messaging.clone(),
        });
        Applied {
            intervened,
            blocked,
            outputs,
            blocked_message,
            assessment: AssessmentOut {
                assessment,
                invocation_metrics: InvocationMetrics {
                    guardrail_processing_latency: started.elapsed().as_millis() as u64,
                    usage,
                    guardrail_coverage: coverage,
                },
            },
            usage,
            coverage,
        }
    }
}

/// A guardrail's bill for one call: each assessment counted in the metrics as it happens,
/// its text units summed and added to the call's usage record once the meter is dropped,
/// which every way a guarded call ends does (answered, streamed, cancelled). A call with
/// no record of its own (`ApplyGuardrail`, an input blocked before any model ran) gets one.
pub(crate) struct GuardrailMeter {
    platform: Option<Arc<Platform>>,
    metrics: Arc<Metrics>,
    record: UsageRecord,
    assessed: bool,
}

impl GuardrailMeter {
    /// `resource` names what a record of its own is about: the model of a guarded call, or
    /// `guardrail/{id}:{version}` for `ApplyGuardrail`.
    pub(crate) fn new(state: &AppState, call: &Call, resource: &str) -> Self {
        Self {
            platform: state.platform.clone(),
            metrics: Arc::clone(&state.metrics),
            record: UsageRecord {
                request_id: call.request_id.clone(),
                tenant_id: call.principal.tenant.clone(),
                key_id: call.principal.key_id.clone(),
                model_id: resource.to_string(),
                surface: call.surface.to_string(),
                operation: call.operation.to_string(),
                input_tokens: 0,
                cached_input_tokens: 0,
                output_tokens: 0,
                latency_ms: 0,
                time_to_first_token_ms: None,
                status: "ok".to_string(),
                cost_usd: 0.0,
                guardrail_units: GuardrailUnits::default(),
                created_at: 0,
            },
            assessed: false,
        }
    }

    pub(crate) fn count(&mut self, source: Source, applied: &Applied) {
        let units = GuardrailUnits {
            word: applied.usage.word_policy_units,
            sensitive_information: applied.usage.sensitive_information_policy_units,
            contextual_grounding: applied.usage.contextual_grounding_policy_units,
            topic: applied.usage.topic_policy_units,
            content: applied.usage.content_policy_units,
        };
        let direction = match source {
            Source::Input => "input",
            Source::Output => "output",
        };
        self.metrics
            .observe_guardrail(direction, applied.intervened, units);
        self.record.guardrail_units += units;
        if applied.intervened {
            self.record.status = "guardrail_intervened".to_string();
        }
        self.assessed = true;
    }

    /// The record to write, once: nothing if nothing was assessed or there is no store.
    fn take(&mut self) -> Option<(Arc<Platform>, UsageRecord)> {
        if !std::mem::take(&mut self.assessed) {
            return None;
        }
        let platform = self.platform.take()?;
        let mut record = self.record.clone();
        record.created_at = basalt_store::now();
        Some((platform, record))
    }

    /// Writes the record now and waits for it (a route that answers only once it is
    /// billed).
    pub(crate) async fn write(mut self) {
        if let Some((platform, record)) = self.take() {
            write_units(platform, record).await;
        }
    }
}

impl Drop for GuardrailMeter {
    fn drop(&mut self) {
        let Some((platform, record)) = self.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(write_units(platform, record));
        }
    }
}

async fn write_units(platform: Arc<Platform>, record: UsageRecord) {
    if let Err(e) = platform.store.record_guardrail_units(&record).await {
        tracing::warn!(request_id = %record.request_id, "guardrail usage not recorded: {e}");
    }
}

/// The guardrails of one model call: the one the request names, and the one an operator
/// enforces on the tenant; either may be absent.
pub(crate) struct Selection {
    pub requested: Option<GuardrailConfig>,
    pub enforced: Option<GuardrailRef>,
}

impl Selection {
    /// The request's guardrail and the tenant's enforced one, if it has one.
    pub(crate) async fn of(
        state: &AppState,
        principal: &Principal,
        requested: Option<GuardrailConfig>,
    ) -> Self {
        let enforced = match &state.platform {
            Some(p) if principal.managed => p
                .store
                .tenant(&principal.tenant)
                .await
                .ok()
                .and_then(|t| t.enforced_guardrail),
            _ => None,
        };
        Self {
            requested,
            enforced,
        }
    }

    fn is_empty(&self) -> bool {
        self.requested.is_none() && self.enforced.is_none()
    }
}

/// Guardrails around one generation call: the input checked (and masked) before the
/// generation, the answer checked after, the trace kept for the response. Each guardrail
/// is a layer: the request's first, then the enforced one, each seeing what the one before
/// let through.
pub(crate) struct CallGuard {
    layers: Vec<Layer>,
    /// The grounding sources and query the request qualified, for grounding checks.
    grounding: GroundingInputs,
    trace: Trace,
    mode: Option<StreamProcessingMode>,
    output_intervened: bool,
    meter: GuardrailMeter,
    /// Where the verdict on the answer goes for the invocation log, once.
    verdict: Option<oneshot::Sender<GuardrailVerdict>>,
    /// The answer as the model gave it, for the full trace.
    model_output: Option<String>,
}

struct Layer {
    resolved: Arc<Resolved>,
    input: Applied,
    outputs: Vec<AssessmentOut>,
}

/// What the answer becomes once the guardrails have seen it.
pub(crate) struct GuardedAnswer {
    pub text: String,
    pub intervened: bool,
    /// The answer was replaced by the blocked message (tool calls included).
    pub blocked: bool,
}

impl CallGuard {
    /// Resolves the call's guardrails and applies them to the input `texts` (the guarded
    /// ones; `total_chars` counts the whole prompt), masking them where they anonymise.
    /// `None` when the call has no guardrail. A blocked input leaves the texts as they
    /// were: they will not be sent to the model ([`CallGuard::input_blocked`]).
    pub(crate) async fn check_input(
        state: &AppState,
        call: &Call,
        model_id: &str,
        selection: Selection,
        mut texts: Vec<&mut String>,
        total_chars: u64,
    ) -> Result<Option<Self>, BasaltError> {
        if selection.is_empty() {
            return Ok(None);
        }
        let mut versions = Vec::with_capacity(2);
        if let Some(c) = &selection.requested {
            versions.push((c.guardrail_identifier.clone(), c.guardrail_version.clone()));
        }
        if let Some(e) = &selection.enforced {
            versions.push((e.id.clone(), e.version.clone()));
        }
        let mut meter = GuardrailMeter::new(state, call, model_id);
        let mut layers = Vec::with_capacity(versions.len());
        for (identifier, version) in versions {
            let resolved = resolve(state, &call.principal, &identifier, &version).await?;
            let input = {
                let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
                let mut input = resolved.apply(Source::Input, &refs, total_chars);
                resolved.judge(state, Source::Input, &mut input).await?;
                input
            };
            meter.count(Source::Input, &input);
            let blocked = input.blocked;
            if input.intervened && !blocked {
                for (text, masked) in texts.iter_mut().zip(&input.outputs) {
                    (**text).clone_from(masked);
                }
            }
            layers.push(Layer {
                resolved,
                input,
                outputs: Vec::new(),
            });
            if blocked {
                break;
            }
        }
        let (trace, mode) = match &selection.requested {
            Some(c) => (c.trace, c.stream_processing_mode),
            None => (Trace::Disabled, None),
        };
        // The invocation log of this call's sequence waits for the verdict on its answer.
        let verdict = state.invocation_log.as_ref().map(|_| {
            let (tx, rx) = oneshot::channel();
            call.guardrail_verdicts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(rx);
            tx
        });
        Ok(Some(Self {
            layers,
            grounding: GroundingInputs::default(),
            trace,
            mode,
            output_intervened: false,
            meter,
            verdict,
            model_output: None,
        }))
    }

    /// The grounding sources and query the answer is to be checked against.
    pub(crate) fn with_grounding(mut self, inputs: GroundingInputs) -> Self {
        self.grounding = inputs;
        self
    }

    /// Whether a guardrail intervened on the input or on any answer so far.
    pub(crate) fn intervened(&self) -> bool {
        self.layers.iter().any(|l| l.input.intervened) || self.output_intervened
    }

    /// Whether the answer is checked before any of it is sent (`sync`, the default) or
    /// streamed and checked as it ends (`async`).
    pub(crate) fn holds_output(&self) -> bool {
        self.mode != Some(StreamProcessingMode::Async)
    }

    /// The blocked-input message, when the input is not to reach the model.
    pub(crate) fn input_blocked(&self) -> Option<&str> {
        self.layers
            .iter()
            .find_map(|l| l.input.blocked_message.as_deref())
    }

    /// Applies the guardrails to the model's answer: a blocked-output message, the answer
    /// masked, or the answer as it was. Only the checks that need no model: the others need
    /// [`CallGuard::check_output_with_models`].
    pub(crate) fn check_output(&mut self, answer: &str) -> GuardedAnswer {
        let mut verdict = GuardedAnswer {
            text: answer.to_string(),
            intervened: false,
            blocked: false,
        };
        for i in 0..self.layers.len() {
            let applied = self.layers[i]
                .resolved
                .apply(Source::Output, &[&verdict.text], 0);
            if self.absorb_output(i, applied, &mut verdict) {
                break;
            }
        }
        self.finish_output(answer, verdict)
    }

    /// What the pattern checks make of `text` as an answer, without recording anything:
    /// the text masked, or `None` when a guardrail blocks it.
    pub(crate) fn peek_output(&self, text: &str) -> Option<String> {
        let mut text = text.to_string();
        for layer in &self.layers {
            let applied = layer.resolved.apply(Source::Output, &[&text], 0);
            if applied.blocked {
                return None;
            }
            if applied.intervened {
                text = applied.outputs.into_iter().next().unwrap_or_default();
            }
        }
        Some(text)
    }

    /// [`CallGuard::check_output`] with the checks that need a model: the guard model's
    /// denied topics and content filters, and the contextual grounding check against the
    /// sources and query the request qualified.
    pub(crate) async fn check_output_with_models(
        &mut self,
        state: &AppState,
        answer: &str,
    ) -> Result<GuardedAnswer, BasaltError> {
        let mut verdict = GuardedAnswer {
            text: answer.to_string(),
            intervened: false,
            blocked: false,
        };
        for i in 0..self.layers.len() {
            let resolved = Arc::clone(&self.layers[i].resolved);
            let mut applied = resolved.apply(Source::Output, &[&verdict.text], 0);
            resolved.judge(state, Source::Output, &mut applied).await?;
            resolved
                .ground(state, &verdict.text, &self.grounding, &mut applied)
                .await?;
            if self.absorb_output(i, applied, &mut verdict) {
                break;
            }
        }
        Ok(self.finish_output(answer, verdict))
    }

    /// Whether checking the answer needs a model (the guard model, or the embedding model
    /// for a grounding check the request asks for): then only a whole answer can be
    /// checked, with [`CallGuard::check_output_with_models`].
    pub(crate) fn checks_output_with_models(&self) -> bool {
        self.layers.iter().any(|l| {
            l.resolved
                .guardrail
                .judges(Source::Output, l.resolved.classifier.is_some())
                || (!self.grounding.is_empty() && l.resolved.guardrail.grounding().is_some())
        })
    }

    /// Folds layer `i`'s verdict on the answer into `verdict`; true when it blocked.
    fn absorb_output(&mut self, i: usize, applied: Applied, verdict: &mut GuardedAnswer) -> bool {
        self.meter.count(Source::Output, &applied);
        verdict.intervened |= applied.intervened;
        match (&applied.blocked_message, applied.intervened) {
            (Some(message), _) => {
                verdict.text.clone_from(message);
                verdict.blocked = true;
            }
            (None, true) => verdict.text = applied.outputs.first().cloned().unwrap_or_default(),
            (None, false) => {}
        }
        self.layers[i].outputs.push(applied.assessment);
        verdict.blocked
    }

    fn finish_output(&mut self, answer: &str, verdict: GuardedAnswer) -> GuardedAnswer {
        self.output_intervened |= verdict.intervened;
        self.model_output = Some(answer.to_string());
        if let Some(tx) = self.verdict.take() {
            let _ = tx.send(GuardrailVerdict {
                text: verdict.text.clone(),
                intervened: self.intervened(),
                blocked: verdict.blocked,
                trace: self.trace_json(),
            });
        }
        verdict
    }

    /// The trace so far as JSON (Bedrock's `guardrail` trace object), whatever the request
    /// asked for: what the invocation log keeps.
    fn trace_json(&self) -> serde_json::Value {
        let mut inputs = serde_json::Map::new();
        let mut outputs = serde_json::Map::new();
        for layer in &self.layers {
            let id = layer.resolved.id.clone();
            inputs.insert(
                id.clone(),
                serde_json::to_value(&layer.input.assessment).unwrap_or_default(),
            );
            if !layer.outputs.is_empty() {
                outputs.insert(id, serde_json::to_value(&layer.outputs).unwrap_or_default());
            }
        }
        serde_json::json!({"inputAssessment": inputs, "outputAssessments": outputs})
    }

    /// The trace for the response, as `guardrailConfig.trace` asked: every guardrail's
    /// assessments under its id.
    pub(crate) fn trace(mut self) -> Option<ConverseTrace> {
        if self.trace == Trace::Disabled {
            return None;
        }
        let intervened = self.intervened();
        let mut trace = GuardrailTrace {
            model_output: match self.trace {
                Trace::EnabledFull => self.model_output.take().map(|o| vec![o]),
                _ => None,
            },
            action_reason: intervened.then(|| "Guardrail intervened.".to_string()),
            ..GuardrailTrace::default()
        };
        for layer in std::mem::take(&mut self.layers) {
            let id = layer.resolved.id.clone();
            trace
                .input_assessment
                .insert(id.clone(), layer.input.assessment);
            if !layer.outputs.is_empty() {
                trace.output_assessments.insert(id, layer.outputs);
            }
        }
        Some(ConverseTrace { guardrail: trace })
    }
}

/// A generation under a guardrail (OpenAI, Anthropic, `InvokeModel`: Bedrock's `sync` mode,
/// always), replayed as events once checked, so streaming and non-streaming encoders read it
/// as they read any generation: whole, when the answer is not streamed or a check needs a
/// model; in checked windows ([`Window`]) when it is streamed and the patterns do the
/// checking. The task hands the guard back for the trace. A client that goes away drops
/// the replay's receiver, which drops the generation's and cancels it.
pub(crate) fn hold(
    state: Arc<AppState>,
    rx: EventReceiver,
    mut guard: CallGuard,
    streamed: bool,
) -> (EventReceiver, JoinHandle<CallGuard>) {
    let (tx, replay) = mpsc::unbounded_channel();
    let windowed = streamed && !guard.checks_output_with_models();
    let task = tokio::spawn(async move {
        if windowed {
            release_in_windows(rx, &tx, &mut guard).await;
            return guard;
        }
        let answer = tokio::select! {
            answer = Answer::collect(rx) => answer,
            () = tx.closed() => return guard,
        };
        for event in guard.replay(&state, answer).await {
            if tx.send(event).is_err() {
                break;
            }
        }
        guard
    });
    (replay, task)
}

/// Replays a streamed generation through a [`Window`]: text as it is checked, tool calls
/// and the finish once the whole answer has been.
async fn release_in_windows(
    mut rx: EventReceiver,
    tx: &mpsc::UnboundedSender<GenerateEvent>,
    guard: &mut CallGuard,
) {
    let mut window = Window::default();
    let mut calls = Vec::new();
    let text = |text: String| GenerateEvent::Text {
        text,
        logprobs: Vec::new(),
    };
    loop {
        let event = tokio::select! {
            event = rx.recv() => event,
            () = tx.closed() => return,
        };
        let event = match event {
            // Reasoning is not the answer a guardrail checks (Bedrock's do not assess it).
            Some(reasoning @ GenerateEvent::Reasoning { .. }) => reasoning,
            Some(GenerateEvent::Text { text: t, .. }) => {
                match window.push(&t, |s| guard.peek_output(s)) {
                    Some(released) => text(released),
                    None => continue,
                }
            }
            Some(
                call @ (GenerateEvent::ToolCallStart { .. } | GenerateEvent::ToolArguments { .. }),
            ) => {
                calls.push(call);
                continue;
            }
            Some(GenerateEvent::Finished {
                reason,
                usage,
                stop_sequence,
            }) => {
                let (rest, verdict) = window.finish(guard);
                let mut last = Vec::new();
                if !rest.is_empty() {
                    last.push(text(rest));
                }
                if !verdict.blocked {
                    last.append(&mut calls);
                }
                last.push(GenerateEvent::Finished {
                    reason: if verdict.intervened {
                        FinishReason::GuardrailIntervened
                    } else {
                        reason
                    },
                    usage,
                    stop_sequence,
                });
                for event in last {
                    let _ = tx.send(event);
                }
                return;
            }
            Some(failed @ GenerateEvent::Failed { .. }) => {
                let _ = tx.send(failed);
                return;
            }
            None => return,
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// Bedrock's `sync` mode for a streamed answer whose checks are patterns: text is released
/// in windows once checked, and always held back far enough ([`Window::LOOKBACK`]) that an
/// entity still being written, or one whose context word has not come yet, is never let
/// out unmasked. Each release is the prefix of the masked answer so far whose masks the
/// rest of the answer cannot change. A block stops the releases; the answer then ends with
/// the guardrail's message.
#[derive(Default)]
pub(crate) struct Window {
    answer: String,
    /// Bytes of the answer already released (as their masked form).
    released: usize,
    /// The masked text released so far: every later release must continue it.
    released_text: String,
    stopped: bool,
}

impl Window {
    /// New text is checked once this much has gathered since the last release.
    const SIZE: usize = 256;
    /// How much of the answer's end is never released before the answer ends: longer
    /// than a context window (48 bytes) and than the entities patterns find.
    const LOOKBACK: usize = 192;

    /// More of the answer: the checked (masked) text to release now, if any. `peek` is
    /// what the checks make of a text: masked, or `None` when blocked
    /// ([`CallGuard::peek_output`]).
    pub(crate) fn push(
        &mut self,
        text: &str,
        peek: impl Fn(&str) -> Option<String>,
    ) -> Option<String> {
        self.answer.push_str(text);
        if self.stopped || self.answer.len() < self.released + Self::SIZE + Self::LOOKBACK {
            return None;
        }
        let Some(whole) = peek(&self.answer) else {
            self.stopped = true;
            return None;
        };
        let mut cut = floor_char_boundary(&self.answer, self.answer.len() - Self::LOOKBACK);
        while cut > self.released {
            // A prefix whose masks agree with the whole answer's: nothing at the cut is
            // half an entity.
            if let Some(prefix) = peek(&self.answer[..cut]) {
                // It must also continue what was released (always so, given the
                // lookback; checked, so a slice never starts inside a character).
                let continues = prefix
                    .strip_prefix(self.released_text.as_str())
                    .filter(|more| !more.is_empty());
                if let (true, Some(more)) = (whole.starts_with(&prefix), continues) {
                    let out = more.to_string();
                    self.released = cut;
                    self.released_text = prefix;
                    return Some(out);
                }
            }
            cut = floor_char_boundary(&self.answer, cut.saturating_sub(16));
        }
        None
    }

    /// The answer ended: the guardrail's verdict on all of it (recorded), and what is left
    /// to release: the rest of the masked answer, or the guardrail's message when it
    /// blocked.
    pub(crate) fn finish(&mut self, guard: &mut CallGuard) -> (String, GuardedAnswer) {
        let verdict = guard.check_output(&self.answer);
        (self.rest(&verdict), verdict)
    }

    /// What is left to release once the whole answer's `verdict` is in.
    fn rest(&self, verdict: &GuardedAnswer) -> String {
        if verdict.blocked {
            verdict.text.clone()
        } else {
            // The whole answer's masks continue what was released (the lookback sees to
            // it); should they not, nothing more is let out rather than a mismatched tail.
            verdict
                .text
                .strip_prefix(self.released_text.as_str())
                .unwrap_or_default()
                .to_string()
        }
    }
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The events of an answer the guardrail gave instead of the model: its blocked-input
/// message.
pub(crate) fn blocked(message: &str) -> EventReceiver {
    let (tx, rx) = mpsc::unbounded_channel();
    for event in [
        GenerateEvent::Text {
            text: message.to_string(),
            logprobs: Vec::new(),
        },
        GenerateEvent::Finished {
            reason: FinishReason::GuardrailIntervened,
            usage: Usage::default(),
            stop_sequence: None,
        },
    ] {
        // The receiver is still here: sending cannot fail.
        let _ = tx.send(event);
    }
    rx
}

impl CallGuard {
    /// A whole answer as the guardrail lets it out, as events: the text (masked, or the
    /// blocked-output message), the tool calls unless it blocked, and the finish, which says
    /// `GuardrailIntervened` when it did.
    async fn replay(
        &mut self,
        state: &AppState,
        answer: Result<Answer, BasaltError>,
    ) -> Vec<GenerateEvent> {
        let checked = match answer {
            Ok(answer) => match self.check_output_with_models(state, &answer.text).await {
                Ok(guarded) => Ok((answer, guarded)),
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let (answer, guarded) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                return vec![GenerateEvent::Failed {
                    error,
                    usage: Usage::default(),
                }]
            }
        };
        let mut events = vec![GenerateEvent::Text {
            text: guarded.text,
            // Log-probabilities describe the model's text, not a mask or a message.
            logprobs: if guarded.intervened {
                Vec::new()
            } else {
                answer.logprobs
            },
        }];
        if !guarded.blocked {
            for (index, call) in answer.calls.into_iter().enumerate() {
                let index = index as u32;
                events.push(GenerateEvent::ToolCallStart {
                    index,
                    id: call.id,
                    name: call.name,
                });
                events.push(GenerateEvent::ToolArguments {
                    index,
                    json: call.arguments,
                });
            }
        }
        let reason = if guarded.intervened {
            FinishReason::GuardrailIntervened
        } else {
            answer.finish.unwrap_or(FinishReason::EndOfTurn)
        };
        events.push(GenerateEvent::Finished {
            reason,
            usage: answer.usage,
            stop_sequence: answer.stop_sequence,
        });
        events
    }

    /// What a response body adds for a guarded call on the OpenAI and Anthropic routes, as
    /// `InvokeModel` adds it: `amazon-bedrock-guardrailAction`, and the trace if asked for.
    pub(crate) fn body_fields(self) -> BodyFields {
        let action = if self.intervened() {
            "INTERVENED"
        } else {
            "NONE"
        };
        BodyFields {
            action,
            trace: self.trace().map(|t| BodyTrace {
                guardrail: t.guardrail,
            }),
        }
    }
}

/// The guards of a call's choices (one per sequence it generates), as the OpenAI and
/// Anthropic routes keep them until the response is written.
pub(crate) enum Guards {
    Unguarded,
    /// Inputs checked (and masked); nothing generated yet, or nothing to generate when the
    /// input was blocked.
    Checked(Vec<CallGuard>),
    /// Each choice's answer is held by its guard ([`hold`]).
    Holding(Vec<JoinHandle<CallGuard>>),
}

impl Guards {
    /// Guards every request of a call with the guardrail it names and the tenant's
    /// enforced one, masking their inputs.
    pub(crate) async fn check_inputs(
        state: &AppState,
        call: &Call,
        model_id: &str,
        config: Option<GuardrailConfig>,
        requests: &mut [GenerateRequest],
    ) -> Result<Self, BasaltError> {
        let selection = Selection::of(state, &call.principal, config).await;
        if selection.is_empty() {
            return Ok(Guards::Unguarded);
        }
        let mut guards = Vec::with_capacity(requests.len());
        for request in requests.iter_mut() {
            let (texts, total) = request.prompt.caller_texts_mut();
            let selection = Selection {
                requested: selection.requested.clone(),
                enforced: selection.enforced.clone(),
            };
            let guard =
                CallGuard::check_input(state, call, model_id, selection, texts, total).await?;
            guards.extend(guard);
        }
        Ok(Guards::Checked(guards))
    }

    /// Guards an `InvokeModel` prompt that marks what to check with input tags of
    /// `suffix`: only the tagged texts are checked (and masked), and the model gets the
    /// prompt without its tags. A prompt without tags is checked whole.
    pub(crate) async fn check_tagged(
        state: &AppState,
        call: &Call,
        model_id: &str,
        config: Option<GuardrailConfig>,
        request: &mut GenerateRequest,
        suffix: &str,
    ) -> Result<Self, BasaltError> {
        let mut tagged = match &request.prompt {
            Prompt::Text(prompt) => TaggedPrompt::parse(prompt, suffix)?,
            Prompt::Chat(_) => return Err(BasaltError::internal("a native body is a text prompt")),
        };
        if !tagged.is_tagged() {
            return Self::check_inputs(
                state,
                call,
                model_id,
                config,
                std::slice::from_mut(request),
            )
            .await;
        }
        let total = tagged.untagged().chars().count() as u64;
        let selection = Selection::of(state, &call.principal, config).await;
        let guard =
            CallGuard::check_input(state, call, model_id, selection, tagged.tagged_mut(), total)
                .await?;
        request.prompt = Prompt::Text(tagged.untagged());
        Ok(match guard {
            Some(guard) => Guards::Checked(vec![guard]),
            None => Guards::Unguarded,
        })
    }

    /// The blocked-input message, when the input is not to reach the model.
    pub(crate) fn blocked_message(&self) -> Option<String> {
        match self {
            Guards::Checked(guards) => guards
                .iter()
                .find_map(|g| g.input_blocked())
                .map(str::to_string),
            _ => None,
        }
    }

    /// The receivers to read the choices' answers from: each generation's, held by its
    /// guard when there is one.
    pub(crate) fn hold_all(
        &mut self,
        state: &Arc<AppState>,
        receivers: Vec<EventReceiver>,
        streamed: bool,
    ) -> Vec<EventReceiver> {
        let Guards::Checked(guards) = std::mem::replace(self, Guards::Unguarded) else {
            return receivers;
        };
        let (receivers, tasks) = receivers
            .into_iter()
            .zip(guards)
            .map(|(rx, guard)| hold(Arc::clone(state), rx, guard, streamed))
            .unzip();
        *self = Guards::Holding(tasks);
        receivers
    }

    /// The response's guardrail fields once every held answer is out: the first choice's
    /// trace, and `INTERVENED` if the guardrail intervened on any choice.
    pub(crate) async fn body_fields(self) -> Option<BodyFields> {
        let guards = match self {
            Guards::Unguarded => return None,
            Guards::Checked(guards) => guards,
            Guards::Holding(tasks) => {
                let mut guards = Vec::with_capacity(tasks.len());
                for task in tasks {
                    if let Ok(guard) = task.await {
                        guards.push(guard);
                    }
                }
                guards
            }
        };
        let intervened = guards.iter().any(CallGuard::intervened);
        let mut fields = guards.into_iter().next()?.body_fields();
        if intervened {
            fields.action = "INTERVENED";
        }
        Some(fields)
    }
}

/// A response body with the guardrail's fields beside its own, when the call had a
/// guardrail.
#[derive(serde::Serialize)]
pub(crate) struct WithGuardrail<T> {
    #[serde(flatten)]
    pub body: T,
    #[serde(flatten)]
    pub guardrail: Option<BodyFields>,
}

/// `amazon-bedrock-guardrailAction` and `amazon-bedrock-trace`, flattened into a response.
#[derive(serde::Serialize)]
pub(crate) struct BodyFields {
    #[serde(rename = "amazon-bedrock-guardrailAction")]
    pub action: &'static str,
    #[serde(
        rename = "amazon-bedrock-trace",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace: Option<BodyTrace>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Masks "Paris" as a guardrail would, and blocks on "forbidden".
    /// Ends `window` with the masked answer's verdict: all it released, and the rest, must be
    /// the whole answer masked.
    fn assert_masked_whole(window: Window, mut released: String, answer: &str) {
        let verdict = GuardedAnswer {
            text: peek(answer).unwrap(),
            intervened: true,
            blocked: false,
        };
        released.push_str(&window.rest(&verdict));
        assert_eq!(released, answer.replace("Paris", "{city}"));
    }

    fn peek(text: &str) -> Option<String> {
        (!text.contains("forbidden")).then(|| text.replace("Paris", "{city}"))
    }

    #[test]
    fn a_window_never_releases_an_entity_unmasked_even_across_chunks() {
        let mut window = Window::default();
        let filler = "All about France, its food and its history. ".repeat(12);
        let answer = format!("{filler}The capital is Paris. {filler}Paris again. {filler}");
        let mut released = String::new();
        let mut releases = 0;
        // Chunks of 5 bytes: "Paris" is split across chunks as a model streams it.
        for chunk in answer.as_bytes().chunks(5) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            if let Some(out) = window.push(chunk, peek) {
                released.push_str(&out);
                releases += 1;
            }
            assert!(!released.contains("Paris"), "{released}");
        }
        assert!(releases >= 3, "released in {releases} windows");
        assert_masked_whole(window, released, &answer);
    }

    #[test]
    fn a_window_releases_whole_characters_of_any_width() {
        let mut window = Window::default();
        let answer = "Café 🎉 à Paris, naïve résumé — 東京も. ".repeat(30);
        let mut released = String::new();
        // One character at a time, of one to four bytes.
        for c in answer.chars() {
            if let Some(out) = window.push(c.encode_utf8(&mut [0; 4]), peek) {
                released.push_str(&out);
            }
        }
        assert!(!released.is_empty() && !released.contains("Paris"));
        assert_masked_whole(window, released, &answer);
    }

    #[test]
    fn a_window_stops_at_a_block_and_ends_with_the_message() {
        let mut window = Window::default();
        let filler = "Nothing to see here, move along please. ".repeat(20);
        let before = window.push(&filler, peek).unwrap_or_default();
        assert!(!before.is_empty());
        assert!(window.push(&format!("forbidden {filler}"), peek).is_none());
        let verdict = GuardedAnswer {
            text: "Sorry.".into(),
            intervened: true,
            blocked: true,
        };
        assert_eq!(window.rest(&verdict), "Sorry.");
        assert!(!before.contains("forbidden"));
    }

    #[test]
    fn a_guardrail_is_requested_by_headers_or_by_body() {
        let mut headers = HeaderMap::new();
        assert!(requested(&headers, b"{}").unwrap().is_none());
        let body = br#"{"model":"m","guardrailConfig":{"guardrailIdentifier":"g1","guardrailVersion":"2","trace":"enabled"}}"#;
        let config = requested(&headers, body).unwrap().unwrap();
        assert_eq!(
            (
                config.guardrail_identifier.as_str(),
                config.guardrail_version.as_str()
            ),
            ("g1", "2")
        );
        assert_eq!(config.trace, Trace::Enabled);

        headers.insert(IDENTIFIER_HEADER, "g2".parse().unwrap());
        assert!(
            requested(&headers, b"{}").is_err(),
            "a name needs a version"
        );
        headers.insert(VERSION_HEADER, "DRAFT".parse().unwrap());
        headers.insert(TRACE_HEADER, "enabled_full".parse().unwrap());
        // The headers win over the body, as on InvokeModel.
        let config = requested(&headers, body).unwrap().unwrap();
        assert_eq!(config.guardrail_identifier, "g2");
        assert_eq!(config.trace, Trace::EnabledFull);
        headers.insert(TRACE_HEADER, "loud".parse().unwrap());
        assert!(requested(&headers, b"{}").is_err());

        let mut version_only = HeaderMap::new();
        version_only.insert(VERSION_HEADER, "1".parse().unwrap());
        assert!(requested(&version_only, b"{}").is_err());
    }

    #[test]
    fn accounts_are_stable_twelve_digits_and_differ_by_tenant() {
        let a = account_id("t-1");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, account_id("t-1"));
        assert_ne!(a, account_id("t-2"));
    }
}
