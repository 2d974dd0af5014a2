//! Stored API objects in SQLite: one table for every kind (OpenAI responses now; files and
//! batches share it), each row a tenant's object as JSON the store does not read. Every
//! query is scoped by tenant and kind, so another tenant's id is simply not found.

use rusqlite::{params, OptionalExtension};

use super::backend;
use super::database::Database;
use crate::{ObjectPage, StoreError, StoredObject};

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredObject> {
    Ok(StoredObject {
        tenant_id: r.get(0)?,
        kind: r.get(1)?,
        id: r.get(2)?,
        created_at: r.get(3)?,
        body: r.get(4)?,
    })
}

const COLUMNS: &str = "tenant_id, kind, id, created_at, body";

impl Database {
    pub(super) fn put_object(&self, object: &StoredObject) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO objects (tenant_id, kind, id, created_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id, kind, id) DO UPDATE SET body = excluded.body",
                params![
                    object.tenant_id,
                    object.kind,
                    object.id,
                    object.created_at,
                    object.body
                ],
            )
            .map_err(backend)?;
        Ok(())
    }

    pub(super) fn object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<StoredObject, StoreError> {
        self.reader()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM objects WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3"
                ),
                params![tenant_id, kind, id],
                row,
            )
            .optional()
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("{kind} `{id}`")))
    }

    /// A page of a tenant's objects of one kind, newest first, after the object `after`.
    pub(super) fn objects(
        &self,
        tenant_id: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ObjectPage, StoreError> {
        let conn = self.reader();
        // Newest first, ties by id: a cursor is the (created_at, id) of the last one seen.
        let cursor = match after {
            Some(id) => Some(
                conn.query_row(
                    "SELECT created_at FROM objects WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
                    params![tenant_id, kind, id],
                    |r| r.get::<_, i64>(0),
                )
                .optional()
                .map_err(backend)?
                .ok_or_else(|| StoreError::NotFound(format!("{kind} `{id}`")))?,
            ),
            None => None,
        };
        let mut statement = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM objects WHERE tenant_id = ?1 AND kind = ?2
                 AND (?3 IS NULL OR created_at < ?3 OR (created_at = ?3 AND id < ?4))
                 ORDER BY created_at DESC, id DESC LIMIT ?5"
            ))
            .map_err(backend)?;
        let mut objects = statement
            .query_map(
                params![tenant_id, kind, cursor, after, i64::from(limit) + 1],
                row,
            )
            .map_err(backend)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let has_more = objects.len() > limit as usize;
        objects.truncate(limit as usize);
        Ok(ObjectPage { objects, has_more })
    }

    pub(super) fn delete_object(
        &self,
        tenant_id: &str,
        kind: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let deleted = self
            .conn()
            .execute(
                "DELETE FROM objects WHERE tenant_id = ?1 AND kind = ?2 AND id = ?3",
                params![tenant_id, kind, id],
            )
            .map_err(backend)?;
        match deleted {
            0 => Err(StoreError::NotFound(format!("{kind} `{id}`"))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretBox;

    fn object(tenant: &str, id: &str, at: i64) -> StoredObject {
        StoredObject {
            tenant_id: tenant.into(),
            kind: "response".into(),
            id: id.into(),
            created_at: at,
            body: format!("{{\"id\":\"{id}\"}}"),
        }
    }

    #[test]
    fn objects_are_each_tenants_own() {
        let db = Database::in_memory(SecretBox::new(&[1; 32])).unwrap();
        db.put_object(&object("acme", "resp_1", 10)).unwrap();
        assert_eq!(
            db.object("acme", "response", "resp_1").unwrap().body,
            "{\"id\":\"resp_1\"}"
        );
        for (tenant, kind) in [("other", "response"), ("acme", "file")] {
            assert!(matches!(
                db.object(tenant, kind, "resp_1"),
                Err(StoreError::NotFound(_))
            ));
        }
        assert!(matches!(
            db.delete_object("other", "response", "resp_1"),
            Err(StoreError::NotFound(_))
        ));
        // Putting again replaces the body, not the creation time.
        let mut updated = object("acme", "resp_1", 99);
        updated.body = "{}".into();
        db.put_object(&updated).unwrap();
        let stored = db.object("acme", "response", "resp_1").unwrap();
        assert_eq!((stored.body.as_str(), stored.created_at), ("{}", 10));
        db.delete_object("acme", "response", "resp_1").unwrap();
        assert!(db.object("acme", "response", "resp_1").is_err());
    }

    #[test]
    fn pages_run_newest_first_and_resume_after_a_cursor() {
        let db = Database::in_memory(SecretBox::new(&[1; 32])).unwrap();
        for (id, at) in [("a", 1), ("b", 2), ("c", 2), ("d", 3)] {
            db.put_object(&object("acme", id, at)).unwrap();
        }
        db.put_object(&object("other", "z", 5)).unwrap();
        let ids = |p: &ObjectPage| p.objects.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
        let first = db.objects("acme", "response", None, 2).unwrap();
        assert_eq!(
            (ids(&first), first.has_more),
            (vec!["d".into(), "c".into()], true)
        );
        let second = db.objects("acme", "response", Some("c"), 2).unwrap();
        assert_eq!(
            (ids(&second), second.has_more),
            (vec!["b".into(), "a".into()], false)
        );
        assert!(db.objects("acme", "response", Some("z"), 2).is_err());
    }
}
