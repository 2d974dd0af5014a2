//! Knowledge bases: their objects (knowledge base, data source, ingestion job) in the
//! platform store, their indexes under `<data dir>/knowledge-bases`, and the ingestion jobs
//! that fill them from a data source's bucket.
//!
//! An index is opened once per server and shared; writes to it (a document replaced or
//! deleted) and searches run on the blocking pool. Embedding goes through the same path as
//! `/v1/embeddings` ([`crate::routes::embeddings::embed`]): the tenant's access, quotas and
//! metering apply to ingestion and queries alike.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use basalt_auth::Principal;
use basalt_buckets::Location;
use basalt_knowledge::{
    chunk_document, content_hash, extract, semantic_groups, semantic_windows, sentences, Chunking,
    Chunks, Document, DocumentType, Filter, Hit, Index, Passage,
};
use basalt_store::StoredObject;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::bedrock::knowledge::{
    DataSource, IngestionJob, IngestionJobStatistics, KnowledgeBase, RetrievalContent,
    RetrievalLocation, RetrievalResult, VectorSearchConfiguration,
};
use basalt_wire::embeddings::EmbedRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::generation::Call;
use crate::invocation_log::iso8601;
use crate::offload::off_runtime;
use crate::{AppState, ServedEmbedder};

pub(crate) const KB_KIND: &str = "knowledge-base";
/// Data sources are stored as `<kb id>/<data source id>`.
pub(crate) const DS_KIND: &str = "kb-data-source";
/// Ingestion jobs are stored as `<kb id>/<data source id>/<job id>`.
pub(crate) const JOB_KIND: &str = "kb-ingestion-job";
/// A document larger than this fails alone rather than filling memory.
const MAX_DOCUMENT_BYTES: usize = 50 << 20;
/// Passages embedded per request to the embedding worker.
const EMBED_BATCH: usize = 32;
/// At most this many failed documents are named in a job's `failureReasons`.
const FAILURES_SHOWN: usize = 20;
/// How often a running ingestion job's statistics are stored.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub(crate) type SharedIndex = Arc<RwLock<Index>>;

/// The indexes this server has open, by tenant and knowledge base.
pub struct KnowledgeIndexes {
    root: PathBuf,
    open: Mutex<HashMap<(String, String), SharedIndex>>,
    /// Passages from which an index builds its approximate graph.
    graph_from: AtomicUsize,
}

fn internal(e: impl std::fmt::Display) -> BasaltError {
    BasaltError::internal(e.to_string())
}

pub(crate) fn now() -> String {
    iso8601(basalt_store::now())
}

pub(crate) fn kb_not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("Knowledge base with id {id} does not exist"),
    )
}

pub(crate) fn ds_not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("Data source with id {id} does not exist"),
    )
}

impl KnowledgeIndexes {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            open: Mutex::default(),
            graph_from: AtomicUsize::new(basalt_knowledge::index::APPROXIMATE_FROM),
        }
    }

    /// From how many passages a knowledge base is searched through its approximate graph
    /// (for indexes opened from now on).
    pub fn set_graph_from(&self, passages: usize) {
        self.graph_from.store(passages, Ordering::Relaxed);
    }

    fn dir(&self, tenant: &str, kb: &str) -> PathBuf {
        self.root.join(tenant).join(kb)
    }

    /// The knowledge base's index, opened from its files the first time.
    pub(crate) async fn index(&self, tenant: &str, kb: &str) -> Result<SharedIndex, BasaltError> {
        let key = (tenant.to_string(), kb.to_string());
        if let Some(index) = self.lock().get(&key) {
            return Ok(Arc::clone(index));
        }
        let dir = self.dir(tenant, kb);
        let (mut index, skipped) = off_runtime(move || Index::open(&dir))
            .await?
            .map_err(internal)?;
        index.set_approximate_from(self.graph_from.load(Ordering::Relaxed));
        for file in skipped {
            tracing::error!(
                file,
                "a knowledge base document file does not parse; skipped"
            );
        }
        let mut open = self.lock();
        let shared = Arc::clone(
            open.entry(key)
                .or_insert_with(|| Arc::new(RwLock::new(index))),
        );
        drop(open);
        build_graph_if_wanted(&shared);
        Ok(shared)
    }

    /// Forgets a knowledge base and removes its files.
    pub(crate) async fn remove(&self, tenant: &str, kb: &str) -> Result<(), BasaltError> {
        self.lock().remove(&(tenant.to_string(), kb.to_string()));
        let dir = self.dir(tenant, kb);
        off_runtime(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(internal(e)),
            _ => Ok(()),
        })
        .await?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SharedIndex>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A knowledge base's index, opened on first use.
