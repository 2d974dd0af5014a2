//! Who is calling: one authentication layer for every API surface.
//!
//! A request proves who it is with an API key (`Authorization: Bearer`, as OpenAI clients
//! and boto3's `AWS_BEARER_TOKEN_BEDROCK` send it, or Anthropic's `x-api-key`) or with an
//! AWS SigV4 signature (boto3 and the AWS CLI by default). Either way the answer is the same
//! [`Principal`], so quotas, access and metering never care which surface was used.
//!
//! Keys come from a [`KeyStore`]: the server's configuration ([`StaticKeys`]) and the
//! platform database, chained ([`ChainedKeys`]); lookups are async because a database's
//! are. API keys are looked up by their SHA-256, so a store never needs the key itself;
//! SigV4 needs the secret in recoverable form, which is the store's concern.
//!
//! This crate never does I/O and never renders errors: the server turns an [`AuthError`]
//! into each dialect's error shape.

#![forbid(unsafe_code)]

pub mod session;
pub mod sigv4;

pub use session::{Session, SessionKey, SessionUser};
pub use sigv4::constant_time_eq;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use basalt_types::{BasaltError, ErrorKind};
use http::HeaderMap;
use sha2::{Digest, Sha256};

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    /// Which key was used (never the key itself): for logs and metering.
    pub key_id: String,
    /// A tenant of the platform, subject to model access and quotas. Operator keys given
    /// in the server's configuration and the local user are not.
    pub managed: bool,
}

impl Principal {
    /// The operator signed in to the web console with the admin token: like the operator's
    /// configured keys, no tenant's grants or quotas apply.
    pub fn operator_console() -> Self {
        Self {
            tenant: "operator".into(),
            key_id: "console".into(),
            managed: false,
        }
    }

    /// The caller in local single-user mode, where no keys are configured.
    pub fn local() -> Self {
        Self {
            tenant: "local".into(),
            key_id: "local".into(),
            managed: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Missing authentication: send an API key (Authorization: Bearer or x-api-key) or an AWS SigV4 signature")]
    Missing,
    #[error("The API key is not valid")]
    UnknownApiKey,
    #[error("The security token included in the request is invalid (unknown access key id)")]
    UnknownAccessKey,
    #[error("{0}")]
    Malformed(String),
    #[error("{0}")]
    BadSignature(String),
    #[error("Signature expired: {0}")]
    Expired(String),
    /// The key store could not be asked (its database is unreachable): the credentials may
    /// well be valid, so this is not an authentication failure.
    #[error("Credentials cannot be checked right now ({0}). Try again.")]
    Unavailable(String),
    /// A console session cookie that is not ours, or has expired.
    #[error("The console session has expired or is not valid: sign in again")]
    SessionExpired,
    /// A console session's request without its CSRF token (`x-basalt-csrf`).
    #[error("A console session's request must carry its CSRF token")]
    MissingCsrf,
}

impl AuthError {
    /// The exception name AWS services answer this failure with (all are HTTP 403 there).
    pub fn aws_error_code(&self) -> &'static str {
        match self {
            AuthError::Missing => "MissingAuthenticationTokenException",
            AuthError::UnknownApiKey | AuthError::UnknownAccessKey => "UnrecognizedClientException",
            AuthError::Malformed(_) => "IncompleteSignatureException",
            AuthError::BadSignature(_) | AuthError::Expired(_) => "InvalidSignatureException",
            AuthError::Unavailable(_) => "ServiceUnavailableException",
            AuthError::SessionExpired => "ExpiredTokenException",
            AuthError::MissingCsrf => "AccessDeniedException",
        }
    }
}

impl From<AuthError> for BasaltError {
    fn from(e: AuthError) -> Self {
        let kind = match e {
            AuthError::BadSignature(_) | AuthError::Expired(_) => ErrorKind::InvalidSignature,
            AuthError::Unavailable(_) => ErrorKind::Unavailable,
            AuthError::MissingCsrf => ErrorKind::PermissionDenied,
            _ => ErrorKind::Unauthenticated,
        };
        let error = BasaltError::new(kind, e.to_string());
        match kind {
            ErrorKind::Unavailable => error.with_retry_after(1),
            _ => error,
        }
    }
}

/// A SigV4 credential: its secret and whose it is.
#[derive(Clone)]
pub struct AccessKey {
    pub secret: String,
    pub principal: Principal,
}

/// A key store that could not be asked (a database that does not answer).
#[derive(Debug, Clone)]
pub struct LookupFailed(pub String);

/// Where keys live: in memory (the server's configuration) or in a database, so lookups
/// are async; a store that answers from memory answers without waiting. `Ok(None)` is a key
/// that does not exist (or is not valid now); an error is a store that cannot say.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync {
    /// The principal owning the API key whose SHA-256 is `key_sha256`, if it is valid now.
    async fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<Principal>, LookupFailed>;
    /// The secret and principal of a SigV4 access key id, if it is valid now.
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>, LookupFailed>;
    /// Whether any key exists at all (no keys and a loopback listener = local mode).
    fn is_empty(&self) -> bool;
}

