//! Documents put into a knowledge base directly, without an ingestion job: the
//! `bedrock-agent` client's `ingest_`, `get_`, `list_` and `delete_knowledge_base_documents`.
//! A `CUSTOM` data source takes inline text or bytes (text, Markdown, HTML, CSV, PDF) (or an object in the tenant's
//! buckets) under an id of the caller's; an `S3` data source takes objects of its bucket.
//! Each document is indexed (or removed) before the call answers, so its status is final.

use std::sync::Arc;

use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use basalt_auth::Principal;
use basalt_knowledge::DocumentType;
use basalt_types::BasaltError;
use basalt_wire::bedrock::knowledge::{
    DataSource, DocumentDetail, DocumentIdentifier, DocumentIdentifiers, DocumentMetadata,
    IngestDocuments, KnowledgeBase, KnowledgeBaseDocument, ListRequest,
};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::error::{body_error, BedrockError};
use crate::generation::Call;
use crate::invocation_log::iso8601;
use crate::knowledge::{self as kb, ds_not_found, kb_not_found, Incoming, DS_KIND, KB_KIND};
use crate::routes::knowledge_bases::{body_or_default, offset, page_size};
use crate::AppState;

type Shared = State<Arc<AppState>>;
type Answer = Result<(StatusCode, Json<Value>), BedrockError>;

/// Documents in one call, at most (Bedrock's limit).
const MAX_DOCUMENTS: usize = 25;

pub fn routes() -> Router<Arc<AppState>> {
    let documents = "/knowledgebases/{kb}/datasources/{ds}/documents";
    Router::new()
        .route(documents, put(ingest).post(list))
        .route(&format!("{documents}/getDocuments"), post(get))
        .route(&format!("{documents}/deleteDocuments"), post(delete))
}

async fn load(
    state: &AppState,
    tenant: &str,
    kb_id: &str,
    ds_id: &str,
) -> Result<(KnowledgeBase, DataSource), BasaltError> {
    let knowledge_base: KnowledgeBase =
        kb::load(state, tenant, KB_KIND, kb_id, kb_not_found(kb_id)).await?;
    let source: DataSource = kb::load(
        state,
        tenant,
        DS_KIND,
        &format!("{kb_id}/{ds_id}"),
        ds_not_found(ds_id),
    )
    .await?;
    Ok((knowledge_base, source))
}

fn detail(
    source: &DataSource,
    id: &str,
    from_bucket: bool,
    status: &'static str,
    reason: Option<String>,
    updated_at: Option<i64>,
) -> DocumentDetail {
    DocumentDetail {
        knowledge_base_id: source.knowledge_base_id.clone(),
        data_source_id: source.data_source_id.clone(),
        status,
        identifier: DocumentIdentifier::of(id, from_bucket),
        status_reason: reason,
        updated_at: updated_at.map(iso8601),
    }
}

fn documents_answer(status: StatusCode, details: Vec<DocumentDetail>) -> Answer {
    Ok((status, Json(json!({ "documentDetails": details }))))
}

/// The type a MIME type names, for inline bytes.
fn type_of_mime(mime: &str) -> Option<DocumentType> {
    match mime.split(';').next().unwrap_or("").trim() {
        "text/plain" => Some(DocumentType::Text),
        "text/markdown" => Some(DocumentType::Markdown),
        "text/html" => Some(DocumentType::Html),
        "text/csv" => Some(DocumentType::Csv),
        "application/pdf" => Some(DocumentType::Pdf),
        _ => None,
    }
}

/// A document's metadata: inline attributes, or a sidecar object in the tenant's buckets.
async fn metadata_of(
    state: &AppState,
    tenant: &str,
    metadata: Option<&DocumentMetadata>,
) -> Result<Map<String, Value>, String> {
    let Some(m) = metadata else {
        return Ok(Map::new());
    };
    match m.kind.as_str() {
        "IN_LINE_ATTRIBUTE" => m
            .inline_attributes
            .iter()
            .map(|a| {
                a.value
                    .to_json()
                    .map(|v| (a.key.clone(), v))
                    .ok_or_else(|| format!("metadata `{}` has no value of its type", a.key))
            })
            .collect(),
        "S3_LOCATION" => {
            let uri = m
                .s3_location
                .as_ref()
                .ok_or("S3_LOCATION metadata needs s3Location")?;
            let buckets = crate::invocation_jobs::buckets(state).map_err(|e| e.message)?;
            let at = buckets
                .locate(tenant, &uri.uri)
                .map_err(|e| e.to_string())?;
            let bytes = buckets.read(&at).await.map_err(|e| e.to_string())?;
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not JSON: {e}", uri.uri))?;
            match v.get("metadataAttributes") {
                Some(Value::Object(attrs)) => Ok(attrs.clone()),
                _ => Err(format!("{}: no metadataAttributes object", uri.uri)),
            }
        }
        other => Err(format!("metadata type {other} is not one Basalt reads")),
    }
}

