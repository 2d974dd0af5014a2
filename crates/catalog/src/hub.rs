//! A client for a Hugging Face-style model hub: the file API `basalt models pull` needs.
//!
//! Two calls, as the hub serves them (and as `huggingface_hub` uses them):
//! - `GET {hub}/api/models/{repo}/revision/{revision}?blobs=true`: the repository's files,
//!   each with its size and, for files kept in LFS (weights), the SHA-256 the hub
//!   publishes; the model card's licence;
//! - `GET {hub}/{repo}/resolve/{revision}/{path}`: one file, usually by a redirect to a
//!   CDN, with `Range` honoured so a download can resume where it stopped.
//!
//! Downloads land in a `.part` file that survives an interrupted run; the next attempt
//! (in this run, after a dropped connection, or the next `pull`) asks only for the rest.
//! A file is only renamed into place once its size and SHA-256 match what the hub
//! published; a mismatch deletes it. This module never writes outside the directory it
//! is given and never follows a redirect to a non-HTTP scheme.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{io_err, CatalogError};

/// Where the public hub is; `HF_ENDPOINT` points elsewhere, as for `huggingface_hub`.
pub const DEFAULT_HUB: &str = "https://huggingface.co";

/// How many times one download is resumed after a dropped connection in one run.
const ATTEMPTS: u32 = 5;
/// Redirects followed per request (the hub answers `resolve` with one, to its CDN).
const MAX_REDIRECTS: u32 = 5;
/// Largest JSON listing read (a repository's file list is kilobytes).
const MAX_LISTING: u64 = 16 << 20;

/// A hub and the credentials for it.
pub struct Hub {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// One file of a repository, as the listing describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoFile {
    pub rfilename: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub lfs: Option<LfsInfo>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LfsInfo {
    pub sha256: String,
    pub size: u64,
}

impl RepoFile {
    /// The SHA-256 the hub publishes (LFS files only; small files in git have none).
    pub fn sha256(&self) -> Option<&str> {
        self.lfs.as_ref().map(|l| l.sha256.as_str())
    }

    pub fn size(&self) -> Option<u64> {
        self.lfs.as_ref().map(|l| l.size).or(self.size)
    }
}

/// A repository at one revision.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    #[serde(default)]
    pub siblings: Vec<RepoFile>,
    #[serde(default, rename = "cardData")]
    pub card: Option<CardData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CardData {
    /// An SPDX id (`apache-2.0`), or `other`.
    #[serde(default)]
    pub license: Option<serde_json::Value>,
}

impl RepoInfo {
    pub fn file(&self, name: &str) -> Option<&RepoFile> {
        self.siblings.iter().find(|f| f.rfilename == name)
    }

    /// The model card's licence, when it names one.
    pub fn license(&self) -> Option<String> {
        match self.card.as_ref()?.license.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(a) => a.first()?.as_str().map(str::to_string),
            _ => None,
        }
    }
}

/// How far a download has come: `(done, total)` bytes, `total` 0 when unknown.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn hub_error(message: impl Into<String>) -> CatalogError {
    CatalogError::Hub(message.into())
}

