//! The embedded store: one SQLite file in the data directory, behind the async [`Store`]
//! trait.
//!
//! WAL journaling with `synchronous = FULL`: a committed write is on disk before the call
//! returns, so nothing acknowledged is lost on a crash. One writer connection (SQLite
//! serialises writers anyway; concurrent usage records share its fsyncs by group commit)
//! and a few reader connections that neither wait for it nor make it wait. Every call runs
//! on tokio's blocking pool, never on a runtime worker, so a caller needs a tokio runtime
//! (the server's, or the CLI's own).

mod database;
mod guardrails;
mod migrations;
mod objects;
mod pool;
mod usage;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use basalt_auth::{AccessKey, Principal};

use crate::{
    AccessKeyInfo, ApiKeyInfo, CreatedAccessKey, CreatedApiKey, GuardrailDraft, GuardrailRecord,
    GuardrailRef, ObjectPage, Quota, SecretBox, Store, StoreError, StoredObject, Tenant,
    UsageQuery, UsageRecord, UsageTotals,
};
use database::Database;

/// Reader connections beside the writer: enough that key lookups, quota reads and an
/// admin listing never queue behind one another on a small machine.
const DEFAULT_READERS: usize = 4;

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub struct SqliteStore {
    db: Arc<Database>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    /// Blocks: call it before serving, or on the blocking pool.
    pub fn open(path: &Path, secrets: SecretBox) -> Result<Self, StoreError> {
        Ok(Self {
            db: Arc::new(Database::open(path, secrets)?),
        })
    }

    /// A private in-memory database, for tests.
    pub fn in_memory(secrets: SecretBox) -> Result<Self, StoreError> {
        Ok(Self {
            db: Arc::new(Database::in_memory(secrets)?),
        })
    }

    /// Runs `f` on the database from tokio's blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || crate::work::store_work(|| f(&db)))
            .await
            .map_err(|e| StoreError::Backend(format!("a database task failed: {e}")))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError> {
        let name = name.to_owned();
        self.run(move |db| db.create_tenant(&name, weight)).await?
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.run(|db| db.tenants()).await?
    }

    async fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        let id_or_name = id_or_name.to_owned();
        self.run(move |db| db.tenant(&id_or_name)).await?
    }

    async fn update_tenant(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError> {
        let (id, status) = (id.to_owned(), status.map(str::to_owned));
        self.run(move |db| db.update_tenant(&id, status.as_deref(), weight, log_invocations))
            .await?
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.run(move |db| db.create_api_key(&tenant_id, &name, expires_at))
            .await?
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.run(move |db| db.api_keys(&tenant_id)).await?
    }

    async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        let (tenant_id, key_id) = (tenant_id.to_owned(), key_id.to_owned());
        self.run(move |db| db.revoke_api_key(&tenant_id, &key_id))
            .await?
    }

    async fn principal_for_api_key(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let key_sha256 = *key_sha256;
        self.run(move |db| db.principal_for_api_key(&key_sha256, now))
            .await?
    }

    async fn create_access_key(&self, tenant_id: &str) -> Result<CreatedAccessKey, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.run(move |db| db.create_access_key(&tenant_id)).await?
    }

    async fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.run(move |db| db.access_keys(&tenant_id)).await?
    }

    async fn revoke_access_key(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError> {
        let (tenant_id, access_key_id) = (tenant_id.to_owned(), access_key_id.to_owned());
        self.run(move |db| db.revoke_access_key(&tenant_id, &access_key_id))
            .await?
    }

    async fn access_key_secret(
        &self,
        access_key_id: &str,
        now: i64,
    ) -> Result<Option<AccessKey>, StoreError> {
        let access_key_id = access_key_id.to_owned();
        self.run(move |db| db.access_key_secret(&access_key_id, now))
            .await?
    }

    async fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        let (tenant_id, model_id) = (tenant_id.to_owned(), model_id.to_owned());
        self.run(move |db| db.grant_model(&tenant_id, &model_id))
            .await?
    }

    async fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        let (tenant_id, model_id) = (tenant_id.to_owned(), model_id.to_owned());
        self.run(move |db| db.revoke_model(&tenant_id, &model_id))
            .await?
    }

    async fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.run(move |db| db.granted_models(&tenant_id)).await?
    }

    async fn set_quota(
        &self,
        tenant_id: &str,
        model_id: &str,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        let (tenant_id, model_id, quota) =
            (tenant_id.to_owned(), model_id.to_owned(), quota.clone());
        self.run(move |db| db.set_quota(&tenant_id, &model_id, &quota))
            .await?
    }

    async fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.run(move |db| db.quotas(&tenant_id)).await?
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| db.record_usage(&record)).await?
    }

    async fn begin_usage(&self, record: &UsageRecord) -> Result<i64, StoreError> {
        let record = record.clone();
        self.run(move |db| db.begin_usage(&record)).await?
    }

    async fn complete_usage(&self, id: i64, record: &UsageRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| db.complete_usage(id, &record)).await?
    }

    async fn set_enforced_guardrail(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError> {
        let (tenant_id, guardrail) = (tenant_id.to_string(), guardrail.cloned());
        self.run(move |db| db.set_enforced_guardrail(&tenant_id, guardrail.as_ref()))
            .await?
    }

    async fn record_guardrail_units(&self, record: &UsageRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.run(move |db| db.record_guardrail_units(&record))
            .await?
    }

    async fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError> {
        self.run(|db| db.interrupt_unfinished_usage()).await?
    }

    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        let q = q.clone();
        self.run(move |db| db.usage(&q)).await?
    }

    async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        let q = q.clone();
        self.run(move |db| db.usage_totals(&q)).await?
    }

    async fn create_guardrail(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let (tenant_id, draft) = (tenant_id.to_owned(), draft.clone());
        self.run(move |db| db.create_guardrail(&tenant_id, &draft))
            .await?
    }

    async fn guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError> {
        let (tenant_id, id, version) = (tenant_id.to_owned(), id.to_owned(), version.to_owned());
        self.run(move |db| db.guardrail(&tenant_id, &id, &version))
            .await?
    }

    async fn guardrails(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.map(str::to_owned));
        self.run(move |db| db.guardrails(&tenant_id, id.as_deref()))
            .await?
    }

    async fn update_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let (tenant_id, id, draft) = (tenant_id.to_owned(), id.to_owned(), draft.clone());
        self.run(move |db| db.update_guardrail(&tenant_id, &id, &draft))
            .await?
    }

    async fn create_guardrail_version(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        let description = description.map(str::to_owned);
        self.run(move |db| db.create_guardrail_version(&tenant_id, &id, description.as_deref()))
            .await?
    }

    async fn delete_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let (tenant_id, id) = (tenant_id.to_owned(), id.to_owned());
        let version = version.map(str::to_owned);
        self.run(move |db| db.delete_guardrail(&tenant_id, &id, version.as_deref()))
            .await?
    }

    async fn put_object(&self, object: &StoredObject) -> Result<(), StoreError> {
        let object = object.clone();
        self.run(move |db| db.put_object(&object)).await?
    }

    async fn object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError> {
        let (tenant_id, kind, id) = (tenant_id.to_owned(), kind.to_owned(), id.to_owned());
        self.run(move |db| db.object(&tenant_id, &kind, &id))
            .await?
    }

    async fn objects(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError> {
        let (tenant_id, kind) = (tenant_id.to_owned(), kind.to_owned());
        let after = after.map(str::to_owned);
        self.run(move |db| db.objects(&tenant_id, &kind, after.as_deref(), limit))
            .await?
    }

    async fn delete_object(&self, tenant_id: &str, kind: &str, id: &str) -> Result<(), StoreError> {
        let (tenant_id, kind, id) = (tenant_id.to_owned(), kind.to_owned(), id.to_owned());
        self.run(move |db| db.delete_object(&tenant_id, &kind, &id))
            .await?
    }

    async fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.run(|db| db.admin_token_hash()).await?
    }

    async fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        let hash = *hash;
        self.run(move |db| db.set_admin_token_hash(&hash)).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{now, random_token};

    /// Many tasks at once on a file database: each sees its own writes at once (reads on
    /// other connections than the write's), and group-committed usage keeps every record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_tasks_read_their_writes_through_the_async_face() {
        let dir = std::env::temp_dir().join(format!("basalt-store-{}", random_token(8).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let store =
            Arc::new(SqliteStore::open(&dir.join("basalt.db"), SecretBox::new(&[2; 32])).unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let t = store.create_tenant(&format!("t{i}"), 1).await.unwrap();
                    store.grant_model(&t.id, "m").await.unwrap();
                    assert_eq!(store.granted_models(&t.id).await.unwrap(), ["m"]);
                    let key = store.create_api_key(&t.id, "k", None).await.unwrap();
                    let hash = basalt_auth::sha256(key.key.as_bytes());
                    let p = store
                        .principal_for_api_key(&hash, now())
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(p.tenant, t.id);
                    let record = UsageRecord {
                        request_id: format!("r{i}"),
                        tenant_id: t.id.clone(),
                        key_id: key.info.id,
                        model_id: "m".into(),
                        surface: "openai".into(),
                        operation: "completions".into(),
                        input_tokens: 3,
                        cached_input_tokens: 0,
                        output_tokens: 4,
                        latency_ms: 1,
                        time_to_first_token_ms: None,
                        status: "ok".into(),
                        cost_usd: 0.0,
                        guardrail_units: Default::default(),
                        created_at: now(),
                    };
                    let id = store.begin_usage(&record).await.unwrap();
                    store.complete_usage(id, &record).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.tenants().await.unwrap().len(), 16);
        let totals = store.usage_totals(&UsageQuery::default()).await.unwrap();
        assert_eq!((totals.requests, totals.output_tokens), (16, 64));
        let _ = std::fs::remove_dir_all(dir);
    }
}
