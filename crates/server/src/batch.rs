//! Batch jobs (OpenAI's `/v1/batches`): a file of requests run in the background, below
//! interactive traffic, billed at the batch price, their answers written back as files.
//!
//! A job survives the server. Its batch object lives in the platform store; while it runs,
//! a directory under the data directory holds who owns it and a journal with one line per
//! finished record, appended and synced before the record counts as done. A server that
//! starts finds these directories and resumes each job: records in the journal are not run
//! again, the rest are, and the output files are assembled from the journal alone, in input
//! order, so no record is lost or written twice whatever moment the last server died at.
//! A torn last journal line (a crash mid-write) is ignored and its record run again.
//!
//! Records run through the same route code as HTTP requests, with the call marked as a
//! batch's ([`crate::generation::in_tier`]): the engine admits them only into
//! capacity interactive requests leave idle.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use basalt_auth::Principal;
use basalt_store::StoredObject;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::openai::files::{
    BatchErrors, BatchInputLine, BatchLineError, BatchObject, BatchOutputLine, BatchResponse,
};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::generation::{in_tier, request_id, Call, Tier};
use crate::offload::off_runtime;
use crate::routes::openai::Surface;
use crate::AppState;

/// The store's kind for batches.
pub(crate) const KIND: &str = "batch";
/// Records of one job in flight at once: more than the engine runs together (16 by
/// default), so a slot that frees is refilled from its queue at once.
const CONCURRENCY: usize = 32;
/// How often, at most, a running job's counts are written back to its stored object.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The jobs this server runs, by batch id: how to stop each.
pub struct Batches {
    root: PathBuf,
    running: Mutex<HashMap<String, Arc<Stop>>>,
}

#[derive(Default)]
pub(crate) struct Stop {
    requested: AtomicBool,
    notify: Notify,
}

/// What a job's directory records about it (`job.json`).
#[derive(Serialize, Deserialize)]
pub(crate) struct Job {
    pub batch_id: String,
    pub tenant: String,
    pub key_id: String,
    pub managed: bool,
    /// Which API's job it is (jobs written before Bedrock's existed are OpenAI's).
    #[serde(default)]
    pub format: Format,
}

/// The API a job belongs to: its stored object, its records and its output differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Format {
    /// `/v1/batches`.
    #[default]
    OpenAi,
    /// Bedrock's model invocation jobs.
    Bedrock,
}

impl Job {
    pub(crate) fn principal(&self) -> Principal {
        Principal {
            tenant: self.tenant.clone(),
            key_id: self.key_id.clone(),
            managed: self.managed,
        }
    }
}

/// One journal line: a finished record's output line, by its place in the input.
#[derive(Serialize, Deserialize)]
struct Finished {
    line: usize,
    output: Value,
}

/// Finished records by their place in the input, as journalled.
pub(crate) type Done = HashMap<usize, Value>;

/// Where a job's runner reports how far it got (the job's stored object).
pub(crate) trait Progress: Send {
    fn save<'a>(&'a mut self, done: &'a Done) -> BoxFuture<'a, Result<(), BasaltError>>;
}

fn internal(e: impl std::fmt::Display) -> BasaltError {
    BasaltError::internal(e.to_string())
}

pub(crate) fn not_found(id: &str) -> BasaltError {
    BasaltError::new(
        ErrorKind::NotFound,
        format!("No batch found with id '{id}'."),
    )
}

impl Batches {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            running: Mutex::default(),
        }
    }

    pub(crate) fn dir(&self, batch_id: &str) -> PathBuf {
        self.root.join(batch_id)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Stop>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks a running job to stop; false if this server is not running it.
    pub(crate) fn stop(&self, batch_id: &str) -> bool {
        match self.running().get(batch_id) {
            Some(stop) => {
                stop.requested.store(true, Ordering::Release);
                stop.notify.notify_waiters();
                true
            }
            None => false,
        }
    }
}

pub(crate) async fn load(
    state: &AppState,
    tenant: &str,
    batch_id: &str,
) -> Result<BatchObject, BasaltError> {
    let platform = state.platform.as_ref().ok_or_else(|| not_found(batch_id))?;
    let stored = platform
        .store
        .object(tenant, KIND, batch_id)
        .await
        .map_err(|e| crate::files::lookup_error(e, not_found(batch_id)))?;
    serde_json::from_str(&stored.body).map_err(internal)
}

