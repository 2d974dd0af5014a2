//! The authentication layer in front of every API route.
//!
//! One [`basalt_auth::Authenticator`] decides who is calling, whichever surface the request
//! came in on; this layer only adapts it to HTTP: it reads the body under the server's size
//! limit and deadline (a SigV4 signature covers its hash), stores the
//! [`basalt_auth::Principal`] in the request's extensions for the handlers, and renders
//! failures in the route's own error shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use basalt_auth::{AuthError, RequestLine};
use basalt_types::{BasaltError, ErrorKind};

use crate::error::{AnthropicError, BedrockError, OpenAiError};
use crate::AppState;

/// Which error shape a route answers in.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Bedrock,
}

impl Dialect {
    pub(crate) fn render(self, error: BasaltError, aws_code: Option<&'static str>) -> Response {
        match self {
            Dialect::OpenAi => OpenAiError(error).into_response(),
            Dialect::Anthropic => AnthropicError(error).into_response(),
            Dialect::Bedrock => BedrockError {
                error,
                code: aws_code,
            }
            .into_response(),
        }
    }
}

/// How a request body is read: at most `limit` bytes, all of them within `deadline` of the
/// first poll, so a client trickling a promised body holds nothing for long.
#[derive(Debug, Clone, Copy)]
pub struct BodyRules {
    pub limit: usize,
    pub deadline: std::time::Duration,
}

/// Reads a whole request body under `rules`; the error is the client's (413 or 408).
pub async fn read_body(body: Body, rules: BodyRules) -> Result<bytes::Bytes, BasaltError> {
    match tokio::time::timeout(rules.deadline, axum::body::to_bytes(body, rules.limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_large {
                BasaltError::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "The request body is larger than the server accepts ({} KiB).",
                        rules.limit >> 10
                    ),
                )
                .with_param("body")
            } else {
                BasaltError::invalid("body", format!("Cannot read the request body: {e}"))
            })
        }
        Err(_) => Err(BasaltError::new(
            ErrorKind::RequestTimeout,
            format!(
                "The request body did not arrive within {} seconds.",
                rules.deadline.as_secs()
            ),
        )
        .with_param("body")),
    }
}

/// Reads the body (see [`read_body`]: every API route takes a whole JSON body, and a SigV4
/// signature covers its hash), authenticates the request, and stores the principal in its
/// extensions; or answers with the dialect's 401/403/408/413.
pub async fn require(
    State((state, dialect, rules)): State<(Arc<AppState>, Dialect, BodyRules)>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match read_body(body, rules).await {
        Ok(b) => b,
        Err(e) => return dialect.render(e, None),
    };
    // Keys come from memory (operator keys, the store's cache) at once; only a key the
    // cache does not hold waits for the database.
    let now = crate::generation::unix_now() as i64;
    let verdict = state
        .auth
        .authenticate(&request_line(&parts), &parts.headers, &body, now)
        .await;
    let mut parts = parts;
    match verdict {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => failure(dialect, e),
    }
}

/// The request line as the client sent and signed it: under a nested prefix
/// (`/openai/v1/...`) the router hands routes the URI without it, so the original is read.
fn request_line(parts: &axum::http::request::Parts) -> RequestLine<'_> {
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |original| &original.0);
    RequestLine {
        method: parts.method.as_str(),
        raw_path: uri.path(),
        raw_query: uri.query(),
        authority: uri.authority().map(|a| a.as_str()),
    }
}

fn failure(dialect: Dialect, e: AuthError) -> Response {
    tracing::info!(reason = %e, "authentication failed");
    let code = e.aws_error_code();
    dialect.render(e.into(), Some(code))
}
