//! Bedrock batch inference: model invocation jobs over JSONL files in the tenant's buckets.
//!
//! `s3://bucket/key` names `<data dir>/buckets/<tenant>/<bucket>/<key>`: an operator (or a
//! sync from real S3) puts a tenant's input there, and the job writes its output beside it,
//! as Bedrock does: `<output uri>/<job id>/<input file>.out` with one line per record, in
//! input order (`modelOutput`, or `error` for a record that failed), and
//! `manifest.json.out` with the counts and token totals. A URI can only name the caller's
//! own buckets; no path it holds can leave them.
//!
//! A job is the same durable job as an OpenAI batch ([`crate::batch`]): its records go
//! through the same route code as `InvokeModel` or `Converse` requests, in the batch tier,
//! journalled one by one, resumed by the next server if this one dies.

use std::sync::Arc;

use axum::extract::{Extension, Path as UriPath, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use basalt_auth::Principal;
use basalt_buckets::{BucketError, Buckets, Location};
use basalt_store::StoredObject;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::bedrock::invocation_jobs::{
    record_tokens, InputRecord, InvocationJob, InvocationType, Manifest,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use crate::batch::{self, Done, Job, Progress, Stop};
use crate::generation::{in_tier, Tier};
use crate::invocation_log::iso8601;
use crate::offload::off_runtime;
use crate::AppState;

/// The store's kind for invocation jobs.
pub(crate) const KIND: &str = "model-invocation-job";

fn internal(e: impl std::fmt::Display) -> BasaltError {
    BasaltError::internal(e.to_string())
}

pub(crate) fn not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("The model invocation job {id} was not found."),
    )
}

pub(crate) fn now() -> String {
    iso8601(basalt_store::now())
}

/// A bucket failure as the API's error: a URI the caller got wrong is theirs to fix (a
/// validation error naming `param`); a store that fails is ours, logged in full and
/// answered as an internal error without the operator's endpoint in the message.
pub(crate) fn bucket_error(e: BucketError, param: &str) -> BasaltError {
    match e {
        BucketError::InvalidUri { .. } | BucketError::NotFound(_) => {
            BasaltError::invalid(param, e.to_string())
        }
        BucketError::Config { .. } | BucketError::Store { .. } => {
            tracing::error!(error = %e, "bucket store");
            BasaltError::internal("The bucket store did not answer; try again later.")
        }
    }
}

/// The store `s3://` URIs resolve in.
pub(crate) fn buckets(state: &AppState) -> Result<&Buckets, BasaltError> {
    state
        .buckets
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no buckets for batch jobs"))
}

/// Where a job's input (`inputDataConfig`) and output (`outputDataConfig`) URIs point.
pub(crate) fn locations(
    buckets: &Buckets,
    tenant: &str,
    job: &InvocationJob,
) -> Result<(Location, Location), BasaltError> {
    let input = buckets
        .locate(tenant, &job.input_data_config.s3_input_data_config.s3_uri)
        .map_err(|e| bucket_error(e, "inputDataConfig"))?;
    let output = buckets
        .locate(tenant, &job.output_data_config.s3_output_data_config.s3_uri)
        .map_err(|e| bucket_error(e, "outputDataConfig"))?;
    Ok((input, output))
}

