//! OpenAI's files and batches: `/v1/files` (upload as multipart, list, retrieve, content,
//! delete) and `/v1/batches` (create, retrieve, list, cancel), as the `openai` SDK calls
//! them. Storage is [`crate::files`], jobs are [`crate::batch`]; this file holds no policy.
//!
//! Uploads have their own body limit (`ServerConfig::file_limit`), larger than a request's.

use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Multipart, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::openai::files::{
    BatchObject, CreateBatch, FileDeleted, FileObject, List, RequestCounts, BATCH_ENDPOINTS,
    UPLOAD_PURPOSES,
};
use bytes::Bytes;
use serde::Deserialize;

use crate::error::{body_error, OpenAiError};
use crate::files::{page, FileStore};
use crate::platform::Platform;
use crate::{batch, AppState, ServerConfig};

type Shared = State<Arc<AppState>>;

pub fn routes(config: &ServerConfig) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/files", post(upload).get(list_files))
        .route("/v1/files/{id}", get(get_file).delete(delete_file))
        .route("/v1/files/{id}/content", get(file_content))
        .route("/v1/batches", post(create_batch).get(list_batches))
        .route("/v1/batches/{id}", get(get_batch))
        .route("/v1/batches/{id}/cancel", post(cancel_batch))
        .layer(DefaultBodyLimit::max(config.file_limit))
}

fn storage(state: &AppState) -> Result<(&FileStore, &Platform), BasaltError> {
    match (state.files.as_deref(), state.platform.as_deref()) {
        (Some(files), Some(platform)) => Ok((files, platform)),
        _ => Err(BasaltError::new(
            ErrorKind::NotFound,
            "this server keeps no files (it runs without a data directory)",
        )),
    }
}

async fn upload(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Json<FileObject>, OpenAiError> {
    let (files, platform) = storage(&state)?;
    let mut multipart = multipart
        .map_err(|e| BasaltError::invalid("file", format!("not a multipart upload: {e}")))?;
    let (mut file, mut purpose) = (None, None);
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| BasaltError::invalid("file", format!("a malformed multipart body: {e}")))?
    {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("upload").to_string();
                let bytes = field.bytes().await.map_err(|e| {
                    BasaltError::invalid("file", format!("cannot read the file: {e}"))
                })?;
                file = Some((name, bytes));
            }
            Some("purpose") => {
                purpose = Some(field.text().await.map_err(|e| {
                    BasaltError::invalid("purpose", format!("cannot read the purpose: {e}"))
                })?);
            }
            _ => {}
        }
    }
    let (name, bytes) =
        file.ok_or_else(|| BasaltError::invalid("file", "the upload has no `file` part"))?;
    let purpose =
        purpose.ok_or_else(|| BasaltError::invalid("purpose", "`purpose` is required"))?;
    if !UPLOAD_PURPOSES.contains(&purpose.as_str()) {
        return Err(BasaltError::invalid(
            "purpose",
            format!(
                "`{purpose}` is not a purpose files are uploaded for ({})",
                UPLOAD_PURPOSES.join(", ")
            ),
        )
        .into());
    }
    if purpose == "batch" && std::str::from_utf8(&bytes).is_err() {
        return Err(
            BasaltError::invalid("file", "a batch input file is JSONL text (UTF-8)").into(),
        );
    }
    let created = files
        .create(platform, &principal.tenant, &name, &purpose, bytes.to_vec())
        .await?;
    Ok(Json(created))
}

#[derive(Deserialize)]
struct ListQuery {
    purpose: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(20) as usize
    }
}

fn list_query(q: Result<Query<ListQuery>, QueryRejection>) -> Result<ListQuery, BasaltError> {
    let Query(q) = q.map_err(|e| BasaltError::invalid("query", e.body_text()))?;
    if q.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
        return Err(BasaltError::invalid("limit", "`limit` is 1 to 10000"));
    }
    Ok(q)
}

async fn list_files(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let (_, platform) = storage(&state)?;
    let q = list_query(query)?;
    let (data, more) = page::<FileObject>(
        platform,
        &principal.tenant,
        crate::files::KIND,
        q.after.as_deref(),
        (q.limit(), "after"),
        |f| q.purpose.as_ref().is_none_or(|p| &f.purpose == p),
    )
    .await?;
    Ok(list(&data, more.is_some(), |f| &f.id))
}

