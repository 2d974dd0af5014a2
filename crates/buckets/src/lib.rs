//! Where a tenant's `s3://` URIs live: the input and output locations of Bedrock batch
//! (model invocation) jobs.
//!
//! Every tenant has a namespace of its own, `<root>/<tenant>/<bucket>/<key>`, where the root
//! is a directory under the data dir (the default) or a prefix in any S3-compatible store an
//! operator configures (`s3://root-bucket/prefix`, with the endpoint and credentials in the
//! usual `AWS_*` variables). A tenant's `s3://reports/in/batch.jsonl` is then
//! `<root>/<tenant>/reports/in/batch.jsonl` in either, so the same job runs against both and
//! moving from one to the other is a copy.
//!
//! This crate must never let a URI name anything outside its tenant's namespace: bucket
//! names follow S3's rules, key segments may not be `.` or `..`, and the tenant id is checked
//! to be a plain path segment before any path is built from it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::prefix::PrefixStore;
use object_store::RetryConfig;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// What can go wrong naming, reading or writing a bucket object.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The URI is not an `s3://bucket/key` this tenant may use.
    #[error("`{uri}`: {why}")]
    InvalidUri { uri: String, why: &'static str },
    /// Nothing is stored at the URI.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The store could not be opened (bad configuration).
    #[error("cannot open the bucket store {url}: {why}")]
    Config { url: String, why: String },
    /// The store failed to answer (I/O, network, credentials).
    #[error("the bucket store failed on {uri}: {why}")]
    Store { uri: String, why: String },
}

/// One object (or prefix) in a tenant's namespace, with the URI the tenant named it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    path: Path,
    uri: String,
}

impl Location {
    /// The location `name` directly under this one (`<uri>/<name>`).
    pub fn join(&self, name: &str) -> Location {
        let uri = format!("{}/{name}", self.uri.trim_end_matches('/'));
        let path = self.path.clone().join(PathPart::from(name));
        Location { path, uri }
    }

    /// The location one level up (a file's directory), if that is still inside its
    /// bucket.
    pub fn parent(&self) -> Option<Location> {
        let parts: Vec<PathPart<'_>> = self.path.parts().collect();
        // `<tenant>/<bucket>` is the top: a bucket has no parent.
        if parts.len() <= 2 {
            return None;
        }
        let (uri, _) = self.uri.trim_end_matches('/').rsplit_once('/')?;
        Some(Location {
            path: Path::from_iter(parts[..parts.len() - 1].iter().cloned()),
            uri: uri.to_string(),
        })
    }

    /// The last segment of the URI: a file's name.
    pub fn file_name(&self) -> &str {
        self.path.filename().unwrap_or_default()
    }

    /// The `s3://` URI as the tenant gave (or would give) it.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// The store every tenant's buckets live in.
#[derive(Clone)]
pub struct Buckets {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl fmt::Debug for Buckets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buckets")
            .field("store", &self.description)
            .finish()
    }
}

impl Buckets {
    /// Buckets in a directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, BucketError> {
        let config = |why: String| BucketError::Config {
            url: dir.display().to_string(),
            why,
        };
        std::fs::create_dir_all(dir).map_err(|e| config(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| config(e.to_string()))?;
        Ok(Self {
            store: Arc::new(store),
            description: dir.display().to_string(),
        })
    }

