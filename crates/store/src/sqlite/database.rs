//! The SQLite database itself, called synchronously: connections, migrations, and every
//! query and write the [`crate::Store`] trait offers. Only [`super::SqliteStore`] calls it,
//! from the blocking pool; nothing here may run on an async runtime's worker (debug builds
//! check at every connection taken).
//!
//! One writer connection and a small pool of reader connections. In WAL mode readers never
//! wait for the writer, nor the writer for them, so a usage write holding the writer
//! through its fsync delays no key lookup, and lookups run in parallel with each other.
//! A private in-memory database has no file for a second connection to open: it reads
//! through its writer.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use basalt_auth::{sha256, AccessKey, Principal};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::migrations::MIGRATIONS;
use super::pool::ReaderPool;
use super::usage::{apply_usage_batch, where_usage, QueuedUsage, UsageWrite};
use super::{backend, DEFAULT_READERS};
use crate::{
    now, rules, AccessKeyInfo, ApiKeyInfo, CreatedAccessKey, CreatedApiKey, GuardrailRef,
    GuardrailUnits, Quota, SecretBox, StoreError, Tenant, UsageQuery, UsageRecord, UsageTotals,
};

pub(super) struct Database {
    writer: Mutex<Connection>,
    /// Empty for an in-memory database (reads then take the writer).
    readers: ReaderPool,
    secrets: SecretBox,
    /// Usage writes waiting for the next group commit (see [`Database::commit_usage`]).
    usage_queue: Mutex<Vec<QueuedUsage>>,
}

impl Database {
    /// Opens (creating if needed) the database at `path`, brings its schema up to date,
    /// then opens `readers` read-only connections beside the writer.
    pub(super) fn open(path: &Path, secrets: SecretBox) -> Result<Self, StoreError> {
        Self::open_with_readers(path, secrets, DEFAULT_READERS)
    }

    pub(super) fn open_with_readers(
        path: &Path,
        secrets: SecretBox,
        readers: usize,
    ) -> Result<Self, StoreError> {
        let writer = Connection::open(path).map_err(backend)?;
        let mut db = Self::init(writer, secrets)?;
        let connections = (0..readers.max(1))
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        db.readers = ReaderPool::new(connections);
        Ok(db)
    }

    /// A private in-memory database, for tests.
    pub(super) fn in_memory(secrets: SecretBox) -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?, secrets)
    }

    fn init(mut conn: Connection, secrets: SecretBox) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(backend)?;
        let tx = conn.transaction().map_err(backend)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            tx.execute_batch(sql).map_err(backend)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Self {
            writer: Mutex::new(conn),
            readers: ReaderPool::new(Vec::new()),
            secrets,
            usage_queue: Mutex::new(Vec::new()),
        })
    }

    /// Commits a usage write durably, in one transaction (one fsync) with every other usage
    /// write queued meanwhile: group commit. The caller queues its write, then takes the
    /// writer; whoever holds it next commits everything queued by then, so writes that
    /// arrive during one commit share the next. Returns once the caller's own write is
    /// committed (the record id for an insert), as every `Store` write must.
    fn commit_usage(&self, write: UsageWrite) -> Result<i64, StoreError> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.usage_queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(QueuedUsage { write, done });
        {
            let mut conn = self.conn();
            let batch =
                std::mem::take(&mut *self.usage_queue.lock().unwrap_or_else(|p| p.into_inner()));
            if !batch.is_empty() {
                apply_usage_batch(&mut conn, batch);
            }
        }
        result
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Backend("a usage write was lost".into())))
    }

    /// The writer: every write, and reads that must see the database as a write will.
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        crate::work::debug_check_thread();
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back), so a poisoned lock is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection for a read that stands alone: it sees every write committed before it
    /// starts.
    pub(super) fn reader(&self) -> MutexGuard<'_, Connection> {
        crate::work::debug_check_thread();
        match self.readers.take() {
            Some(reader) => reader,
            None => self.writer.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    fn tenant_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Tenant> {
        Ok(Tenant {
            id: row.get(0)?,
            name: row.get(1)?,
            status: row.get(2)?,
            weight: row.get(3)?,
            log_invocations: row.get(4)?,
            created_at: row.get(5)?,
            enforced_guardrail: match (row.get(6)?, row.get(7)?) {
                (Some(id), Some(version)) => Some(GuardrailRef { id, version }),
                _ => None,
            },
        })
    }

    fn require_tenant(&self, id: &str) -> Result<(), StoreError> {
        let exists: bool = self
            .conn()
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = ?1)",
                [id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if exists {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("tenant `{id}`")))
        }
    }
}