pub(crate) async fn load(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<InvocationJob, BasaltError> {
    let platform = state.platform.as_ref().ok_or_else(|| not_found(id))?;
    let stored = platform
        .store
        .object(tenant, KIND, id)
        .await
        .map_err(|e| crate::files::lookup_error(e, not_found(id)))?;
    serde_json::from_str(&stored.body).map_err(internal)
}

/// Stores the job (`created_at` counts only the first time: later saves keep it).
pub(crate) async fn save(
    state: &AppState,
    tenant: &str,
    id: &str,
    job: &mut InvocationJob,
    created_at: i64,
) -> Result<(), BasaltError> {
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no store for jobs"))?;
    job.last_modified_time = now();
    platform
        .store
        .put_object(&StoredObject {
            tenant_id: tenant.to_string(),
            kind: KIND.into(),
            id: id.to_string(),
            created_at,
            body: serde_json::to_string(job).map_err(internal)?,
        })
        .await
        .map_err(internal)
}

/// Marks a job that failed as `Failed`, with why.
pub(crate) async fn fail(state: &AppState, job: &Job, message: &str) {
    if let Ok(mut found) = load(state, &job.tenant, &job.batch_id).await {
        if !found.is_terminal() {
            found.status = "Failed".into();
            found.message = Some(message.to_string());
            found.end_time = Some(now());
            let _ = save(state, &job.tenant, &job.batch_id, &mut found, 0).await;
        }
    }
}

/// One input record, checked; its `recordId` either way.
type Parsed = Result<(Option<String>, Value), (Option<String>, String)>;

fn parse_record(line: &[u8]) -> Parsed {
    match serde_json::from_slice::<InputRecord>(line) {
        Ok(r) if r.model_input.is_object() => Ok((r.record_id, r.model_input)),
        Ok(r) => Err((r.record_id, "modelInput is not a JSON object".into())),
        Err(e) => {
            let id = serde_json::from_slice::<Value>(line)
                .ok()
                .and_then(|v| v.get("recordId")?.as_str().map(str::to_string));
            Err((id, format!("the record is not valid: {e}")))
        }
    }
}

/// Runs one record through `InvokeModel` or `Converse`; its output line.
async fn run_record(
    state: Arc<AppState>,
    principal: Principal,
    model_id: String,
    kind: InvocationType,
    parsed: Parsed,
) -> Value {
    let (record_id, input) = match parsed {
        Ok(ok) => ok,
        Err((record_id, message)) => {
            return json!({"recordId": record_id, "modelInput": Value::Null,
                          "error": {"errorCode": 400, "errorMessage": message}})
        }
    };
    let body = Bytes::from(serde_json::to_vec(&input).unwrap_or_default());
    let response = match kind {
        InvocationType::Converse => crate::routes::bedrock::converse(
            State(state),
            Extension(principal),
            UriPath(model_id),
            Ok(body),
        )
        .await
        .into_response(),
        InvocationType::InvokeModel => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            crate::routes::bedrock::invoke(
                State(state),
                Extension(principal),
                UriPath(model_id),
                headers,
                Ok(body),
            )
            .await
            .into_response()
        }
    };
    let status = response.status().as_u16();
    let out: Value = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(e) => json!({"message": e.to_string()}),
    };
    if status == 200 {
        json!({"recordId": record_id, "modelInput": input, "modelOutput": out})
    } else {
        let message = out
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the record failed");
        json!({"recordId": record_id, "modelInput": input,
               "error": {"errorCode": status, "errorMessage": message}})
    }
}

fn succeeded(record: &Value) -> bool {
    record.get("modelOutput").is_some()
}

fn counts(done: &Done) -> (u64, u64) {
    let ok = done.values().filter(|r| succeeded(r)).count() as u64;
    (ok, done.len() as u64 - ok)
}

struct JobProgress<'s> {
    state: &'s AppState,
    tenant: &'s str,
    id: &'s str,
    job: &'s mut InvocationJob,
}

impl Progress for JobProgress<'_> {
    fn save<'a>(&'a mut self, done: &'a Done) -> BoxFuture<'a, Result<(), BasaltError>> {
        Box::pin(async move {
            let (ok, failed) = counts(done);
            self.job.processed_record_count = ok + failed;
            self.job.success_record_count = ok;
            self.job.error_record_count = failed;
            save(self.state, self.tenant, self.id, self.job, 0).await
        })
    }
}