impl Hub {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(60))
            // Redirects are followed here, so that `Range` and the token go where they should.
            .redirects(0)
            .user_agent(concat!("basalt/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The files of `repo` (`owner/name`) at `revision`.
    pub fn repo(&self, repo: &str, revision: &str) -> Result<RepoInfo, CatalogError> {
        validate_repo(repo)?;
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.base,
            encode_segment(revision)
        );
        let response = self.get(&url, None).map_err(|e| match e {
            Failure::Status(404, _) => hub_error(format!(
                "the hub has no model repository {repo} (at revision {revision})"
            )),
            Failure::Status(401 | 403, _) => hub_error(format!(
                "{repo} is private or gated: accept its terms on the hub, then set HF_TOKEN \
                 to a token that may read it"
            )),
            e => hub_error(format!("cannot list {repo}: {e}")),
        })?;
        let mut body = String::new();
        response
            .into_reader()
            .take(MAX_LISTING)
            .read_to_string(&mut body)
            .map_err(|e| hub_error(format!("cannot read the listing of {repo}: {e}")))?;
        serde_json::from_str(&body).map_err(|e| {
            hub_error(format!(
                "the hub's listing of {repo} is not what it should be: {e}"
            ))
        })
    }

    /// The URL of one file of a repository.
    pub fn file_url(&self, repo: &str, revision: &str, path: &str) -> String {
        let path: Vec<String> = path.split('/').map(encode_segment).collect();
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.base,
            encode_segment(revision),
            path.join("/")
        )
    }

    /// Downloads `url` to `dest`, resuming from `dest.part` if an earlier attempt left one,
    /// and checks the size and SHA-256 when known. Returns the file's SHA-256.
    pub fn download(
        &self,
        url: &str,
        dest: &Path,
        expected_size: Option<u64>,
        expected_sha256: Option<&str>,
        progress: Progress<'_>,
    ) -> Result<String, CatalogError> {
        let part = part_path(dest);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tracing::warn!("download of {url} interrupted ({last_error}); resuming");
                std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
            }
            match self.fetch_into(url, &part, expected_size, progress) {
                Ok(()) => return finish(&part, dest, expected_size, expected_sha256),
                Err(Fetch::Retry(e)) => last_error = e,
                Err(Fetch::Fatal(e)) => return Err(e),
            }
        }
        Err(hub_error(format!(
            "downloading {url} failed {ATTEMPTS} times ({last_error}); run the same \
             command again to resume"
        )))
    }

    /// Appends what `part` lacks, asking for the bytes after what it holds.
    fn fetch_into(
        &self,
        url: &str,
        part: &Path,
        expected_size: Option<u64>,
        progress: Progress<'_>,
    ) -> Result<(), Fetch> {
        let have = std::fs::metadata(part).map_or(0, |m| m.len());
        if expected_size.is_some_and(|size| have >= size) {
            // Complete already (or too long, which the size check then reports).
            return Ok(());
        }
        let range = (have > 0).then(|| format!("bytes={have}-"));
        let response = match self.get(url, range.as_deref()) {
            Ok(r) => r,
            // The part is already whole, by the server's count.
            Err(Failure::Status(416, _)) => return Ok(()),
            Err(Failure::Status(code, why)) if code >= 500 || code == 429 => {
                return Err(Fetch::Retry(format!("HTTP {code}: {why}")))
            }
            Err(Failure::Status(code, why)) => {
                return Err(Fetch::Fatal(hub_error(format!(
                    "the hub refused {url}: HTTP {code} ({why})"
                ))))
            }
            Err(Failure::Transport(why)) => return Err(Fetch::Retry(why)),
            Err(Failure::Refused(why)) => return Err(Fetch::Fatal(hub_error(why))),
        };
        let resumed = response.status() == 206;
        let start = if resumed {
            // A server that resumes elsewhere than asked would corrupt the file.
            match content_range_start(response.header("content-range")) {
                Some(start) if start == have => have,
                other => {
                    return Err(Fetch::Fatal(hub_error(format!(
                        "{url} resumed at byte {other:?}, not {have}"
                    ))))
                }
            }
        } else {
            0
        };
        let total = expected_size.unwrap_or_else(|| {
            response
                .header("content-length")
                .and_then(|l| l.parse::<u64>().ok())
                .map_or(0, |l| l + start)
        });
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(part)
            .map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = start;
        progress(done, total);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = file.flush();
                    return Err(Fetch::Retry(e.to_string()));
                }
            };
            file.write_all(&buf[..n])
                .map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
            done += n as u64;
            progress(done, total);
        }
        file.sync_all().map_err(|e| Fetch::Fatal(io_err(part)(e)))?;
        if expected_size.is_some_and(|size| done < size) {
            return Err(Fetch::Retry(format!("the connection ended at byte {done}")));
        }
        Ok(())
    }

    /// A GET, following redirects by hand: `Range` goes along, the token only to the hub's
    /// own host (a CDN's signed URL needs none, and must not see it).
    fn get(&self, url: &str, range: Option<&str>) -> Result<ureq::Response, Failure> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&url);
            if let Some(range) = range {
                request = request.set("Range", range);
            }
            if let Some(token) = &self.token {
                if same_host(&url, &self.base) {
                    request = request.set("Authorization", &format!("Bearer {token}"));
                }
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    let why = r.status_text().to_string();
                    return Err(Failure::Status(code, why));
                }
                Err(ureq::Error::Transport(t)) => return Err(Failure::Transport(t.to_string())),
            };
            if !(300..400).contains(&response.status()) {
                return Ok(response);
            }
            let location = response
                .header("location")
                .ok_or_else(|| Failure::Refused(format!("{url} redirects nowhere")))?;
            url = resolve_location(&url, location)
                .ok_or_else(|| Failure::Refused(format!("{url} redirects to {location}")))?;
        }
        Err(Failure::Refused(format!("{url}: too many redirects")))
    }
}

