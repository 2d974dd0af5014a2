//! Uploaded and generated files (OpenAI's `/v1/files`): their bytes on disk under the data
//! directory, their metadata as stored objects of kind `file` in the platform store.
//!
//! Each tenant's files live in a directory named by a hash of its id, each file under its
//! own id, written to a temporary name, synced and renamed, so a crash never leaves a
//! half-written file under a real id. Every disk call runs on the blocking pool. This
//! module never decides who may read a file: a file is found through the store, which
//! answers only for the tenant's own.

use std::io::Write;
use std::path::{Path, PathBuf};

use basalt_store::StoredObject;
use basalt_types::{BasaltError, ErrorKind};
use basalt_wire::openai::files::FileObject;

use crate::offload::off_runtime;
use crate::platform::Platform;

/// The store's kind for files.
pub(crate) const KIND: &str = "file";

pub struct FileStore {
    root: PathBuf,
}

fn io_error(what: &str, e: std::io::Error) -> BasaltError {
    BasaltError::internal(format!("cannot {what}: {e}"))
}

pub(crate) fn not_found(id: &str) -> BasaltError {
    BasaltError::new(ErrorKind::NotFound, format!("No such File object: {id}"))
        .with_param("file_id")
}

/// A store error about an object looked up by id: `missing` when there is none (or it is
/// another tenant's), an internal error otherwise.
pub(crate) fn lookup_error(e: basalt_store::StoreError, missing: BasaltError) -> BasaltError {
    match e {
        basalt_store::StoreError::NotFound(_) => missing,
        other => BasaltError::internal(other.to_string()),
    }
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, tenant: &str, id: &str) -> PathBuf {
        let hash = basalt_auth::sha256(tenant.as_bytes());
        let dir: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.root.join(dir).join(id)
    }

    /// Writes a file's bytes and records it: the bytes first, so a stored record always has
    /// its bytes.
    pub(crate) async fn create(
        &self,
        platform: &Platform,
        tenant: &str,
        filename: &str,
        purpose: &str,
        bytes: Vec<u8>,
    ) -> Result<FileObject, BasaltError> {
        let id = crate::generation::request_id("file-");
        let object = FileObject {
            id: id.clone(),
            object: "file".into(),
            bytes: bytes.len() as u64,
            created_at: basalt_store::now() as u64,
            filename: filename.to_string(),
            purpose: purpose.to_string(),
            status: "processed".into(),
            expires_at: None,
            status_details: None,
        };
        let path = self.path(tenant, &id);
        off_runtime(move || write_atomically(&path, &bytes)).await??;
        let body = serde_json::to_string(&object)
            .map_err(|e| BasaltError::internal(format!("cannot record the file: {e}")))?;
        platform
            .store
            .put_object(&StoredObject {
                tenant_id: tenant.to_string(),
                kind: KIND.into(),
                id,
                created_at: object.created_at as i64,
                body,
            })
            .await
            .map_err(|e| BasaltError::internal(e.to_string()))?;
        Ok(object)
    }

    /// A tenant's file record.
    pub(crate) async fn get(
        &self,
        platform: &Platform,
        tenant: &str,
        id: &str,
    ) -> Result<FileObject, BasaltError> {
        let stored = platform
            .store
            .object(tenant, KIND, id)
            .await
            .map_err(|e| lookup_error(e, not_found(id)))?;
        serde_json::from_str(&stored.body)
            .map_err(|e| BasaltError::internal(format!("file record {id} is unreadable: {e}")))
    }

    /// A tenant's file's bytes.
    pub(crate) async fn content(
        &self,
        platform: &Platform,
        tenant: &str,
        id: &str,
    ) -> Result<(FileObject, Vec<u8>), BasaltError> {
        let object = self.get(platform, tenant, id).await?;
        let path = self.path(tenant, id);
        let bytes = off_runtime(move || std::fs::read(&path))
            .await?
            .map_err(|e| io_error("read the file", e))?;
        Ok((object, bytes))
    }

    /// Deletes a tenant's file: the record first, so no one finds a file without bytes.
    pub(crate) async fn delete(
        &self,
        platform: &Platform,
        tenant: &str,
        id: &str,
    ) -> Result<(), BasaltError> {
        platform
            .store
            .delete_object(tenant, KIND, id)
            .await
            .map_err(|e| lookup_error(e, not_found(id)))?;
        let path = self.path(tenant, id);
        off_runtime(move || match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("delete", e)),
            _ => Ok(()),
        })
        .await?
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory, synced before
/// the rename that makes it visible.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BasaltError> {
    let dir = path
        .parent()
        .ok_or_else(|| BasaltError::internal("a file path has no directory"))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error("create the file directory", e))?;
    let temporary = path.with_extension("partial");
    let mut file = std::fs::File::create(&temporary).map_err(|e| io_error("create the file", e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write the file", e))?;
    std::fs::rename(&temporary, path).map_err(|e| io_error("name the file", e))
}

/// A page of a tenant's stored objects of `kind`, newest first, after the object `after`
/// (a store id; `param` names it in errors), keeping those `keep` accepts, at most `limit`.
/// Returns them, and the store id to resume after when more remain.
pub(crate) async fn page<T: serde::de::DeserializeOwned>(
    platform: &Platform,
    tenant: &str,
    kind: &str,
    after: Option<&str>,
    (limit, param): (usize, &str),
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), BasaltError> {
    let mut out = Vec::with_capacity(limit.min(100));
    let mut last_kept = None;
    let mut after = after.map(str::to_string);
    loop {
        let page = platform
            .store
            .objects(tenant, kind, after.as_deref(), 100)
            .await
            .map_err(|e| {
                lookup_error(
                    e,
                    BasaltError::invalid(param, format!("`{param}` names no object of this list")),
                )
            })?;
        after = page.objects.last().map(|o| o.id.clone());
        for object in page.objects {
            let item: T = serde_json::from_str(&object.body)
                .map_err(|e| BasaltError::internal(e.to_string()))?;
            if keep(&item) {
                if out.len() == limit {
                    return Ok((out, last_kept));
                }
                out.push(item);
                last_kept = Some(object.id);
            }
        }
        if !page.has_more {
            return Ok((out, None));
        }
    }
}