pub(crate) async fn index_of(
    state: &AppState,
    tenant: &str,
    kb: &str,
) -> Result<SharedIndex, BasaltError> {
    state
        .knowledge
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server keeps no knowledge bases"))?
        .index(tenant, kb)
        .await
}

/// Reads one of a tenant's stored knowledge-base objects.
pub(crate) async fn load<T: serde::de::DeserializeOwned>(
    state: &AppState,
    tenant: &str,
    kind: &str,
    id: &str,
    missing: BasaltError,
) -> Result<T, BasaltError> {
    let platform = state.platform.as_ref().ok_or_else(|| missing.clone())?;
    let stored = platform
        .store
        .object(tenant, kind, id)
        .await
        .map_err(|e| crate::files::lookup_error(e, missing))?;
    serde_json::from_str(&stored.body).map_err(internal)
}

pub(crate) async fn save<T: serde::Serialize>(
    state: &AppState,
    tenant: &str,
    kind: &str,
    id: &str,
    value: &T,
) -> Result<(), BasaltError> {
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no store"))?;
    platform
        .store
        .put_object(&StoredObject {
            tenant_id: tenant.to_string(),
            kind: kind.into(),
            id: id.to_string(),
            created_at: basalt_store::now(),
            body: serde_json::to_string(value).map_err(internal)?,
        })
        .await
        .map_err(internal)
}

/// The served embedding model a knowledge base names by ARN (or plain id).
pub(crate) fn embedder_of(
    state: &AppState,
    kb: &KnowledgeBase,
) -> Result<Arc<ServedEmbedder>, BasaltError> {
    let arn = kb
        .knowledge_base_configuration
        .vector_knowledge_base_configuration
        .as_ref()
        .map(|v| v.embedding_model_arn.as_str())
        .unwrap_or_default();
    embedder_by_arn(state, arn)
}

pub(crate) fn embedder_by_arn(
    state: &AppState,
    arn: &str,
) -> Result<Arc<ServedEmbedder>, BasaltError> {
    let param = "knowledgeBaseConfiguration.vectorKnowledgeBaseConfiguration.embeddingModelArn";
    let id = arn.rsplit('/').next().unwrap_or(arn);
    state.embedder(id).ok_or_else(|| match state.model(id) {
        Ok(_) => BasaltError::invalid(
            param,
            format!("`{id}` generates text; a knowledge base needs an embedding model"),
        ),
        Err(_) => BasaltError::invalid(
            param,
            format!("`{id}` is not an embedding model this server serves"),
        ),
    })
}