    /// Buckets under `s3://bucket/prefix` of an S3-compatible store, configured by the
    /// `AWS_*` variables object stores read (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`). An `http://` endpoint is allowed as given:
    /// stores on a private network or loopback often have no TLS.
    pub fn s3(url: &str) -> Result<Self, BucketError> {
        let config = |why: String| BucketError::Config {
            url: url.to_string(),
            why,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| config("an S3 root is s3://bucket or s3://bucket/prefix".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // reqwest is built without a bundled TLS provider; ring is the one the listener uses
        // (aws-lc-rs needs cmake to build; rustls deprecates ring only for lacking
        // post-quantum key exchange). Installing fails only if one is installed already.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A store that is down fails a request within seconds rather than the minutes of
        // object_store's default retries: a job's creator is waiting on the answer.
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry);
        if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
            builder = builder.with_allow_http(true);
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let s3 = builder.build().map_err(|e| config(e.to_string()))?;
        let prefix = Path::parse(prefix.trim_matches('/')).map_err(|e| config(e.to_string()))?;
        Ok(Self {
            store: Arc::new(PrefixStore::new(s3, prefix)),
            description: url.to_string(),
        })
    }

    /// `s3://…` for an S3-compatible store, anything else for a local directory.
    pub fn open(url: &str) -> Result<Self, BucketError> {
        if url.starts_with("s3://") {
            Self::s3(url)
        } else {
            let dir = url.strip_prefix("file://").unwrap_or(url);
            Self::local(std::path::Path::new(dir))
        }
    }

    /// Where the buckets are, for logs.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// The location `uri` (`s3://bucket/key`) names in `tenant`'s namespace.
    pub fn locate(&self, tenant: &str, uri: &str) -> Result<Location, BucketError> {
        let invalid = |why| BucketError::InvalidUri {
            uri: uri.to_string(),
            why,
        };
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("an S3 URI starts with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if !bucket_name_ok(bucket) {
            return Err(invalid("not a bucket name"));
        }
        let tenant_ok = !tenant.is_empty()
            && tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !tenant_ok {
            return Err(invalid("the caller's tenant id cannot name a namespace"));
        }
        let mut parts = vec![PathPart::from(tenant), PathPart::from(bucket)];
        for part in key.split('/').filter(|p| !p.is_empty()) {
            if part == "." || part == ".." || part.contains('\\') || part.contains('\0') {
                return Err(invalid("a key may not step out of its bucket"));
            }
            parts.push(PathPart::from(part));
        }
        Ok(Location {
            path: Path::from_iter(parts),
            uri: uri.to_string(),
        })
    }

    /// The input files a location names: the object itself, or the `.jsonl` objects
    /// directly under it as a prefix, in name order. Empty if there are none.
    pub async fn inputs(&self, at: &Location) -> Result<Vec<Location>, BucketError> {
        match self.store.head(&at.path).await {
            Ok(_) => return Ok(vec![at.clone()]),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(at, e)),
        }
        let listed = match self.store.list_with_delimiter(Some(&at.path)).await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(store_error(at, e)),
        };
        let mut files: Vec<Location> = listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?;
                name.ends_with(".jsonl").then(|| at.join(name))
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Every object at or under a location, at any depth, in name order (a data source's
    /// documents).
    pub async fn list_all(&self, at: &Location) -> Result<Vec<Location>, BucketError> {
        match self.store.head(&at.path).await {
            Ok(_) => return Ok(vec![at.clone()]),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(store_error(at, e)),
        }
        let mut listed = self.store.list(Some(&at.path));
        let mut found = Vec::new();
        while let Some(meta) = listed.next().await {
            let meta = match meta {
                Ok(meta) => meta,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(store_error(at, e)),
            };
            let Some(relative) = meta.location.prefix_match(&at.path) else {
                continue;
            };
            let mut location = at.clone();
            for part in relative {
                location = location.join(part.as_ref());
            }
            found.push(location);
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    /// An object's whole content.
    pub async fn read(&self, at: &Location) -> Result<Bytes, BucketError> {
        let got = self.store.get(&at.path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => BucketError::NotFound(at.uri.clone()),
            e => store_error(at, e),
        })?;
        got.bytes().await.map_err(|e| store_error(at, e))
    }

    /// Writes an object whole: readers see the old content or the new, never a part.
    pub async fn write(&self, at: &Location, bytes: Bytes) -> Result<(), BucketError> {
        self.store
            .put(&at.path, PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|e| store_error(at, e))
    }
}

fn store_error(at: &Location, e: object_store::Error) -> BucketError {
    BucketError::Store {
        uri: at.uri.clone(),
        why: e.to_string(),
    }
}

/// S3's rules for bucket names: 3 to 63 lowercase letters, digits, `-` and `.`, starting
/// with neither `.` nor `-`, no `..`.
fn bucket_name_ok(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['.', '-'])
        && !bucket.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("basalt-buckets-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn uris_stay_in_the_tenants_namespace() {
        let dir = temp_dir("names");
        let buckets = Buckets::local(&dir).unwrap();
        let at = buckets.locate("t1", "s3://data/in/a.jsonl").unwrap();
        assert_eq!(at.path.as_ref(), "t1/data/in/a.jsonl");
        assert_eq!(at.file_name(), "a.jsonl");
        assert_eq!(at.join("x.out").uri(), "s3://data/in/a.jsonl/x.out");
        for bad in [
            "data/in",
            "s3://Data/in",
            "s3://ab/in",
            "s3://.data/in",
            "s3://data/../t2/data",
            "s3://data/in/./x",
            "s3://data/a\\b",
        ] {
            assert!(
                matches!(
                    buckets.locate("t1", bad),
                    Err(BucketError::InvalidUri { .. })
                ),
                "{bad}"
            );
        }
        assert!(buckets.locate("../t2", "s3://data/in").is_err());
        assert!(buckets.locate("", "s3://data/in").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn inputs_are_the_object_or_the_jsonl_files_under_a_prefix() {
        let dir = temp_dir("inputs");
        let buckets = Buckets::local(&dir).unwrap();
        let prefix = buckets.locate("t1", "s3://data/in/").unwrap();
        assert!(buckets.inputs(&prefix).await.unwrap().is_empty());
        for name in ["b.jsonl", "a.jsonl", "notes.txt"] {
            buckets
                .write(&prefix.join(name), Bytes::from_static(b"{}\n"))
                .await
                .unwrap();
        }
        buckets
            .write(
                &prefix.join("deeper").join("c.jsonl"),
                Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        let names: Vec<String> = buckets
            .inputs(&prefix)
            .await
            .unwrap()
            .iter()
            .map(|l| l.file_name().to_string())
            .collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl"]);
        let one = buckets.locate("t1", "s3://data/in/b.jsonl").unwrap();
        assert_eq!(buckets.inputs(&one).await.unwrap(), vec![one.clone()]);
        assert_eq!(buckets.read(&one).await.unwrap().as_ref(), b"{}\n");
        // Another tenant's identical URI is another object.
        let theirs = buckets.locate("t2", "s3://data/in/b.jsonl").unwrap();
        assert!(matches!(
            buckets.read(&theirs).await,
            Err(BucketError::NotFound(_))
        ));
        assert!(dir.join("t1/data/in/a.jsonl").is_file());
        let all: Vec<String> = buckets
            .list_all(&buckets.locate("t1", "s3://data").unwrap())
            .await
            .unwrap()
            .iter()
            .map(|l| l.uri().to_string())
            .collect();
        assert_eq!(
            all,
            [
                "s3://data/in/a.jsonl",
                "s3://data/in/b.jsonl",
                "s3://data/in/deeper/c.jsonl",
                "s3://data/in/notes.txt"
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
