//! The store many replicas share: PostgreSQL, behind the same async [`Store`] trait as the
//! embedded SQLite store.
//!
//! A pool of connections (tokio-postgres under deadpool), the schema migrated at connect
//! under an advisory lock (`migrations.rs`), every write a single statement or one
//! transaction committed before its future completes. What only a shared database has:
//! each usage row names the replica that wrote it, so a replica that starts, or notices
//! another's heartbeat has stopped, marks only that replica's unfinished requests
//! interrupted (`replicas.rs`); and triggers announce every change to keys, tenants, grants
//! and quotas with `NOTIFY`, so every replica's cache drops them at once.
//!
//! Usage writes are group-committed (`usage.rs`): concurrent requests share each WAL flush.
//!
//! Connections are plain TCP or a Unix socket: PostgreSQL is expected on a private network
//! or loopback (`sslmode=require` is refused at connect rather than silently ignored).

mod guardrails;
mod migrations;
mod objects;
mod quotas;
mod replicas;
mod tenancy;
mod usage;

use std::time::Duration;

use async_trait::async_trait;
use basalt_auth::{AccessKey, Principal};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use usage::{UsageWrite, UsageWriter};

use crate::{
    AccessKeyInfo, ApiKeyInfo, ChangeListener, CreatedAccessKey, CreatedApiKey, GuardrailDraft,
    GuardrailRecord, GuardrailRef, ObjectPage, Quota, ReplicaStatus, SecretBox, Store, StoreError,
    StoredObject, Tenant, UsageQuery, UsageRecord, UsageTotals,
};

/// Connections per replica: requests read through the cache, so the pool serves usage
/// writes, admin calls and cache misses.
const POOL_SIZE: usize = 16;

/// The most a connection may take to open, or a caller to wait for one from the pool.
const TIMEOUT: Duration = Duration::from_secs(5);

fn backend(e: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(postgres_message(&e))
}

/// The server's own message where there is one (tokio-postgres's `Display` says only "db
/// error").
fn postgres_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("postgres: {}", db.message()),
        None => format!("postgres: {e}"),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => backend(e),
        other => StoreError::Backend(format!("postgres pool: {other}")),
    }
}

/// Whether a statement failed on a unique constraint (the caller's conflict).
fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

pub struct PostgresStore {
    pool: Pool,
    config: tokio_postgres::Config,
    secrets: SecretBox,
    /// This process's name among the replicas: on its usage rows and its heartbeat.
    replica_id: String,
    usage_writer: UsageWriter,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`, or
    /// key=value form) and brings its schema up to date.
    pub async fn connect(
        url: &str,
        secrets: SecretBox,
        replica_id: &str,
    ) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("the database URL is not valid: {e}")))?;
        // A database that stops answering fails requests with an error, not a hang; a
        // connection that died quietly (the change watch's, idle between notifications)
        // is noticed.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(TIMEOUT);
        }
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Invalid(
                "sslmode=require: Basalt connects to PostgreSQL without TLS; reach it on a \
                 private network or loopback and drop sslmode"
                    .into(),
            ));
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let store = Self {
            usage_writer: UsageWriter::start(pool.clone(), replica_id.to_string())?,
            pool,
            config,
            secrets,
            replica_id: replica_id.to_string(),
        };
        let mut client = store.client().await?;
        migrations::migrate(&mut client).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError> {
        self.create_tenant_row(name, weight).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.tenant_rows().await
    }

    async fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        self.tenant_row(id_or_name).await
    }

    async fn update_tenant(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError> {
        self.update_tenant_row(id, status, weight, log_invocations)
            .await
    }

    async fn set_enforced_guardrail(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError> {
        self.set_enforced_guardrail_row(tenant_id, guardrail).await
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        self.create_api_key_row(tenant_id, name, expires_at).await
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.api_key_rows(tenant_id).await
    }

    async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        self.revoke_api_key_row(tenant_id, key_id).await
    }

    async fn principal_for_api_key(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        self.api_key_principal(key_sha256, now).await
    }

    async fn create_access_key(&self, tenant_id: &str) -> Result<CreatedAccessKey, StoreError> {
        self.create_access_key_row(tenant_id).await
    }

    async fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError> {
        self.access_key_rows(tenant_id).await
    }

    async fn revoke_access_key(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError> {
        self.revoke_access_key_row(tenant_id, access_key_id).await
    }

    async fn access_key_secret(
        &self,
        access_key_id: &str,
        _now: i64,
    ) -> Result<Option<AccessKey>, StoreError> {
        self.access_key_row_secret(access_key_id).await
    }

    async fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.grant_model_row(tenant_id, model_id).await
    }

    async fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.revoke_model_row(tenant_id, model_id).await
    }

    async fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        self.grant_rows(tenant_id).await
    }

    async fn set_quota(
        &self,
        tenant_id: &str,
        model_id: &str,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        self.set_quota_row(tenant_id, model_id, quota).await
    }

    async fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError> {
        self.quota_rows(tenant_id).await
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), StoreError> {
        let write = UsageWrite::Insert(record.clone());
        self.usage_writer.write(write).await.map(|_| ())
    }

    async fn begin_usage(&self, record: &UsageRecord) -> Result<i64, StoreError> {
        let write = UsageWrite::Insert(record.clone());
        self.usage_writer.write(write).await
    }

    async fn complete_usage(&self, id: i64, record: &UsageRecord) -> Result<(), StoreError> {
        let write = UsageWrite::Complete(id, record.clone());
        self.usage_writer.write(write).await.map(|_| ())
    }

    async fn record_guardrail_units(&self, record: &UsageRecord) -> Result<(), StoreError> {
        let write = UsageWrite::AddGuardrailUnits(record.clone());
        self.usage_writer.write(write).await.map(|_| ())
    }

    async fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError> {
        self.interrupt_orphaned_usage().await
    }

    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        self.usage_rows(q).await
    }

    async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        self.usage_sums(q).await
    }

    async fn create_guardrail(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        self.create_guardrail_row(tenant_id, draft).await
    }

    async fn guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError> {
        self.guardrail_row(tenant_id, id, version).await
    }

    async fn guardrails(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError> {
        self.guardrail_rows(tenant_id, id).await
    }

    async fn update_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        self.update_guardrail_row(tenant_id, id, draft).await
    }

    async fn create_guardrail_version(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError> {
        self.snapshot_guardrail(tenant_id, id, description).await
    }

    async fn delete_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        self.delete_guardrail_rows(tenant_id, id, version).await
    }

    async fn put_object(&self, object: &StoredObject) -> Result<(), StoreError> {
        self.put_object_row(object).await
    }

    async fn object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError> {
        self.object_row(tenant_id, kind, id).await
    }

    async fn objects(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError> {
        self.object_page(tenant_id, kind, after, limit).await
    }

    async fn delete_object(&self, tenant_id: &str, kind: &str, id: &str) -> Result<(), StoreError> {
        self.delete_object_row(tenant_id, kind, id).await
    }

    async fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.admin_token_row().await
    }

    async fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.set_admin_token_row(hash).await
    }

    async fn heartbeat(&self, status: &ReplicaStatus) -> Result<(), StoreError> {
        self.heartbeat_row(status).await
    }

    async fn replicas(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        self.live_replicas().await
    }

    fn watch_changes(&self, on_change: ChangeListener) -> Result<(), StoreError> {
        replicas::watch_changes(self.config.clone(), on_change)
    }
}
