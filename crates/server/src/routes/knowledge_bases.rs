//! Knowledge bases over Bedrock's paths: the `bedrock-agent` client's knowledge base, data
//! source and ingestion job operations, and the `bedrock-agent-runtime` client's
//! `Retrieve`. Storage, ingestion and the index are [`crate::knowledge`]; this file holds
//! no policy.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_types::BasaltError;
use basalt_wire::bedrock::knowledge::{
    CreateDataSource, CreateKnowledgeBase, DataSource, IngestionJob, KnowledgeBase, ListRequest,
    RetrievalResult, RetrieveAndGenerateRequest, RetrieveRequest, RetrieveResponse,
    StartIngestionJob,
};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{body_error, BedrockError};
use crate::generation::Call;
use crate::knowledge::{self as kb, ds_not_found, kb_not_found, now, DS_KIND, JOB_KIND, KB_KIND};
use crate::AppState;

type Shared = State<Arc<AppState>>;
type Answer = Result<(StatusCode, Json<Value>), BedrockError>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/knowledgebases/", put(create_kb).post(list_kbs))
        .route(
            "/knowledgebases/{kb}",
            get(get_kb).put(update_kb).delete(delete_kb),
        )
        .route(
            "/knowledgebases/{kb}/datasources/",
            put(create_ds).post(list_ds),
        )
        .route(
            "/knowledgebases/{kb}/datasources/{ds}",
            get(get_ds).delete(delete_ds),
        )
        .route(
            "/knowledgebases/{kb}/datasources/{ds}/ingestionjobs/",
            put(start_job).post(list_jobs),
        )
        .route(
            "/knowledgebases/{kb}/datasources/{ds}/ingestionjobs/{job}",
            get(get_job),
        )
        .route("/knowledgebases/{kb}/retrieve", post(retrieve))
        .route("/retrieveAndGenerate", post(retrieve_and_generate))
        .route(
            "/retrieveAndGenerateStream",
            post(retrieve_and_generate_stream),
        )
}

fn ok(status: StatusCode, value: impl serde::Serialize) -> Answer {
    let body = serde_json::to_value(value).map_err(|e| BasaltError::internal(e.to_string()))?;
    Ok((status, Json(body)))
}

/// A body that may be empty (boto3 sends `{}` or nothing for optional-only inputs).
pub(super) fn body_or_default<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> Result<T, BasaltError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    basalt_wire::parse_json(body)
}

/// A Bedrock-style id: ten upper-case letters and digits.
fn new_id() -> String {
    crate::generation::request_id("")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .take(10)
        .collect()
}

fn check_name(name: &str) -> Result<(), BasaltError> {
    let ok = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(BasaltError::invalid(
            "name",
            "a name is 1 to 100 letters, digits, _ or -",
        ))
    }
}

async fn load_kb(state: &AppState, tenant: &str, id: &str) -> Result<KnowledgeBase, BasaltError> {
    kb::load(state, tenant, KB_KIND, id, kb_not_found(id)).await
}

async fn load_ds(
    state: &AppState,
    tenant: &str,
    kb_id: &str,
    ds_id: &str,
) -> Result<DataSource, BasaltError> {
    load_kb(state, tenant, kb_id).await?;
    kb::load(
        state,
        tenant,
        DS_KIND,
        &format!("{kb_id}/{ds_id}"),
        ds_not_found(ds_id),
    )
    .await
}

/// Where a page after `nextToken` starts: the tokens these routes give are offsets.
pub(super) fn offset(next_token: Option<&str>) -> Result<usize, BasaltError> {
    next_token.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| BasaltError::invalid("nextToken", "not a token this API gave"))
    })
}

fn platform(state: &AppState) -> Result<&crate::platform::Platform, BasaltError> {
    state
        .platform
        .as_deref()
        .ok_or_else(|| BasaltError::internal("this server has no store"))
}

pub(super) fn page_size(list: &ListRequest) -> Result<usize, BasaltError> {
    let n = list.max_results.unwrap_or(100);
    if !(1..=1000).contains(&n) {
        return Err(BasaltError::invalid(
            "maxResults",
            "maxResults is 1 to 1000",
        ));
    }
    Ok(n)
}

