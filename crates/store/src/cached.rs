//! A read-through cache in front of a [`Store`] for what every API request reads: the
//! caller's key, its tenant, its model grants and its quotas.
//!
//! Without it a managed request made three or four database reads before any model work;
//! with it, a busy key costs one read a second. Freshness: a write through this cache (the
//! admin API of the same process) empties it, so a revoked key or a changed grant takes
//! effect at once; a write that bypasses it (the CLI on the database file, another process)
//! is seen when the entries expire, after at most `ttl`. A hit is answered at once, without
//! a trip to the blocking pool or the network.
//!
//! Usage records, guardrails and everything else pass straight through (the server keeps
//! its compiled guardrails itself). This module must never hold a
//! secret longer than `ttl`, or let the cache grow without bound: each map is emptied when
//! it reaches [`MAX_ENTRIES`] (a flood of unknown keys costs reads, not memory).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use basalt_auth::{AccessKey, Principal};

use crate::{
    AccessKeyInfo, ApiKeyInfo, ChangeListener, CreatedAccessKey, CreatedApiKey, GuardrailDraft,
    GuardrailRecord, GuardrailRef, ObjectPage, Quota, ReplicaStatus, Store, StoreError,
    StoredObject, Tenant, UsageQuery, UsageRecord, UsageTotals,
};

/// Entries per map before it is emptied.
pub const MAX_ENTRIES: usize = 10_000;

/// A [`Store`] whose hot reads are served from memory for up to `ttl`.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
    /// Bumped by every write through the cache: a read that began before a write must not
    /// put what it read (perhaps the state before the write) back into the cache.
    generation: AtomicU64,
    api_keys: Map<[u8; 32], Option<Principal>>,
    access_keys: Map<String, Option<AccessKey>>,
    tenants: Map<String, Tenant>,
    grants: Map<String, Vec<String>>,
    quotas: Map<String, Vec<(String, Quota)>>,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            generation: AtomicU64::new(0),
            api_keys: Map::default(),
            access_keys: Map::default(),
            tenants: Map::default(),
            grants: Map::default(),
            quotas: Map::default(),
        }
    }

    /// Forgets everything: after any write, whatever it changed, and whenever another
    /// process announces a change.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.api_keys.clear();
        self.access_keys.clear();
        self.tenants.clear();
        self.grants.clear();
        self.quotas.clear();
    }

    /// A write through to the store, after which the cache holds nothing it changed.
    async fn write<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = write.await;
        self.invalidate();
        result
    }

    /// The value in `map` if it is younger than `ttl`, else `read`'s, kept when it is worth
    /// keeping (`Some`) and no write went through the cache while it was read.
    async fn read_through<K: Eq + Hash, V: Clone>(
        &self,
        map: &Map<K, V>,
        key: K,
        read: impl std::future::Future<Output = Option<V>>,
    ) -> Option<V> {
        if let Some(v) = map.fresh(&key, self.ttl) {
            return Some(v);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let value = read.await?;
        if self.generation.load(Ordering::SeqCst) == generation {
            map.insert(key, value.clone());
        }
        Some(value)
    }

    /// [`CachedStore::read_through`] for a read that can fail: errors are returned, never
    /// cached.
    async fn try_read_through<K: Eq + Hash, V: Clone>(
        &self,
        map: &Map<K, V>,
        key: K,
        read: impl std::future::Future<Output = Result<V, StoreError>>,
    ) -> Result<V, StoreError> {
        let mut error = None;
        let read = async { read.await.map_err(|e| error = Some(e)).ok() };
        let found = self.read_through(map, key, read).await;
        found.ok_or_else(|| error.unwrap_or_else(|| StoreError::Backend("no value read".into())))
    }
}