/// Runs (or resumes) a job to its end.
pub(crate) async fn run(state: &Arc<AppState>, job: &Job, stop: &Stop) -> Result<(), BasaltError> {
    let id = job.batch_id.as_str();
    let mut found = load(state, &job.tenant, id).await?;
    if found.is_terminal() {
        batch::remove_job_dir(state, id).await;
        return Ok(());
    }
    let buckets = buckets(state)?;
    let (input, output) = locations(buckets, &job.tenant, &found)?;
    let files = buckets
        .inputs(&input)
        .await
        .map_err(|e| bucket_error(e, "inputDataConfig"))?;
    let mut contents = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = buckets
            .read(file)
            .await
            .map_err(|e| bucket_error(e, "inputDataConfig"))?;
        contents.push(bytes);
    }
    // Every record by its place across the files: (file, line bytes).
    let records: Vec<(usize, &[u8])> = contents
        .iter()
        .enumerate()
        .flat_map(|(f, bytes)| {
            bytes
                .split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(move |l| (f, l))
        })
        .collect();
    if records.is_empty() {
        found.status = "Failed".into();
        found.message = Some("the input location holds no records".into());
        found.end_time = Some(now());
        save(state, &job.tenant, id, &mut found, 0).await?;
        batch::remove_job_dir(state, id).await;
        return Ok(());
    }
    let journal_path = state
        .batches
        .as_ref()
        .map(|b| b.dir(id).join("journal.jsonl"))
        .ok_or_else(|| BasaltError::internal("this server runs no batch jobs"))?;
    let mut done = {
        let path = journal_path.clone();
        off_runtime(move || batch::read_journal(&path)).await?
    };
    let (ok, failed) = counts(&done);
    found.total_record_count = records.len() as u64;
    found.processed_record_count = ok + failed;
    found.success_record_count = ok;
    found.error_record_count = failed;
    if found.status == "Submitted" {
        found.status = "InProgress".into();
    }
    save(state, &job.tenant, id, &mut found, 0).await?;
    if found.status != "Stopping" {
        let todo: Vec<(usize, Parsed)> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.contains_key(i))
            .map(|(i, (_, line))| (i, parse_record(line)))
            .collect();
        let (principal, model, kind) = (
            job.principal(),
            found.model_id.clone(),
            found.model_invocation_type,
        );
        let run_one = |parsed: Parsed| {
            let (state, principal, model) = (Arc::clone(state), principal.clone(), model.clone());
            let record: BoxFuture<'static, Value> = Box::pin(in_tier(
                Tier::Batch,
                run_record(state, principal, model, kind, parsed),
            ));
            record
        };
        let mut progress = JobProgress {
            state,
            tenant: &job.tenant,
            id,
            job: &mut found,
        };
        batch::run_records(journal_path, stop, todo, &mut done, run_one, &mut progress).await?;
    }
    // Re-read: a stop request may have changed the stored status meanwhile.
    let mut found = load(state, &job.tenant, id).await?;
    let stopped = found.status == "Stopping" || done.len() < records.len();
    let output = output.join(id);
    let mut manifest = Manifest {
        total_record_count: records.len() as u64,
        ..Manifest::default()
    };
    let mut per_file: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
    for (i, (f, _)) in records.iter().enumerate() {
        let Some(record) = done.get(&i) else { continue };
        manifest.processed_record_count += 1;
        if succeeded(record) {
            manifest.success_record_count += 1;
        } else {
            manifest.error_record_count += 1;
        }
        let (input_tokens, output_tokens) = record_tokens(record);
        manifest.input_token_count += input_tokens;
        manifest.output_token_count += output_tokens;
        if let Some(sink) = per_file.get_mut(*f) {
            serde_json::to_writer(&mut *sink, record).map_err(internal)?;
            sink.push(b'\n');
        }
    }
    // The manifest last: a reader that finds it finds every output file complete.
    for (file, bytes) in files.iter().zip(per_file) {
        let at = output.join(&format!("{}.out", file.file_name()));
        buckets
            .write(&at, Bytes::from(bytes))
            .await
            .map_err(|e| bucket_error(e, "outputDataConfig"))?;
    }
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(internal)?;
    buckets
        .write(
            &output.join("manifest.json.out"),
            Bytes::from(manifest_bytes),
        )
        .await
        .map_err(|e| bucket_error(e, "outputDataConfig"))?;
    found.processed_record_count = manifest.processed_record_count;
    found.success_record_count = manifest.success_record_count;
    found.error_record_count = manifest.error_record_count;
    found.status = if stopped {
        "Stopped"
    } else if manifest.error_record_count > 0 {
        "PartiallyCompleted"
    } else {
        "Completed"
    }
    .into();
    found.end_time = Some(now());
    save(state, &job.tenant, id, &mut found, 0).await?;
    batch::remove_job_dir(state, id).await;
    Ok(())
}