async fn create_kb(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: CreateKnowledgeBase = basalt_wire::parse_json(&body)?;
    check_name(&request.name)?;
    let config = &request.knowledge_base_configuration;
    if config.kind != "VECTOR" || config.vector_knowledge_base_configuration.is_none() {
        return Err(BasaltError::invalid(
            "knowledgeBaseConfiguration",
            "only VECTOR knowledge bases are served (with vectorKnowledgeBaseConfiguration)",
        )
        .into());
    }
    let id = new_id();
    let stamp = now();
    let knowledge_base = KnowledgeBase {
        knowledge_base_arn: format!(
            "arn:aws:bedrock:{}:{}:knowledge-base/{id}",
            state.region,
            crate::guardrail::account_id(&principal.tenant)
        ),
        knowledge_base_id: id.clone(),
        name: request.name,
        description: request.description,
        role_arn: request.role_arn,
        knowledge_base_configuration: request.knowledge_base_configuration,
        // Basalt's own index serves every knowledge base; the shape sent is kept.
        storage_configuration: request.storage_configuration,
        status: "ACTIVE".into(),
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    let embedder = kb::embedder_of(&state, &knowledge_base)?;
    if let Some(p) = &state.platform {
        p.check_access(&principal, &embedder.entry.manifest.id)
            .await?;
    }
    kb::save(&state, &principal.tenant, KB_KIND, &id, &knowledge_base).await?;
    ok(
        StatusCode::ACCEPTED,
        json!({ "knowledgeBase": knowledge_base }),
    )
}

async fn list_kbs(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let list: ListRequest = body_or_default(&body.map_err(body_error)?)?;
    let (found, next) = crate::files::page::<KnowledgeBase>(
        platform(&state)?,
        &principal.tenant,
        KB_KIND,
        list.next_token.as_deref(),
        (page_size(&list)?, "nextToken"),
        |_| true,
    )
    .await?;
    let summaries: Vec<Value> = found.iter().map(KnowledgeBase::summary).collect();
    ok(
        StatusCode::OK,
        json!({"knowledgeBaseSummaries": summaries, "nextToken": next}),
    )
}

async fn get_kb(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Answer {
    let found = load_kb(&state, &principal.tenant, &id).await?;
    ok(StatusCode::OK, json!({ "knowledgeBase": found }))
}

async fn update_kb(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let mut found = load_kb(&state, &principal.tenant, &id).await?;
    let request: CreateKnowledgeBase = basalt_wire::parse_json(&body)?;
    check_name(&request.name)?;
    let old_model = found
        .knowledge_base_configuration
        .vector_knowledge_base_configuration
        .as_ref()
        .map(|v| v.embedding_model_arn.clone());
    let new_model = request
        .knowledge_base_configuration
        .vector_knowledge_base_configuration
        .as_ref()
        .map(|v| v.embedding_model_arn.clone());
    // The stored vectors are the old model's: another model would make them meaningless.
    if old_model != new_model {
        return Err(BasaltError::invalid(
            "knowledgeBaseConfiguration",
            "a knowledge base's embedding model cannot change",
        )
        .into());
    }
    found.name = request.name;
    found.description = request.description;
    found.role_arn = request.role_arn;
    found.storage_configuration = request.storage_configuration;
    found.updated_at = now();
    kb::save(&state, &principal.tenant, KB_KIND, &id, &found).await?;
    ok(StatusCode::ACCEPTED, json!({ "knowledgeBase": found }))
}

async fn delete_kb(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Answer {
    let tenant = principal.tenant.as_str();
    load_kb(&state, tenant, &id).await?;
    let platform = platform(&state)?;
    let prefix = format!("{id}/");
    for kind in [JOB_KIND, DS_KIND] {
        let (objects, _) = crate::files::page::<Value>(
            platform,
            tenant,
            kind,
            None,
            (usize::MAX, "knowledgeBaseId"),
            |_| true,
        )
        .await?;
        for object in objects {
            let key = match kind {
                DS_KIND => format!(
                    "{id}/{}",
                    object["dataSourceId"].as_str().unwrap_or_default()
                ),
                _ => format!(
                    "{id}/{}/{}",
                    object["dataSourceId"].as_str().unwrap_or_default(),
                    object["ingestionJobId"].as_str().unwrap_or_default()
                ),
            };
            if object["knowledgeBaseId"].as_str() == Some(id.as_str()) && key.starts_with(&prefix) {
                let _ = platform.store.delete_object(tenant, kind, &key).await;
            }
        }
    }
    if let Some(indexes) = &state.knowledge {
        indexes.remove(tenant, &id).await?;
    }
    platform
        .store
        .delete_object(tenant, KB_KIND, &id)
        .await
        .map_err(|e| crate::files::lookup_error(e, kb_not_found(&id)))?;
    ok(
        StatusCode::ACCEPTED,
        json!({"knowledgeBaseId": id, "status": "DELETING"}),
    )
}

async fn create_ds(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(kb_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    load_kb(&state, &principal.tenant, &kb_id).await?;
    let request: CreateDataSource = basalt_wire::parse_json(&body)?;
    check_name(&request.name)?;
    let kind = request.data_source_configuration.kind.clone();
    if kind != "S3" && kind != "CUSTOM" {
        return Err(BasaltError::invalid(
            "dataSourceConfiguration.type",
            "S3 (the tenant's buckets) and CUSTOM (documents sent directly) data sources are served",
        )
        .into());
    }
    let policy = request
        .data_deletion_policy
        .unwrap_or_else(|| "DELETE".into());
    if policy != "DELETE" && policy != "RETAIN" {
        return Err(BasaltError::invalid("dataDeletionPolicy", "DELETE or RETAIN").into());
    }
    let id = new_id();
    let stamp = now();
    let source = DataSource {
        knowledge_base_id: kb_id.clone(),
        data_source_id: id.clone(),
        name: request.name,
        status: "AVAILABLE".into(),
        description: request.description,
        data_source_configuration: request.data_source_configuration,
        server_side_encryption_configuration: request.server_side_encryption_configuration,
        vector_ingestion_configuration: request.vector_ingestion_configuration,
        data_deletion_policy: policy,
        created_at: stamp.clone(),
        updated_at: stamp,
    };
    // Refused now rather than at ingestion: a bucket outside the tenant's, bad chunking.
    kb::chunking(&source)?;
    let buckets = crate::invocation_jobs::buckets(&state)?;
    let uris = match kind.as_str() {
        "S3" => kb::source_uris(&source)?,
        _ => Vec::new(),
    };
    for uri in uris {
        buckets
            .locate(&principal.tenant, &uri)
            .map_err(|e| crate::invocation_jobs::bucket_error(e, "dataSourceConfiguration"))?;
    }
    kb::save(
        &state,
        &principal.tenant,
        DS_KIND,
        &format!("{kb_id}/{id}"),
        &source,
    )
    .await?;
    ok(StatusCode::OK, json!({ "dataSource": source }))
}

async fn list_ds(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(kb_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let list: ListRequest = body_or_default(&body.map_err(body_error)?)?;
    load_kb(&state, &principal.tenant, &kb_id).await?;
    let (found, next) = crate::files::page::<DataSource>(
        platform(&state)?,
        &principal.tenant,
        DS_KIND,
        list.next_token.as_deref(),
        (page_size(&list)?, "nextToken"),
        |ds| ds.knowledge_base_id == kb_id,
    )
    .await?;
    let summaries: Vec<Value> = found.iter().map(DataSource::summary).collect();
    ok(
        StatusCode::OK,
        json!({"dataSourceSummaries": summaries, "nextToken": next}),
    )
}

async fn get_ds(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
) -> Answer {
    let found = load_ds(&state, &principal.tenant, &kb_id, &ds_id).await?;
    ok(StatusCode::OK, json!({ "dataSource": found }))
}

async fn delete_ds(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
) -> Answer {
    let tenant = principal.tenant.as_str();
    let found = load_ds(&state, tenant, &kb_id, &ds_id).await?;
    if found.data_deletion_policy == "DELETE" {
        if let Some(indexes) = &state.knowledge {
            let index = indexes.index(tenant, &kb_id).await?;
            let ids: Vec<String> = index
                .read()
                .map_err(|_| BasaltError::internal("a knowledge base index is poisoned"))?
                .documents_of(&ds_id)
                .into_iter()
                .map(|d| d.id.clone())
                .collect();
            for id in ids {
                kb::delete(&index, &ds_id, &id).await?;
            }
        }
    }
    platform(&state)?
        .store
        .delete_object(tenant, DS_KIND, &format!("{kb_id}/{ds_id}"))
        .await
        .map_err(|e| crate::files::lookup_error(e, ds_not_found(&ds_id)))?;
    ok(
        StatusCode::ACCEPTED,
        json!({"knowledgeBaseId": kb_id, "dataSourceId": ds_id, "status": "DELETING"}),
    )
}

async fn start_job(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let request: StartIngestionJob = body_or_default(&body.map_err(body_error)?)?;
    let knowledge_base = load_kb(&state, &principal.tenant, &kb_id).await?;
    let source = load_ds(&state, &principal.tenant, &kb_id, &ds_id).await?;
    if source.data_source_configuration.kind != "S3" {
        return Err(BasaltError::invalid(
            "dataSourceId",
            "a CUSTOM data source takes its documents through IngestKnowledgeBaseDocuments",
        )
        .into());
    }
    let stamp = now();
    let job = IngestionJob {
        knowledge_base_id: kb_id.clone(),
        data_source_id: ds_id.clone(),
        ingestion_job_id: new_id(),
        description: request.description,
        status: "STARTING".into(),
        statistics: Default::default(),
        failure_reasons: Vec::new(),
        started_at: stamp.clone(),
        updated_at: stamp,
    };
    let key = format!("{kb_id}/{ds_id}/{}", job.ingestion_job_id);
    kb::save(&state, &principal.tenant, JOB_KIND, &key, &job).await?;
    kb::start_ingestion(&state, principal, knowledge_base, source, job.clone()).await?;
    ok(StatusCode::ACCEPTED, json!({ "ingestionJob": job }))
}

async fn list_jobs(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let list: ListRequest = body_or_default(&body.map_err(body_error)?)?;
    load_ds(&state, &principal.tenant, &kb_id, &ds_id).await?;
    let (found, next) = crate::files::page::<IngestionJob>(
        platform(&state)?,
        &principal.tenant,
        JOB_KIND,
        list.next_token.as_deref(),
        (page_size(&list)?, "nextToken"),
        |job| job.knowledge_base_id == kb_id && job.data_source_id == ds_id,
    )
    .await?;
    let summaries: Vec<Value> = found
        .into_iter()
        .map(|mut job| {
            job.failure_reasons.clear();
            serde_json::to_value(job).unwrap_or_default()
        })
        .collect();
    ok(
        StatusCode::OK,
        json!({"ingestionJobSummaries": summaries, "nextToken": next}),
    )
}

async fn get_job(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id, job_id)): Path<(String, String, String)>,
) -> Answer {
    load_ds(&state, &principal.tenant, &kb_id, &ds_id).await?;
    let missing = BasaltError::new(
        basalt_types::ErrorKind::NotFound,
        format!("Ingestion job with id {job_id} does not exist"),
    );
    let job: IngestionJob = kb::load(
        &state,
        &principal.tenant,
        JOB_KIND,
        &format!("{kb_id}/{ds_id}/{job_id}"),
        missing,
    )
    .await?;
    ok(StatusCode::OK, json!({ "ingestionJob": job }))
}

/// `Retrieve`: the passages nearest the query that pass the filter, best first.
async fn retrieve(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path(kb_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: RetrieveRequest = basalt_wire::parse_json(&body)?;
    let knowledge_base = load_kb(&state, &principal.tenant, &kb_id).await?;
    let query = request
        .retrieval_query
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| BasaltError::invalid("retrievalQuery.text", "a text query is required"))?;
    let skip = offset(request.next_token.as_deref())?;
    let call = Call::new(principal.clone(), "bedrock", "retrieve", "ret-");
    let (found, more) = kb::search(
        &state,
        &call,
        &knowledge_base,
        query,
        &request.retrieval_configuration.vector_search_configuration,
        skip,
    )
    .await?;
    let results: Vec<RetrievalResult> = found.into_iter().map(|f| f.result).collect();
    ok(
        StatusCode::OK,
        RetrieveResponse {
            next_token: more.then(|| (skip + results.len()).to_string()),
            retrieval_results: results,
        },
    )
}

/// `RetrieveAndGenerate`: an answer from a chat model over the passages found, with
/// citations ([`crate::rag`]).
async fn retrieve_and_generate(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: RetrieveAndGenerateRequest = basalt_wire::parse_json(&body)?;
    let response = crate::rag::retrieve_and_generate(&state, &principal, request).await?;
    ok(StatusCode::OK, response)
}

/// `RetrieveAndGenerateStream`: the same answer as an event stream.
async fn retrieve_and_generate_stream(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::response::Response, BedrockError> {
    let body = body.map_err(body_error)?;
    let request: RetrieveAndGenerateRequest = basalt_wire::parse_json(&body)?;
    Ok(crate::rag::retrieve_and_generate_stream(&state, &principal, request).await?)
}
