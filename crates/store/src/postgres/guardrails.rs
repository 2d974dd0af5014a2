//! Guardrails in PostgreSQL: one row per version, the draft editable, numbered versions
//! immutable snapshots of it; every query scoped by tenant.

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{backend, is_unique_violation, PostgresStore};
use crate::{now, rules, GuardrailDraft, GuardrailRecord, StoreError, DRAFT};

const COLUMNS: &str =
    "id, tenant_id, version, name, description, definition, created_at, updated_at";

fn record(r: &Row) -> GuardrailRecord {
    GuardrailRecord {
        id: r.get(0),
        tenant_id: r.get(1),
        version: r.get(2),
        name: r.get(3),
        description: r.get(4),
        definition: r.get(5),
        created_at: r.get(6),
        updated_at: r.get(7),
    }
}

fn not_found(id: &str, version: &str) -> StoreError {
    StoreError::NotFound(format!("guardrail `{id}` version {version}"))
}

fn name_conflict(e: tokio_postgres::Error, name: &str) -> StoreError {
    if is_unique_violation(&e) {
        StoreError::Conflict(format!("a guardrail named `{name}` already exists"))
    } else {
        backend(e)
    }
}

/// Writes one version's row.
async fn insert(
    client: &impl GenericClient,
    r: &GuardrailRecord,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            "INSERT INTO guardrails (tenant_id, id, version, name, description, definition,
                created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &r.tenant_id,
                &r.id,
                &r.version,
                &r.name,
                &r.description,
                &r.definition,
                &r.created_at,
                &r.updated_at,
            ],
        )
        .await
}

impl PostgresStore {
    pub(super) async fn create_guardrail_row(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let at = now();
        let record = GuardrailRecord {
            id: rules::new_guardrail_id()?,
            tenant_id: tenant_id.to_string(),
            version: DRAFT.to_string(),
            name: draft.name.clone(),
            description: draft.description.clone(),
            definition: draft.definition.clone(),
            created_at: at,
            updated_at: at,
        };
        let client = self.client().await?;
        insert(&client, &record)
            .await
            .map_err(|e| name_conflict(e, &draft.name))?;
        Ok(record)
    }

    pub(super) async fn guardrail_row(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM guardrails
                     WHERE tenant_id = $1 AND id = $2 AND version = $3"
                ),
                &[&tenant_id, &id, &version],
            )
            .await
            .map_err(backend)?
            .map(|r| record(&r))
            .ok_or_else(|| not_found(id, version))
    }

    pub(super) async fn guardrail_rows(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError> {
        let client = self.client().await?;
        let rows = match id {
            // Every version of one guardrail: the draft first, then by number.
            Some(id) => {
                client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM guardrails WHERE tenant_id = $1 AND id = $2
                         ORDER BY version = 'DRAFT' DESC,
                            CASE WHEN version = 'DRAFT' THEN 0 ELSE version::BIGINT END"
                        ),
                        &[&tenant_id, &id],
                    )
                    .await
            }
            None => {
                client
                    .query(
                        &format!(
                            "SELECT {COLUMNS} FROM guardrails
                         WHERE tenant_id = $1 AND version = 'DRAFT' ORDER BY created_at, id"
                        ),
                        &[&tenant_id],
                    )
                    .await
            }
        }
        .map_err(backend)?;
        Ok(rows.iter().map(record).collect())
    }

    pub(super) async fn update_guardrail_row(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE guardrails SET name = $4, description = $5, definition = $6,
                    updated_at = $7
                 WHERE tenant_id = $1 AND id = $2 AND version = $3",
                &[
                    &tenant_id,
                    &id,
                    &DRAFT,
                    &draft.name,
                    &draft.description,
                    &draft.definition,
                    &now(),
                ],
            )
            .await
            .map_err(|e| name_conflict(e, &draft.name))?;
        if changed == 0 {
            return Err(not_found(id, DRAFT));
        }
        self.guardrail_row(tenant_id, id, DRAFT).await
    }

    /// Snapshots the draft as the next numbered version. The draft's row is locked for the
    /// transaction, so two replicas snapshotting at once get different numbers.
    pub(super) async fn snapshot_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        let draft = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM guardrails
                     WHERE tenant_id = $1 AND id = $2 AND version = $3 FOR UPDATE"
                ),
                &[&tenant_id, &id, &DRAFT],
            )
            .await
            .map_err(backend)?
            .map(|r| record(&r))
            .ok_or_else(|| not_found(id, DRAFT))?;
        let last: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version::BIGINT), 0) FROM guardrails
                 WHERE tenant_id = $1 AND id = $2 AND version <> 'DRAFT'",
                &[&tenant_id, &id],
            )
            .await
            .map_err(backend)?
            .get(0);
        let at = now();
        let record = GuardrailRecord {
            id: id.to_string(),
            tenant_id: tenant_id.to_string(),
            version: (last + 1).to_string(),
            name: draft.name,
            description: description.map(str::to_string).or(draft.description),
            definition: draft.definition,
            created_at: at,
            updated_at: at,
        };
        insert(&tx, &record).await.map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(record)
    }

    pub(super) async fn delete_guardrail_rows(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut connection = self.client().await?;
        let client = connection.transaction().await.map_err(backend)?;
        // The tenant's row (when the owner is a tenant) stays locked until the delete
        // commits, so the guardrail cannot be enforced between the check and the delete.
        client
            .execute(
                "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
                &[&tenant_id],
            )
            .await
            .map_err(backend)?;
        // An enforced guardrail stays until the operator lifts it: deleting it would fail
        // every model call of the tenant.
        let enforced: bool = client
            .query_one(
                "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = $1 AND enforced_guardrail_id = $2
                    AND ($3::TEXT IS NULL OR enforced_guardrail_version = $3))",
                &[&tenant_id, &id, &version],
            )
            .await
            .map_err(backend)?
            .get(0);
        if enforced {
            return Err(StoreError::Conflict(format!(
                "guardrail {id} is enforced on this tenant's model calls; an operator must lift \
                 that first"
            )));
        }
        let deleted =
            match version {
                Some(v) => client
                    .execute(
                        "DELETE FROM guardrails WHERE tenant_id = $1 AND id = $2 AND version = $3
                            AND version <> 'DRAFT'",
                        &[&tenant_id, &id, &v],
                    )
                    .await,
                None => {
                    client
                        .execute(
                            "DELETE FROM guardrails WHERE tenant_id = $1 AND id = $2",
                            &[&tenant_id, &id],
                        )
                        .await
                }
            }
            .map_err(backend)?;
        if deleted == 0 {
            return Err(not_found(id, version.unwrap_or(DRAFT)));
        }
        client.commit().await.map_err(backend)
    }
}