/// Keys given in the server's configuration, all belonging to one tenant.
#[derive(Default)]
pub struct StaticKeys {
    api_keys: HashMap<[u8; 32], Principal>,
    access_keys: HashMap<String, AccessKey>,
}

impl StaticKeys {
    pub fn new(tenant: &str, api_keys: &[String], access_keys: &[(String, String)]) -> Self {
        let api_keys = api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let principal = Principal {
                    tenant: tenant.to_string(),
                    key_id: format!("config-key-{}", i + 1),
                    managed: false,
                };
                (sha256(k.as_bytes()), principal)
            })
            .collect();
        let access_keys = access_keys
            .iter()
            .map(|(id, secret)| {
                let key = AccessKey {
                    secret: secret.clone(),
                    principal: Principal {
                        tenant: tenant.to_string(),
                        key_id: id.clone(),
                        managed: false,
                    },
                };
                (id.clone(), key)
            })
            .collect();
        Self {
            api_keys,
            access_keys,
        }
    }
}

#[async_trait::async_trait]
impl KeyStore for StaticKeys {
    async fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<Principal>, LookupFailed> {
        Ok(self.api_keys.get(key_sha256).cloned())
    }
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>, LookupFailed> {
        Ok(self.access_keys.get(access_key_id).cloned())
    }
    fn is_empty(&self) -> bool {
        self.api_keys.is_empty() && self.access_keys.is_empty()
    }
}

/// Several key stores consulted in order (operator keys from the configuration, then the
/// tenant database): a key found in an earlier one never costs a lookup in a later one.
pub struct ChainedKeys(pub Vec<Arc<dyn KeyStore>>);