pub(crate) async fn save(
    state: &AppState,
    tenant: &str,
    batch: &BatchObject,
) -> Result<(), BasaltError> {
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no store for batches"))?;
    platform
        .store
        .put_object(&StoredObject {
            tenant_id: tenant.to_string(),
            kind: KIND.into(),
            id: batch.id.clone(),
            created_at: batch.created_at as i64,
            body: serde_json::to_string(batch).map_err(internal)?,
        })
        .await
        .map_err(internal)
}

/// Records a new job on disk and starts it.
pub(crate) async fn start(
    state: &Arc<AppState>,
    principal: &Principal,
    id: &str,
    format: Format,
) -> Result<(), BasaltError> {
    let batches = state
        .batches
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server runs no batch jobs"))?;
    let job = Job {
        batch_id: id.to_string(),
        tenant: principal.tenant.clone(),
        key_id: principal.key_id.clone(),
        managed: principal.managed,
        format,
    };
    let path = batches.dir(id).join("job.json");
    let bytes = serde_json::to_vec(&job).map_err(internal)?;
    off_runtime(move || crate::files::write_atomically(&path, &bytes)).await??;
    spawn(Arc::clone(state), job);
    Ok(())
}

/// Resumes every job a previous server left unfinished.
pub async fn resume(state: Arc<AppState>) {
    let Some(batches) = state.batches.as_ref() else {
        return;
    };
    let root = batches.root.clone();
    let jobs = off_runtime(move || read_jobs(&root))
        .await
        .unwrap_or_default();
    for job in jobs {
        tracing::info!(batch = %job.batch_id, "resuming a batch job");
        spawn(Arc::clone(&state), job);
    }
}

fn read_jobs(root: &Path) -> Vec<Job> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path().join("job.json")).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect()
}

fn spawn(state: Arc<AppState>, job: Job) {
    let Some(batches) = state.batches.as_ref() else {
        return;
    };
    let stop = Arc::new(Stop::default());
    batches
        .running()
        .insert(job.batch_id.clone(), Arc::clone(&stop));
    tokio::spawn(async move {
        let id = job.batch_id.clone();
        let ran = match job.format {
            Format::OpenAi => run(&state, &job, &stop).await,
            Format::Bedrock => crate::invocation_jobs::run(&state, &job, &stop).await,
        };
        if let Err(e) = ran {
            tracing::error!(batch = %id, error = %e, "batch job failed");
            match job.format {
                Format::OpenAi => {
                    if let Ok(mut batch) = load(&state, &job.tenant, &id).await {
                        if !batch.is_terminal() {
                            fail(&mut batch, "server_error", &e.message, None);
                            let _ = save(&state, &job.tenant, &batch).await;
                        }
                    }
                }
                Format::Bedrock => crate::invocation_jobs::fail(&state, &job, &e.message).await,
            }
            remove_job_dir(&state, &id).await;
        }
        if let Some(batches) = state.batches.as_ref() {
            batches.running().remove(&id);
        }
    });
}

pub(crate) async fn remove_job_dir(state: &AppState, batch_id: &str) {
    if let Some(batches) = state.batches.as_ref() {
        let dir = batches.dir(batch_id);
        let _ = off_runtime(move || std::fs::remove_dir_all(dir)).await;
    }
}

fn fail(batch: &mut BatchObject, code: &str, message: &str, line: Option<u64>) {
    batch.status = "failed".into();
    batch.failed_at = Some(basalt_store::now() as u64);
    batch.errors = Some(BatchErrors {
        object: "list".into(),
        data: vec![basalt_wire::openai::files::BatchError {
            code: code.into(),
            message: message.into(),
            param: None,
            line,
        }],
    });
}

/// The journal so far: finished records by input line. A line that does not parse is the
/// torn end of a write the last server did not finish; it is dropped.
pub(crate) fn read_journal(path: &Path) -> Done {
    let Ok(file) = std::fs::File::open(path) else {
        return HashMap::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Finished>(&line).ok())
        .map(|f| (f.line, f.output))
        .collect()
}

/// Appends finished records to the journal, each synced before it counts.
struct Journal {
    file: std::fs::File,
}

