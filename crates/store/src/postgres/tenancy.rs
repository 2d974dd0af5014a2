//! Tenants, their keys, model grants, quotas and the admin token in PostgreSQL. Every
//! query naming a key or grant is scoped by tenant, so another tenant's id is not found.

use basalt_auth::{sha256, AccessKey, Principal};
use tokio_postgres::Row;

use super::{backend, is_unique_violation, PostgresStore};
use crate::{
    now, rules, AccessKeyInfo, ApiKeyInfo, CreatedAccessKey, CreatedApiKey, GuardrailRef, Quota,
    StoreError, Tenant,
};

const TENANT_COLUMNS: &str = "id, name, status, weight, log_invocations, created_at, \
    enforced_guardrail_id, enforced_guardrail_version";

fn tenant(r: &Row) -> Tenant {
    Tenant {
        id: r.get(0),
        name: r.get(1),
        status: r.get(2),
        weight: r.get::<_, i32>(3) as u32,
        log_invocations: r.get(4),
        created_at: r.get(5),
        enforced_guardrail: match (r.get(6), r.get(7)) {
            (Some(id), Some(version)) => Some(GuardrailRef { id, version }),
            _ => None,
        },
    }
}

fn api_key_info(r: &Row) -> ApiKeyInfo {
    ApiKeyInfo {
        id: r.get(0),
        tenant_id: r.get(1),
        name: r.get(2),
        created_at: r.get(3),
        expires_at: r.get(4),
        revoked_at: r.get(5),
    }
}