/// A data source's chunking, as configured (Bedrock's default when unset).
pub(crate) fn chunking(ds: &DataSource) -> Result<Chunking, BasaltError> {
    let param = "vectorIngestionConfiguration.chunkingConfiguration";
    let Some(c) = ds
        .vector_ingestion_configuration
        .as_ref()
        .and_then(|v| v.chunking_configuration.as_ref())
    else {
        return Ok(Chunking::default());
    };
    match c.chunking_strategy.as_str() {
        "NONE" => Ok(Chunking::None),
        "FIXED_SIZE" => {
            let f = c.fixed_size_chunking_configuration.ok_or_else(|| {
                BasaltError::invalid(param, "FIXED_SIZE needs fixedSizeChunkingConfiguration")
            })?;
            if !(1..=8192).contains(&f.max_tokens) || !(1..=99).contains(&f.overlap_percentage) {
                return Err(BasaltError::invalid(
                    param,
                    "maxTokens is 1 to 8192 and overlapPercentage 1 to 99",
                ));
            }
            Ok(Chunking::FixedSize {
                max_tokens: f.max_tokens as usize,
                overlap_percent: f.overlap_percentage as usize,
            })
        }
        "SEMANTIC" => {
            let c = c.semantic_chunking_configuration.as_ref().ok_or_else(|| {
                BasaltError::invalid(param, "SEMANTIC needs semanticChunkingConfiguration")
            })?;
            let (max, buffer, percentile) = (
                c["maxTokens"].as_u64(),
                c["bufferSize"].as_u64(),
                c["breakpointPercentileThreshold"].as_u64(),
            );
            match (max, buffer, percentile) {
                (Some(max), Some(buffer), Some(p))
                    if (1..=8192).contains(&max) && buffer <= 1 && (50..=99).contains(&p) =>
                {
                    Ok(Chunking::Semantic {
                        max_tokens: max as usize,
                        buffer: buffer as usize,
                        percentile: p as usize,
                    })
                }
                _ => Err(BasaltError::invalid(
                    param,
                    "SEMANTIC takes maxTokens 1 to 8192, bufferSize 0 or 1 and \
                     breakpointPercentileThreshold 50 to 99",
                )),
            }
        }
        "HIERARCHICAL" => {
            let h = c
                .hierarchical_chunking_configuration
                .as_ref()
                .ok_or_else(|| {
                    BasaltError::invalid(
                        param,
                        "HIERARCHICAL needs hierarchicalChunkingConfiguration",
                    )
                })?;
            let levels: Vec<u64> = h["levelConfigurations"]
                .as_array()
                .map(|l| l.iter().filter_map(|v| v["maxTokens"].as_u64()).collect())
                .unwrap_or_default();
            let overlap = h["overlapTokens"].as_u64();
            match (levels.as_slice(), overlap) {
                (&[parent, child], Some(overlap))
                    if (1..=8192).contains(&parent)
                        && (1..=parent).contains(&child)
                        && overlap < child =>
                {
                    Ok(Chunking::Hierarchical {
                        parent_tokens: parent as usize,
                        child_tokens: child as usize,
                        overlap_tokens: overlap as usize,
                    })
                }
                _ => Err(BasaltError::invalid(
                    param,
                    "HIERARCHICAL takes two levelConfigurations (parent, then child maxTokens, \
                     the child no larger) and overlapTokens below the child's",
                )),
            }
        }
        other => Err(BasaltError::invalid(
            param,
            format!(
                "chunking strategy {other} is not available here (use FIXED_SIZE, HIERARCHICAL \
                 or NONE)"
            ),
        )),
    }
}

/// The `s3://` URIs a data source reads: its bucket, or each inclusion prefix in it.
pub(crate) fn source_uris(ds: &DataSource) -> Result<Vec<String>, BasaltError> {
    let param = "dataSourceConfiguration.s3Configuration";
    let s3 = ds
        .data_source_configuration
        .s3_configuration
        .as_ref()
        .ok_or_else(|| BasaltError::invalid(param, "an S3 data source needs s3Configuration"))?;
    let bucket = s3
        .bucket_arn
        .strip_prefix("arn:aws:s3:::")
        .filter(|b| !b.is_empty() && !b.contains('/'))
        .ok_or_else(|| {
            BasaltError::invalid(
                format!("{param}.bucketArn"),
                "a bucket ARN is arn:aws:s3:::<bucket>",
            )
        })?;
    if s3.inclusion_prefixes.is_empty() {
        return Ok(vec![format!("s3://{bucket}/")]);
    }
    Ok(s3
        .inclusion_prefixes
        .iter()
        .map(|p| format!("s3://{bucket}/{}", p.trim_start_matches('/')))
        .collect())
}