impl Journal {
    fn open(path: &Path) -> Result<Self, BasaltError> {
        // A torn last line would glue onto the next append: end the file with a newline.
        let needs_newline = std::fs::read(path)
            .map(|b| b.last().is_some_and(|&c| c != b'\n'))
            .unwrap_or(false);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(internal)?;
        if needs_newline {
            file.write_all(b"\n").map_err(internal)?;
        }
        Ok(Self { file })
    }

    fn append(&mut self, finished: &Finished) -> Result<(), BasaltError> {
        let mut line = serde_json::to_vec(finished).map_err(internal)?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(internal)?;
        self.file.sync_data().map_err(internal)
    }
}

async fn run(state: &Arc<AppState>, job: &Job, stop: &Stop) -> Result<(), BasaltError> {
    let mut batch = load(state, &job.tenant, &job.batch_id).await?;
    if batch.is_terminal() {
        remove_job_dir(state, &batch.id).await;
        return Ok(());
    }
    let principal = job.principal();
    let files = state
        .files
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server keeps no files"))?;
    let platform = state
        .platform
        .as_ref()
        .ok_or_else(|| BasaltError::internal("this server has no store"))?;
    let input = match files
        .content(platform, &job.tenant, &batch.input_file_id)
        .await
    {
        Ok((_, bytes)) => bytes,
        Err(e) if e.kind == ErrorKind::NotFound => {
            fail(
                &mut batch,
                "invalid_file",
                "the input file no longer exists",
                None,
            );
            save(state, &job.tenant, &batch).await?;
            remove_job_dir(state, &batch.id).await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    if lines.is_empty() {
        fail(
            &mut batch,
            "empty_file",
            "the input file holds no requests",
            None,
        );
        save(state, &job.tenant, &batch).await?;
        remove_job_dir(state, &batch.id).await;
        return Ok(());
    }
    let journal_path = state
        .batches
        .as_ref()
        .map(|b| b.dir(&batch.id).join("journal.jsonl"))
        .ok_or_else(|| BasaltError::internal("this server runs no batch jobs"))?;
    let done = {
        let path = journal_path.clone();
        off_runtime(move || read_journal(&path)).await?
    };
    let (completed, failed) = openai_counts(&done);
    batch.request_counts.total = lines.len() as u64;
    batch.request_counts.completed = completed;
    batch.request_counts.failed = failed;
    if batch.status == "validating" {
        batch.status = "in_progress".into();
        batch.in_progress_at = Some(basalt_store::now() as u64);
    }
    save(state, &job.tenant, &batch).await?;

    let mut seen_ids = HashSet::new();
    let todo: Vec<(usize, Result<BatchInputLine, LineError>)> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| (i, parse_line(line, &batch.endpoint, &mut seen_ids)))
        .filter(|(i, _)| !done.contains_key(i))
        .collect();
    let mut done = done;
    if batch.status != "cancelling" {
        let endpoint = batch.endpoint.clone();
        let run_one = |parsed: Result<BatchInputLine, LineError>| {
            let (state, principal, endpoint) =
                (Arc::clone(state), principal.clone(), endpoint.clone());
            let record: BoxFuture<'static, Value> = Box::pin(in_tier(Tier::Batch, async move {
                let line = run_record(&state, &principal, &endpoint, parsed).await;
                serde_json::to_value(line).unwrap_or(Value::Null)
            }));
            record
        };
        let mut progress = BatchProgress {
            state,
            tenant: &job.tenant,
            batch: &mut batch,
        };
        run_records(journal_path, stop, todo, &mut done, run_one, &mut progress).await?;
    }
    // Re-read: a cancel request may have changed the stored status meanwhile.
    let mut batch = load(state, &job.tenant, &job.batch_id).await?;
    let (completed, failed) = openai_counts(&done);
    batch.request_counts.total = lines.len() as u64;
    batch.request_counts.completed = completed;
    batch.request_counts.failed = failed;
    let stopped = batch.status == "cancelling" || done.len() < lines.len();
    batch.status = "finalizing".into();
    batch.finalizing_at = Some(basalt_store::now() as u64);
    save(state, &job.tenant, &batch).await?;
    finalize(state, &job.tenant, &mut batch, &done, lines.len()).await?;
    let now = basalt_store::now() as u64;
    if stopped {
        batch.status = "cancelled".into();
        batch.cancelled_at = Some(now);
    } else {
        batch.status = "completed".into();
        batch.completed_at = Some(now);
    }
    save(state, &job.tenant, &batch).await?;
    remove_job_dir(state, &batch.id).await;
    Ok(())
}

