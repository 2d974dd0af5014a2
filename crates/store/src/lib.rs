//! The platform's durable state: tenants, their API keys and SigV4 access keys, model
//! grants, quotas, and one usage record per request.
//!
//! Callers see only the async [`Store`] trait; [`SqliteStore`] is the embedded
//! implementation (a file in the data directory, WAL, one writer and a few readers on the
//! blocking pool, migrations applied at open), [`PostgresStore`] the one many replicas
//! share (a connection pool, migrations applied under an advisory lock, changes announced
//! to every replica with `NOTIFY`), and [`CachedStore`] keeps what every request reads in
//! memory in front of either. Every write is committed durably before its future
//! completes, so a usage record written before a response is sent survives a `kill -9`
//! right after.
//!
//! Secrets: API keys are stored as SHA-256 hashes (they are shown once, at creation); SigV4
//! secrets must be recoverable to verify signatures, so they are encrypted at rest with the
//! server key ([`SecretBox`]). This crate never logs a key or a secret.

#![forbid(unsafe_code)]

mod cached;
mod postgres;
mod rules;
mod secrets;
mod sqlite;
mod work;

use async_trait::async_trait;
use basalt_auth::{AccessKey, KeyStore, LookupFailed, Principal};
use serde::Serialize;

pub use cached::CachedStore;
pub use postgres::PostgresStore;
pub use secrets::{random_token, random_u64, SecretBox};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Backend(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// `active` or `suspended` (a suspended tenant's keys stop working).
    pub status: String,
    /// Its share of the engine under contention (fair scheduling weight), 1 by default.
    pub weight: u32,
    /// Whether its prompts and completions are written to the invocation log.
    pub log_invocations: bool,
    /// The guardrail an operator enforces on every model call of this tenant, as
    /// Bedrock's enforced guardrail configuration does.
    pub enforced_guardrail: Option<GuardrailRef>,
    pub created_at: i64,
}

/// A guardrail version of a tenant's, by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GuardrailRef {
    pub id: String,
    pub version: String,
}

/// What a listing shows of an API key: never the key, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A key just created: the only time its secret part is available.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessKeyInfo {
    pub access_key_id: String,
    pub tenant_id: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedAccessKey {
    #[serde(flatten)]
    pub info: AccessKeyInfo,
    pub secret_access_key: String,
}

/// Per tenant and model (`*` for every model) limits; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Quota {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub monthly_budget_usd: Option<f64>,
}

/// One request, as metered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub tenant_id: String,
    pub key_id: String,
    pub model_id: String,
    /// `openai`, `anthropic`, `bedrock`.
    pub surface: String,
    /// `chat.completions`, `Converse`, `messages`, ...
    pub operation: String,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
    pub time_to_first_token_ms: Option<u64>,
    /// `ok`, `cancelled`, or the error kind.
    pub status: String,
    pub cost_usd: f64,
    /// Text units a guardrail assessed, on a guardrail's own rows (zero on a model call's).
    pub guardrail_units: GuardrailUnits,
    /// Seconds since the Unix epoch.
    pub created_at: i64,
}

/// Guardrail text units (1,000 characters each) by policy, as Bedrock bills them. Only the
/// policies Basalt enforces have a field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GuardrailUnits {
    pub word: u64,
    pub sensitive_information: u64,
    pub contextual_grounding: u64,
    pub topic: u64,
    pub content: u64,
}

impl GuardrailUnits {
    /// The units in the order of every store's columns (word, sensitive information,
    /// contextual grounding, topic, content), as the databases' signed integers.
    pub(crate) fn columns(&self) -> [i64; 5] {
        [
            self.word,
            self.sensitive_information,
            self.contextual_grounding,
            self.topic,
            self.content,
        ]
        .map(|v| v.min(i64::MAX as u64) as i64)
    }
}

impl std::ops::AddAssign for GuardrailUnits {
    fn add_assign(&mut self, other: Self) {
        self.word += other.word;
        self.sensitive_information += other.sensitive_information;
        self.contextual_grounding += other.contextual_grounding;
        self.topic += other.topic;
        self.content += other.content;
    }
}

/// One version of a guardrail: `DRAFT` or a number. The store keeps its definition (the
/// policies and blocked messages, as the API configured them) as JSON it does not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuardrailRecord {
    pub id: String,
    pub tenant_id: String,
    pub version: String,
    pub name: String,
    pub description: Option<String>,
    pub definition: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What creating or updating a guardrail's draft sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardrailDraft {
    pub name: String,
    pub description: Option<String>,
    pub definition: String,
}

