//! Bedrock Guardrails routes: the control plane boto3's `bedrock` client calls
//! (`/guardrails...`) and the runtime's `ApplyGuardrail`
//! (`/guardrail/{id}/version/{version}/apply`), each caller seeing only its own tenant's
//! guardrails. Shapes are in `wire::bedrock::guardrails`; applying is `crate::guardrails`.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_store::{GuardrailDraft, GuardrailRecord, Store, DRAFT};
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::bedrock::converse::is_guarded;
use basalt_wire::bedrock::guardrails::{
    self as wire, ApplyRequest, Described, GuardrailContentBlock, GuardrailRequest, OutputScope,
    OutputText, VersionRequest,
};
use basalt_wire::bedrock::parse_json;
use bytes::Bytes;
use serde::Deserialize;

use crate::error::BedrockError;
use crate::generation::Call;
use crate::guardrail::{arn, resolve, store_error, GroundingInputs, GuardrailMeter};
use crate::{AppState, ServerConfig};

type Shared = State<Arc<AppState>>;

pub fn routes(config: ServerConfig) -> Router<Arc<AppState>> {
    Router::new()
        .route("/guardrails", get(list).post(create))
        .route(
            "/guardrails/{guardrail}",
            get(describe)
                .put(update)
                .post(create_version)
                .delete(delete),
        )
        .route(
            "/guardrail/{guardrail}/version/{version}/apply",
            post(apply),
        )
        .layer(axum::extract::DefaultBodyLimit::max(config.body_limit))
}

fn store(state: &AppState) -> Result<Arc<dyn Store>, BasaltError> {
    state
        .platform
        .as_ref()
        .map(|p| Arc::clone(&p.store))
        .ok_or_else(|| {
            BasaltError::new(
                ErrorKind::NotFound,
                "this server has no store for guardrails",
            )
        })
}

fn described<'a>(record: &'a GuardrailRecord, arn: &'a str) -> Described<'a> {
    Described {
        id: &record.id,
        arn,
        version: &record.version,
        name: &record.name,
        description: record.description.as_deref(),
        created_at: record.created_at,
        updated_at: record.updated_at,
    }
}

