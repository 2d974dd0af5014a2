//! Guardrails as the server applies them: finding a tenant's guardrail version in the
//! store, keeping it compiled, and assessing text with it in Bedrock's terms (which blocks
//! are guarded, what the answer says when it intervenes, the usage and coverage).
//!
//! Every surface that applies a guardrail (`ApplyGuardrail`, Converse's `guardrailConfig`)
//! goes through [`resolve`] and [`Resolved::apply`]; none of them holds policy of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use basalt_auth::Principal;
use basalt_guardrails::{Assessment, Guardrail, PolicyUnits, Source};
use basalt_store::StoreError;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::bedrock::converse::ConverseRequest;
use basalt_wire::bedrock::guardrails::{
    self as wire, AssessmentOut, Coverage, Definition, GuardrailConfig, GuardrailTrace,
    GuardrailUsage, InvocationMetrics, StreamProcessingMode, TextCharacters, Trace,
};
use basalt_wire::bedrock::output::ConverseTrace;

use crate::AppState;

/// A guardrail version, compiled, with what the API says about it.
pub(crate) struct Resolved {
    pub id: String,
    pub definition: Definition,
    guardrail: Guardrail,
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

/// A guardrail around one Converse call: the input checked (and masked) before the
/// generation, the answer checked after, the trace kept for the response.
pub(crate) struct ConverseGuard {
    resolved: Arc<Resolved>,
    trace: Trace,
    mode: Option<StreamProcessingMode>,
    input: Applied,
    outputs: Vec<AssessmentOut>,
    /// The answer as the model gave it, for the full trace.
    model_output: Option<String>,
}

/// What the answer becomes once the guardrail has seen it.
pub(crate) struct GuardedAnswer {
    pub text: String,
    pub intervened: bool,
    /// The answer was replaced by the blocked message (tool calls included).
    pub blocked: bool,
}

impl ConverseGuard {
    /// Resolves the request's guardrail and applies it to the input, masking the request's
    /// texts where it anonymises. A blocked input leaves the request as it was: it will not
    /// be sent to the model ([`ConverseGuard::input_blocked`]).
    pub(crate) async fn check_input(
        state: &AppState,
        principal: &Principal,
        config: GuardrailConfig,
        request: &mut ConverseRequest,
    ) -> Result<Self, BasaltError> {
        let resolved = resolve(
            state,
            principal,
            &config.guardrail_identifier,
            &config.guardrail_version,
        )
        .await?;
        let (mut texts, total) = request.guarded_texts();
        let input = {
            let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
            resolved.apply(Source::Input, &refs, total)
        };
        if input.intervened && !input.blocked {
            for (text, masked) in texts.iter_mut().zip(&input.outputs) {
                (**text).clone_from(masked);
            }
        }
        Ok(Self {
            resolved,
            trace: config.trace,
            mode: config.stream_processing_mode,
            input,
            outputs: Vec::new(),
            model_output: None,
        })
    }

    /// Whether the answer is checked before any of it is sent (`sync`, the default) or
    /// streamed and checked as it ends (`async`).
    pub(crate) fn holds_output(&self) -> bool {
        self.mode != Some(StreamProcessingMode::Async)
    }

    /// The guardrail's blocked-input message, when the input is not to reach the model.
    pub(crate) fn input_blocked(&self) -> Option<&str> {
        self.input.blocked_message.as_deref()
    }

    /// Applies the guardrail to the model's answer: the blocked-output message, the answer
    /// masked, or the answer as it was.
    pub(crate) fn check_output(&mut self, answer: &str) -> GuardedAnswer {
        let applied = self.resolved.apply(Source::Output, &[answer], 0);
        let text = match (&applied.blocked_message, applied.intervened) {
            (Some(message), _) => message.clone(),
            (None, true) => applied.outputs.first().cloned().unwrap_or_default(),
            (None, false) => answer.to_string(),
        };
        let (intervened, blocked) = (applied.intervened, applied.blocked);
        self.outputs.push(applied.assessment);
        self.model_output = Some(answer.to_string());
        GuardedAnswer {
            text,
            intervened,
            blocked,
        }
    }

    /// The trace for the response, as `guardrailConfig.trace` asked.
    pub(crate) fn trace(self) -> Option<ConverseTrace> {
        if self.trace == Trace::Disabled {
            return None;
        }
        let id = self.resolved.id.clone();
        let intervened = self.input.intervened || !self.outputs.is_empty();
        let mut trace = GuardrailTrace {
            model_output: match self.trace {
                Trace::EnabledFull => self.model_output.map(|o| vec![o]),
                _ => None,
            },
            action_reason: intervened.then(|| "Guardrail intervened.".to_string()),
            ..GuardrailTrace::default()
        };
        trace
            .input_assessment
            .insert(id.clone(), self.input.assessment);
        if !self.outputs.is_empty() {
            trace.output_assessments.insert(id, self.outputs);
        }
        Some(ConverseTrace { guardrail: trace })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_stable_twelve_digits_and_differ_by_tenant() {
        let a = account_id("t-1");
        assert_eq!(a.len(), 12);
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, account_id("t-1"));
        assert_ne!(a, account_id("t-2"));
    }
}