/// Why a request failed.
enum Failure {
    Status(u16, String),
    Transport(String),
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status(code, why) => write!(f, "HTTP {code} {why}"),
            Failure::Transport(why) | Failure::Refused(why) => f.write_str(why),
        }
    }
}

/// A download attempt's failure: worth resuming, or not.
enum Fetch {
    Retry(String),
    Fatal(CatalogError),
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Checks the finished part against what the hub published, then puts it in place.
fn finish(
    part: &Path,
    dest: &Path,
    expected_size: Option<u64>,
    expected_sha256: Option<&str>,
) -> Result<String, CatalogError> {
    let size = std::fs::metadata(part).map_err(io_err(part))?.len();
    if let Some(expected) = expected_size {
        if size != expected {
            let _ = std::fs::remove_file(part);
            return Err(hub_error(format!(
                "{} is {size} bytes, not the {expected} the hub lists; it was deleted, \
                 try again",
                dest.display()
            )));
        }
    }
    let digest = sha256_of(part)?;
    if let Some(expected) = expected_sha256 {
        if !digest.eq_ignore_ascii_case(expected) {
            let _ = std::fs::remove_file(part);
            return Err(hub_error(format!(
                "{} has SHA-256 {digest}, not the {expected} the hub publishes; it was \
                 deleted",
                dest.display()
            )));
        }
    }
    std::fs::rename(part, dest).map_err(io_err(dest))?;
    Ok(digest)
}

pub(crate) fn sha256_of(path: &Path) -> Result<String, CatalogError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `bytes 100-199/200` -> 100.
fn content_range_start(value: Option<&str>) -> Option<u64> {
    value?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `owner/name`, each part letters, digits, `-`, `_`, `.` (no `..`): a repository id,
/// never a path that could reach elsewhere on the hub.
pub fn validate_repo(repo: &str) -> Result<(), CatalogError> {
    let valid_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 96
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(()),
        _ => Err(hub_error(format!(
            "{repo:?} is not a repository id (owner/name)"
        ))),
    }
}

/// Percent-encodes one path segment.
fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let host_len = rest.find('/').unwrap_or(rest.len());
    Some(&url[..scheme.len() + 3 + host_len])
}

fn same_host(a: &str, b: &str) -> bool {
    origin(a).is_some_and(|o| Some(o) == origin(b))
}

/// Where a redirect points, made absolute; only HTTP(S).
fn resolve_location(current: &str, location: &str) -> Option<String> {
    let absolute = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{}{location}", origin(current)?)
    } else {
        return None;
    };
    Some(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_ids_are_two_plain_parts() {
        assert!(validate_repo("bartowski/Qwen2.5-0.5B-Instruct-GGUF").is_ok());
        for bad in ["", "x", "a/b/c", "../x", "a/..", "a/b?x=1", "a/b c"] {
            assert!(validate_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_and_tokens_stay_home() {
        assert_eq!(
            resolve_location("https://hub.test/a/b", "/c/d").as_deref(),
            Some("https://hub.test/c/d")
        );
        assert_eq!(
            resolve_location("https://hub.test/a", "https://cdn.test/x?sig=1").as_deref(),
            Some("https://cdn.test/x?sig=1")
        );
        assert_eq!(
            resolve_location("https://hub.test/a", "file:///etc/passwd"),
            None
        );
        assert!(same_host("http://127.0.0.1:9/x", "http://127.0.0.1:9"));
        assert!(!same_host("https://cdn.test/x", "https://hub.test"));
    }

    #[test]
    fn content_ranges_are_read() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("bytes */200")), None);
        assert_eq!(content_range_start(None), None);
    }

    #[test]
    fn licences_come_from_the_card() {
        let info: RepoInfo = serde_json::from_str(
            r#"{"siblings": [{"rfilename": "a.gguf", "size": 3,
                "lfs": {"sha256": "ab", "size": 3, "pointerSize": 130}}],
                "cardData": {"license": "apache-2.0"}}"#,
        )
        .unwrap();
        assert_eq!(info.license().as_deref(), Some("apache-2.0"));
        assert_eq!(info.file("a.gguf").and_then(RepoFile::sha256), Some("ab"));
        assert_eq!(info.file("a.gguf").and_then(RepoFile::size), Some(3));
    }
}
