//! Stored API objects in PostgreSQL: one table for every kind, each row a tenant's object as
//! JSON the store does not read, every query scoped by tenant and kind.

use tokio_postgres::Row;

use super::{backend, PostgresStore};
use crate::{ObjectPage, StoreError, StoredObject};

const COLUMNS: &str = "tenant_id, kind, id, created_at, body";

fn object(r: &Row) -> StoredObject {
    StoredObject {
        tenant_id: r.get(0),
        kind: r.get(1),
        id: r.get(2),
        created_at: r.get(3),
        body: r.get(4),
    }
}

fn not_found(kind: &str, id: &str) -> StoreError {
    StoreError::NotFound(format!("{kind} `{id}`"))
}

impl PostgresStore {
    pub(super) async fn put_object_row(&self, o: &StoredObject) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO objects (tenant_id, kind, id, created_at, body)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, kind, id) DO UPDATE SET body = excluded.body",
                &[&o.tenant_id, &o.kind, &o.id, &o.created_at, &o.body],
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    pub(super) async fn object_row(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError> {
        self.client()
            .await?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM objects WHERE tenant_id = $1 AND kind = $2 AND id = $3"
                ),
                &[&tenant_id, &kind, &id],
            )
            .await
            .map_err(backend)?
            .map(|r| object(&r))
            .ok_or_else(|| not_found(kind, id))
    }

    /// A page of a tenant's objects of one kind, newest first, after the object `after`.
    pub(super) async fn object_page(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError> {
        let client = self.client().await?;
        // Newest first, ties by id: a cursor is the (created_at, id) of the last one seen.
        let cursor: Option<i64> = match after {
            Some(id) => Some(
                client
                    .query_opt(
                        "SELECT created_at FROM objects
                         WHERE tenant_id = $1 AND kind = $2 AND id = $3",
                        &[&tenant_id, &kind, &id],
                    )
                    .await
                    .map_err(backend)?
                    .ok_or_else(|| not_found(kind, id))?
                    .get(0),
            ),
            None => None,
        };
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM objects WHERE tenant_id = $1 AND kind = $2
                     AND ($3::BIGINT IS NULL OR created_at < $3
                          OR (created_at = $3 AND id < $4::TEXT))
                     ORDER BY created_at DESC, id DESC LIMIT $5"
                ),
                &[&tenant_id, &kind, &cursor, &after, &(i64::from(limit) + 1)],
            )
            .await
            .map_err(backend)?;
        let mut objects: Vec<StoredObject> = rows.iter().map(object).collect();
        let has_more = objects.len() > limit as usize;
        objects.truncate(limit as usize);
        Ok(ObjectPage { objects, has_more })
    }

    pub(super) async fn delete_object_row(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let deleted = self
            .client()
            .await?
            .execute(
                "DELETE FROM objects WHERE tenant_id = $1 AND kind = $2 AND id = $3",
                &[&tenant_id, &kind, &id],
            )
            .await
            .map_err(backend)?;
        match deleted {
            0 => Err(not_found(kind, id)),
            _ => Ok(()),
        }
    }
}