/// One cache: values with the instant they were read.
struct Map<K, V>(Mutex<HashMap<K, (Instant, V)>>);

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V: Clone> Map<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value if it is younger than `ttl`.
    fn fresh(&self, key: &K, ttl: Duration) -> Option<V> {
        match self.lock().get(key) {
            Some((at, v)) if at.elapsed() < ttl => Some(v.clone()),
            _ => None,
        }
    }

    fn insert(&self, key: K, value: V) {
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value));
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError> {
        self.write(self.inner.create_tenant(name, weight)).await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.inner.tenants().await
    }

    async fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        let read = self.inner.tenant(id_or_name);
        self.try_read_through(&self.tenants, id_or_name.to_string(), read)
            .await
    }

    async fn update_tenant(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError> {
        self.write(
            self.inner
                .update_tenant(id, status, weight, log_invocations),
        )
        .await
    }

    async fn set_enforced_guardrail(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError> {
        self.write(self.inner.set_enforced_guardrail(tenant_id, guardrail))
            .await
    }

    async fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        self.write(self.inner.create_api_key(tenant_id, name, expires_at))
            .await
    }

    async fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.inner.api_keys(tenant_id).await
    }

    async fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.revoke_api_key(tenant_id, key_id))
            .await
    }

    /// Cached, unknown keys included, for `ttl`: a key that expires is refused at most
    /// `ttl` late.
    async fn principal_for_api_key(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        // A failed lookup is not cached: the key may be valid once the database answers.
        let read = self.inner.principal_for_api_key(key_sha256, now);
        self.try_read_through(&self.api_keys, *key_sha256, read)
            .await
    }

    async fn create_access_key(&self, tenant_id: &str) -> Result<CreatedAccessKey, StoreError> {
        self.write(self.inner.create_access_key(tenant_id)).await
    }

    async fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError> {
        self.inner.access_keys(tenant_id).await
    }

    async fn revoke_access_key(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError> {
        self.write(self.inner.revoke_access_key(tenant_id, access_key_id))
            .await
    }

    async fn access_key_secret(
        &self,
        access_key_id: &str,
        now: i64,
    ) -> Result<Option<AccessKey>, StoreError> {
        let read = self.inner.access_key_secret(access_key_id, now);
        self.try_read_through(&self.access_keys, access_key_id.to_string(), read)
            .await
    }

    async fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.grant_model(tenant_id, model_id))
            .await
    }

    async fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.revoke_model(tenant_id, model_id))
            .await
    }

    async fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        let read = self.inner.granted_models(tenant_id);
        self.try_read_through(&self.grants, tenant_id.to_string(), read)
            .await
    }

    async fn set_quota(
        &self,
        tenant_id: &str,
        model_id: &str,
        quota: &Quota,
    ) -> Result<(), StoreError> {
        self.write(self.inner.set_quota(tenant_id, model_id, quota))
            .await
    }

    async fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError> {
        let read = self.inner.quotas(tenant_id);
        self.try_read_through(&self.quotas, tenant_id.to_string(), read)
            .await
    }

    async fn record_usage(&self, record: &UsageRecord) -> Result<(), StoreError> {
        self.inner.record_usage(record).await
    }

    async fn begin_usage(&self, record: &UsageRecord) -> Result<i64, StoreError> {
        self.inner.begin_usage(record).await
    }

    async fn complete_usage(&self, id: i64, record: &UsageRecord) -> Result<(), StoreError> {
        self.inner.complete_usage(id, record).await
    }

    async fn record_guardrail_units(&self, record: &UsageRecord) -> Result<(), StoreError> {
        self.inner.record_guardrail_units(record).await
    }

    async fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError> {
        self.inner.interrupt_unfinished_usage().await
    }

    async fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.usage(q).await
    }

    async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        self.inner.usage_totals(q).await
    }

    async fn create_guardrail(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        self.inner.create_guardrail(tenant_id, draft).await
    }

    async fn guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError> {
        self.inner.guardrail(tenant_id, id, version).await
    }

    async fn guardrails(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError> {
        self.inner.guardrails(tenant_id, id).await
    }

    async fn update_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        self.inner.update_guardrail(tenant_id, id, draft).await
    }

    async fn create_guardrail_version(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError> {
        self.inner
            .create_guardrail_version(tenant_id, id, description)
            .await
    }

    async fn delete_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.delete_guardrail(tenant_id, id, version).await
    }

    async fn put_object(&self, object: &StoredObject) -> Result<(), StoreError> {
        self.inner.put_object(object).await
    }

    async fn object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError> {
        self.inner.object(tenant_id, kind, id).await
    }

    async fn objects(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError> {
        self.inner.objects(tenant_id, kind, after, limit).await
    }

    async fn delete_object(&self, tenant_id: &str, kind: &str, id: &str) -> Result<(), StoreError> {
        self.inner.delete_object(tenant_id, kind, id).await
    }

    async fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.admin_token_hash().await
    }

    async fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.inner.set_admin_token_hash(hash).await
    }

    async fn heartbeat(&self, status: &ReplicaStatus) -> Result<(), StoreError> {
        self.inner.heartbeat(status).await
    }

    async fn replicas(&self) -> Result<Vec<ReplicaStatus>, StoreError> {
        self.inner.replicas().await
    }

    fn watch_changes(&self, on_change: ChangeListener) -> Result<(), StoreError> {
        self.inner.watch_changes(on_change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SecretBox, SqliteStore};

    fn stores(ttl: Duration) -> (Arc<SqliteStore>, CachedStore) {
        let db = Arc::new(SqliteStore::in_memory(SecretBox::new(&[9; 32])).unwrap());
        let cached = CachedStore::new(Arc::clone(&db) as Arc<dyn Store>, ttl);
        (db, cached)
    }

    #[tokio::test]
    async fn writes_through_the_cache_take_effect_at_once() {
        let (_, cache) = stores(Duration::from_secs(3600));
        let t = cache.create_tenant("acme", 1).await.unwrap();
        let key = cache.create_api_key(&t.id, "k", None).await.unwrap();
        let hash = basalt_auth::sha256(key.key.as_bytes());
        assert!(cache
            .principal_for_api_key(&hash, 0)
            .await
            .unwrap()
            .is_some());
        cache.revoke_api_key(&t.id, &key.info.id).await.unwrap();
        assert!(cache
            .principal_for_api_key(&hash, 0)
            .await
            .unwrap()
            .is_none());

        assert!(cache.granted_models(&t.id).await.unwrap().is_empty());
        cache.grant_model(&t.id, "m").await.unwrap();
        assert_eq!(
            cache.granted_models(&t.id).await.unwrap(),
            vec!["m".to_string()]
        );
        cache
            .set_quota(
                &t.id,
                "*",
                &Quota {
                    requests_per_minute: Some(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            cache.quotas(&t.id).await.unwrap()[0].1.requests_per_minute,
            Some(5)
        );
        cache
            .update_tenant(&t.id, None, Some(7), None)
            .await
            .unwrap();
        assert_eq!(cache.tenant(&t.id).await.unwrap().weight, 7);
    }

    #[tokio::test]
    async fn writes_that_bypass_the_cache_are_seen_once_entries_expire() {
        let ttl = Duration::from_millis(200);
        let (db, cache) = stores(ttl);
        let t = db.create_tenant("acme", 1).await.unwrap();
        let key = db.create_api_key(&t.id, "k", None).await.unwrap();
        let hash = basalt_auth::sha256(key.key.as_bytes());
        assert!(cache
            .principal_for_api_key(&hash, 0)
            .await
            .unwrap()
            .is_some());
        assert!(cache.granted_models(&t.id).await.unwrap().is_empty());
        // The CLI revokes the key and grants a model on the database directly.
        db.revoke_api_key(&t.id, &key.info.id).await.unwrap();
        db.grant_model(&t.id, "m").await.unwrap();
        assert!(
            cache
                .principal_for_api_key(&hash, 0)
                .await
                .unwrap()
                .is_some(),
            "served from the cache"
        );
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(cache
            .principal_for_api_key(&hash, 0)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            cache.granted_models(&t.id).await.unwrap(),
            vec!["m".to_string()]
        );
    }

    #[tokio::test]
    async fn unknown_keys_and_tenants_are_answered_and_bounded() {
        let (_, cache) = stores(Duration::from_secs(3600));
        for i in 0..MAX_ENTRIES + 10 {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(cache
                .principal_for_api_key(&hash, 0)
                .await
                .unwrap()
                .is_none());
        }
        assert!(cache.api_keys.lock().len() <= MAX_ENTRIES);
        assert!(matches!(
            cache.tenant("nobody").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
