//! Signing in and out, and who is looking at a page.
//!
//! The admin token opens the operator's view; a tenant's API key opens that tenant's. The
//! session lives in a signed cookie (`basalt_auth::session`): HttpOnly, SameSite=Strict,
//! expiring. Every form that changes something carries the session's CSRF token, and a
//! request whose `Origin` or `Sec-Fetch-Site` says it came from another site is refused
//! before the token is even looked at.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use basalt_auth::session::{session_cookie, SESSION_COOKIE};
use basalt_auth::{sha256, AuthError, Principal, Session, SessionKey, SessionUser};
use serde::Deserialize;

use crate::page::{self, ConsoleError, ConsoleForm};
use crate::{Console, Shared};

/// Whose view a page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// The admin token: every tenant, and the administration pages.
    Operator,
    /// An API key: its tenant's models, usage and objects only.
    Tenant,
    /// Local mode: the one local user, no sign-in.
    Local,
}

/// The signed-in user of a request.
pub(crate) struct Viewer {
    pub principal: Principal,
    pub role: Role,
    /// The session's CSRF token, for the page to embed.
    pub csrf: String,
    /// What the header calls the viewer: a tenant's name, `operator`, `local user`.
    pub display_name: String,
    session: Session,
}

impl Viewer {
    /// The operator's pages answer 404 to everyone else: a tenant learns nothing by
    /// guessing their URLs.
    pub fn require_operator(&self) -> Result<(), ConsoleError> {
        match self.role {
            Role::Operator => Ok(()),
            _ => Err(ConsoleError::NotFound),
        }
    }

    /// The tenant whose data this viewer may see; `None` for the operator (all of them).
    pub fn own_tenant(&self) -> Option<&str> {
        match self.role {
            Role::Operator => None,
            Role::Tenant | Role::Local => Some(&self.principal.tenant),
        }
    }

    /// Whether a form's token is this session's, and the request came from our own pages.
    pub fn check_form(
        &self,
        console: &Console,
        headers: &HeaderMap,
        token: &str,
    ) -> Result<(), ConsoleError> {
        same_origin(headers)?;
        let key = sessions(console)?;
        if key.csrf_matches(&self.session, token) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "This form has no valid CSRF token: reload the page and try again.".into(),
            ))
        }
    }
}

fn sessions(console: &Console) -> Result<&SessionKey, ConsoleError> {
    console
        .app
        .auth
        .sessions()
        .ok_or_else(|| ConsoleError::Unavailable("this server has no console sessions".into()))
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl FromRequestParts<Arc<Console>> for Viewer {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let key = sessions(console)?;
        let session = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session_cookie)
            .and_then(|cookie| key.open(cookie, unix_now()))
            .ok_or(ConsoleError::SignIn)?;
        let principal = match console.app.auth.principal_of(&session).await {
            Ok(p) => p,
            Err(AuthError::Unavailable(why)) => return Err(ConsoleError::Unavailable(why)),
            // A revoked or expired key, a suspended tenant, local mode over.
            Err(_) => return Err(ConsoleError::SignIn),
        };
        let (role, display_name) = match session.user {
            SessionUser::Operator => (Role::Operator, "operator".to_string()),
            SessionUser::Local => (Role::Local, "local user".to_string()),
            SessionUser::Tenant { .. } => {
                // Keys from the server's configuration belong to no stored tenant.
                let stored = match &console.app.platform {
                    Some(p) => p.store.tenant(&principal.tenant).await.ok(),
                    None => None,
                };
                let name = stored.map_or_else(|| principal.tenant.clone(), |t| t.name);
                (Role::Tenant, name)
            }
        };
        Ok(Viewer {
            principal,
            role,
            csrf: key.csrf_token(&session),
            display_name,
            session,
        })
    }
}

/// HTTP/2 carries the host in the URI's authority (`:authority`), not a `Host` header;
/// [`same_origin`] compares `Origin` with `Host`, so the authority is copied there first.
pub(crate) async fn host_from_authority(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !request.headers().contains_key(header::HOST) {
        let authority = request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
        if let Some(value) = authority {
            request.headers_mut().insert(header::HOST, value);
        }
    }
    next.run(request).await
}