#[async_trait::async_trait]
impl KeyStore for ChainedKeys {
    async fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<Principal>, LookupFailed> {
        for store in &self.0 {
            if let Some(found) = store.api_key(key_sha256).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
    async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>, LookupFailed> {
        for store in &self.0 {
            if let Some(found) = store.access_key(access_key_id).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|k| k.is_empty())
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What the request line said, still percent-encoded, as SigV4 needs it.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    /// The URI's authority (HTTP/2's `:authority`), when the request has one.
    pub authority: Option<&'a str>,
}

/// Decides who a request comes from.
#[derive(Clone)]
pub struct Authenticator {
    keys: Arc<dyn KeyStore>,
    /// Local mode: everyone is the local principal. Closed for good once keys exist.
    open: Arc<AtomicBool>,
    /// How far a SigV4 client's clock may be from ours (AWS allows 15 minutes).
    pub max_clock_skew_secs: i64,
    /// The SigV4 signing name clients must use.
    pub service: &'static str,
    /// Signs the web console's session cookies; `None` accepts no session.
    sessions: Option<SessionKey>,
}

impl Authenticator {
    /// Open (local mode) exactly when the key store has no keys at all.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        let open = keys.is_empty();
        Self::with_mode(keys, open)
    }

    /// `open` chooses local mode explicitly (the server decides from its store and address).
    pub fn with_mode(keys: Arc<dyn KeyStore>, open: bool) -> Self {
        Self {
            keys,
            open: Arc::new(AtomicBool::new(open)),
            max_clock_skew_secs: 15 * 60,
            service: "bedrock",
            sessions: None,
        }
    }

    /// Also accepts the web console's sessions, signed with `key`.
    pub fn with_sessions(mut self, key: SessionKey) -> Self {
        self.sessions = Some(key);
        self
    }

    /// The key console sessions are signed with, if the server has a console.
    pub fn sessions(&self) -> Option<&SessionKey> {
        self.sessions.as_ref()
    }

    /// Leaves local mode: from now on every request must authenticate (the first tenant
    /// was just created).
    pub fn require_credentials(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// No keys at all: every request is the local principal (the quick-start mode).
    pub fn open() -> Self {
        Self::new(Arc::new(StaticKeys::default()))
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Whether verifying this request needs its body (SigV4 signs the payload hash).
    pub fn needs_body(&self, headers: &HeaderMap) -> bool {
        !self.is_open() && authorization(headers).is_some_and(|a| a.starts_with(sigv4::ALGORITHM))
    }

    /// Who sent the request. Awaits the key store only for the key the request presents.
    pub async fn authenticate(
        &self,
        line: &RequestLine<'_>,
        headers: &HeaderMap,
        body: &[u8],
        now_unix: i64,
    ) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal::local());
        }
        if let Some(value) = authorization(headers) {
            if value.starts_with(sigv4::ALGORITHM) {
                return self.sigv4(line, headers, body, value, now_unix).await;
            }
            if let Some(token) = strip_prefix_ignore_case(value, "Bearer ") {
                return self.api_key(token.trim()).await;
            }
            return Err(AuthError::Malformed(
                "unsupported Authorization scheme (use Bearer or AWS4-HMAC-SHA256)".into(),
            ));
        }
        if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            return self.api_key(key.trim()).await;
        }
        if let Some(cookie) = self.session_cookie(headers) {
            return self.session(cookie, headers, now_unix).await;
        }
        Err(AuthError::Missing)
    }