/// Whether an OpenAI output line is a success (it goes to the output file, else to the
/// error file).
fn openai_succeeded(line: &Value) -> bool {
    serde_json::from_value::<BatchOutputLine>(line.clone()).is_ok_and(|l| l.succeeded())
}

/// (completed, failed) among finished OpenAI records.
fn openai_counts(done: &Done) -> (u64, u64) {
    let completed = done.values().filter(|l| openai_succeeded(l)).count() as u64;
    (completed, done.len() as u64 - completed)
}

/// Writes an OpenAI batch's counts back to its stored object as the job runs.
struct BatchProgress<'s> {
    state: &'s AppState,
    tenant: &'s str,
    batch: &'s mut BatchObject,
}

impl Progress for BatchProgress<'_> {
    fn save<'a>(&'a mut self, done: &'a Done) -> BoxFuture<'a, Result<(), BasaltError>> {
        Box::pin(async move {
            let (completed, failed) = openai_counts(done);
            self.batch.request_counts.completed = completed;
            self.batch.request_counts.failed = failed;
            save(self.state, self.tenant, self.batch).await
        })
    }
}

/// Runs a job's `todo` records through `run_one`, each a task of its own (so records
/// progress while this loop writes the journal), at most [`CONCURRENCY`] at once, a record
/// finishing starting the next. Each finished output is journalled (synced) before it joins
/// `done`; `progress` hears of it at most every [`PROGRESS_EVERY`]. Returns when every
/// record finished or the job was asked to stop; dropping the set then aborts the records
/// still running (their sequences stop in the engine), which are not in the journal, so a
/// resumed job runs them again.
pub(crate) async fn run_records<T: Send + 'static>(
    journal_path: PathBuf,
    stop: &Stop,
    todo: Vec<(usize, T)>,
    done: &mut Done,
    run_one: impl Fn(T) -> BoxFuture<'static, Value>,
    progress: &mut dyn Progress,
) -> Result<(), BasaltError> {
    let journal = {
        let path = journal_path.clone();
        Arc::new(Mutex::new(
            off_runtime(move || Journal::open(&path)).await??,
        ))
    };
    let mut todo = todo.into_iter();
    let mut records = tokio::task::JoinSet::new();
    let mut launch = |records: &mut tokio::task::JoinSet<(usize, Value)>| {
        if let Some((i, item)) = todo.next() {
            let record = run_one(item);
            records.spawn(async move { (i, record.await) });
        }
    };
    for _ in 0..CONCURRENCY {
        launch(&mut records);
    }
    let mut last_saved = Instant::now();
    loop {
        let notified = stop.notify.notified();
        if stop.requested.load(Ordering::Acquire) {
            return Ok(());
        }
        let next = tokio::select! {
            next = records.join_next() => next,
            () = notified => return Ok(()),
        };
        let Some(joined) = next else {
            return Ok(());
        };
        let (line, output) = joined.map_err(internal)?;
        launch(&mut records);
        let finished = Finished { line, output };
        let writer = Arc::clone(&journal);
        let finished = off_runtime(move || {
            let mut journal = writer.lock().unwrap_or_else(|p| p.into_inner());
            journal.append(&finished).map(|()| finished)
        })
        .await??;
        done.insert(finished.line, finished.output);
        if last_saved.elapsed() >= PROGRESS_EVERY {
            progress.save(done).await?;
            last_saved = Instant::now();
        }
    }
}

/// Writes the output file (the records that succeeded) and the error file (the rest), each
/// in input order; a file is made only when it has a line.
async fn finalize(
    state: &AppState,
    tenant: &str,
    batch: &mut BatchObject,
    done: &Done,
    lines: usize,
) -> Result<(), BasaltError> {
    let (files, platform) = match (state.files.as_ref(), state.platform.as_ref()) {
        (Some(f), Some(p)) => (f, p),
        _ => return Err(BasaltError::internal("this server keeps no files")),
    };
    let mut output = Vec::new();
    let mut errors = Vec::new();
    for i in 0..lines {
        let Some(line) = done.get(&i) else { continue };
        let sink = if openai_succeeded(line) {
            &mut output
        } else {
            &mut errors
        };
        serde_json::to_writer(&mut *sink, line).map_err(internal)?;
        sink.push(b'\n');
    }
    if !output.is_empty() {
        let name = format!("{}_output.jsonl", batch.id);
        batch.output_file_id = Some(
            files
                .create(platform, tenant, &name, "batch_output", output)
                .await?
                .id,
        );
    }
    if !errors.is_empty() {
        let name = format!("{}_error.jsonl", batch.id);
        batch.error_file_id = Some(
            files
                .create(platform, tenant, &name, "batch_output", errors)
                .await?
                .id,
        );
    }
    Ok(())
}