/// Limits are stored as BIGINT; a value written by hand outside `u32`/`u64` reads as none.
fn limit<T: TryFrom<i64>>(v: Option<i64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

impl PostgresStore {
    pub(super) async fn create_tenant_row(
        &self,
        name: &str,
        weight: u32,
    ) -> Result<Tenant, StoreError> {
        let tenant = rules::new_tenant(name, weight)?;
        let name = &tenant.name;
        let result = self
            .client()
            .await?
            .execute(
                "INSERT INTO tenants (id, name, status, weight, log_invocations, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &tenant.id,
                    &tenant.name,
                    &tenant.status,
                    &(tenant.weight as i32),
                    &tenant.log_invocations,
                    &tenant.created_at,
                ],
            )
            .await;
        match result {
            Ok(_) => Ok(tenant),
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "a tenant named `{name}` exists"
            ))),
            Err(e) => Err(backend(e)),
        }
    }

    pub(super) async fn tenant_rows(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"),
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(tenant).collect())
    }

    pub(super) async fn tenant_row(&self, id_or_name: &str) -> Result<Tenant, StoreError> {
        self.client()
            .await?
            .query_opt(
                // An id wins over another tenant's name that happens to equal it.
                &format!(
                    "SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 OR name = $1
                     ORDER BY id = $1 DESC LIMIT 1"
                ),
                &[&id_or_name],
            )
            .await
            .map_err(backend)?
            .map(|r| tenant(&r))
            .ok_or_else(|| StoreError::NotFound(format!("tenant `{id_or_name}`")))
    }

    pub(super) async fn update_tenant_row(
        &self,
        id: &str,
        status: Option<&str>,
        weight: Option<u32>,
        log_invocations: Option<bool>,
    ) -> Result<Tenant, StoreError> {
        let t = self.tenant_row(id).await?;
        let status = status.map(rules::tenant_status).transpose()?;
        let weight = weight.map(rules::weight).transpose()?;
        // Each field only where given: a concurrent update of another field is kept.
        self.client()
            .await?
            .execute(
                "UPDATE tenants SET status = COALESCE($2, status), weight = COALESCE($3, weight),
                    log_invocations = COALESCE($4, log_invocations)
                 WHERE id = $1",
                &[&t.id, &status, &weight.map(|w| w as i32), &log_invocations],
            )
            .await
            .map_err(backend)?;
        self.tenant_row(&t.id).await
    }

    pub(super) async fn set_enforced_guardrail_row(
        &self,
        tenant_id: &str,
        guardrail: Option<&GuardrailRef>,
    ) -> Result<Tenant, StoreError> {
        let t = self.tenant_row(tenant_id).await?;
        let mut client = self.client().await?;
        // The tenant's row is locked while the guardrail is checked and set, as deleting a
        // guardrail locks it while checking it is not enforced: neither can slip between
        // the other's check and write.
        let tx = client.transaction().await.map_err(backend)?;
        tx.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", &[&t.id])
            .await
            .map_err(backend)?;
        if let Some(g) = guardrail {
            // The tenant's own, and a version that exists.
            let exists: bool = tx
                .query_one(
                    "SELECT EXISTS(SELECT 1 FROM guardrails
                        WHERE tenant_id = $1 AND id = $2 AND version = $3)",
                    &[&t.id, &g.id, &g.version],
                )
                .await
                .map_err(backend)?
                .get(0);
            if !exists {
                return Err(StoreError::NotFound(format!(
                    "guardrail `{}` version {}",
                    g.id, g.version
                )));
            }
        }
        tx.execute(
            "UPDATE tenants SET enforced_guardrail_id = $2, enforced_guardrail_version = $3
             WHERE id = $1",
            &[
                &t.id,
                &guardrail.map(|g| g.id.as_str()),
                &guardrail.map(|g| g.version.as_str()),
            ],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        self.tenant_row(&t.id).await
    }

    async fn require_tenant(&self, id: &str) -> Result<(), StoreError> {
        let exists: bool = self
            .client()
            .await?
            .query_one("SELECT EXISTS(SELECT 1 FROM tenants WHERE id = $1)", &[&id])
            .await
            .map_err(backend)?
            .get(0);
        if exists {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("tenant `{id}`")))
        }
    }

    pub(super) async fn create_api_key_row(
        &self,
        tenant_id: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<CreatedApiKey, StoreError> {
        let created = rules::new_api_key(tenant_id, name, expires_at)?;
        self.require_tenant(tenant_id).await?;
        let info = &created.info;
        self.client()
            .await?
            .execute(
                "INSERT INTO api_keys (id, tenant_id, name, key_hash, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &info.id,
                    &info.tenant_id,
                    &info.name,
                    &sha256(created.key.as_bytes()).as_slice(),
                    &info.created_at,
                    &info.expires_at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(created)
    }

    pub(super) async fn api_key_rows(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<ApiKeyInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, tenant_id, name, created_at, expires_at, revoked_at FROM api_keys
                 WHERE tenant_id = $1 ORDER BY created_at, id",
                &[&tenant_id],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(api_key_info).collect())
    }

    pub(super) async fn revoke_api_key_row(
        &self,
        tenant_id: &str,
        key_id: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3)
                 WHERE id = $1 AND tenant_id = $2",
                &[&key_id, &tenant_id, &now()],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("key `{key_id}`")));
        }
        Ok(())
    }

    pub(super) async fn api_key_principal(
        &self,
        key_sha256: &[u8; 32],
        now: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT k.tenant_id, k.id FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL
                   AND (k.expires_at IS NULL OR k.expires_at > $2) AND t.status = 'active'",
                &[&key_sha256.as_slice(), &now],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| Principal {
            tenant: r.get(0),
            key_id: r.get(1),
            managed: true,
        }))
    }

    pub(super) async fn create_access_key_row(
        &self,
        tenant_id: &str,
    ) -> Result<CreatedAccessKey, StoreError> {
        self.require_tenant(tenant_id).await?;
        let created = rules::new_access_key(tenant_id)?;
        let info = &created.info;
        self.client()
            .await?
            .execute(
                "INSERT INTO access_keys (id, tenant_id, sealed_secret, created_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &info.access_key_id,
                    &info.tenant_id,
                    &self.secrets.seal(created.secret_access_key.as_bytes())?,
                    &info.created_at,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(created)
    }

    pub(super) async fn access_key_rows(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<AccessKeyInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, tenant_id, created_at, revoked_at FROM access_keys
                 WHERE tenant_id = $1 ORDER BY created_at, id",
                &[&tenant_id],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| AccessKeyInfo {
                access_key_id: r.get(0),
                tenant_id: r.get(1),
                created_at: r.get(2),
                revoked_at: r.get(3),
            })
            .collect())
    }

    pub(super) async fn revoke_access_key_row(
        &self,
        tenant_id: &str,
        access_key_id: &str,
    ) -> Result<(), StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE access_keys SET revoked_at = COALESCE(revoked_at, $3)
                 WHERE id = $1 AND tenant_id = $2",
                &[&access_key_id, &tenant_id, &now()],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "access key `{access_key_id}`"
            )));
        }
        Ok(())
    }

    pub(super) async fn access_key_row_secret(
        &self,
        access_key_id: &str,
    ) -> Result<Option<AccessKey>, StoreError> {
        let Some(row) = self
            .client()
            .await?
            .query_opt(
                "SELECT a.tenant_id, a.sealed_secret FROM access_keys a
                 JOIN tenants t ON t.id = a.tenant_id
                 WHERE a.id = $1 AND a.revoked_at IS NULL AND t.status = 'active'",
                &[&access_key_id],
            )
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let sealed: Vec<u8> = row.get(1);
        let secret = String::from_utf8(self.secrets.open(&sealed)?)
            .map_err(|_| StoreError::Backend("a sealed secret is not text".into()))?;
        Ok(Some(AccessKey {
            secret,
            principal: Principal {
                tenant: row.get(0),
                key_id: access_key_id.to_string(),
                managed: true,
            },
        }))
    }

    pub(super) async fn grant_model_row(
        &self,
        tenant_id: &str,
        model_id: &str,
    ) -> Result<(), StoreError> {
        self.require_tenant(tenant_id).await?;
        self.client()
            .await?
            .execute(
                "INSERT INTO model_grants (tenant_id, model_id) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&tenant_id, &model_id],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn revoke_model_row(
        &self,
        tenant_id: &str,
        model_id: &str,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM model_grants WHERE tenant_id = $1 AND model_id = $2",
                &[&tenant_id, &model_id],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn grant_rows(&self, tenant_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT model_id FROM model_grants WHERE tenant_id = $1 ORDER BY model_id",
                &[&tenant_id],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    pub(super) async fn set_quota_row(
        &self,
        tenant_id: &str,
        model_id: &str,
        q: &Quota,
    ) -> Result<(), StoreError> {
        self.require_tenant(tenant_id).await?;
        let to_i64 = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
        self.client()
            .await?
            .execute(
                "INSERT INTO quotas (tenant_id, model_id, requests_per_minute, tokens_per_minute,
                                     tokens_per_day, monthly_budget_usd)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (tenant_id, model_id) DO UPDATE SET
                   requests_per_minute = excluded.requests_per_minute,
                   tokens_per_minute = excluded.tokens_per_minute,
                   tokens_per_day = excluded.tokens_per_day,
                   monthly_budget_usd = excluded.monthly_budget_usd",
                &[
                    &tenant_id,
                    &model_id,
                    &q.requests_per_minute.map(i64::from),
                    &to_i64(q.tokens_per_minute),
                    &to_i64(q.tokens_per_day),
                    &q.monthly_budget_usd,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn quota_rows(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<(String, Quota)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT model_id, requests_per_minute, tokens_per_minute, tokens_per_day,
                        monthly_budget_usd FROM quotas WHERE tenant_id = $1",
                &[&tenant_id],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    Quota {
                        requests_per_minute: limit(r.get(1)),
                        tokens_per_minute: limit(r.get(2)),
                        tokens_per_day: limit(r.get(3)),
                        monthly_budget_usd: r.get(4),
                    },
                )
            })
            .collect())
    }

    pub(super) async fn admin_token_row(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM settings WHERE key = 'admin_token_sha256'",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(row.and_then(|r| r.get::<_, Vec<u8>>(0).try_into().ok()))
    }

    pub(super) async fn set_admin_token_row(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO settings (key, value) VALUES ('admin_token_sha256', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&hash.as_slice()],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }
}