/// Embeds passages for `call`, in batches, through the metered embedding path.
pub(crate) async fn embed_texts(
    state: &Arc<AppState>,
    call: &Call,
    served: &Arc<ServedEmbedder>,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, BasaltError> {
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let out = crate::routes::embeddings::embed(
            state,
            call,
            Arc::clone(served),
            EmbedRequest {
                texts: batch.to_vec(),
                allow_truncation: true,
                dimensions: None,
            },
        )
        .await?;
        vectors.extend(out.into_iter().map(|e| e.vector));
    }
    Ok(vectors)
}

/// The text of a bucket object, by its file type.
pub(crate) async fn read_text(state: &AppState, location: &Location) -> Result<String, String> {
    let buckets = crate::invocation_jobs::buckets(state).map_err(|e| e.message)?;
    let kind = DocumentType::of_name(location.file_name())
        .ok_or_else(|| "unsupported file type (txt, md, html, csv and pdf are read)".to_string())?;
    let bytes = buckets.read(location).await.map_err(|e| e.to_string())?;
    text_of(kind, bytes.to_vec()).await
}

/// The text of a document's bytes of a known type, if it is not too large.
pub(crate) async fn text_of(kind: DocumentType, bytes: Vec<u8>) -> Result<String, String> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is larger than {} MiB",
            MAX_DOCUMENT_BYTES >> 20
        ));
    }
    off_runtime(move || extract(kind, &bytes))
        .await
        .map_err(|e| e.message)?
        .map_err(|e| e.to_string())
}

