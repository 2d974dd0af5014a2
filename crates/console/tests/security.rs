#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

//! The console's security properties over HTTP, against the whole application (API and
//! console routers, a real SQLite store): sign-in, escaping of everything a page shows,
//! CSRF on every state change, tenants kept to their own pages, revocation.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use basalt_auth::{sha256, Authenticator, ChainedKeys, SessionKey};
use basalt_server::invocation_log::{Entry, InvocationLog};
use basalt_server::platform::{Platform, Prices};
use basalt_server::{router, AppState, ServerConfig};
use basalt_store::{SecretBox, SqliteStore, Store, StoreKeys, UsageRecord};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-console-tests";
const HOST: &str = "console.test";

/// What a hostile tenant name, key name, model field or model output might carry.
const PROBES: &[&str] = &[
    "<script>alert(1)</script>",
    "\"><img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
];

struct TestPlatform {
    app: axum::Router,
    store: Arc<SqliteStore>,
    log: Arc<InvocationLog>,
    log_dir: std::path::PathBuf,
}

fn platform() -> TestPlatform {
    let store = Arc::new(SqliteStore::in_memory(SecretBox::new(&[3; 32])).unwrap());
    let keys = ChainedKeys(vec![Arc::new(StoreKeys(Arc::clone(&store)))]);
    let admin_hash = sha256(ADMIN.as_bytes());
    let auth = Authenticator::with_mode(Arc::new(keys), false)
        .with_sessions(SessionKey::derive(&[5; 32], &admin_hash));
    let log_dir = std::env::temp_dir().join(format!(
        "basalt-console-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let state = AppState::new(Vec::new())
        .with_auth(auth)
        .with_admin_token_hash(admin_hash)
        .with_invocation_log(InvocationLog::new(&log_dir, 1 << 20))
        .with_platform(Arc::new(Platform::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Prices::new(),
        )));
    let state = Arc::new(state);
    let log = Arc::clone(state.invocation_log.as_ref().unwrap());
    let app = router(Arc::clone(&state), ServerConfig::default())
        .merge(basalt_console::routes(state, Default::default()));
    TestPlatform {
        app,
        store,
        log,
        log_dir,
    }
}

impl Drop for TestPlatform {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

struct Reply {
    status: StatusCode,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

/// A browser: keeps the session cookie, reads the page's CSRF token, sends forms from
/// the console's own origin.
struct Browser<'a> {
    app: &'a axum::Router,
    cookie: Option<String>,
    csrf: String,
}

impl<'a> Browser<'a> {
    fn new(app: &'a axum::Router) -> Self {
        Self {
            app,
            cookie: None,
            csrf: String::new(),
        }
    }

    async fn send(&mut self, request: axum::http::request::Builder, body: Body) -> Reply {
        let mut request = request.header(header::HOST, HOST);
        if let Some(c) = &self.cookie {
            request = request.header(header::COOKIE, c);
        }
        let response = self
            .app
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let header_text = |name| {
            response
                .headers()
                .get(name)
                .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_string())
        };
        let (location, set_cookie) = (
            header_text(header::LOCATION),
            header_text(header::SET_COOKIE),
        );
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(c) = &set_cookie {
            let pair = c.split(';').next().unwrap().to_string();
            self.cookie = if pair.ends_with('=') {
                None
            } else {
                Some(pair)
            };
        }
        if let Some(token) = body
            .split("name=\"csrf-token\" content=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        {
            self.csrf = token.to_string();
        }
        Reply {
            status,
            location,
            set_cookie,
            body,
        }
    }

    async fn get(&mut self, uri: &str) -> Reply {
        self.send(Request::get(uri), Body::empty()).await
    }

    /// A form post; `csrf` is added unless the fields name it.
    async fn post(&mut self, uri: &str, fields: &[(&str, &str)]) -> Reply {
        let mut pairs: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(k, _)| *k == "csrf") {
            pairs.push(("csrf".into(), self.csrf.clone()));
        }
        self.post_raw(uri, &pairs, &[]).await
    }

    async fn post_raw(
        &mut self,
        uri: &str,
        pairs: &[(String, String)],
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, format!("http://{HOST}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        self.send(request, Body::from(body)).await
    }

    async fn sign_in(&mut self, credential: &str) -> Reply {
        let reply = self
            .post("/console/login", &[("credential", credential)])
            .await;
        // Load a page, for its CSRF token.
        self.get("/console").await;
        reply
    }

    /// An API call with the session, as the playground makes it.
    async fn api(&mut self, uri: &str, with_csrf: bool) -> Reply {
        let mut request = Request::get(uri);
        if with_csrf {
            request = request.header("x-basalt-csrf", self.csrf.clone());
        }
        self.send(request, Body::empty()).await
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_no_probe(page: &str, context: &str) {
    for probe in PROBES {
        assert!(
            !page.contains(probe),
            "{context} reflects {probe} unescaped:\n{page}"
        );
    }
    // Escaped text may still read "onerror=alert"; a tag opening is what must never appear.
    for opening in ["<img src=x", "<svg onload", "<script>alert"] {
        assert!(!page.contains(opening), "{context} opens {opening}");
    }
}

/// Creates a tenant through the console; returns its id.
async fn create_tenant(operator: &mut Browser<'_>, name: &str) -> String {
    let reply = operator
        .post("/console/tenants", &[("name", name), ("all_models", "on")])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
    let location = reply.location.unwrap();
    location.rsplit('/').next().unwrap().to_string()
}

/// Creates an API key for a tenant through the console; returns (id, secret).
async fn create_key(operator: &mut Browser<'_>, tenant: &str, name: &str) -> (String, String) {
    let reply = operator
        .post(
            &format!("/console/tenants/{tenant}/keys"),
            &[("name", name)],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let secret = reply
        .body
        .split("id=\"secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_string();
    let id = reply
        .body
        .split("Key id <code>")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_string();
    (id, secret)
}

#[tokio::test]
async fn signing_in_takes_the_admin_token_or_an_api_key_and_nothing_else() {
    let p = platform();
    let mut anonymous = Browser::new(&p.app);
    let reply = anonymous.get("/console").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/console/login"));

    let reply = anonymous
        .post("/console/login", &[("credential", "not-a-key-7731")])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        !reply.body.contains("not-a-key-7731"),
        "the credential is echoed"
    );
    assert!(anonymous.cookie.is_none());

    let mut operator = Browser::new(&p.app);
    let reply = operator
        .post("/console/login", &[("credential", ADMIN)])
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    let cookie = reply.set_cookie.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age=28800", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let page = operator.get("/console/tenants").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains(ADMIN));

    let tenant = create_tenant(&mut operator, "alpha").await;
    let (_, key) = create_key(&mut operator, &tenant, "web").await;
    let mut user = Browser::new(&p.app);
    assert_eq!(user.sign_in(&key).await.status, StatusCode::SEE_OTHER);
    let page = user.get("/console").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(">alpha<"), "the tenant's name is shown");
    assert!(
        !page.body.contains("/console/tenants\""),
        "no administration link"
    );

    // Signing out forgets the cookie.
    let reply = user.post("/console/logout", &[]).await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert!(reply.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(user.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_malformed_form_is_a_clear_400_page() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    let token = operator.csrf.clone();
    // No `name`; then bytes that are not a form at all.
    let reply = operator
        .post_raw("/console/tenants", &[("csrf".into(), token)], &[])
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(
        reply.body.contains("This form could not be read"),
        "{}",
        reply.body
    );
    let reply = operator
        .send(
            Request::post("/console/tenants")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::ORIGIN, format!("http://{HOST}")),
            Body::from(vec![0xff, 0xfe, b'=', b'%', b'z']),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.body.starts_with("<!doctype html>"));
    assert!(p.store.tenants().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_page_has_the_security_headers() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    for uri in [
        "/console/login",
        "/console",
        "/console/chat",
        "/console/usage",
    ] {
        let response = p
            .app
            .clone()
            .oneshot(
                Request::get(uri)
                    .header(header::COOKIE, operator.cookie.clone().unwrap())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let h = response.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("http"),
            "{csp}"
        );
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
    }
}

#[tokio::test]
async fn no_page_reflects_unescaped_input() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    let tenant = create_tenant(&mut operator, "alpha").await;
    for probe in PROBES {
        // Stored, then shown: key names, quota and grant models, a guardrail id.
        let (_, _) = create_key(&mut operator, &tenant, probe).await;
        let reply = operator
            .post(
                &format!("/console/tenants/{tenant}/quotas"),
                &[("model", probe), ("requests_per_minute", "5")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", reply.body);
        let reply = operator
            .post(
                &format!("/console/tenants/{tenant}/guardrail"),
                &[
                    ("guardrail_identifier", probe),
                    ("guardrail_version", "DRAFT"),
                ],
            )
            .await;
        assert_no_probe(&reply.body, "the guardrail form");
        // Refused, with the input in the error: grants of unknown models, bad numbers,
        // bad names.
        for (uri, fields) in [
            (
                format!("/console/tenants/{tenant}/grants"),
                vec![("model", *probe)],
            ),
            (
                format!("/console/tenants/{tenant}/quotas"),
                vec![("model", "*"), ("tokens_per_day", *probe)],
            ),
            (
                format!("/console/tenants/{tenant}/settings"),
                vec![("status", *probe), ("weight", "1")],
            ),
            ("/console/tenants".to_string(), vec![("name", *probe)]),
        ] {
            let reply = operator.post(&uri, &fields).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{uri}: {}",
                reply.body
            );
            assert_no_probe(&reply.body, &uri);
        }
        // In URLs and queries.
        let encoded = encode(probe);
        for uri in [
            format!("/console/tenants/{encoded}"),
            format!("/console/usage?tenant={encoded}"),
            format!("/console/logs?tenant={encoded}"),
            format!("/console/assets/{encoded}"),
        ] {
            let reply = operator.get(&uri).await;
            assert_no_probe(&reply.body, &uri);
        }
    }
    let page = operator.get(&format!("/console/tenants/{tenant}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_no_probe(&page.body, "the tenant page");
    assert!(
        page.body.contains("&lt;script&gt;alert(1)"),
        "the probe is shown, escaped"
    );

    // Model output in the invocation log, shown to the operator.
    operator
        .post(
            &format!("/console/tenants/{tenant}/settings"),
            &[
                ("status", "active"),
                ("weight", "1"),
                ("log_invocations", "on"),
            ],
        )
        .await;
    for probe in PROBES {
        p.log
            .write(&Entry {
                timestamp: 1_796_700_000,
                tenant: tenant.clone(),
                key_id: probe.to_string(),
                region: "us-east-1".into(),
                request_id: probe.to_string(),
                operation: "Converse",
                model_id: probe.to_string(),
                input_body: json!({"messages": [{"role": "user", "content": [{"text": probe}]}]}),
                input_tokens: 3,
                output: json!({"output": {"message": {"content": [{"text": probe}]}}}),
                output_tokens: 4,
            })
            .unwrap();
    }
    let page = operator
        .get(&format!("/console/logs?tenant={tenant}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.body.matches("class=\"card log-entry\"").count(),
        PROBES.len()
    );
    assert_no_probe(&page.body, "the invocation log");
    let usage = operator.get("/console/usage").await;
    assert_no_probe(&usage.body, "the usage page");
}

#[tokio::test]
async fn state_changes_without_the_csrf_token_are_refused() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    let tenant = create_tenant(&mut operator, "alpha").await;
    let (key_id, _) = create_key(&mut operator, &tenant, "kept").await;
    let mut other = Browser::new(&p.app);
    other.sign_in(ADMIN).await;
    let foreign_token = other.csrf.clone();
    assert_ne!(foreign_token, operator.csrf);

    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/console/tenants".into(), vec![("name", "beta")]),
        (
            format!("/console/tenants/{tenant}/settings"),
            vec![("status", "suspended")],
        ),
        (
            format!("/console/tenants/{tenant}/keys"),
            vec![("name", "x")],
        ),
        (
            format!("/console/tenants/{tenant}/keys/{key_id}/revoke"),
            vec![],
        ),
        (format!("/console/tenants/{tenant}/access-keys"), vec![]),
        (
            format!("/console/tenants/{tenant}/grants"),
            vec![("model", "*")],
        ),
        (
            format!("/console/tenants/{tenant}/grants/revoke"),
            vec![("model", "*")],
        ),
        (
            format!("/console/tenants/{tenant}/quotas"),
            vec![("model", "*"), ("requests_per_minute", "1")],
        ),
        (
            format!("/console/tenants/{tenant}/guardrail"),
            vec![("guardrail_identifier", "")],
        ),
        ("/console/logout".into(), vec![]),
    ];
    for (uri, fields) in &forms {
        let pairs = |token: Option<&str>| {
            let mut v: Vec<(String, String)> = fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(t) = token {
                v.push(("csrf".into(), t.to_string()));
            }
            v
        };
        let missing = operator.post_raw(uri, &pairs(None), &[]).await;
        assert_eq!(
            missing.status,
            StatusCode::FORBIDDEN,
            "{uri} without a token"
        );
        let foreign = operator
            .post_raw(uri, &pairs(Some(&foreign_token)), &[])
            .await;
        assert_eq!(
            foreign.status,
            StatusCode::FORBIDDEN,
            "{uri} with another session's token"
        );
        let token = operator.csrf.clone();
        let cross_site = operator
            .post_raw(
                uri,
                &pairs(Some(&token)),
                &[("sec-fetch-site", "cross-site")],
            )
            .await;
        assert_eq!(
            cross_site.status,
            StatusCode::FORBIDDEN,
            "{uri} from another site"
        );
    }
    // Nothing changed.
    assert_eq!(p.store.tenants().await.unwrap().len(), 1);
    let keys = p.store.api_keys(&tenant).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_at.is_none());
    assert!(p.store.access_keys(&tenant).await.unwrap().is_empty());
    assert_eq!(
        p.store.granted_models(&tenant).await.unwrap(),
        vec!["*".to_string()]
    );
    assert!(p.store.quotas(&tenant).await.unwrap().is_empty());
    assert_eq!(p.store.tenant(&tenant).await.unwrap().status, "active");

    // The API takes a session only with its token in the header.
    assert_eq!(
        operator.api("/v1/models", false).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        operator.api("/v1/models", true).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_tenant_reaches_no_other_tenants_pages() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    let alpha = create_tenant(&mut operator, "alpha").await;
    let beta = create_tenant(&mut operator, "beta").await;
    let (_, alpha_key) = create_key(&mut operator, &alpha, "web").await;
    let (beta_key_id, _) = create_key(&mut operator, &beta, "web").await;
    for (tenant, tokens) in [(&alpha, 11u64), (&beta, 1000)] {
        p.store
            .record_usage(&UsageRecord {
                request_id: format!("req-{tenant}"),
                tenant_id: tenant.to_string(),
                key_id: "k".into(),
                model_id: "m".into(),
                surface: "openai".into(),
                operation: "chat.completions".into(),
                input_tokens: tokens,
                cached_input_tokens: 0,
                output_tokens: 1,
                latency_ms: 5,
                time_to_first_token_ms: Some(2),
                status: "ok".into(),
                cost_usd: 0.0,
                guardrail_units: Default::default(),
                created_at: rand_suffix() as i64 / 1_000_000_000,
            })
            .await
            .unwrap();
    }
    let mut user = Browser::new(&p.app);
    user.sign_in(&alpha_key).await;
    for uri in [
        "/console/tenants".to_string(),
        format!("/console/tenants/{beta}"),
        format!("/console/tenants/{alpha}"),
    ] {
        assert_eq!(user.get(&uri).await.status, StatusCode::NOT_FOUND, "{uri}");
    }
    for (uri, fields) in [
        (
            format!("/console/tenants/{beta}/keys"),
            vec![("name", "stolen")],
        ),
        (
            format!("/console/tenants/{beta}/keys/{beta_key_id}/revoke"),
            vec![],
        ),
        (
            format!("/console/tenants/{alpha}/grants"),
            vec![("model", "*")],
        ),
        ("/console/tenants".to_string(), vec![("name", "gamma")]),
    ] {
        assert_eq!(
            user.post(&uri, &fields).await.status,
            StatusCode::NOT_FOUND,
            "{uri}"
        );
    }
    assert_eq!(p.store.api_keys(&beta).await.unwrap().len(), 1);
    assert!(p.store.api_keys(&beta).await.unwrap()[0]
        .revoked_at
        .is_none());

    // Usage and logs: the tenant filter is the operator's; a tenant sees its own.
    let usage = user.get(&format!("/console/usage?tenant={beta}")).await;
    assert_eq!(usage.status, StatusCode::OK);
    assert!(
        usage.body.contains("id=\"total-input\">11<"),
        "{}",
        usage.body
    );
    assert!(!usage.body.contains(">1000<"));
    let usage = operator.get(&format!("/console/usage?tenant={beta}")).await;
    assert!(usage.body.contains("id=\"total-input\">1000<"));
    let logs = user.get(&format!("/console/logs?tenant={beta}")).await;
    assert_eq!(logs.status, StatusCode::OK);
    assert!(!logs.body.contains(&beta));
}

#[tokio::test]
async fn revoking_the_key_ends_its_console_session() {
    let p = platform();
    let mut operator = Browser::new(&p.app);
    operator.sign_in(ADMIN).await;
    let tenant = create_tenant(&mut operator, "alpha").await;
    let (key_id, key) = create_key(&mut operator, &tenant, "web").await;
    let mut user = Browser::new(&p.app);
    user.sign_in(&key).await;
    assert_eq!(user.get("/console/chat").await.status, StatusCode::OK);
    assert_eq!(user.api("/v1/models", true).await.status, StatusCode::OK);

    let page = operator.get(&format!("/console/tenants/{tenant}")).await;
    assert!(!page.body.contains(&key), "a secret is shown again");
    let reply = operator
        .post(
            &format!("/console/tenants/{tenant}/keys/{key_id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);

    let reply = user.get("/console/chat").await;
    assert_eq!(reply.status, StatusCode::SEE_OTHER);
    assert_eq!(reply.location.as_deref(), Some("/console/login"));
    assert_eq!(
        user.api("/v1/models", true).await.status,
        StatusCode::UNAUTHORIZED
    );
}