/// What one document of an ingest call is: its id, where it is kept, its text.
async fn incoming(
    state: &AppState,
    tenant: &str,
    source: &DataSource,
    document: &KnowledgeBaseDocument,
) -> Result<Incoming, (String, bool, String)> {
    let content = &document.content;
    let source_kind = source.data_source_configuration.kind.as_str();
    let (id, from_bucket, text) = match (content.data_source_type.as_str(), source_kind) {
        ("CUSTOM", "CUSTOM") => {
            let custom = content
                .custom
                .as_ref()
                .ok_or_else(|| (String::new(), false, "CUSTOM content needs `custom`".into()))?;
            let id = custom.custom_document_identifier.id.clone();
            let fail = |why: String| (id.clone(), false, why);
            let text = match (custom.source_type.as_str(), &custom.inline_content) {
                ("IN_LINE", Some(inline)) => match (inline.kind.as_str(), inline) {
                    ("TEXT", i) => i
                        .text_content
                        .as_ref()
                        .map(|t| t.data.clone())
                        .ok_or_else(|| fail("TEXT content needs textContent".into()))?,
                    ("BYTE", i) => {
                        let b = i
                            .byte_content
                            .as_ref()
                            .ok_or_else(|| fail("BYTE content needs byteContent".into()))?;
                        let kind = type_of_mime(&b.mime_type).ok_or_else(|| {
                            fail(format!("MIME type {} is not one Basalt reads", b.mime_type))
                        })?;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(&b.data)
                            .map_err(|e| fail(format!("byteContent is not base64: {e}")))?;
                        kb::text_of(kind, bytes).await.map_err(fail)?
                    }
                    (other, _) => return Err(fail(format!("inline type {other} is not known"))),
                },
                ("S3_LOCATION", _) => {
                    let uri = custom
                        .s3_location
                        .as_ref()
                        .ok_or_else(|| fail("S3_LOCATION content needs s3Location".into()))?;
                    let buckets =
                        crate::invocation_jobs::buckets(state).map_err(|e| fail(e.message))?;
                    let at = buckets
                        .locate(tenant, &uri.uri)
                        .map_err(|e| fail(e.to_string()))?;
                    kb::read_text(state, &at).await.map_err(fail)?
                }
                _ => return Err(fail("IN_LINE content needs inlineContent".into())),
            };
            (id, false, text)
        }
        ("S3", "S3") => {
            let uri = content
                .s3
                .as_ref()
                .map(|s| s.s3_location.uri.clone())
                .ok_or_else(|| (String::new(), true, "S3 content needs `s3`".into()))?;
            let fail = |why: String| (uri.clone(), true, why);
            // Only objects the data source itself reads.
            let inside = kb::source_uris(source)
                .map_err(|e| fail(e.message))?
                .iter()
                .any(|root| uri.starts_with(root.as_str()));
            if !inside {
                return Err(fail(
                    "the object is not in this data source's bucket".into(),
                ));
            }
            let buckets = crate::invocation_jobs::buckets(state).map_err(|e| fail(e.message))?;
            let at = buckets
                .locate(tenant, &uri)
                .map_err(|e| fail(e.to_string()))?;
            let text = kb::read_text(state, &at).await.map_err(fail)?;
            (uri, true, text)
        }
        (given, wanted) => {
            return Err((
                String::new(),
                false,
                format!("{given} content cannot go into a {wanted} data source"),
            ))
        }
    };
    let metadata = metadata_of(state, tenant, document.metadata.as_ref())
        .await
        .map_err(|why| (id.clone(), from_bucket, why))?;
    Ok(Incoming {
        data_source_id: source.data_source_id.clone(),
        id,
        from_bucket,
        text,
        metadata,
    })
}