/// A document to index: which data source it belongs to, its id, its text and metadata.
pub(crate) struct Incoming {
    pub data_source_id: String,
    pub id: String,
    pub from_bucket: bool,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// Chunks and embeds a document; `None` when its content and metadata are what the index
/// already holds (`indexed_hash`).
pub(crate) async fn embed_document(
    state: &Arc<AppState>,
    call: &Call,
    served: &Arc<ServedEmbedder>,
    chunking: Chunking,
    incoming: Incoming,
    indexed_hash: Option<&str>,
) -> Result<Option<Document>, String> {
    let hash = content_hash(&incoming.text, &incoming.metadata);
    if indexed_hash == Some(hash.as_str()) {
        return Ok(None);
    }
    let chunks = match chunking {
        Chunking::Semantic {
            max_tokens,
            buffer,
            percentile,
        } => {
            let model = Arc::clone(&served.embedder.model);
            let text = incoming.text;
            let (sentences, windows, tokens) = off_runtime(move || {
                let sentences = sentences(&text);
                let windows = semantic_windows(&sentences, buffer);
                let tokens: Vec<usize> =
                    sentences.iter().map(|s| model.content_tokens(s)).collect();
                (sentences, windows, tokens)
            })
            .await
            .map_err(|e| e.message)?;
            let vectors = embed_texts(state, call, served, windows)
                .await
                .map_err(|e| e.message)?;
            Chunks {
                parents: Vec::new(),
                passages: semantic_groups(&sentences, &vectors, &tokens, percentile, max_tokens)
                    .into_iter()
                    .map(|p| (p, None))
                    .collect(),
            }
        }
        _ => {
            let model = Arc::clone(&served.embedder.model);
            let text = incoming.text;
            off_runtime(move || chunk_document(&text, chunking, |w| model.content_tokens(w)))
                .await
                .map_err(|e| e.message)?
        }
    };
    let texts: Vec<String> = chunks.passages.iter().map(|(t, _)| t.clone()).collect();
    let vectors = embed_texts(state, call, served, texts)
        .await
        .map_err(|e| e.message)?;
    Ok(Some(Document {
        data_source_id: incoming.data_source_id,
        id: incoming.id,
        from_bucket: incoming.from_bucket,
        content_hash: hash,
        metadata: incoming.metadata,
        passages: chunks
            .passages
            .into_iter()
            .zip(vectors)
            .map(|((text, parent), vector)| Passage {
                text,
                vector,
                parent,
            })
            .collect(),
        parents: chunks.parents,
        updated_at: basalt_store::now(),
    }))
}

/// A sidecar's `metadataAttributes` (`<file>.metadata.json`), if there is one.
pub(crate) async fn sidecar(
    state: &AppState,
    location: &Location,
) -> Result<Option<Map<String, Value>>, String> {
    let buckets = crate::invocation_jobs::buckets(state).map_err(|e| e.message)?;
    let name = format!("{}.metadata.json", location.file_name());
    let Some(parent) = location.parent() else {
        return Ok(None);
    };
    match buckets.read(&parent.join(&name)).await {
        Ok(bytes) => {
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|e| format!("{name} is not JSON: {e}"))?;
            match v.get("metadataAttributes") {
                Some(Value::Object(m)) => Ok(Some(m.clone())),
                _ => Err(format!("{name} has no metadataAttributes object")),
            }
        }
        Err(basalt_buckets::BucketError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// What marks an ingestion job as running, on disk: enough to resume it if the server
/// dies (`<root>/.running/<job id>.json`, removed when the job ends).
#[derive(Serialize, Deserialize)]
struct Running {
    tenant: String,
    key_id: String,
    managed: bool,
    knowledge_base_id: String,
    data_source_id: String,
    ingestion_job_id: String,
}

impl KnowledgeIndexes {
    fn running_dir(&self) -> PathBuf {
        self.root.join(".running")
    }
}

/// Starts an ingestion job in the background, marked on disk as running first so the
/// next server resumes it if this one dies before it ends.
pub(crate) async fn start_ingestion(
    state: &Arc<AppState>,
    principal: Principal,
    kb: KnowledgeBase,
    ds: DataSource,
    job: IngestionJob,
) -> Result<(), BasaltError> {
    let indexes = state
        .knowledge
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server keeps no knowledge bases"))?;
    let marker = Running {
        tenant: principal.tenant.clone(),
        key_id: principal.key_id.clone(),
        managed: principal.managed,
        knowledge_base_id: kb.knowledge_base_id.clone(),
        data_source_id: ds.data_source_id.clone(),
        ingestion_job_id: job.ingestion_job_id.clone(),
    };
    let dir = indexes.running_dir();
    let bytes = serde_json::to_vec(&marker).map_err(internal)?;
    let path = dir.join(format!("{}.json", job.ingestion_job_id));
    off_runtime(move || {
        std::fs::create_dir_all(&dir)?;
        crate::files::write_atomically(&path, &bytes).map_err(|e| std::io::Error::other(e.message))
    })
    .await?
    .map_err(internal)?;
    tokio::spawn(run_ingestion(Arc::clone(state), principal, kb, ds, job));
    Ok(())
}

/// Resumes the ingestion jobs the last server left running. Documents it indexed are
/// unchanged, so they are not embedded again; the rest are.
pub async fn resume_ingestion(state: Arc<AppState>) {
    let Some(indexes) = state.knowledge.as_ref() else {
        return;
    };
    let dir = indexes.running_dir();
    let markers: Vec<Running> = off_runtime(move || {
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    for m in markers {
        let principal = Principal {
            tenant: m.tenant.clone(),
            key_id: m.key_id.clone(),
            managed: m.managed,
        };
        let (kb_id, ds_id, job_id) = (&m.knowledge_base_id, &m.data_source_id, &m.ingestion_job_id);
        let loaded = async {
            let kb: KnowledgeBase =
                load(&state, &m.tenant, KB_KIND, kb_id, kb_not_found(kb_id)).await?;
            let ds: DataSource = load(
                &state,
                &m.tenant,
                DS_KIND,
                &format!("{kb_id}/{ds_id}"),
                ds_not_found(ds_id),
            )
            .await?;
            let job: IngestionJob = load(
                &state,
                &m.tenant,
                JOB_KIND,
                &format!("{kb_id}/{ds_id}/{job_id}"),
                ds_not_found(job_id),
            )
            .await?;
            Ok::<_, BasaltError>((kb, ds, job))
        };
        match loaded.await {
            Ok((kb, ds, job)) if !job.is_terminal() => {
                tracing::info!(job = %job_id, "resuming an ingestion job");
                tokio::spawn(run_ingestion(Arc::clone(&state), principal, kb, ds, job));
            }
            // Ended, or its knowledge base is gone: nothing to resume.
            _ => remove_marker(&state, job_id).await,
        }
    }
}

async fn remove_marker(state: &AppState, job_id: &str) {
    if let Some(indexes) = state.knowledge.as_ref() {
        let path = indexes.running_dir().join(format!("{job_id}.json"));
        let _ = off_runtime(move || std::fs::remove_file(path)).await;
    }
}

/// Runs an ingestion job to its end: every document under the data source's URIs is
/// scanned; new and changed ones are embedded and indexed, unchanged ones left, ones no
/// longer there deleted; a document that fails is counted and named, and the job goes on.
async fn run_ingestion(
    state: Arc<AppState>,
    principal: Principal,
    kb: KnowledgeBase,
    ds: DataSource,
    mut job: IngestionJob,
) {
    let tenant = principal.tenant.clone();
    let job_key = format!(
        "{}/{}/{}",
        kb.knowledge_base_id, ds.data_source_id, job.ingestion_job_id
    );
    job.status = "IN_PROGRESS".into();
    job.updated_at = now();
    let _ = save(&state, &tenant, JOB_KIND, &job_key, &job).await;
    let outcome = ingest(&state, &principal, &kb, &ds, &mut job).await;
    match outcome {
        Ok(()) => job.status = "COMPLETE".into(),
        Err(e) => {
            job.status = "FAILED".into();
            job.failure_reasons.push(e.message);
        }
    }
    job.updated_at = now();
    match save(&state, &tenant, JOB_KIND, &job_key, &job).await {
        Ok(()) => remove_marker(&state, &job.ingestion_job_id).await,
        Err(e) => {
            tracing::error!(error = %e, job = job_key, "cannot record an ingestion job's end")
        }
    }
}

async fn ingest(
    state: &Arc<AppState>,
    principal: &Principal,
    kb: &KnowledgeBase,
    ds: &DataSource,
    job: &mut IngestionJob,
) -> Result<(), BasaltError> {
    let served = embedder_of(state, kb)?;
    let chunking = chunking(ds)?;
    let buckets = crate::invocation_jobs::buckets(state)?;
    let index = index_of(state, &principal.tenant, &kb.knowledge_base_id).await?;
    let call = Call::new(principal.clone(), "bedrock", "ingestion", "ing-");
    let mut files = Vec::new();
    for uri in source_uris(ds)? {
        let at = buckets
            .locate(&principal.tenant, &uri)
            .map_err(|e| crate::invocation_jobs::bucket_error(e, "dataSourceConfiguration"))?;
        files.extend(
            buckets
                .list_all(&at)
                .await
                .map_err(|e| crate::invocation_jobs::bucket_error(e, "dataSourceConfiguration"))?,
        );
    }
    files.sort_by(|a, b| a.uri().cmp(b.uri()));
    files.dedup();
    job.statistics = IngestionJobStatistics::default();
    let job_key = format!(
        "{}/{}/{}",
        kb.knowledge_base_id, ds.data_source_id, job.ingestion_job_id
    );
    let mut saved = Instant::now();
    let mut seen = HashSet::new();
    let mut failures = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.uri().ends_with(".metadata.json"))
    {
        job.statistics.number_of_documents_scanned += 1;
        seen.insert(file.uri().to_string());
        let metadata = match sidecar(state, file).await {
            Ok(Some(m)) => {
                job.statistics.number_of_metadata_documents_scanned += 1;
                m
            }
            Ok(None) => Map::new(),
            Err(why) => {
                job.statistics.number_of_documents_failed += 1;
                failures.push(format!("{}: {why}", file.uri()));
                continue;
            }
        };
        let indexed_hash = read_index(&index)?
            .get(&ds.data_source_id, file.uri())
            .map(|d| d.content_hash.clone());
        let was_indexed = indexed_hash.is_some();
        let prepared = match read_text(state, file).await {
            Ok(text) => {
                let incoming = Incoming {
                    data_source_id: ds.data_source_id.clone(),
                    id: file.uri().to_string(),
                    from_bucket: true,
                    text,
                    metadata,
                };
                embed_document(
                    state,
                    &call,
                    &served,
                    chunking,
                    incoming,
                    indexed_hash.as_deref(),
                )
                .await
            }
            Err(why) => Err(why),
        };
        match prepared {
            Ok(None) => {}
            Ok(Some(document)) => {
                put(&index, document).await?;
                if was_indexed {
                    job.statistics.number_of_modified_documents_indexed += 1;
                } else {
                    job.statistics.number_of_new_documents_indexed += 1;
                }
            }
            Err(why) => {
                job.statistics.number_of_documents_failed += 1;
                failures.push(format!("{}: {why}", file.uri()));
            }
        }
        // Progress for whoever polls the job, now and then.
        if saved.elapsed() >= PROGRESS_EVERY {
            save(state, &principal.tenant, JOB_KIND, &job_key, job).await?;
            saved = Instant::now();
        }
    }

    // Documents the source no longer holds leave the index.
    let gone: Vec<String> = read_index(&index)?
        .documents_of(&ds.data_source_id)
        .into_iter()
        .filter(|d| d.from_bucket && !seen.contains(&d.id))
        .map(|d| d.id.clone())
        .collect();
    for id in gone {
        delete(&index, &ds.data_source_id, &id).await?;
        job.statistics.number_of_documents_deleted += 1;
    }
    job.failure_reasons = failures.into_iter().take(FAILURES_SHOWN).collect();
    Ok(())
}

pub(crate) fn read_index(
    index: &SharedIndex,
) -> Result<std::sync::RwLockReadGuard<'_, Index>, BasaltError> {
    index
        .read()
        .map_err(|_| BasaltError::internal("a knowledge base index is poisoned"))
}

/// Stores a document in an index (a file write: on the blocking pool).
pub(crate) async fn put(index: &SharedIndex, document: Document) -> Result<(), BasaltError> {
    let index = Arc::clone(index);
    off_runtime(move || {
        let put = write_index(&index)?.put(document).map_err(internal);
        build_graph_if_wanted(&index);
        put
    })
    .await?
}

pub(crate) async fn delete(index: &SharedIndex, ds: &str, id: &str) -> Result<bool, BasaltError> {
    let (index, ds, id) = (Arc::clone(index), ds.to_string(), id.to_string());
    off_runtime(move || {
        let deleted = write_index(&index)?.delete(&ds, &id).map_err(internal);
        // A delete may have compacted the rows and dropped the graph.
        build_graph_if_wanted(&index);
        deleted
    })
    .await?
}

fn write_index(index: &SharedIndex) -> Result<std::sync::RwLockWriteGuard<'_, Index>, BasaltError> {
    index
        .write()
        .map_err(|_| BasaltError::internal("a knowledge base index is poisoned"))
}

/// Once an index has grown to want its approximate graph, builds it on a thread of its own
/// (minutes for some hundred thousand passages) from a copy of the vectors, holding no
/// lock meanwhile: searches stay exact until it is installed.
fn build_graph_if_wanted(index: &SharedIndex) {
    let Some(build) = index.write().ok().and_then(|mut i| i.graph_wanted()) else {
        return;
    };
    let shared = Arc::clone(index);
    let spawned = std::thread::Builder::new()
        .name("kb-graph".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let built = build.run();
            if let Ok(mut index) = shared.write() {
                let installed = index.install_graph(built);
                tracing::info!(
                    installed,
                    passages = index.passage_count(),
                    seconds = started.elapsed().as_secs_f64(),
                    "knowledge base graph built"
                );
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start a knowledge base graph build; searches stay exact");
    }
}

/// A retrieved passage: as `Retrieve` returns it, and its vector (for citations).
pub(crate) struct Found {
    pub result: RetrievalResult,
    pub vector: Vec<f32>,
}

/// Searches a knowledge base for `query` as a `vectorSearchConfiguration` asks, after
/// skipping `skip` results: the passages found, best first, and whether more remain.
pub(crate) async fn search(
    state: &Arc<AppState>,
    call: &Call,
    kb: &KnowledgeBase,
    query: String,
    search: &VectorSearchConfiguration,
    skip: usize,
) -> Result<(Vec<Found>, bool), BasaltError> {
    let param = "retrievalConfiguration.vectorSearchConfiguration";
    let k = search.number_of_results.unwrap_or(5);
    if !(1..=100).contains(&k) {
        return Err(BasaltError::invalid(
            format!("{param}.numberOfResults"),
            "numberOfResults is 1 to 100",
        ));
    }
    let hybrid = match search.override_search_type.as_deref() {
        None | Some("SEMANTIC") => false,
        Some("HYBRID") => true,
        Some(other) => {
            return Err(BasaltError::invalid(
                format!("{param}.overrideSearchType"),
                format!("search type {other} is not one of HYBRID, SEMANTIC"),
            ))
        }
    };
    let filter = search
        .filter
        .as_ref()
        .map(|f| Filter::parse(f, &format!("{param}.filter")))
        .transpose()
        .map_err(|e| BasaltError::invalid(format!("{param}.filter"), e.to_string()))?;
    let served = embedder_of(state, kb)?;
    let vector = embed_texts(state, call, &served, vec![query.clone()])
        .await?
        .pop()
        .ok_or_else(|| BasaltError::internal("no embedding came back"))?;
    let index = index_of(state, &call.principal.tenant, &kb.knowledge_base_id).await?;
    off_runtime(move || {
        let index = read_index(&index)?;
        // One more than asked tells whether another page exists.
        let hits = if hybrid {
            index.search_hybrid(&vector, &query, k + 1, skip, filter.as_ref())
        } else {
            index.search(&vector, k + 1, skip, filter.as_ref())
        };
        let more = hits.len() > k;
        let found = hits
            .into_iter()
            .take(k)
            .filter_map(|hit| found(&hit))
            .collect();
        Ok((found, more))
    })
    .await?
}

fn found(hit: &Hit<'_>) -> Option<Found> {
    let (doc, passage) = (hit.document, hit.passage);
    let text = doc.text_of(passage)?.to_string();
    let mut metadata = doc.metadata.clone();
    let source = if doc.from_bucket {
        "x-amz-bedrock-kb-source-uri"
    } else {
        "x-amz-bedrock-kb-document-id"
    };
    metadata.insert(source.into(), Value::String(doc.id.clone()));
    metadata.insert(
        "x-amz-bedrock-kb-data-source-id".into(),
        Value::String(doc.data_source_id.clone()),
    );
    metadata.insert(
        "x-amz-bedrock-kb-chunk-id".into(),
        Value::String(format!("{}#{passage}", doc.content_hash)),
    );
    Some(Found {
        result: RetrievalResult {
            content: RetrievalContent { kind: "TEXT", text },
            location: RetrievalLocation::of(&doc.id, doc.from_bucket),
            score: f64::from(hit.score),
            metadata,
        },
        vector: hit.vector.to_vec(),
    })
}
