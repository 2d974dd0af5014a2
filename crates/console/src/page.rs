//! Pages: the templates (embedded, every value escaped as HTML), the headers every console
//! response carries, and the console's errors as pages.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use basalt_store::StoreError;
use minijinja::{context, AutoEscape, Environment, Value};
use serde::de::DeserializeOwned;

use crate::session::Viewer;
use crate::Console;

/// Every template, by name, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("chat.html", include_str!("../templates/chat.html")),
    ("text.html", include_str!("../templates/text.html")),
    (
        "embeddings.html",
        include_str!("../templates/embeddings.html"),
    ),
    ("images.html", include_str!("../templates/images.html")),
    ("models.html", include_str!("../templates/models.html")),
    ("tenants.html", include_str!("../templates/tenants.html")),
    ("tenant.html", include_str!("../templates/tenant.html")),
    ("secret.html", include_str!("../templates/secret.html")),
    ("usage.html", include_str!("../templates/usage.html")),
    ("logs.html", include_str!("../templates/logs.html")),
    (
        "guardrails.html",
        include_str!("../templates/guardrails.html"),
    ),
    (
        "knowledge_bases.html",
        include_str!("../templates/knowledge_bases.html"),
    ),
    ("jobs.html", include_str!("../templates/jobs.html")),
];

pub(crate) fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    // Every template, whatever its name, escapes what it prints; the one exception is
    // markup the console built itself (charts), marked safe where it is made.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_filter("datetime", datetime);
    env.add_filter("bytes", human_bytes);
    env.add_filter("usd", |v: Value| {
        format!("{:.4}", f64::try_from(v).unwrap_or(0.0))
    });
    for (name, source) in TEMPLATES {
        if let Err(e) = env.add_template(name, source) {
            // A template that does not parse is a build defect; the page naming it fails
            // with this error rather than the server refusing to start.
            tracing::error!("console template {name}: {e}");
        }
    }
    env
}

/// Renders a page for a signed-in viewer: the layout gets who is looking and the CSRF
/// token for its forms and scripts.
pub(crate) fn render(
    console: &Console,
    name: &str,
    viewer: &Viewer,
    page: Value,
) -> Result<Html<String>, ConsoleError> {
    let ctx = context! {
        viewer => context! {
            role => viewer.role,
            tenant => viewer.principal.tenant,
            name => viewer.display_name,
        },
        csrf => viewer.csrf,
        ..page
    };
    render_with(console, name, ctx)
}

/// Renders a page for someone not signed in (the sign-in form).
pub(crate) fn render_anonymous(
    console: &Console,
    name: &str,
    page: Value,
) -> Result<Html<String>, ConsoleError> {
    render_with(
        console,
        name,
        context! { viewer => Value::from(()), csrf => "", ..page },
    )
}

fn render_with(console: &Console, name: &str, ctx: Value) -> Result<Html<String>, ConsoleError> {
    let template = console
        .templates
        .get_template(name)
        .map_err(|e| ConsoleError::Internal(format!("template {name}: {e:#}")))?;
    template
        .render(ctx)
        .map(Html)
        .map_err(|e| ConsoleError::Internal(format!("rendering {name}: {e:#}")))
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM` UTC.
fn datetime(value: Value) -> String {
    match i64::try_from(value) {
        Ok(secs) => {
            let (y, m, d) = civil_date(secs.div_euclid(86_400));
            let rem = secs.rem_euclid(86_400);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
                rem / 3600,
                rem % 3600 / 60
            )
        }
        Err(_) => "—".into(),
    }
}

fn human_bytes(value: Value) -> String {
    let b = f64::try_from(value).unwrap_or(0.0);
    match b {
        b if b >= (1u64 << 30) as f64 => format!("{:.1} GiB", b / (1u64 << 30) as f64),
        b if b >= (1u64 << 20) as f64 => format!("{:.1} MiB", b / (1u64 << 20) as f64),
        b if b >= 1024.0 => format!("{:.1} KiB", b / 1024.0),
        b => format!("{b} B"),
    }
}

/// The civil (proleptic Gregorian) date of a day number counted from 1970-01-01.
pub(crate) fn civil_date(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's days-to-civil algorithm, in 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// What goes wrong in the console, each as a page with its status.
#[derive(Debug)]
pub(crate) enum ConsoleError {
    /// No session (or an expired one, or its key revoked): to the sign-in form.
    SignIn,
    NotFound,
    Forbidden(String),
    BadRequest(String),
    Unavailable(String),
    Internal(String),
}

impl From<StoreError> for ConsoleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ConsoleError::NotFound,
            StoreError::Conflict(m) | StoreError::Invalid(m) => ConsoleError::BadRequest(m),
            StoreError::Backend(m) => ConsoleError::Internal(m),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ConsoleError::SignIn => return Redirect::to("/console/login").into_response(),
            ConsoleError::NotFound => (StatusCode::NOT_FOUND, "There is no such page.".into()),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ConsoleError::Unavailable(m) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The console cannot answer right now ({m}). Try again."),
            ),
            ConsoleError::Internal(m) => {
                tracing::error!("console: {m}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server; its log says what.".into(),
                )
            }
        };
        let body = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{code} · Basalt</title><link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
             </head><body><main class=\"narrow\"><h1>{code}</h1><p class=\"error\">{message}</p>\
             <p><a href=\"/console\">Back to the console</a></p></main></body></html>",
            code = status.as_u16(),
            message = escape_html(&message),
        );
        (status, Html(body)).into_response()
    }
}

/// Text made safe to place in HTML, as element content or a quoted attribute.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// A form body, its errors as a console page (axum's own are plain text).
pub(crate) struct ConsoleForm<T>(pub T);

impl<S, T> FromRequest<S> for ConsoleForm<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|axum::Form(v)| ConsoleForm(v))
            .map_err(|e| ConsoleError::BadRequest(format!("This form could not be read: {e}")))
    }
}

/// The policy every console response carries: scripts, styles and connections from this
/// origin only (so injected markup could neither run nor call out), no framing, no
/// referrer to other origins (`same-origin`, not `no-referrer`: under that browsers send
/// `Origin: null` on our own forms, and the origin check needs the real one), nothing
/// cached (pages show secrets once and per-user data).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(20_795), (2026, 12, 8));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(-1), (1969, 12, 31));
    }

    #[test]
    fn every_template_parses() {
        let env = templates();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn escaping_covers_attributes() {
        assert_eq!(
            escape_html(r#"<a href="x" onclick='y'>&"#),
            "&lt;a href=&quot;x&quot; onclick=&#x27;y&#x27;&gt;&amp;"
        );
    }
}