async fn ingest(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: IngestDocuments = basalt_wire::parse_json(&body)?;
    if !(1..=MAX_DOCUMENTS).contains(&request.documents.len()) {
        return Err(BasaltError::invalid(
            "documents",
            format!("a call takes 1 to {MAX_DOCUMENTS} documents"),
        )
        .into());
    }
    let tenant = principal.tenant.as_str();
    let (knowledge_base, source) = load(&state, tenant, &kb_id, &ds_id).await?;
    let served = kb::embedder_of(&state, &knowledge_base)?;
    let chunking = kb::chunking(&source)?;
    let index = kb::index_of(&state, tenant, &kb_id).await?;
    let call = Call::new(principal.clone(), "bedrock", "ingestDocuments", "ing-");
    let mut details = Vec::with_capacity(request.documents.len());
    for document in &request.documents {
        let incoming = match incoming(&state, tenant, &source, document).await {
            Ok(incoming) => incoming,
            Err((id, from_bucket, why)) => {
                details.push(detail(&source, &id, from_bucket, "FAILED", Some(why), None));
                continue;
            }
        };
        let (id, from_bucket) = (incoming.id.clone(), incoming.from_bucket);
        let indexed = kb::read_index(&index)?
            .get(&ds_id, &id)
            .map(|d| d.content_hash.clone());
        match kb::embed_document(
            &state,
            &call,
            &served,
            chunking,
            incoming,
            indexed.as_deref(),
        )
        .await
        {
            Ok(Some(doc)) => {
                let at = doc.updated_at;
                kb::put(&index, doc).await?;
                details.push(detail(&source, &id, from_bucket, "INDEXED", None, Some(at)));
            }
            Ok(None) => details.push(detail(&source, &id, from_bucket, "INDEXED", None, None)),
            Err(why) => details.push(detail(&source, &id, from_bucket, "FAILED", Some(why), None)),
        }
    }
    documents_answer(StatusCode::ACCEPTED, details)
}

async fn get(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: DocumentIdentifiers = basalt_wire::parse_json(&body)?;
    let tenant = principal.tenant.as_str();
    let (_, source) = load(&state, tenant, &kb_id, &ds_id).await?;
    let index = kb::index_of(&state, tenant, &kb_id).await?;
    let index = kb::read_index(&index)?;
    let details = request
        .document_identifiers
        .iter()
        .map(|identifier| {
            let (id, from_bucket) = identifier.key().unwrap_or_default();
            match index.get(&ds_id, &id) {
                Some(doc) => detail(
                    &source,
                    &id,
                    from_bucket,
                    "INDEXED",
                    None,
                    Some(doc.updated_at),
                ),
                None => detail(&source, &id, from_bucket, "NOT_FOUND", None, None),
            }
        })
        .collect();
    drop(index);
    documents_answer(StatusCode::OK, details)
}

async fn list(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: ListRequest = body_or_default(&body)?;
    let limit = page_size(&request)?;
    let skip = offset(request.next_token.as_deref())?;
    let tenant = principal.tenant.as_str();
    let (_, source) = load(&state, tenant, &kb_id, &ds_id).await?;
    let index = kb::index_of(&state, tenant, &kb_id).await?;
    let index = kb::read_index(&index)?;
    let documents = index.documents_of(&ds_id);
    let more = documents.len() > skip + limit;
    let details: Vec<DocumentDetail> = documents
        .into_iter()
        .skip(skip)
        .take(limit)
        .map(|d| {
            detail(
                &source,
                &d.id,
                d.from_bucket,
                "INDEXED",
                None,
                Some(d.updated_at),
            )
        })
        .collect();
    drop(index);
    let next = more.then(|| (skip + limit).to_string());
    Ok((
        StatusCode::OK,
        Json(json!({"documentDetails": details, "nextToken": next})),
    ))
}

async fn delete(
    State(state): Shared,
    Extension(principal): Extension<Principal>,
    Path((kb_id, ds_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body.map_err(body_error)?;
    let request: DocumentIdentifiers = basalt_wire::parse_json(&body)?;
    let tenant = principal.tenant.as_str();
    let (_, source) = load(&state, tenant, &kb_id, &ds_id).await?;
    let index = kb::index_of(&state, tenant, &kb_id).await?;
    let mut details = Vec::with_capacity(request.document_identifiers.len());
    for identifier in &request.document_identifiers {
        let Some((id, from_bucket)) = identifier.key() else {
            details.push(detail(
                &source,
                "",
                false,
                "FAILED",
                Some("an identifier needs `custom` or `s3` as its type says".into()),
                None,
            ));
            continue;
        };
        let status = if kb::delete(&index, &ds_id, &id).await? {
            "DELETING"
        } else {
            "NOT_FOUND"
        };
        details.push(detail(&source, &id, from_bucket, status, None, None));
    }
    documents_answer(StatusCode::ACCEPTED, details)
}