/// A stored API object: a tenant's OpenAI response (and, by `kind`, any other object an API
/// keeps), as JSON the store does not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub tenant_id: String,
    pub kind: String,
    pub id: String,
    pub created_at: i64,
    pub body: String,
}

/// One page of a listing of stored objects, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectPage {
    pub objects: Vec<StoredObject>,
    pub has_more: bool,
}

/// One Basalt process serving from a shared store, as it last announced itself.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    pub id: String,
    /// Where other replicas reach its API (`http://host:port`).
    pub address: String,
    /// The models it has loaded, by id.
    pub models: Vec<String>,
    /// Their catalog entries (manifests) as JSON, so any replica can list every model the
    /// platform serves; the store does not read it.
    pub catalog: String,
    /// Requests waiting for the engine, sequences running in it, and the KV-cache bytes
    /// they hold.
    pub queued: u64,
    pub running: u64,
    pub kv_bytes: u64,
    /// Milliseconds since the epoch, of its last heartbeat.
    pub heartbeat_at_ms: i64,
}

/// A replica whose last heartbeat is older than this is gone: its requests that were still
/// running are marked [`INTERRUPTED`], and no request is sent to it.
pub const REPLICA_TIMEOUT_MS: i64 = 10_000;

/// One admission under quotas counted by the database itself (see [`QuotaCounter`]).
#[derive(Debug, Clone)]
pub struct QuotaRequest<'a> {
    pub tenant: &'a str,
    /// (scope: a model id or `*`, its quota).
    pub quotas: &'a [(String, Quota)],
    /// Prompt tokens plus the most the request may generate.
    pub tokens: u64,
    /// The reservation's id, unique across processes.
    pub reservation: u64,
    /// Seconds since the epoch (chooses the UTC day and month counted).
    pub now: i64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaLimit {
    RequestsPerMinute,
    TokensPerMinute,
    /// The request alone may use more than the tokens-per-minute quota.
    LargerThanTokensPerMinute,
    TokensPerDay,
    MonthlyBudget,
}

#[derive(Debug, Clone, PartialEq)]
pub enum QuotaDecision {
    Admitted,
    Refused {
        /// The index of the refusing scope in the request's quotas.
        scope: usize,
        limit: QuotaLimit,
        retry_after_secs: u64,
        /// Tokens in use this minute, or dollars spent this month.
        used: f64,
    },
}

/// Quotas counted in the database all replicas share, exactly: each admission checks every
/// scope and takes its reservation in one transaction, serialised per tenant. Slower than
/// Redis (a transaction per request), for deployments without it.
#[async_trait]
pub trait QuotaCounter: Send + Sync {
    async fn admit(&self, request: &QuotaRequest<'_>) -> Result<QuotaDecision, StoreError>;
    /// Replaces an admitted reservation by the tokens really used, and adds the cost to
    /// the month's spend where a budget counted it.
    async fn settle(
        &self,
        request: &QuotaRequest<'_>,
        used_tokens: u64,
        cost: f64,
    ) -> Result<(), StoreError>;
}

/// Called when another process changed what every request reads (keys, tenants, grants,
/// quotas), so that caches drop what they hold.
pub type ChangeListener = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The version a guardrail's editable draft has.
pub const DRAFT: &str = "DRAFT";

#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub tenant_id: Option<String>,
    pub model_id: Option<String>,
    /// Inclusive, seconds since the epoch.
    pub from: Option<i64>,
    /// Exclusive.
    pub to: Option<i64>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub guardrail_units: GuardrailUnits,
}