/// Refuses a request a browser says came from another site. Browsers send `Origin` on
/// every POST and `Sec-Fetch-Site` on every request; clients that send neither are not
/// browsers, and a cross-site forgery needs a browser.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), ConsoleError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if text("sec-fetch-site").is_some_and(|site| site == "cross-site" || site == "same-site") {
        return Err(ConsoleError::Forbidden(
            "requests from other sites are refused".into(),
        ));
    }
    if let (Some(origin), Some(host)) = (text("origin"), text("host")) {
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        if origin_host != host {
            return Err(ConsoleError::Forbidden(
                "requests from other origins are refused".into(),
            ));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    /// Present to sign in as the operator while in local mode.
    operator: Option<String>,
}

/// `GET /console/login`: the sign-in form; in local mode, straight in as the local user
/// (`?operator` shows the form, for the admin token).
pub(crate) async fn login_page(
    State(console): Shared,
    Query(query): Query<LoginQuery>,
) -> Result<Response, ConsoleError> {
    if console.app.auth.is_open() && query.operator.is_none() {
        return open_session(&console, SessionUser::Local);
    }
    login_form(&console, None, StatusCode::OK)
}

fn login_form(
    console: &Console,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, ConsoleError> {
    let html = page::render_anonymous(
        console,
        "login.html",
        minijinja::context! { error => error },
    )?;
    Ok((status, html).into_response())
}

#[derive(Deserialize)]
pub(crate) struct SignIn {
    #[serde(default)]
    credential: String,
}

/// `POST /console/login`: the admin token opens the operator's view, an API key its
/// tenant's. Neither: the form again, and nothing about which part was wrong.
pub(crate) async fn sign_in(
    State(console): Shared,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<SignIn>,
) -> Result<Response, ConsoleError> {
    same_origin(&headers)?;
    let credential = form.credential.trim();
    if credential.is_empty() {
        return login_form(
            &console,
            Some("Enter the admin token or an API key."),
            StatusCode::BAD_REQUEST,
        );
    }
    let hash = sha256(credential.as_bytes());
    let is_admin = console
        .app
        .admin_token_sha256
        .is_some_and(|expected| basalt_auth::constant_time_eq(&hash, &expected));
    if is_admin {
        tracing::info!("console: the operator signed in");
        return open_session(&console, SessionUser::Operator);
    }
    match console.app.auth.principal_for_key(credential).await {
        Ok(principal) => {
            tracing::info!(tenant = %principal.tenant, key = %principal.key_id, "console: a tenant signed in");
            open_session(&console, SessionUser::Tenant { key_sha256: hash })
        }
        Err(AuthError::Unavailable(why)) => Err(ConsoleError::Unavailable(why)),
        Err(_) => login_form(
            &console,
            Some("That is neither the admin token nor a valid API key."),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

fn open_session(console: &Console, user: SessionUser) -> Result<Response, ConsoleError> {
    let key = sessions(console)?;
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce)
        .map_err(|e| ConsoleError::Internal(format!("no randomness for a session: {e}")))?;
    let ttl = console.config.session_ttl_secs;
    let (cookie, _) = key.issue(user, unix_now(), ttl, nonce);
    let cookie = set_cookie(&cookie, ttl, console.config.secure_cookies)?;
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response())
}

fn set_cookie(value: &str, max_age: i64, secure: bool) -> Result<HeaderValue, ConsoleError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .map_err(|e| ConsoleError::Internal(format!("bad cookie: {e}")))
}

#[derive(Deserialize)]
pub(crate) struct SignOut {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: the browser forgets the session (the cookie is the session).
pub(crate) async fn sign_out(
    State(console): Shared,
    viewer: Viewer,
    headers: HeaderMap,
    ConsoleForm(form): ConsoleForm<SignOut>,
) -> Result<Response, ConsoleError> {
    viewer.check_form(&console, &headers, &form.csrf)?;
    let cookie = set_cookie("", 0, console.config.secure_cookies)?;
    Ok((
        [(header::SET_COOKIE, cookie)],
        Redirect::to("/console/login"),
    )
        .into_response())
}
