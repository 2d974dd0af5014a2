#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! `models pull` against a local stand-in for the hub: a small HTTP server that speaks the
//! hub's file API (the listing with LFS hashes and the card's licence, `resolve` answered by
//! a redirect to a "CDN" path, `Range` honoured, a token required for a gated repository),
//! and can drop a download halfway or serve bytes other than it published.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use basalt_catalog::hub::Hub;
use basalt_catalog::{pull, Catalog, ImportOptions, PullOptions, Source};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_test_token";

/// A tiny Llama-architecture GGUF of about 256 KiB (the catalog reads its header only).
fn tiny_gguf(name: &str) -> Vec<u8> {
    let weights: Vec<f32> = (0..64 * 1024).map(|i| i as f32 * 1e-3).collect();
    basalt_gguf::write::Writer::new()
        .string("general.architecture", "llama")
        .string("general.name", name)
        .string("general.organization", "Acme")
        .u32("llama.context_length", 2048)
        .strings("tokenizer.ggml.tokens", &["<s>", "a", "b"])
        .tensor_f32("token_embd.weight", &[64, 1024], &weights)
        .to_bytes()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Default)]
struct HubState {
    /// repo -> (file -> bytes)
    repos: HashMap<String, HashMap<String, Vec<u8>>>,
    /// Hashes to publish instead of the true ones (a corrupted mirror).
    published_sha: HashMap<String, String>,
    gated: Vec<String>,
    /// File names whose next full download stops halfway.
    drop_next: Vec<String>,
    /// (path, Range header) of every CDN request.
    cdn_requests: Vec<(String, Option<String>)>,
    /// Requests that carried the token, by path prefix.
    authorized: Vec<String>,
    /// Where the "CDN" listens: another origin than the hub's, as the real one is.
    cdn: String,
}

struct StandIn {
    url: String,
    state: Arc<Mutex<HubState>>,
}

impl StandIn {
    fn start() -> Self {
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", hub.local_addr().unwrap());
        let state = Arc::new(Mutex::new(HubState {
            cdn: format!("http://{}", cdn.local_addr().unwrap()),
            ..HubState::default()
        }));
        for listener in [hub, cdn] {
            let shared = Arc::clone(&state);
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = Arc::clone(&shared);
                    std::thread::spawn(move || serve(stream, &state));
                }
            });
        }
        Self { url, state }
    }

    fn add(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.repos
            .entry(repo.to_string())
            .or_default()
            .insert(file.to_string(), bytes);
    }
}

