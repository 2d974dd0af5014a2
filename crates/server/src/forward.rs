//! Any replica takes any request: one for a model this replica does not serve is passed to
//! a live replica that does (the least loaded, by the queue depth and running sequences it
//! last announced), and the answer, streamed or not, is passed back untouched.
//!
//! The request goes on as the client sent it, credentials and `Host` included, so the
//! serving replica authenticates it (a SigV4 signature covers the host), checks access and
//! quotas, and meters it, exactly as if the client had come to it directly; this replica
//! does none of that for it. A forwarded request carries [`FORWARDED_BY`] and is never
//! forwarded again. Peers are reached over plain HTTP on the cluster's network.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{self, header, HeaderName};
use axum::middleware::Next;
use axum::response::Response;
use basalt_catalog::Manifest;
use basalt_store::ReplicaStatus;
use basalt_types::{BasaltError, ErrorKind};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::routes::auth::Dialect;
use crate::AppState;

/// Names the replica that forwarded a request (so that it is served, not forwarded again).
pub const FORWARDED_BY: &str = "x-basalt-forwarded-by";

/// How long a peer may take to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A model no known replica serves makes this replica read the registry again (a replica
/// that just started is used at once), but not more often than this.
const REREAD_AFTER: Duration = Duration::from_millis(500);

/// The other replicas, as the last heartbeat found them.
pub struct Peers {
    /// This replica's id; empty when it shares its database with no one.
    own_id: String,
    known: RwLock<Vec<ReplicaStatus>>,
    /// The catalog entries of the models only other replicas serve, by id.
    elsewhere: RwLock<Vec<Manifest>>,
    /// When the registry was last read.
    read_at: std::sync::Mutex<Option<Instant>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Peers {
    fn default() -> Self {
        Self::new("")
    }
}

impl Peers {
    pub fn new(own_id: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self {
            own_id: own_id.to_string(),
            known: RwLock::new(Vec::new()),
            elsewhere: RwLock::new(Vec::new()),
            read_at: std::sync::Mutex::new(None),
            client,
        }
    }

    pub fn own_id(&self) -> &str {
        &self.own_id
    }

    /// Replaces what is known of the replicas (this one's own entry included or not).
    pub fn update(&self, replicas: Vec<ReplicaStatus>) {
        let mut elsewhere: Vec<Manifest> = replicas
            .iter()
            .filter(|r| r.id != self.own_id && r.address.starts_with("http://"))
            .flat_map(|r| serde_json::from_str::<Vec<Manifest>>(&r.catalog).unwrap_or_default())
            .collect();
        elsewhere.sort_by(|a, b| a.id.cmp(&b.id));
        elsewhere.dedup_by(|a, b| a.id == b.id);
        *self.elsewhere.write().unwrap_or_else(|p| p.into_inner()) = elsewhere;
        *self.known.write().unwrap_or_else(|p| p.into_inner()) = replicas;
        *self.read_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the registry was read long enough ago to be worth reading again now.
    fn stale(&self) -> bool {
        self.read_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= REREAD_AFTER)
    }

    /// The least-loaded other live replica serving `model`: the fewest requests queued or
    /// running, then the least KV cache in use.
    fn serving(&self, model: &str) -> Option<ReplicaStatus> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        known
            .iter()
            .filter(|r| r.id != self.own_id && r.models.iter().any(|m| m == model))
            // Replicas talk plain HTTP; one advertising https:// cannot be forwarded to.
            .filter(|r| r.address.starts_with("http://"))
            .min_by_key(|r| (r.queued + r.running, r.kv_bytes, r.id.clone()))
            .cloned()
    }

