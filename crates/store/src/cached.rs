//! A read-through cache in front of a [`Store`] for what every API request reads: the
//! caller's key, its tenant, its model grants and its quotas.
//!
//! Without it a managed request made three or four database reads before any model work;
//! with it, a busy key costs one read a second. Freshness: a write through this cache (the
//! admin API of the same process) empties it, so a revoked key or a changed grant takes
//! effect at once; a write that bypasses it (the CLI on the database file, another process)
//! is seen when the entries expire, after at most `ttl`.
//!
//! Usage records and everything else pass straight through. This module must never hold a
//! secret longer than `ttl`, or let the cache grow without bound: each map is emptied when
//! it reaches [`MAX_ENTRIES`] (a flood of unknown keys costs reads, not memory).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_auth::{AccessKey, Principal};

use crate::{
    AccessKeyInfo, ApiKeyInfo, CreatedAccessKey, CreatedApiKey, Quota, Store, StoreError, Tenant,
    UsageQuery, UsageRecord, UsageTotals,
};

/// Entries per map before it is emptied.
pub const MAX_ENTRIES: usize = 10_000;

/// A [`Store`] whose hot reads are served from memory for up to `ttl`.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    ttl: Duration,
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
            api_keys: Map::default(),
            access_keys: Map::default(),
            tenants: Map::default(),
            grants: Map::default(),
            quotas: Map::default(),
        }
    }

    /// Forgets everything: after any write, whatever it changed.
    fn invalidate(&self) {
        self.api_keys.clear();
        self.access_keys.clear();
        self.tenants.clear();
        self.grants.clear();
        self.quotas.clear();
    }

    /// Runs a write through to the store, then forgets what the cache held.
    fn write<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.invalidate();
        result
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

    /// The cached value if it is younger than `ttl`, else `read()`'s (kept when it is
    /// `Some`). The lock is not held while reading the store.
    fn get_or_read(&self, key: K, ttl: Duration, read: impl FnOnce() -> Option<V>) -> Option<V> {
        if let Some((at, v)) = self.lock().get(&key) {
            if at.elapsed() < ttl {
                return Some(v.clone());
            }
        }
        let value = read()?;
        let mut map = self.lock();
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), value.clone()));
        Some(value)
    }

    /// The cached value if it is younger than `ttl`; never reads the store.
    fn peek(&self, key: &K, ttl: Duration) -> Option<V> {
        match self.lock().get(key) {
            Some((at, v)) if at.elapsed() < ttl => Some(v.clone()),
            _ => None,
        }
    }

    /// [`Map::get_or_read`] for a store read that can fail: errors are returned, not
    /// cached.
    fn get_or_try_read(
        &self,
        key: K,
        ttl: Duration,
        read: impl FnOnce() -> Result<V, StoreError>,
    ) -> Result<V, StoreError> {
        let mut error = None;
        let found = self.get_or_read(key, ttl, || read().map_err(|e| error = Some(e)).ok());
        found.ok_or_else(|| error.unwrap_or_else(|| StoreError::Backend("no value read".into())))
    }

    fn clear(&self) {
        self.lock().clear();
    }
}

impl Store for CachedStore {
    fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError> {
        self.write(self.inner.create_tenant(name, weight))
    }

    fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        self.inner.tenants()
    }

    fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        self.tenants
            .get_or_try_read(id_or_name.to_string(), self.ttl, || {
                self.inner.tenant(id_or_name)
            })
    }

    fn update_tenant(
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
    }

    fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        self.write(self.inner.create_api_key(tenant_id, name, expires_at))
    }

    fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        self.inner.api_keys(tenant_id)
    }

    fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.revoke_api_key(tenant_id, key_id))
    }

    /// Cached, unknown keys included, for `ttl`: a key that expires is refused at most
    /// `ttl` late.
    fn principal_for_api_key(&self, key_sha256: &[u8; 32], now: i64) -> Option<Principal> {
        self.api_keys
            .get_or_read(*key_sha256, self.ttl, || {
                Some(self.inner.principal_for_api_key(key_sha256, now))
            })
            .flatten()
    }

    fn principal_for_api_key_now(&self, key_sha256: &[u8; 32]) -> Option<Option<Principal>> {
        self.api_keys.peek(key_sha256, self.ttl)
    }

    fn access_key_secret_now(&self, access_key_id: &str) -> Option<Option<AccessKey>> {
        self.access_keys.peek(&access_key_id.to_string(), self.ttl)
    }

    fn create_access_key(&self, tenant_id: &str) -> Result<CreatedAccessKey, StoreError> {
        self.write(self.inner.create_access_key(tenant_id))
    }

    fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError> {
        self.inner.access_keys(tenant_id)
    }

    fn revoke_access_key(&self, tenant_id: &str, access_key_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.revoke_access_key(tenant_id, access_key_id))
    }

    fn access_key_secret(&self, access_key_id: &str, now: i64) -> Option<AccessKey> {
        self.access_keys
            .get_or_read(access_key_id.to_string(), self.ttl, || {
                Some(self.inner.access_key_secret(access_key_id, now))
            })
            .flatten()
    }

    fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.grant_model(tenant_id, model_id))
    }

    fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.write(self.inner.revoke_model(tenant_id, model_id))
    }

    fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        self.grants
            .get_or_try_read(tenant_id.to_string(), self.ttl, || {
                self.inner.granted_models(tenant_id)
            })
    }

    fn set_quota(&self, tenant_id: &str, model_id: &str, quota: &Quota) -> Result<(), StoreError> {
        self.write(self.inner.set_quota(tenant_id, model_id, quota))
    }

    fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError> {
        self.quotas
            .get_or_try_read(tenant_id.to_string(), self.ttl, || {
                self.inner.quotas(tenant_id)
            })
    }

    fn record_usage(&self, record: &UsageRecord) -> Result<(), StoreError> {
        self.inner.record_usage(record)
    }

    fn begin_usage(&self, record: &UsageRecord) -> Result<i64, StoreError> {
        self.inner.begin_usage(record)
    }

    fn complete_usage(&self, id: i64, record: &UsageRecord) -> Result<(), StoreError> {
        self.inner.complete_usage(id, record)
    }

    fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError> {
        self.inner.interrupt_unfinished_usage()
    }

    fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.usage(q)
    }

    fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        self.inner.usage_totals(q)
    }

    fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        self.inner.admin_token_hash()
    }

    fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.inner.set_admin_token_hash(hash)
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

    #[test]
    fn writes_through_the_cache_take_effect_at_once() {
        let (_, cache) = stores(Duration::from_secs(3600));
        let t = cache.create_tenant("acme", 1).unwrap();
        let key = cache.create_api_key(&t.id, "k", None).unwrap();
        let hash = basalt_auth::sha256(key.key.as_bytes());
        assert!(cache.principal_for_api_key(&hash, 0).is_some());
        cache.revoke_api_key(&t.id, &key.info.id).unwrap();
        assert!(cache.principal_for_api_key(&hash, 0).is_none());

        assert!(cache.granted_models(&t.id).unwrap().is_empty());
        cache.grant_model(&t.id, "m").unwrap();
        assert_eq!(cache.granted_models(&t.id).unwrap(), vec!["m".to_string()]);
        cache
            .set_quota(
                &t.id,
                "*",
                &Quota {
                    requests_per_minute: Some(5),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            cache.quotas(&t.id).unwrap()[0].1.requests_per_minute,
            Some(5)
        );
        cache.update_tenant(&t.id, None, Some(7), None).unwrap();
        assert_eq!(cache.tenant(&t.id).unwrap().weight, 7);
    }

    #[test]
    fn writes_that_bypass_the_cache_are_seen_once_entries_expire() {
        let ttl = Duration::from_millis(200);
        let (db, cache) = stores(ttl);
        let t = db.create_tenant("acme", 1).unwrap();
        let key = db.create_api_key(&t.id, "k", None).unwrap();
        let hash = basalt_auth::sha256(key.key.as_bytes());
        assert!(cache.principal_for_api_key(&hash, 0).is_some());
        assert!(cache.granted_models(&t.id).unwrap().is_empty());
        // The CLI revokes the key and grants a model on the database directly.
        db.revoke_api_key(&t.id, &key.info.id).unwrap();
        db.grant_model(&t.id, "m").unwrap();
        assert!(
            cache.principal_for_api_key(&hash, 0).is_some(),
            "served from the cache"
        );
        std::thread::sleep(ttl + Duration::from_millis(50));
        assert!(cache.principal_for_api_key(&hash, 0).is_none());
        assert_eq!(cache.granted_models(&t.id).unwrap(), vec!["m".to_string()]);
    }

    #[test]
    fn reading_keys_now_answers_only_from_memory() {
        let (db, cache) = stores(Duration::from_secs(3600));
        let t = db.create_tenant("acme", 1).unwrap();
        let key = db.create_api_key(&t.id, "k", None).unwrap();
        let hash = basalt_auth::sha256(key.key.as_bytes());
        assert_eq!(cache.principal_for_api_key_now(&hash), None, "not read yet");
        assert!(cache.principal_for_api_key(&hash, 0).is_some());
        assert!(matches!(
            cache.principal_for_api_key_now(&hash),
            Some(Some(_))
        ));
        let unknown = [7u8; 32];
        assert!(cache.principal_for_api_key(&unknown, 0).is_none());
        assert_eq!(
            cache.principal_for_api_key_now(&unknown),
            Some(None),
            "a known miss"
        );
        assert!(cache.access_key_secret_now("AKIDNONE").is_none());
        assert!(
            db.principal_for_api_key_now(&hash).is_none(),
            "a database never answers now"
        );
    }

    #[test]
    fn unknown_keys_and_tenants_are_answered_and_bounded() {
        let (_, cache) = stores(Duration::from_secs(3600));
        for i in 0..MAX_ENTRIES + 10 {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(cache.principal_for_api_key(&hash, 0).is_none());
        }
        assert!(cache.api_keys.lock().len() <= MAX_ENTRIES);
        assert!(matches!(
            cache.tenant("nobody"),
            Err(StoreError::NotFound(_))
        ));
    }
}