fn serve(stream: TcpStream, state: &Mutex<HubState>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let authorized =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let mut s = state.lock().unwrap();
    if authorized {
        s.authorized.push(path.clone());
    }
    let respond = |stream: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    };
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let rest = rest.split('?').next().unwrap();
        let (repo, _revision) = rest.split_once("/revision/").unwrap();
        if s.gated.iter().any(|g| g == repo) && !authorized {
            return respond(&mut stream, "401 Unauthorized", "", b"{}");
        }
        if repo == "acme/broken" {
            return respond(&mut stream, "200 OK", "", b"<html>not a listing</html>");
        }
        let Some(files) = s.repos.get(repo) else {
            return respond(&mut stream, "404 Not Found", "", b"{}");
        };
        let siblings: Vec<serde_json::Value> = files
            .iter()
            .map(|(name, bytes)| {
                if name.ends_with(".gguf") || name.ends_with(".safetensors") {
                    let sha = s
                        .published_sha
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| sha256_hex(bytes));
                    serde_json::json!({"rfilename": name, "size": bytes.len(),
                        "lfs": {"sha256": sha, "size": bytes.len(), "pointerSize": 134}})
                } else {
                    serde_json::json!({"rfilename": name, "size": bytes.len()})
                }
            })
            .collect();
        let body = serde_json::json!({"id": repo, "siblings": siblings,
            "cardData": {"license": "apache-2.0"}});
        return respond(
            &mut stream,
            "200 OK",
            "Content-Type: application/json\r\n",
            body.to_string().as_bytes(),
        );
    }
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let (repo_key, file) = rest.split_once("/file/").unwrap();
        let repo = repo_key.replace("--", "/");
        let range = headers.get("range").cloned();
        s.cdn_requests.push((file.to_string(), range.clone()));
        let bytes = s.repos[&repo][file].clone();
        let start: usize = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse().ok())
            .unwrap_or(0);
        if start > 0 {
            if start >= bytes.len() {
                return respond(&mut stream, "416 Range Not Satisfiable", "", b"");
            }
            let extra = format!(
                "Content-Range: bytes {start}-{}/{}\r\n",
                bytes.len() - 1,
                bytes.len()
            );
            return respond(&mut stream, "206 Partial Content", &extra, &bytes[start..]);
        }
        if let Some(i) = s.drop_next.iter().position(|f| f == file) {
            s.drop_next.remove(i);
            // Promise everything, send half, hang up.
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = stream.write_all(&bytes[..bytes.len() / 2]);
            let _ = stream.flush();
            return;
        }
        return respond(&mut stream, "200 OK", "", &bytes);
    }
    // /{owner}/{repo}/resolve/{revision}/{file}: the hub redirects to its CDN.
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    if let [owner, name, "resolve", _rev, file] = parts.as_slice() {
        let repo = format!("{owner}/{name}");
        if s.gated.contains(&repo) && !authorized {
            return respond(&mut stream, "401 Unauthorized", "", b"");
        }
        if s.repos.get(&repo).is_some_and(|f| f.contains_key(*file)) {
            let location = format!("Location: {}/cdn/{owner}--{name}/file/{file}\r\n", s.cdn);
            return respond(&mut stream, "302 Found", &location, b"");
        }
    }
    respond(&mut stream, "404 Not Found", "", b"")
}

fn store() -> (Catalog, PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "basalt-pull-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    (Catalog::open(&dir).unwrap(), dir)
}

fn options() -> PullOptions {
    PullOptions {
        revision: "main".into(),
        import: ImportOptions::default(),
    }
}

fn accept(_: &std::path::Path) -> Result<(), String> {
    Ok(())
}