/// A page as OpenAI lists it, ids of its first and last entries included.
fn list<T: serde::Serialize>(data: &[T], has_more: bool, id: impl Fn(&T) -> &String) -> Response {
    Json(List {
        object: "list",
        first_id: data.first().map(|x| id(x).as_str()),
        last_id: data.last().map(|x| id(x).as_str()),
        data,
        has_more,
    })
    .into_response()
}

async fn get_file(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, OpenAiError> {
    let (files, platform) = storage(&state)?;
    Ok(Json(files.get(platform, &principal.tenant, &id).await?))
}

async fn file_content(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let (files, platform) = storage(&state)?;
    let (_, bytes) = files.content(platform, &principal.tenant, &id).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

async fn delete_file(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, OpenAiError> {
    let (files, platform) = storage(&state)?;
    files.delete(platform, &principal.tenant, &id).await?;
    Ok(Json(FileDeleted {
        id: &id,
        object: "file",
        deleted: true,
    })
    .into_response())
}

async fn create_batch(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchObject>, OpenAiError> {
    let (files, platform) = storage(&state)?;
    let body = body.map_err(body_error)?;
    let request: CreateBatch = basalt_wire::parse_json(&body)?;
    if !BATCH_ENDPOINTS.contains(&request.endpoint.as_str()) {
        return Err(BasaltError::invalid(
            "endpoint",
            format!(
                "`{}` is not a batch endpoint ({})",
                request.endpoint,
                BATCH_ENDPOINTS.join(", ")
            ),
        )
        .into());
    }
    if request.completion_window != "24h" {
        return Err(
            BasaltError::invalid("completion_window", "the completion window is `24h`").into(),
        );
    }
    let input = files
        .get(platform, &principal.tenant, &request.input_file_id)
        .await
        .map_err(|e| e.with_param("input_file_id"))?;
    if input.purpose != "batch" {
        return Err(BasaltError::invalid(
            "input_file_id",
            format!(
                "file {} was uploaded for `{}`, not `batch`",
                input.id, input.purpose
            ),
        )
        .into());
    }
    let now = basalt_store::now() as u64;
    let created = BatchObject {
        id: crate::generation::request_id("batch_"),
        object: "batch".into(),
        endpoint: request.endpoint,
        errors: None,
        input_file_id: request.input_file_id,
        completion_window: request.completion_window,
        status: "validating".into(),
        output_file_id: None,
        error_file_id: None,
        created_at: now,
        in_progress_at: None,
        expires_at: Some(now + 24 * 3600),
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        expired_at: None,
        cancelling_at: None,
        cancelled_at: None,
        request_counts: RequestCounts::default(),
        metadata: request.metadata,
    };
    batch::save(&state, &principal.tenant, &created).await?;
    batch::start(&state, &principal, &created.id, batch::Format::OpenAi).await?;
    Ok(Json(created))
}

async fn get_batch(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchObject>, OpenAiError> {
    Ok(Json(batch::load(&state, &principal.tenant, &id).await?))
}

async fn list_batches(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, OpenAiError> {
    let (_, platform) = storage(&state)?;
    let q = list_query(query)?;
    let (data, more) = page::<BatchObject>(
        platform,
        &principal.tenant,
        batch::KIND,
        q.after.as_deref(),
        (q.limit(), "after"),
        |_| true,
    )
    .await?;
    Ok(list(&data, more.is_some(), |b| &b.id))
}

/// Marks the batch `cancelling` and stops its job: records running are dropped, what
/// finished is written out, and the batch ends `cancelled`.
async fn cancel_batch(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<BatchObject>, OpenAiError> {
    let mut found = batch::load(&state, &principal.tenant, &id).await?;
    if found.is_terminal() {
        return Err(BasaltError::invalid(
            "batch_id",
            format!("a batch that is {} cannot be cancelled", found.status),
        )
        .into());
    }
    if found.status != "cancelling" {
        found.status = "cancelling".into();
        found.cancelling_at = Some(basalt_store::now() as u64);
        batch::save(&state, &principal.tenant, &found).await?;
    }
    if let Some(batches) = state.batches.as_ref() {
        batches.stop(&id);
    }
    Ok(Json(found))
}
