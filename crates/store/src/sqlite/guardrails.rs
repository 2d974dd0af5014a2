//! Guardrails in SQLite: one row per version, the draft editable, numbered versions
//! immutable snapshots of it. Every query is scoped by tenant, so another tenant's id is
//! simply not found.

use rusqlite::{params, OptionalExtension};

use super::backend;
use super::database::Database;
use crate::{now, rules, GuardrailDraft, GuardrailRecord, StoreError, DRAFT};

const COLUMNS: &str =
    "id, tenant_id, version, name, description, definition, created_at, updated_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GuardrailRecord> {
    Ok(GuardrailRecord {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        version: r.get(2)?,
        name: r.get(3)?,
        description: r.get(4)?,
        definition: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

fn not_found(id: &str, version: &str) -> StoreError {
    StoreError::NotFound(format!("guardrail `{id}` version {version}"))
}

/// A unique-name violation is the caller's conflict; anything else the backend's.
fn name_conflict(e: rusqlite::Error, name: &str) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(format!("a guardrail named `{name}` already exists"))
        }
        other => backend(other),
    }
}

impl Database {
    pub(super) fn create_guardrail(
        &self,
        tenant_id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let id = rules::new_guardrail_id()?;
        let at = now();
        self.conn()
            .execute(
                "INSERT INTO guardrails (tenant_id, id, version, name, description, definition,
                    created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    tenant_id,
                    id,
                    DRAFT,
                    draft.name,
                    draft.description,
                    draft.definition,
                    at
                ],
            )
            .map_err(|e| name_conflict(e, &draft.name))?;
        Ok(GuardrailRecord {
            id,
            tenant_id: tenant_id.to_string(),
            version: DRAFT.to_string(),
            name: draft.name.clone(),
            description: draft.description.clone(),
            definition: draft.definition.clone(),
            created_at: at,
            updated_at: at,
        })
    }

    pub(super) fn guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: &str,
    ) -> Result<GuardrailRecord, StoreError> {
        self.reader()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM guardrails
                     WHERE tenant_id = ?1 AND id = ?2 AND version = ?3"
                ),
                params![tenant_id, id, version],
                row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| not_found(id, version))
    }

    pub(super) fn guardrails(
        &self,
        tenant_id: &str,
        id: Option<&str>,
    ) -> Result<Vec<GuardrailRecord>, StoreError> {
        let conn = self.reader();
        let (sql, args): (String, Vec<&str>) = match id {
            // Every version of one guardrail: the draft first, then by number.
            Some(id) => (
                format!(
                    "SELECT {COLUMNS} FROM guardrails WHERE tenant_id = ?1 AND id = ?2
                     ORDER BY version = 'DRAFT' DESC, CAST(version AS INTEGER)"
                ),
                vec![tenant_id, id],
            ),
            None => (
                format!(
                    "SELECT {COLUMNS} FROM guardrails WHERE tenant_id = ?1 AND version = 'DRAFT'
                     ORDER BY created_at, id"
                ),
                vec![tenant_id],
            ),
        };
        let mut stmt = conn.prepare(&sql).map_err(backend)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row)
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    pub(super) fn update_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        draft: &GuardrailDraft,
    ) -> Result<GuardrailRecord, StoreError> {
        let changed = self
            .conn()
            .execute(
                "UPDATE guardrails SET name = ?4, description = ?5, definition = ?6,
                    updated_at = ?7
                 WHERE tenant_id = ?1 AND id = ?2 AND version = ?3",
                params![
                    tenant_id,
                    id,
                    DRAFT,
                    draft.name,
                    draft.description,
                    draft.definition,
                    now()
                ],
            )
            .map_err(|e| name_conflict(e, &draft.name))?;
        if changed == 0 {
            return Err(not_found(id, DRAFT));
        }
        self.guardrail(tenant_id, id, DRAFT)
    }

    pub(super) fn create_guardrail_version(
        &self,
        tenant_id: &str,
        id: &str,
        description: Option<&str>,
    ) -> Result<GuardrailRecord, StoreError> {
        let mut conn = self.conn();
        // One transaction: two concurrent calls get different numbers.
        let tx = conn.transaction().map_err(backend)?;
        let draft = tx
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM guardrails
                     WHERE tenant_id = ?1 AND id = ?2 AND version = ?3"
                ),
                params![tenant_id, id, DRAFT],
                row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| not_found(id, DRAFT))?;
        let last: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(CAST(version AS INTEGER)), 0) FROM guardrails
                 WHERE tenant_id = ?1 AND id = ?2 AND version != 'DRAFT'",
                params![tenant_id, id],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let version = (last + 1).to_string();
        let at = now();
        let description = description.map(str::to_string).or(draft.description);
        tx.execute(
            "INSERT INTO guardrails (tenant_id, id, version, name, description, definition,
                created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                tenant_id,
                id,
                version,
                draft.name,
                description,
                draft.definition,
                at
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(GuardrailRecord {
            id: id.to_string(),
            tenant_id: tenant_id.to_string(),
            version,
            name: draft.name,
            description,
            definition: draft.definition,
            created_at: at,
            updated_at: at,
        })
    }

    pub(super) fn delete_guardrail(
        &self,
        tenant_id: &str,
        id: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        // An enforced guardrail stays until the operator lifts it: deleting it would fail
        // every model call of the tenant.
        let enforced: bool = conn
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM tenants WHERE id = ?1 AND enforced_guardrail_id = ?2
                    AND (?3 IS NULL OR enforced_guardrail_version = ?3))",
                params![tenant_id, id, version],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if enforced {
            return Err(StoreError::Conflict(format!(
                "guardrail {id} is enforced on this tenant's model calls; an operator must lift \
                 that first"
            )));
        }
        let deleted = match version {
            Some(v) => conn.execute(
                "DELETE FROM guardrails WHERE tenant_id = ?1 AND id = ?2 AND version = ?3
                    AND version != 'DRAFT'",
                params![tenant_id, id, v],
            ),
            None => conn.execute(
                "DELETE FROM guardrails WHERE tenant_id = ?1 AND id = ?2",
                params![tenant_id, id],
            ),
        }
        .map_err(backend)?;
        if deleted == 0 {
            return Err(not_found(id, version.unwrap_or(DRAFT)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretBox;

    fn draft(name: &str, definition: &str) -> GuardrailDraft {
        GuardrailDraft {
            name: name.into(),
            description: None,
            definition: definition.into(),
        }
    }

    #[test]
    fn an_enforced_guardrail_is_the_tenants_own_and_stays_until_lifted() {
        let db = Database::in_memory(SecretBox::new(&[1; 32])).unwrap();
        let acme = db.create_tenant("acme", 1).unwrap();
        let other = db.create_tenant("other", 1).unwrap();
        let g = db.create_guardrail(&acme.id, &draft("pii", "{}")).unwrap();
        let mine = crate::GuardrailRef {
            id: g.id.clone(),
            version: DRAFT.into(),
        };
        // Another tenant's guardrail, or a version that does not exist, cannot be enforced.
        assert!(matches!(
            db.set_enforced_guardrail(&other.id, Some(&mine)),
            Err(StoreError::NotFound(_))
        ));
        let missing = crate::GuardrailRef {
            version: "7".into(),
            ..mine.clone()
        };
        assert!(db.set_enforced_guardrail(&acme.id, Some(&missing)).is_err());

        let t = db.set_enforced_guardrail(&acme.id, Some(&mine)).unwrap();
        assert_eq!(t.enforced_guardrail.as_ref(), Some(&mine));
        assert_eq!(db.tenant("acme").unwrap().enforced_guardrail, Some(mine));
        assert!(matches!(
            db.delete_guardrail(&acme.id, &g.id, None),
            Err(StoreError::Conflict(_))
        ));
        db.set_enforced_guardrail(&acme.id, None).unwrap();
        db.delete_guardrail(&acme.id, &g.id, None).unwrap();
    }

    #[test]
    fn drafts_versions_and_tenants() {
        let db = Database::in_memory(SecretBox::new(&[1; 32])).unwrap();
        let g = db
            .create_guardrail("t1", &draft("pii", "{\"a\":1}"))
            .unwrap();
        assert_eq!(g.version, DRAFT);
        assert!(
            g.id.len() == 12
                && g.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert!(matches!(
            db.create_guardrail("t1", &draft("pii", "{}")),
            Err(StoreError::Conflict(_))
        ));
        // Another tenant may use the name, and cannot see the first tenant's guardrail.
        db.create_guardrail("t2", &draft("pii", "{}")).unwrap();
        assert!(matches!(
            db.guardrail("t2", &g.id, DRAFT),
            Err(StoreError::NotFound(_))
        ));

        let v1 = db
            .create_guardrail_version("t1", &g.id, Some("first"))
            .unwrap();
        assert_eq!(v1.version, "1");
        db.update_guardrail("t1", &g.id, &draft("pii", "{\"a\":2}"))
            .unwrap();
        let v2 = db.create_guardrail_version("t1", &g.id, None).unwrap();
        assert_eq!(v2.version, "2");
        // Versions are snapshots: the first kept the definition it was made from.
        assert_eq!(
            db.guardrail("t1", &g.id, "1").unwrap().definition,
            "{\"a\":1}"
        );
        assert_eq!(
            db.guardrail("t1", &g.id, "2").unwrap().definition,
            "{\"a\":2}"
        );
        let versions: Vec<String> = db
            .guardrails("t1", Some(&g.id))
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, [DRAFT, "1", "2"]);
        assert_eq!(db.guardrails("t1", None).unwrap().len(), 1);

        db.delete_guardrail("t1", &g.id, Some("1")).unwrap();
        assert!(db.guardrail("t1", &g.id, "1").is_err());
        assert!(
            db.delete_guardrail("t1", &g.id, Some(DRAFT)).is_err(),
            "the draft goes only with the guardrail"
        );
        assert!(db.delete_guardrail("t2", &g.id, None).is_err());
        db.delete_guardrail("t1", &g.id, None).unwrap();
        assert!(db.guardrails("t1", Some(&g.id)).unwrap().is_empty());
    }
}