/// A read-only connection to the database the writer opened (and migrated).
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    Ok(conn)
}

/// The five guardrail unit columns (word, sensitive information, contextual grounding,
/// topic, content), in that order from column `first`: a usage row's or their sums.
fn guardrail_units(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<GuardrailUnits> {
    let column = |i: usize| r.get::<_, i64>(first + i).map(|v| v as u64);
    Ok(GuardrailUnits {
        word: column(0)?,
        sensitive_information: column(1)?,
        contextual_grounding: column(2)?,
        topic: column(3)?,
        content: column(4)?,
    })
}

const TENANT_COLUMNS: &str = "id, name, status, weight, log_invocations, created_at, \
    enforced_guardrail_id, enforced_guardrail_version";

impl Database {
    pub(super) fn create_tenant(&self, name: &str, weight: u32) -> Result<Tenant, StoreError> {
        let tenant = rules::new_tenant(name, weight)?;
        let name = &tenant.name;
        let result = self.conn().execute(
            "INSERT INTO tenants (id, name, status, weight, log_invocations, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                tenant.id,
                tenant.name,
                tenant.status,
                tenant.weight,
                tenant.log_invocations,
                tenant.created_at
            ],
        );
        match result {
            Ok(_) => Ok(tenant),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Conflict(format!(
                    "a tenant named `{name}` exists"
                )))
            }
            Err(e) => Err(backend(e)),
        }
    }

    pub(super) fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
            ))
            .map_err(backend)?;
        let rows = stmt
            .query_map([], Self::tenant_row)
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn tenant(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        self.reader()
            .query_row(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?1 OR name = ?1"),
                [id_or_name],
                Self::tenant_row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("tenant `{id_or_name}`")))
    }

    pub(super) fn update_tenant(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError> {
        let t = self.tenant(id)?;
        let status = status.map(rules::tenant_status).transpose()?;
        let weight = weight.map(rules::weight).transpose()?;
        self.conn()
            .execute(
                "UPDATE tenants SET status = ?2, weight = ?3, log_invocations = ?4 WHERE id = ?1",
                params![
                    t.id,
                    status.unwrap_or(&t.status),
                    weight.unwrap_or(t.weight),
                    log_invocations.unwrap_or(t.log_invocations)
                ],
            )
            .map_err(backend)?;
        self.tenant(&t.id)
    }

    pub(super) fn set_enforced_guardrail(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError> {
        let t = self.tenant(tenant_id)?;
        if let Some(g) = guardrail {
            // The tenant's own, and a version that exists.
            self.guardrail(&t.id, &g.id, &g.version)?;
        }
        self.conn()
            .execute(
                "UPDATE tenants SET enforced_guardrail_id = ?2, enforced_guardrail_version = ?3
                 WHERE id = ?1",
                params![
                    t.id,
                    guardrail.map(|g| g.id.as_str()),
                    guardrail.map(|g| g.version.as_str())
                ],
            )
            .map_err(backend)?;
        self.tenant(&t.id)
    }

    pub(super) fn create_api_key(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        let created = rules::new_api_key(tenant_id, name, expires_at)?;
        self.require_tenant(tenant_id)?;
        let info = &created.info;
        self.conn()
            .execute(
                "INSERT INTO api_keys (id, tenant_id, name, key_hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    info.id,
                    info.tenant_id,
                    info.name,
                    sha256(created.key.as_bytes()).to_vec(),
                    info.created_at,
                    info.expires_at
                ],
            )
            .map_err(backend)?;
        Ok(created)
    }

    pub(super) fn api_keys(&self, tenant_id: &str) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(
                "SELECT id, tenant_id, name, created_at, expires_at, revoked_at FROM api_keys
                 WHERE tenant_id = ?1 ORDER BY created_at, id",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([tenant_id], |r| {
                Ok(ApiKeyInfo {
                    id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    name: r.get(2)?,
                    created_at: r.get(3)?,
                    expires_at: r.get(4)?,
                    revoked_at: r.get(5)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn revoke_api_key(&self, tenant_id: &str, key_id: &str) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE id = ?1 AND tenant_id = ?2",
                params![key_id, tenant_id, now()],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("key `{key_id}`")));
        }
        Ok(())
    }

    pub(super) fn principal_for_api_key(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        self.reader()
            .query_row(
                "SELECT k.tenant_id, k.id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.key_hash = ?1 AND k.revoked_at IS NULL
                   AND (k.expires_at IS NULL OR k.expires_at > ?2) AND t.status = 'active'",
                params![key_sha256.to_vec(), now],
                |r| {
                    Ok(Principal {
                        tenant: r.get(0)?,
                        key_id: r.get(1)?,
                        managed: true,
                    })
                },
            )
            .optional()
            .map_err(backend)
    }

    pub(super) fn create_access_key(
        &self,
        tenant_id: &str,
    ) -> Result<CreatedAccessKey, StoreError> {
        self.require_tenant(tenant_id)?;
        let created = rules::new_access_key(tenant_id)?;
        let info = &created.info;
        self.conn()
            .execute(
                "INSERT INTO access_keys (id, tenant_id, sealed_secret, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    info.access_key_id,
                    info.tenant_id,
                    self.secrets.seal(created.secret_access_key.as_bytes())?,
                    info.created_at
                ],
            )
            .map_err(backend)?;
        Ok(created)
    }

    pub(super) fn access_keys(&self, tenant_id: &str) -> Result<Vec<AccessKeyInfo>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(
                "SELECT id, tenant_id, created_at, revoked_at FROM access_keys
                 WHERE tenant_id = ?1 ORDER BY created_at, id",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([tenant_id], |r| {
                Ok(AccessKeyInfo {
                    access_key_id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    created_at: r.get(2)?,
                    revoked_at: r.get(3)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn revoke_access_key(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()
            .execute(
                "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, ?3)
                 WHERE id = ?1 AND tenant_id = ?2",
                params![access_key_id, tenant_id, now()],
            )
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "access key `{access_key_id}`"
            )));
        }
        Ok(())
    }

    pub(super) fn access_key_secret(
        &self,
        access_key_id: &str,
        _now: i64,
    ) -> Result<Option<AccessKey>, StoreError> {
        let found: Option<(String, Vec<u8>)> = self
            .reader()
            .query_row(
                "SELECT a.tenant_id, a.sealed_secret FROM access_keys a
                 JOIN tenants t ON t.id = a.tenant_id
                 WHERE a.id = ?1 AND a.revoked_at IS NULL AND t.status = 'active'",
                [access_key_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(backend)?;
        let Some((tenant, sealed)) = found else {
            return Ok(None);
        };
        let secret = String::from_utf8(self.secrets.open(&sealed)?)
            .map_err(|_| StoreError::Backend("a sealed secret is not text".into()))?;
        Ok(Some(AccessKey {
            secret,
            principal: Principal {
                tenant,
                key_id: access_key_id.to_string(),
                managed: true,
            },
        }))
    }

    pub(super) fn grant_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.require_tenant(tenant_id)?;
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO model_grants (tenant_id, model_id) VALUES (?1, ?2)",
                params![tenant_id, model_id],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn revoke_model(&self, tenant_id: &str, model_id: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "DELETE FROM model_grants WHERE tenant_id = ?1 AND model_id = ?2",
                params![tenant_id, model_id],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn granted_models(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare("SELECT model_id FROM model_grants WHERE tenant_id = ?1 ORDER BY model_id")
            .map_err(backend)?;
        let rows = stmt
            .query_map([tenant_id], |r| r.get(0))
            .map_err(backend)?
            .collect::<Result<Vec<String>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn set_quota(
        &self,
        tenant_id: &str,
        model_id: &str,
        q: &Quota,
    ) -> Result<(), StoreError> {
        self.require_tenant(tenant_id)?;
        self.conn()
            .execute(
                "INSERT INTO quotas (tenant_id, model_id, requests_per_minute, tokens_per_minute,
                                     tokens_per_day, monthly_budget_usd)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tenant_id, model_id) DO UPDATE SET
                   requests_per_minute = excluded.requests_per_minute,
                   tokens_per_minute = excluded.tokens_per_minute,
                   tokens_per_day = excluded.tokens_per_day,
                   monthly_budget_usd = excluded.monthly_budget_usd",
                params![
                    tenant_id,
                    model_id,
                    q.requests_per_minute,
                    q.tokens_per_minute.map(|v| v as i64),
                    q.tokens_per_day.map(|v| v as i64),
                    q.monthly_budget_usd
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn quotas(&self, tenant_id: &str) -> Result<Vec<(String, Quota)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(
                "SELECT model_id, requests_per_minute, tokens_per_minute, tokens_per_day,
                        monthly_budget_usd FROM quotas WHERE tenant_id = ?1",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([tenant_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Quota {
                        requests_per_minute: r.get(1)?,
                        tokens_per_minute: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        tokens_per_day: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                        monthly_budget_usd: r.get(4)?,
                    },
                ))
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn record_usage(&self, u: &UsageRecord) -> Result<(), StoreError> {
        self.begin_usage(u).map(|_| ())
    }

    pub(super) fn begin_usage(&self, u: &UsageRecord) -> Result<i64, StoreError> {
        self.commit_usage(UsageWrite::Insert(u.clone()))
    }

    pub(super) fn complete_usage(&self, id: i64, u: &UsageRecord) -> Result<(), StoreError> {
        self.commit_usage(UsageWrite::Complete(id, u.clone()))
            .map(|_| ())
    }

    pub(super) fn record_guardrail_units(&self, u: &UsageRecord) -> Result<(), StoreError> {
        self.commit_usage(UsageWrite::AddGuardrailUnits(u.clone()))
            .map(|_| ())
    }

    pub(super) fn interrupt_unfinished_usage(&self) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "UPDATE usage SET status = ?1 WHERE status = ?2",
                params![crate::INTERRUPTED, crate::IN_PROGRESS],
            )
            .map_err(backend)
    }

    pub(super) fn usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        let (clause, args) = where_usage(q);
        let sql = format!(
            "SELECT request_id, tenant_id, key_id, model_id, surface, operation, input_tokens,
                    cached_input_tokens, output_tokens, latency_ms, ttft_ms, status, cost_usd,
                    created_at, guardrail_word_units, guardrail_sensitive_information_units,
                    guardrail_contextual_grounding_units, guardrail_topic_units,
                    guardrail_content_units
             FROM usage {clause} ORDER BY id DESC LIMIT {}",
            q.limit.unwrap_or(1000).min(100_000)
        );
        let conn = self.reader();
        let mut stmt = conn.prepare(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(UsageRecord {
                    request_id: r.get(0)?,
                    tenant_id: r.get(1)?,
                    key_id: r.get(2)?,
                    model_id: r.get(3)?,
                    surface: r.get(4)?,
                    operation: r.get(5)?,
                    input_tokens: r.get::<_, i64>(6)? as u64,
                    cached_input_tokens: r.get::<_, i64>(7)? as u64,
                    output_tokens: r.get::<_, i64>(8)? as u64,
                    latency_ms: r.get::<_, i64>(9)? as u64,
                    time_to_first_token_ms: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
                    status: r.get(11)?,
                    cost_usd: r.get(12)?,
                    created_at: r.get(13)?,
                    guardrail_units: guardrail_units(r, 14)?,
                })
            })
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(rows)
    }

    pub(super) fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        let (clause, args) = where_usage(q);
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(cached_input_tokens), 0),
                    COALESCE(SUM(output_tokens), 0), COALESCE(SUM(cost_usd), 0.0),
                    COALESCE(SUM(guardrail_word_units), 0),
                    COALESCE(SUM(guardrail_sensitive_information_units), 0),
                    COALESCE(SUM(guardrail_contextual_grounding_units), 0),
                    COALESCE(SUM(guardrail_topic_units), 0), COALESCE(SUM(guardrail_content_units), 0)
             FROM usage {clause}"
        );
        self.reader()
            .query_row(&sql, rusqlite::params_from_iter(args), |r| {
                Ok(UsageTotals {
                    requests: r.get::<_, i64>(0)? as u64,
                    input_tokens: r.get::<_, i64>(1)? as u64,
                    cached_input_tokens: r.get::<_, i64>(2)? as u64,
                    output_tokens: r.get::<_, i64>(3)? as u64,
                    cost_usd: r.get(4)?,
                    guardrail_units: guardrail_units(r, 5)?,
                })
            })
            .map_err(backend)
    }

    pub(super) fn admin_token_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let v: Option<Vec<u8>> = self
            .conn()
            .query_row(
                "SELECT value FROM settings WHERE key = 'admin_token_sha256'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)?;
        Ok(v.and_then(|b| b.try_into().ok()))
    }

    pub(super) fn set_admin_token_hash(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO settings (key, value) VALUES ('admin_token_sha256', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [hash.to_vec()],
            )
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random_token;
    use std::sync::Arc;

    fn store() -> Database {
        Database::in_memory(SecretBox::new(&[7; 32])).unwrap()
    }

    #[test]
    fn tenants_and_api_keys_lifecycle() {
        let s = store();
        let t = s.create_tenant("acme", 2).unwrap();
        assert!(matches!(
            s.create_tenant("acme", 1),
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.create_tenant("bad name!", 1),
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.tenant("acme").unwrap(), t);
        let k = s.create_api_key(&t.id, "ci", None).unwrap();
        let hash = sha256(k.key.as_bytes());
        let p = s.principal_for_api_key(&hash, now()).unwrap().unwrap();
        assert_eq!(
            (p.tenant.as_str(), p.key_id.as_str()),
            (t.id.as_str(), k.info.id.as_str())
        );
        // Listings never show the key.
        let listed = format!("{:?}", s.api_keys(&t.id).unwrap());
        assert!(!listed.contains(&k.key));
        s.revoke_api_key(&t.id, &k.info.id).unwrap();
        assert!(s.principal_for_api_key(&hash, now()).unwrap().is_none());

        let expiring = s.create_api_key(&t.id, "short", Some(now() + 60)).unwrap();
        let h = sha256(expiring.key.as_bytes());
        assert!(s.principal_for_api_key(&h, now()).unwrap().is_some());
        assert!(s.principal_for_api_key(&h, now() + 61).unwrap().is_none());

        s.update_tenant(&t.id, Some("suspended"), None, None)
            .unwrap();
        assert!(s.principal_for_api_key(&h, now()).unwrap().is_none());
    }

    #[test]
    fn access_keys_are_sealed_and_revocable() {
        let s = store();
        let t = s.create_tenant("acme", 1).unwrap();
        let k = s.create_access_key(&t.id).unwrap();
        let found = s
            .access_key_secret(&k.info.access_key_id, now())
            .unwrap()
            .unwrap();
        assert_eq!(found.secret, k.secret_access_key);
        assert_eq!(found.principal.tenant, t.id);
        // The secret is not in the database in clear.
        let raw: Vec<u8> = s
            .conn()
            .query_row("SELECT sealed_secret FROM access_keys", [], |r| r.get(0))
            .unwrap();
        assert!(!raw
            .windows(k.secret_access_key.len())
            .any(|w| w == k.secret_access_key.as_bytes()));
        // Another tenant cannot revoke it.
        let other = s.create_tenant("other", 1).unwrap();
        assert!(s
            .revoke_access_key(&other.id, &k.info.access_key_id)
            .is_err());
        s.revoke_access_key(&t.id, &k.info.access_key_id).unwrap();
        assert!(s
            .access_key_secret(&k.info.access_key_id, now())
            .unwrap()
            .is_none());
    }

    #[test]
    fn grants_quotas_and_usage() {
        let s = store();
        let a = s.create_tenant("a", 1).unwrap();
        let b = s.create_tenant("b", 1).unwrap();
        s.grant_model(&a.id, "m1").unwrap();
        s.grant_model(&a.id, "m1").unwrap();
        assert_eq!(s.granted_models(&a.id).unwrap(), ["m1"]);
        assert!(s.granted_models(&b.id).unwrap().is_empty());
        let q = Quota {
            requests_per_minute: Some(5),
            tokens_per_minute: Some(1000),
            ..Default::default()
        };
        s.set_quota(&a.id, "*", &q).unwrap();
        assert_eq!(s.quotas(&a.id).unwrap(), vec![("*".to_string(), q)]);
        for (tenant, tokens) in [(&a, 10), (&a, 20), (&b, 5)] {
            s.record_usage(&UsageRecord {
                request_id: "r".into(),
                tenant_id: tenant.id.clone(),
                key_id: "k".into(),
                model_id: "m1".into(),
                surface: "openai".into(),
                operation: "chat.completions".into(),
                input_tokens: tokens,
                cached_input_tokens: 0,
                output_tokens: 1,
                latency_ms: 3,
                time_to_first_token_ms: Some(1),
                status: "ok".into(),
                cost_usd: 0.5,
                guardrail_units: Default::default(),
                created_at: now(),
            })
            .unwrap();
        }
        let q = UsageQuery {
            tenant_id: Some(a.id.clone()),
            ..Default::default()
        };
        let totals = s.usage_totals(&q).unwrap();
        assert_eq!((totals.requests, totals.input_tokens), (2, 30));
        assert!(s.usage(&q).unwrap().iter().all(|u| u.tenant_id == a.id));
    }

    /// Concurrent usage writers share commits; each gets its own record's id back, every
    /// record is there after, and a write that fails (an unknown id) fails only its writer.
    #[test]
    fn guardrail_units_are_kept_and_summed() {
        let s = store();
        for (word, sensitive_information) in [(1, 2), (0, 5)] {
            s.record_usage(&UsageRecord {
                request_id: "r".into(),
                tenant_id: "t".into(),
                key_id: "k".into(),
                model_id: "gr1:DRAFT".into(),
                surface: "bedrock".into(),
                operation: "ApplyGuardrail".into(),
                input_tokens: 0,
                cached_input_tokens: 0,
                output_tokens: 0,
                latency_ms: 0,
                time_to_first_token_ms: None,
                status: "intervened".into(),
                cost_usd: 0.0,
                guardrail_units: GuardrailUnits {
                    word,
                    sensitive_information,
                    ..GuardrailUnits::default()
                },
                created_at: now(),
            })
            .unwrap();
        }
        let q = UsageQuery::default();
        let rows = s.usage(&q).unwrap();
        assert_eq!(rows[0].guardrail_units.sensitive_information, 5);
        let totals = s.usage_totals(&q).unwrap().guardrail_units;
        assert_eq!((totals.word, totals.sensitive_information), (1, 7));

        // A guardrail's units join its call's row; a call without one gets its own.
        let units = |request_id: &str, word| UsageRecord {
            request_id: request_id.into(),
            guardrail_units: GuardrailUnits {
                word,
                ..GuardrailUnits::default()
            },
            ..rows[0].clone()
        };
        s.record_guardrail_units(&units("r", 10)).unwrap();
        s.record_guardrail_units(&units("other", 3)).unwrap();
        let rows = s.usage(&q).unwrap();
        assert_eq!(rows.len(), 3);
        let words: Vec<u64> = rows.iter().map(|r| r.guardrail_units.word).collect();
        assert_eq!(words, [3, 0, 11]);
    }

    #[test]
    fn concurrent_usage_writes_are_group_committed_each_with_its_own_result() {
        let dir = std::env::temp_dir().join(format!("basalt-store-{}", random_token(8).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Arc::new(Database::open(&dir.join("basalt.db"), SecretBox::new(&[4; 32])).unwrap());
        let record = |i: u64| UsageRecord {
            request_id: format!("r{i}"),
            tenant_id: "t".into(),
            key_id: "k".into(),
            model_id: "m".into(),
            surface: "openai".into(),
            operation: "completions".into(),
            input_tokens: i,
            cached_input_tokens: 0,
            output_tokens: 0,
            latency_ms: 0,
            time_to_first_token_ms: None,
            status: crate::IN_PROGRESS.into(),
            cost_usd: 0.0,
            guardrail_units: Default::default(),
            created_at: now(),
        };
        let writers: Vec<_> = (0..8u64)
            .map(|w| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for j in 0..25u64 {
                        let i = w * 100 + j;
                        let id = s.begin_usage(&record(i)).unwrap();
                        let done = UsageRecord {
                            output_tokens: i + 1,
                            status: "ok".into(),
                            ..record(i)
                        };
                        s.complete_usage(id, &done).unwrap();
                        assert!(s.complete_usage(-id, &done).is_err());
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let all = s.usage(&UsageQuery::default()).unwrap();
        assert_eq!(all.len(), 200);
        assert!(all
            .iter()
            .all(|u| u.status == "ok" && u.output_tokens == u.input_tokens + 1));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A read on a reader connection runs while the writer is held (by a usage commit
    /// waiting on its fsync, say), and sees what was committed before it began.
    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let dir = std::env::temp_dir().join(format!("basalt-store-{}", random_token(8).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let db =
            Arc::new(Database::open(&dir.join("basalt.db"), SecretBox::new(&[4; 32])).unwrap());
        let t = db.create_tenant("acme", 3).unwrap();
        let writer = db.conn();
        let read = {
            let db = Arc::clone(&db);
            std::thread::spawn(move || db.tenant("acme").map(|t| t.weight))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !read.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(read.is_finished(), "a read waited for the writer");
        drop(writer);
        assert_eq!(read.join().unwrap().unwrap(), t.weight);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reopening_keeps_everything_and_migrates_once() {
        let dir = std::env::temp_dir().join(format!("basalt-store-{}", random_token(8).unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("basalt.db");
        let key = [9; 32];
        let id = {
            let s = Database::open(&path, SecretBox::new(&key)).unwrap();
            s.create_tenant("persist", 1).unwrap().id
        };
        let s = Database::open(&path, SecretBox::new(&key)).unwrap();
        assert_eq!(s.tenant("persist").unwrap().id, id);
        let _ = std::fs::remove_dir_all(dir);
    }
}