    /// Leaves a replica out until the registry is read again (it refused a connection).
    fn forget(&self, id: &str) {
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r.id != id);
    }

    /// The catalog entries of the models other live replicas serve (as last read).
    pub fn manifests_elsewhere(&self) -> Vec<Manifest> {
        self.elsewhere
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Where a request names its model: in the path (Bedrock's runtime) or in a JSON body.
fn model_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/model/")?;
    let (id, _operation) = rest.split_once('/')?;
    percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()
        .map(|id| id.into_owned())
}

/// The routes whose JSON body names the model they run.
fn names_model_in_body(path: &str) -> bool {
    const ROUTES: &[&str] = &[
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/images/generations",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ];
    ROUTES.iter().any(|r| path.ends_with(r))
}

#[derive(serde::Deserialize)]
struct ModelField {
    model: Option<String>,
}

fn serves(state: &AppState, model: &str) -> bool {
    state.model(model).is_ok()
        || state.embedder(model).is_some()
        || state.image_model(model).is_some()
}

/// Middleware, inside authentication (the body is read and the caller known): serves the
/// request here, or passes it to a replica serving its model.
pub async fn to_a_replica_serving_the_model(
    State((state, dialect)): State<(Arc<AppState>, Dialect)>,
    request: Request,
    next: Next,
) -> Response {
    if state.peers.own_id.is_empty() || request.headers().contains_key(FORWARDED_BY) {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let (model, request) = if let Some(model) = model_in_path(&path) {
        (Some(model), request)
    } else if request.method() == http::Method::POST && names_model_in_body(&path) {
        let (parts, body) = request.into_parts();
        // Authentication has already read the body whole, under the server's limits.
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(e) => {
                return dialect.render(BasaltError::invalid("body", e.to_string()), None);
            }
        };
        let model = serde_json::from_slice::<ModelField>(&bytes)
            .ok()
            .and_then(|m| m.model);
        (model, Request::from_parts(parts, Body::from(bytes)))
    } else {
        (None, request)
    };
    let Some(model) = model.filter(|m| !serves(&state, m)) else {
        return next.run(request).await;
    };
    let mut peer = state.peers.serving(&model);
    if peer.is_none() && state.peers.stale() {
        if let Some(platform) = &state.platform {
            if let Ok(replicas) = platform.store.replicas().await {
                state.peers.update(replicas);
                peer = state.peers.serving(&model);
            }
        }
    }
    let Some(mut peer) = peer else {
        // No replica serves it: answered here, as an unknown model.
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => return dialect.render(BasaltError::invalid("body", e.to_string()), None),
    };
    // A replica that refuses the connection never saw the request: try the next one.
    for _ in 0..3 {
        match forward(&state.peers, &peer, &parts, body.clone()).await {
            Ok(response) => return response,
            Err(Failure::Unreachable(why)) => {
                tracing::warn!(replica = %peer.id, %model, "forwarding failed: {why}");
                state.peers.forget(&peer.id);
                match state.peers.serving(&model) {
                    Some(next_peer) => peer = next_peer,
                    None => break,
                }
            }
            Err(Failure::Other(why)) => {
                tracing::warn!(replica = %peer.id, %model, "forwarding failed: {why}");
                break;
            }
        }
    }
    let error = BasaltError::new(
        ErrorKind::Unavailable,
        format!("The replica serving `{model}` could not be reached. Try again."),
    )
    .with_retry_after(1);
    dialect.render(error, None)
}

/// Why a request could not be forwarded.
enum Failure {
    /// The replica could not be connected to: the request never reached it.
    Unreachable(String),
    Other(String),
}

/// Hop-by-hop headers belong to one connection, not to the request or response.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name == header::CONTENT_LENGTH
}

async fn forward(
    peers: &Peers,
    peer: &ReplicaStatus,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response, Failure> {
    // Inside a nested router (`/openai`, `/anthropic`) the URI has lost its prefix: the
    // client's own path is the one it signed.
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let target: http::Uri = format!("{}{path_and_query}", peer.address.trim_end_matches('/'))
        .parse()
        .map_err(|e| Failure::Other(format!("bad peer address {}: {e}", peer.address)))?;
    let mut outgoing = http::Request::builder()
        .method(parts.method.clone())
        .uri(target)
        .body(Full::new(body))
        .map_err(|e| Failure::Other(e.to_string()))?;
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            outgoing.headers_mut().append(name.clone(), value.clone());
        }
    }
    outgoing.headers_mut().insert(
        FORWARDED_BY,
        http::HeaderValue::from_str(&peers.own_id).map_err(|e| Failure::Other(e.to_string()))?,
    );
    let response = peers.client.request(outgoing).await.map_err(|e| {
        if e.is_connect() {
            Failure::Unreachable(e.to_string())
        } else {
            Failure::Other(e.to_string())
        }
    })?;
    let (mut parts, body) = response.into_parts();
    let connection_headers: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|name| hop_by_hop(name))
        .cloned()
        .collect();
    for name in connection_headers {
        parts.headers.remove(name);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(id: &str, models: &[&str], queued: u64) -> ReplicaStatus {
        ReplicaStatus {
            id: id.into(),
            address: format!("http://{id}:8080"),
            models: models.iter().map(|m| m.to_string()).collect(),
            catalog: "[]".into(),
            queued,
            running: 0,
            kv_bytes: 0,
            heartbeat_at_ms: 0,
        }
    }

    #[test]
    fn the_least_loaded_other_replica_serving_the_model_is_chosen() {
        let peers = Peers::new("a");
        peers.update(vec![
            replica("a", &["m1", "m2"], 0),
            replica("b", &["m2"], 5),
            replica("c", &["m2"], 1),
            replica("d", &["m3"], 0),
        ]);
        assert_eq!(peers.serving("m2").map(|r| r.id), Some("c".into()));
        // Equal queues: the one holding less KV cache.
        let busy = |id: &str, kv_bytes| ReplicaStatus {
            kv_bytes,
            ..replica(id, &["m4"], 1)
        };
        peers.update(vec![busy("e", 5_000), busy("f", 1_000)]);
        assert_eq!(peers.serving("m4").map(|r| r.id), Some("f".into()));
        peers.update(vec![
            replica("a", &["m1", "m2"], 0),
            replica("b", &["m2"], 5),
            replica("c", &["m2"], 1),
            replica("d", &["m3"], 0),
        ]);
        // Never itself, even when it is the only one listed.
        assert!(peers.serving("m1").is_none());
        assert!(peers.serving("m9").is_none());
    }

    #[test]
    fn models_are_found_in_bedrock_paths_and_json_bodies() {
        assert_eq!(
            model_in_path("/model/meta.llama3-8b-instruct-v1%3A0/converse-stream").as_deref(),
            Some("meta.llama3-8b-instruct-v1:0")
        );
        assert_eq!(model_in_path("/model/only"), None);
        assert_eq!(model_in_path("/v1/models"), None);
        assert!(names_model_in_body("/openai/v1/chat/completions"));
        assert!(names_model_in_body("/anthropic/v1/messages"));
        assert!(!names_model_in_body("/v1/files"));
    }
}