    fn session_cookie<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        self.sessions.as_ref()?;
        headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::session_cookie)
    }

    /// A console page calling the APIs as whoever signed in: the session must be valid and
    /// the request must carry its CSRF token (a cookie alone is what a forged cross-site
    /// request would have). A tenant's key is checked again, so revoking it ends the session.
    pub async fn session(
        &self,
        cookie: &str,
        headers: &HeaderMap,
        now: i64,
    ) -> Result<Principal, AuthError> {
        let key = self.sessions.as_ref().ok_or(AuthError::SessionExpired)?;
        let session = key.open(cookie, now).ok_or(AuthError::SessionExpired)?;
        let token = headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !key.csrf_matches(&session, token) {
            return Err(AuthError::MissingCsrf);
        }
        self.principal_of(&session).await
    }

    /// Who a console session acts as now (a revoked key: no one).
    pub async fn principal_of(&self, session: &Session) -> Result<Principal, AuthError> {
        match &session.user {
            SessionUser::Operator => Ok(Principal::operator_console()),
            SessionUser::Tenant { key_sha256 } => self
                .keys
                .api_key(key_sha256)
                .await
                .map_err(|e| AuthError::Unavailable(e.0))?
                .ok_or(AuthError::UnknownApiKey),
            // A local session outlives local mode only until the first tenant exists.
            SessionUser::Local if self.is_open() => Ok(Principal::local()),
            SessionUser::Local => Err(AuthError::SessionExpired),
        }
    }

    /// Who an API key belongs to (the console's sign-in).
    pub async fn principal_for_key(&self, key: &str) -> Result<Principal, AuthError> {
        self.api_key(key).await
    }

    async fn api_key(&self, key: &str) -> Result<Principal, AuthError> {
        self.keys
            .api_key(&sha256(key.as_bytes()))
            .await
            .map_err(|e| AuthError::Unavailable(e.0))?
            .ok_or(AuthError::UnknownApiKey)
    }

    async fn sigv4(
        &self,
        line: &RequestLine<'_>,
        headers: &HeaderMap,
        body: &[u8],
        value: &str,
        now: i64,
    ) -> Result<Principal, AuthError> {
        let auth = sigv4::Authorization::parse(value)?;
        let found = self.keys.access_key(&auth.access_key_id).await;
        let Some(key) = found.map_err(|e| AuthError::Unavailable(e.0))? else {
            return Err(AuthError::UnknownAccessKey);
        };
        let req = sigv4::WireRequest {
            method: line.method,
            raw_path: line.raw_path,
            raw_query: line.raw_query,
            authority: line.authority,
            headers,
            body,
        };
        let expect = sigv4::Expectation {
            secret: &key.secret,
            now,
            max_skew: self.max_clock_skew_secs,
            service: self.service,
        };
        sigv4::verify(&req, &auth, &expect).map(|()| key.principal)
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn auth() -> Authenticator {
        Authenticator::new(Arc::new(StaticKeys::new(
            "acme",
            &["sk-good".into()],
            &[("AKID".into(), "s3cret".into())],
        )))
    }

    fn line() -> RequestLine<'static> {
        RequestLine {
            method: "POST",
            raw_path: "/v1/messages",
            raw_query: None,
            authority: None,
        }
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    /// A key store that counts how often it is asked (a database, say).
    struct Counted(StaticKeys, std::sync::atomic::AtomicUsize);

    #[async_trait::async_trait]
    impl KeyStore for Counted {
        async fn api_key(&self, key_sha256: &[u8; 32]) -> Result<Option<Principal>, LookupFailed> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.api_key(key_sha256).await
        }
        async fn access_key(&self, access_key_id: &str) -> Result<Option<AccessKey>, LookupFailed> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.access_key(access_key_id).await
        }
        fn is_empty(&self) -> bool {
            false
        }
    }

    #[tokio::test]
    async fn chained_stores_are_asked_in_order_and_only_as_far_as_needed() {
        let operator = StaticKeys::new("ops", &["sk-ops".into()], &[]);
        let tenants = Arc::new(Counted(
            StaticKeys::new("acme", &["sk-db".into()], &[]),
            Default::default(),
        ));
        let a = Authenticator::new(Arc::new(ChainedKeys(vec![
            Arc::new(operator),
            Arc::clone(&tenants) as Arc<dyn KeyStore>,
        ])));
        let bearer = |k: &str| with("authorization", &format!("Bearer {k}"));
        let asked = || tenants.1.load(Ordering::SeqCst);
        let p = a.authenticate(&line(), &bearer("sk-ops"), b"", 0).await;
        assert_eq!(p.unwrap().tenant, "ops");
        assert_eq!(asked(), 0, "an operator key never reaches the database");
        let p = a.authenticate(&line(), &bearer("sk-db"), b"", 0).await;
        assert_eq!(p.unwrap().tenant, "acme");
        assert_eq!(
            a.authenticate(&line(), &bearer("sk-nope"), b"", 0).await,
            Err(AuthError::UnknownApiKey)
        );
        assert_eq!(asked(), 2);
        // What presents no key is decided without any lookup.
        assert_eq!(
            a.authenticate(&line(), &HeaderMap::new(), b"", 0).await,
            Err(AuthError::Missing)
        );
        assert_eq!(asked(), 2);
    }

    /// A key store that cannot answer (its database is down).
    struct Down;

    #[async_trait::async_trait]
    impl KeyStore for Down {
        async fn api_key(&self, _: &[u8; 32]) -> Result<Option<Principal>, LookupFailed> {
            Err(LookupFailed("connection refused".into()))
        }
        async fn access_key(&self, _: &str) -> Result<Option<AccessKey>, LookupFailed> {
            Err(LookupFailed("connection refused".into()))
        }
        fn is_empty(&self) -> bool {
            false
        }
    }

    /// A store that cannot answer is not a wrong key: 503 to retry, not 401 to give up;
    /// keys found before it in the chain still work.
    #[tokio::test]
    async fn a_key_store_that_cannot_answer_is_unavailable_not_unauthenticated() {
        let operator = StaticKeys::new("acme", &["sk-good".into()], &[]);
        let a = Authenticator::new(Arc::new(ChainedKeys(vec![
            Arc::new(operator),
            Arc::new(Down),
        ])));
        let e = a
            .authenticate(&line(), &with("x-api-key", "sk-other"), b"", 0)
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::Unavailable(_)), "{e:?}");
        assert_eq!(e.aws_error_code(), "ServiceUnavailableException");
        let error: BasaltError = e.into();
        assert_eq!(
            (error.kind.status(), error.retry_after_secs),
            (503, Some(1))
        );
        assert!(a
            .authenticate(&line(), &with("x-api-key", "sk-good"), b"", 0)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn api_keys_in_either_header() {
        let a = auth();
        let p = a
            .authenticate(&line(), &with("authorization", "Bearer sk-good"), b"", 0)
            .await
            .unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.key_id, "config-key-1");
        assert!(a
            .authenticate(&line(), &with("x-api-key", "sk-good"), b"", 0)
            .await
            .is_ok());
        assert_eq!(
            a.authenticate(&line(), &with("x-api-key", "sk-bad"), b"", 0)
                .await,
            Err(AuthError::UnknownApiKey)
        );
        assert_eq!(
            a.authenticate(&line(), &HeaderMap::new(), b"", 0).await,
            Err(AuthError::Missing)
        );
        assert!(matches!(
            a.authenticate(&line(), &with("authorization", "Basic abc"), b"", 0)
                .await,
            Err(AuthError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn sigv4_through_the_key_store() {
        let a = auth();
        let now = 1_796_000_000;
        let mut h = with("host", "localhost:8080");
        h.insert(
            "x-amz-date",
            HeaderValue::from_str(&sigv4::format_amz_date(now)).unwrap(),
        );
        let wire = sigv4::WireRequest {
            method: "POST",
            raw_path: "/v1/messages",
            raw_query: None,
            authority: None,
            headers: &h,
            body: b"{}",
        };
        let sign = |id: &str, secret: &str| {
            sigv4::sign(
                &wire,
                id,
                secret,
                "us-east-1",
                "bedrock",
                &["host", "x-amz-date"],
            )
            .unwrap()
        };
        let mut good = h.clone();
        good.insert(
            "authorization",
            HeaderValue::from_str(&sign("AKID", "s3cret")).unwrap(),
        );
        let p = a.authenticate(&line(), &good, b"{}", now).await.unwrap();
        assert_eq!(p.key_id, "AKID");
        assert!(a.needs_body(&good));

        let mut unknown = h.clone();
        unknown.insert(
            "authorization",
            HeaderValue::from_str(&sign("NOPE", "s3cret")).unwrap(),
        );
        assert_eq!(
            a.authenticate(&line(), &unknown, b"{}", now).await,
            Err(AuthError::UnknownAccessKey)
        );
        let mut wrong = h.clone();
        wrong.insert(
            "authorization",
            HeaderValue::from_str(&sign("AKID", "guess")).unwrap(),
        );
        let e = a
            .authenticate(&line(), &wrong, b"{}", now)
            .await
            .unwrap_err();
        assert_eq!(e.aws_error_code(), "InvalidSignatureException");
        assert_eq!(BasaltError::from(e).status(), 401);
    }

    #[tokio::test]
    async fn open_mode_accepts_anyone_as_local() {
        let a = Authenticator::open();
        assert!(a.is_open());
        let p = a
            .authenticate(&line(), &with("authorization", "Bearer whatever"), b"", 0)
            .await
            .unwrap();
        assert_eq!(p, Principal::local());
    }
}