/// The platform's state. Async because a database answers over a connection (SQLite's on
/// the blocking pool, PostgreSQL's over the network); implementations are shared across
/// tasks and must make every write durable before its future completes.
#[async_trait]
pub trait Store: Send + Sync {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError>;
    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// By id or by name.
    async fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError>;
    async fn update_tenant(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError>;

    /// Sets (or with `None` clears) the guardrail enforced on every model call of the
    /// tenant; the guardrail version must be the tenant's own.
    async fn set_enforced_guardrail(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError>;

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError>;
    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError>;
    async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError>;
    /// The principal of a valid (known, unrevoked, unexpired, tenant active) key; `None`
    /// for any other key, an error when the store cannot say.
    async fn principal_for_api_key(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError>;

    async fn create_access_key(&self, tenant_id: &str) -> Result<CreatedAccessKey, StoreError>;
    async fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError>;
    async fn revoke_access_key(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError>;
    async fn access_key_secret(
        &self,
        access_key_id: &str,
        now: i64,
    ) -> Result<Option<AccessKey>, StoreError>;

    async fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError>;
    async fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError>;
    async fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError>;

    async fn set_quota(
        &self,
        tenant_id: &str,
        model_id: &str,
        quota: &Quota,
    ) -> Result<(), StoreError>;
    /// All quotas of a tenant: (model id or `*`, quota).
    async fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError>;

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), StoreError>;
    /// Records a request when it is admitted (status [`IN_PROGRESS`], the tokens known so
    /// far), durably, so that a crash before it ends still leaves its trace; returns the
    /// record's id for [`Store::complete_usage`].
    async fn begin_usage(&self, record: &UsageRecord) -> Result<i64, StoreError>;
    /// Replaces a record begun with [`Store::begin_usage`] with the request's final usage.
    async fn complete_usage(&self, id: i64, record: &UsageRecord) -> Result<(), StoreError>;
    /// Adds a guardrail's text units to its call's record (the first with the record's
    /// request id and tenant), or records it as a row of its own when the call has none
    /// (`ApplyGuardrail`, or an input the guardrail blocked before any model ran).
    async fn record_guardrail_units(&self, record: &UsageRecord) -> Result<(), StoreError>;
    /// Marks every record still [`IN_PROGRESS`] as [`INTERRUPTED`]: run when a server
    /// starts, for the requests that were in flight when the last one died.
    async fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError>;
    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError>;
    async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError>;

    /// Creates a guardrail (its `DRAFT`), named uniquely within the tenant.
    async fn create_guardrail(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError>;
    /// A tenant's guardrail at `version` (`DRAFT` or a number); another tenant's is not found.
    async fn guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError>;
    /// The tenant's guardrails (their drafts), or every version of one.
    async fn guardrails(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError>;
    async fn update_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError>;
    /// Snapshots the draft as the next numbered version, which never changes after.
    async fn create_guardrail_version(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError>;
    /// Deletes one numbered version, or (with `None`) the guardrail and all its versions.
    async fn delete_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Stores an object, or replaces the body of the one with its tenant, kind and id.
    async fn put_object(&self, object: &StoredObject) -> Result<(), StoreError>;
    /// A tenant's object; another tenant's is `NotFound`.
    async fn object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError>;
    /// A page of a tenant's objects of one kind, newest first, after the object `after`.
    async fn objects(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError>;
    async fn delete_object(&self, tenant_id: &str, kind: &str, id: &str) -> Result<(), StoreError>;

    /// The admin token's hash, set once at bootstrap.
    async fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError>;
    async fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError>;

    /// Announces this replica (and its load) to the others sharing the store. A store only
    /// one process uses keeps no registry.
    async fn heartbeat(&self, _status: &ReplicaStatus) -> Result<(), StoreError> {
        Ok(())
    }
    /// The replicas that announced themselves within [`REPLICA_TIMEOUT_MS`].
    async fn replicas(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        Ok(Vec::new())
    }
    /// Calls `on_change` whenever any process (another replica, the CLI) changes keys,
    /// tenants, grants or quotas, and once more after any gap in which a change might have
    /// been missed. A store only one process writes has nothing to announce. Call it
    /// within a tokio runtime, which runs the watch.
    fn watch_changes(&self, _on_change: ChangeListener) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Lets the authentication layer find keys in a store.
pub struct StoreKeys<S: Store + ?Sized>(pub std::sync::Arc<S>);

#[async_trait]
impl<S: Store + ?Sized> KeyStore for StoreKeys<S> {
    async fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<Principal>, LookupFailed> {
        self.0
            .principal_for_api_key(key_sha256, now())
            .await
            .map_err(|e| LookupFailed(e.to_string()))
    }
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>, LookupFailed> {
        self.0
            .access_key_secret(access_key_id, now())
            .await
            .map_err(|e| LookupFailed(e.to_string()))
    }
    fn is_empty(&self) -> bool {
        // A store always demands credentials, even before its first key exists.
        false
    }
}

/// The status of a usage record whose request is still running.
pub const IN_PROGRESS: &str = "in_progress";
/// The status of a usage record whose server stopped before the request ended.
pub const INTERRUPTED: &str = "interrupted";

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
