//! Bedrock's model invocation jobs (the `bedrock` client's `create_model_invocation_job`,
//! `get_`, `list_` and `stop_model_invocation_job`). Storage and running are
//! [`crate::invocation_jobs`]; this file holds no policy.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_types::BasaltError;
use basalt_wire::bedrock::invocation_jobs::{CreateInvocationJob, InvocationJob, JobList};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{body_error, BedrockError};
use crate::invocation_jobs::{self as jobs, KIND};
use crate::{batch, AppState};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/model-invocation-job", post(create))
        .route("/model-invocation-jobs", get(list))
        .route("/model-invocation-job/{id}", get(get_job))
        .route("/model-invocation-job/{id}/stop", post(stop))
}

/// A job identifier is its id or its ARN.
fn job_id(identifier: &str) -> &str {
    identifier.rsplit('/').next().unwrap_or(identifier)
}

fn arn(state: &AppState, principal: &Principal, id: &str) -> String {
    format!(
        "arn:aws:bedrock:{}:{}:model-invocation-job/{id}",
        state.region,
        crate::guardrail::account_id(&principal.tenant)
    )
}

async fn create(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, BedrockError> {
    let body = body.map_err(body_error)?;
    let request: CreateInvocationJob = basalt_wire::parse_json(&body)?;
    let name_ok = (1..=63).contains(&request.job_name.len())
        && request
            .job_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'+' || b == b'.');
    if !name_ok {
        return Err(BasaltError::invalid(
            "jobName",
            "a job name is 1 to 63 letters, digits, -, + or .",
        )
        .into());
    }
    // The model must be one this server serves for text (and the caller may use).
    let model = state
        .model(&request.model_id)
        .map_err(|e| e.with_param("modelId"))?;
    if let Some(platform) = state.platform.as_ref() {
        platform
            .check_access(&principal, &model.entry.manifest.id)
            .await?;
    }
    let buckets = jobs::buckets(&state)?;
    let input_uri = &request.input_data_config.s3_input_data_config.s3_uri;
    let input = buckets
        .locate(&principal.tenant, input_uri)
        .map_err(|e| jobs::bucket_error(e, "inputDataConfig"))?;
    buckets
        .locate(
            &principal.tenant,
            &request.output_data_config.s3_output_data_config.s3_uri,
        )
        .map_err(|e| jobs::bucket_error(e, "outputDataConfig"))?;
    let found = buckets
        .inputs(&input)
        .await
        .map_err(|e| jobs::bucket_error(e, "inputDataConfig"))?;
    if found.is_empty() {
        return Err(BasaltError::invalid(
            "inputDataConfig",
            format!("the input location {input_uri} does not exist or holds no .jsonl file"),
        )
        .into());
    }
    let id: String = crate::generation::request_id("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    let now = jobs::now();
    let mut job = InvocationJob {
        job_arn: arn(&state, &principal, &id),
        job_name: request.job_name,
        model_id: request.model_id,
        client_request_token: request.client_request_token,
        role_arn: request.role_arn,
        status: "Submitted".into(),
        message: None,
        submit_time: now.clone(),
        last_modified_time: now,
        end_time: None,
        input_data_config: request.input_data_config,
        output_data_config: request.output_data_config,
        timeout_duration_in_hours: request.timeout_duration_in_hours,
        model_invocation_type: request.model_invocation_type.unwrap_or_default(),
        total_record_count: 0,
        processed_record_count: 0,
        success_record_count: 0,
        error_record_count: 0,
    };
    jobs::save(
        &state,
        &principal.tenant,
        &id,
        &mut job,
        basalt_store::now(),
    )
    .await?;
    batch::start(&state, &principal, &id, batch::Format::Bedrock).await?;
    Ok(Json(json!({"jobArn": job.job_arn})))
}

async fn get_job(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
) -> Result<Json<InvocationJob>, BedrockError> {
    Ok(Json(
        jobs::load(&state, &principal.tenant, job_id(&identifier)).await?,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status_equals: Option<String>,
    name_contains: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

async fn list(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, BedrockError> {
    let Query(q) = query.map_err(|e| BasaltError::invalid("query", e.body_text()))?;
    let limit = q.max_results.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(BasaltError::invalid("maxResults", "maxResults is 1 to 1000").into());
    }
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no store"))?;
    let (out, next) = crate::files::page::<InvocationJob>(
        platform,
        &principal.tenant,
        KIND,
        q.next_token.as_deref(),
        (limit, "nextToken"),
        |job| {
            q.status_equals.as_ref().is_none_or(|s| &job.status == s)
                && q.name_contains
                    .as_ref()
                    .is_none_or(|n| job.job_name.contains(n.as_str()))
        },
    )
    .await?;
    Ok(Json(
        serde_json::to_value(JobList {
            invocation_job_summaries: &out,
            next_token: next.as_deref(),
        })
        .map_err(|e| BasaltError::internal(e.to_string()))?,
    ))
}

/// Marks the job `Stopping` and stops it: records running are dropped, what finished is
/// written out, and the job ends `Stopped`.
async fn stop(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(identifier): Path<String>,
) -> Result<Json<Value>, BedrockError> {
    let id = job_id(&identifier);
    let mut job = jobs::load(&state, &principal.tenant, id).await?;
    if job.is_terminal() {
        return Err(BasaltError::invalid(
            "jobIdentifier",
            format!("a job that is {} cannot be stopped", job.status),
        )
        .into());
    }
    if job.status != "Stopping" {
        job.status = "Stopping".into();
        jobs::save(&state, &principal.tenant, id, &mut job, 0).await?;
    }
    if let Some(batches) = state.batches.as_ref() {
        batches.stop(id);
    }
    Ok(Json(json!({})))
}