/// Bedrock answers its control plane's writes with 202 Accepted.
fn accepted(body: impl serde::Serialize) -> Response {
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// A guardrail to store, checked: its policies compile, and a guard model is there to
/// judge its denied topics and content filters if it has any.
fn draft_of(state: &AppState, body: &Bytes) -> Result<GuardrailDraft, BasaltError> {
    let (name, description, definition) =
        parse_json::<GuardrailRequest>(body)?.into_definition()?;
    let classifier = state.content_classifier().is_some();
    if state.guard_model.is_none() && definition.policies.needs_guard_model(classifier) {
        let p = &definition.policies;
        let param = if p.topic_policy_config.is_some() {
            "topicPolicyConfig"
        } else if p.content_policy_config.is_some() {
            "contentPolicyConfig"
        } else {
            "sensitiveInformationPolicyConfig.piiEntitiesConfig"
        };
        let judged = if classifier {
            "denied topics, content filters other than INSULTS (which the built-in classifier \
             rates), NAME and ADDRESS"
        } else {
            "denied topics, content filters, NAME and ADDRESS"
        };
        return Err(BasaltError::new(
            ErrorKind::UnsupportedForModel,
            format!(
                "{judged} are judged by a guard model, and this server has none: start it \
                 with --guard-model <a served chat model>"
            ),
        )
        .with_param(param));
    }
    let definition = serde_json::to_string(&definition)
        .map_err(|e| BasaltError::internal(format!("cannot store the guardrail: {e}")))?;
    Ok(GuardrailDraft {
        name,
        description,
        definition,
    })
}

async fn create(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, BedrockError> {
    let draft = draft_of(&state, &body)?;
    let record = store(&state)?
        .create_guardrail(&principal.tenant, &draft)
        .await
        .map_err(store_error)?;
    let arn = arn(&state, &principal, &record.id);
    Ok(accepted(wire::CreateResponse {
        guardrail_id: &record.id,
        guardrail_arn: &arn,
        version: &record.version,
        created_at: basalt_types::time::iso8601(record.created_at),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionQuery {
    guardrail_version: Option<String>,
}

async fn describe(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, BedrockError> {
    let version = q.guardrail_version.as_deref().unwrap_or(DRAFT);
    if !wire::valid_version(version) {
        return Err(BasaltError::invalid("guardrailVersion", "DRAFT or a number from 1").into());
    }
    let record = store(&state)?
        .guardrail(&principal.tenant, wire::guardrail_id(&identifier), version)
        .await
        .map_err(store_error)?;
    let definition: wire::Definition = serde_json::from_str(&record.definition)
        .map_err(|e| BasaltError::internal(format!("stored guardrail is unreadable: {e}")))?;
    let arn = arn(&state, &principal, &record.id);
    Ok(Json(wire::get_response(&described(&record, &arn), &definition)).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    guardrail_identifier: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

async fn list(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, BedrockError> {
    let max = q.max_results.unwrap_or(100);
    if !(1..=1000).contains(&max) {
        return Err(BasaltError::invalid("maxResults", "between 1 and 1000").into());
    }
    let start: usize = match &q.next_token {
        Some(t) => t
            .parse()
            .map_err(|_| BasaltError::invalid("nextToken", "not a token this server gave"))?,
        None => 0,
    };
    let id = q.guardrail_identifier.as_deref().map(wire::guardrail_id);
    let records = store(&state)?
        .guardrails(&principal.tenant, id)
        .await
        .map_err(store_error)?;
    let arns: Vec<String> = records
        .iter()
        .map(|r| arn(&state, &principal, &r.id))
        .collect();
    let page: Vec<_> = records
        .iter()
        .zip(&arns)
        .skip(start)
        .take(max)
        .map(|(r, a)| wire::summary(&described(r, a)))
        .collect();
    let next_token = (start + max < records.len()).then(|| (start + max).to_string());
    Ok(Json(wire::ListResponse {
        guardrails: page,
        next_token,
    })
    .into_response())
}

async fn update(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
    body: Bytes,
) -> Result<Response, BedrockError> {
    let draft = draft_of(&state, &body)?;
    let record = store(&state)?
        .update_guardrail(&principal.tenant, wire::guardrail_id(&identifier), &draft)
        .await
        .map_err(store_error)?;
    let arn = arn(&state, &principal, &record.id);
    Ok(accepted(wire::UpdateResponse {
        guardrail_id: &record.id,
        guardrail_arn: &arn,
        version: &record.version,
        updated_at: basalt_types::time::iso8601(record.updated_at),
    }))
}

async fn create_version(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
    body: Bytes,
) -> Result<Response, BedrockError> {
    let request: VersionRequest = if body.is_empty() {
        VersionRequest::default()
    } else {
        parse_json(&body)?
    };
    if request
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 200)
    {
        return Err(BasaltError::invalid("description", "at most 200 characters").into());
    }
    let record = store(&state)?
        .create_guardrail_version(
            &principal.tenant,
            wire::guardrail_id(&identifier),
            request.description.as_deref(),
        )
        .await
        .map_err(store_error)?;
    Ok(accepted(wire::VersionResponse {
        guardrail_id: &record.id,
        version: &record.version,
    }))
}

async fn delete(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Response, BedrockError> {
    if let Some(v) = &q.guardrail_version {
        if v == DRAFT || !wire::valid_version(v) {
            return Err(BasaltError::invalid(
                "guardrailVersion",
                "a numbered version; delete the guardrail to delete its draft",
            )
            .into());
        }
    }
    store(&state)?
        .delete_guardrail(
            &principal.tenant,
            wire::guardrail_id(&identifier),
            q.guardrail_version.as_deref(),
        )
        .await
        .map_err(store_error)?;
    Ok(accepted(serde_json::json!({})))
}

async fn apply(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((identifier, version)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, BedrockError> {
    let request: ApplyRequest = parse_json(&body)?;
    let guardrail = resolve(&state, &principal, &identifier, &version).await?;
    let mut total = 0u64;
    let mut guarded = Vec::new();
    let mut grounding = GroundingInputs::default();
    for (i, block) in request.content.iter().enumerate() {
        match block {
            GuardrailContentBlock::Text(t) => {
                total += t.text.chars().count() as u64;
                // Grounding sources and queries are for grounding checks; everything else
                // (no qualifier, or `guard_content`) is guarded.
                if is_guarded(&t.qualifiers) {
                    guarded.push(t.text.as_str());
                }
                if t.qualifiers.iter().any(|q| q == "grounding_source") {
                    grounding.sources.push(t.text.clone());
                }
                if t.qualifiers.iter().any(|q| q == "query") {
                    grounding.query = Some(t.text.clone());
                }
            }
            GuardrailContentBlock::Image(_) => {
                return Err(BasaltError::new(
                    ErrorKind::UnsupportedForModel,
                    "image content needs a content-filter model, which this server does not have",
                )
                .with_param(format!("content.{i}.image"))
                .into())
            }
        }
    }
    let mut applied = guardrail.apply(request.source, &guarded, total);
    guardrail
        .judge(&state, request.source, &mut applied)
        .await?;
    guardrail
        .ground(&state, &guarded.join("\n"), &grounding, &mut applied)
        .await?;
    // Billed before it is answered, as a model call is.
    let call = Call::new(principal, "bedrock", "ApplyGuardrail", "");
    let resource = format!("guardrail/{}:{}", guardrail.id, version);
    let mut meter = GuardrailMeter::new(&state, &call, &resource);
    meter.count(request.source, &applied);
    meter.write().await;
    let full = request.output_scope == Some(OutputScope::Full);
    let outputs = match (&applied.blocked_message, applied.intervened) {
        (Some(message), _) => vec![OutputText {
            text: message.clone(),
        }],
        (None, true) => applied
            .outputs
            .iter()
            .map(|t| OutputText { text: t.clone() })
            .collect(),
        (None, false) if full => guarded
            .iter()
            .map(|t| OutputText {
                text: t.to_string(),
            })
            .collect(),
        (None, false) => Vec::new(),
    };
    let action_reason = applied.intervened.then(|| {
        if applied.blocked {
            "Guardrail blocked.".to_string()
        } else {
            "Guardrail masked.".to_string()
        }
    });
    Ok(Json(wire::ApplyResponse {
        usage: applied.usage,
        action: if applied.intervened {
            "GUARDRAIL_INTERVENED"
        } else {
            "NONE"
        },
        action_reason,
        outputs,
        assessments: vec![applied.assessment],
        guardrail_coverage: applied.coverage,
    })
    .into_response())
}