/// One input line, checked: JSON, a `custom_id` unique in the file, `POST` to the batch's
/// endpoint, a body that is an object and does not stream.
/// A line that cannot run: its `custom_id` when it has one, and why.
type LineError = (Option<String>, BatchLineError);

fn parse_line(
    line: &[u8],
    endpoint: &str,
    seen: &mut HashSet<String>,
) -> Result<BatchInputLine, LineError> {
    let invalid = |message: String| BatchLineError {
        code: "invalid_request".into(),
        message,
    };
    let parsed: BatchInputLine = serde_json::from_slice(line).map_err(|e| {
        let custom_id = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("custom_id")?.as_str().map(str::to_string));
        (
            custom_id,
            invalid(format!("the line is not a batch request: {e}")),
        )
    })?;
    let id = || Some(parsed.custom_id.clone());
    if !seen.insert(parsed.custom_id.clone()) {
        return Err((
            id(),
            BatchLineError {
                code: "duplicate_custom_id".into(),
                message: format!(
                    "the custom_id `{}` appears more than once",
                    parsed.custom_id
                ),
            },
        ));
    }
    if parsed.method != "POST" {
        return Err((
            id(),
            invalid(format!("method `{}` is not POST", parsed.method)),
        ));
    }
    if parsed.url != endpoint {
        let message = format!(
            "url `{}` is not the batch's endpoint `{endpoint}`",
            parsed.url
        );
        return Err((id(), invalid(message)));
    }
    if !parsed.body.is_object() {
        return Err((id(), invalid("the body is not a JSON object".into())));
    }
    if parsed.body.get("stream").and_then(|v| v.as_bool()) == Some(true) {
        return Err((id(), invalid("a batch request cannot stream".into())));
    }
    Ok(parsed)
}

/// Runs one record through the endpoint's route code; its answer (or error) as an output
/// line.
async fn run_record(
    state: &Arc<AppState>,
    principal: &Principal,
    endpoint: &str,
    parsed: Result<BatchInputLine, LineError>,
) -> BatchOutputLine {
    let id = request_id("batch_req_");
    let request = match parsed {
        Ok(r) => r,
        Err((custom_id, error)) => {
            return BatchOutputLine {
                id,
                custom_id,
                response: None,
                error: Some(error),
            }
        }
    };
    let body = Bytes::from(serde_json::to_vec(&request.body).unwrap_or_default());
    let response = match endpoint {
        "/v1/embeddings" => {
            let call = Call::new(principal.clone(), "openai", "embeddings", "emb-");
            crate::routes::embeddings::openai_embeddings_for(state, call, body)
                .await
                .into_response()
        }
        _ => {
            let surface = match endpoint {
                "/v1/completions" => Surface::Completion,
                _ => Surface::Chat,
            };
            crate::routes::openai::generate(
                State(Arc::clone(state)),
                Extension(principal.clone()),
                HeaderMap::new(),
                Ok(body),
                surface,
                Duration::from_secs(15),
            )
            .await
            .into_response()
        }
    };
    let status = response.status().as_u16();
    let body = match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        Err(e) => serde_json::json!({"error": {"message": e.to_string(), "type": "server_error"}}),
    };
    let request_id = body
        .get("id")
        .and_then(|v| v.as_str())
        .map_or_else(|| request_id_for_error(&id), str::to_string);
    BatchOutputLine {
        id,
        custom_id: Some(request.custom_id),
        response: Some(BatchResponse {
            status_code: status,
            request_id,
            body,
        }),
        error: None,
    }
}

fn request_id_for_error(line_id: &str) -> String {
    line_id.replace("batch_req_", "req_")
}