#[test]
fn a_repository_pull_picks_the_default_quant_resumes_and_checks_the_hash() {
    let hub = StandIn::start();
    let repo = "acme/Tiny-GGUF";
    let q4 = tiny_gguf("Tiny");
    hub.add(repo, "tiny-Q4_K_M.gguf", q4.clone());
    hub.add(repo, "tiny-Q8_0.gguf", tiny_gguf("Tiny Q8"));
    hub.add(repo, "LICENSE", b"Apache License 2.0 (test text)".to_vec());
    hub.add(repo, "README.md", b"# Tiny".to_vec());
    hub.state
        .lock()
        .unwrap()
        .drop_next
        .push("tiny-Q4_K_M.gguf".into());

    let (mut catalog, dir) = store();
    let client = Hub::new(&hub.url, None);
    let source = Source::parse(repo, &hub.url).unwrap();
    let mut seen = Vec::new();
    let entry = pull(
        &mut catalog,
        &client,
        &source,
        options(),
        &accept,
        &mut |name, done, total| {
            seen.push((name.to_string(), done, total));
        },
    )
    .unwrap();

    assert_eq!(entry.manifest.file, "tiny-Q4_K_M.gguf");
    assert_eq!(
        entry.manifest.sha256.as_deref(),
        Some(sha256_hex(&q4).as_str())
    );
    assert_eq!(std::fs::read(entry.weights_path()).unwrap(), q4);
    assert_eq!(entry.manifest.license.as_deref(), Some("apache-2.0"));
    assert_eq!(entry.manifest.license_file.as_deref(), Some("LICENSE"));
    assert!(entry.dir.join("LICENSE").is_file());
    assert_eq!(entry.manifest.id, "acme.tiny-v1:0");
    // The dropped download resumed from where it stopped, not from the start.
    let requests = hub.state.lock().unwrap().cdn_requests.clone();
    let gguf: Vec<_> = requests
        .iter()
        .filter(|(f, _)| f == "tiny-Q4_K_M.gguf")
        .collect();
    assert_eq!(gguf.len(), 2, "{requests:?}");
    assert_eq!(gguf[0].1, None);
    assert_eq!(
        gguf[1].1.as_deref(),
        Some(format!("bytes={}-", q4.len() / 2).as_str())
    );
    assert!(seen.iter().any(|(n, done, total)| n == "tiny-Q4_K_M.gguf"
        && *done == q4.len() as u64
        && *total == q4.len() as u64));
    // The downloads are gone once the model is in the store, and the catalog sees it.
    assert!(!dir.join(".downloads").join("acme--Tiny-GGUF").exists());
    assert!(Catalog::open(&dir).unwrap().get("acme.tiny-v1:0").is_some());

    // A named quant; the same model again is refused by the catalog.
    let q8 = Source::parse(&format!("{repo}:q8_0"), &hub.url).unwrap();
    let pulled = pull(
        &mut catalog,
        &client,
        &q8,
        PullOptions {
            import: ImportOptions {
                id: Some("acme.tiny-q8-v1:0".into()),
                ..ImportOptions::default()
            },
            ..options()
        },
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap();
    assert_eq!(pulled.manifest.file, "tiny-Q8_0.gguf");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_whose_hash_is_not_the_published_one_is_refused_and_deleted() {
    let hub = StandIn::start();
    let repo = "acme/Corrupt-GGUF";
    hub.add(repo, "c.gguf", tiny_gguf("C"));
    hub.state
        .lock()
        .unwrap()
        .published_sha
        .insert("c.gguf".into(), "00".repeat(32));
    let (mut catalog, dir) = store();
    let client = Hub::new(&hub.url, None);
    let url = format!("{}/{repo}/resolve/main/c.gguf", hub.url);
    let source = Source::parse(&url, &hub.url).unwrap();
    let err = pull(
        &mut catalog,
        &client,
        &source,
        options(),
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(catalog.entries().is_empty());
    let staged = dir.join(".downloads/acme--Corrupt-GGUF/main");
    assert!(!staged.join("c.gguf").exists() && !staged.join("c.gguf.part").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn gated_repositories_need_the_token_and_the_check_has_the_last_word() {
    let hub = StandIn::start();
    let repo = "acme/Gated-GGUF";
    hub.add(repo, "g.gguf", tiny_gguf("G"));
    hub.state.lock().unwrap().gated.push(repo.into());
    let (mut catalog, dir) = store();
    let source = Source::parse(repo, &hub.url).unwrap();

    let err = pull(
        &mut catalog,
        &Hub::new(&hub.url, None),
        &source,
        options(),
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    let with_token = Hub::new(&hub.url, Some(TOKEN.into()));
    let refuse = |_: &std::path::Path| Err("the engine cannot run this".to_string());
    let err = pull(
        &mut catalog,
        &with_token,
        &source,
        options(),
        &refuse,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("the engine cannot run this"),
        "{err}"
    );
    assert!(catalog.entries().is_empty());

    pull(
        &mut catalog,
        &with_token,
        &source,
        options(),
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap();
    // The token went to the hub, never to the CDN it redirected to.
    let authorized = hub.state.lock().unwrap().authorized.clone();
    assert!(authorized.iter().any(|p| p.starts_with("/api/models/")));
    assert!(authorized.iter().any(|p| p.contains("/resolve/")));
    assert!(
        !authorized.iter().any(|p| p.starts_with("/cdn/")),
        "{authorized:?}"
    );

    let broken = Source::parse("acme/broken", &hub.url).unwrap();
    let err = pull(
        &mut catalog,
        &with_token,
        &broken,
        options(),
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("not what it should be"), "{err}");
    let missing = Source::parse("acme/nothing-here", &hub.url).unwrap();
    let err = pull(
        &mut catalog,
        &with_token,
        &missing,
        options(),
        &accept,
        &mut |_, _, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no model repository"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
