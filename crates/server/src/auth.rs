//! The authentication layer in front of every API route.
//!
//! One [`basalt_auth::Authenticator`] decides who is calling, whichever surface the request
//! came in on; this layer only adapts it to HTTP: it buffers the body when a SigV4
//! signature covers it, stores the [`basalt_auth::Principal`] in the request's extensions
//! for the handlers, and renders failures in the route's own error shape.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use basalt_auth::{AuthError, RequestLine};
use basalt_types::{BasaltError, ErrorKind};

use crate::anthropic::AnthropicError;
use crate::bedrock::BedrockError;
use crate::{AppState, OpenAiError};

/// Which error shape a route answers in.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    Bedrock,
}

impl Dialect {
    fn render(self, error: BasaltError, aws_code: Option<&'static str>) -> Response {
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

/// Authenticates the request, or answers it with the dialect's 401/403.
pub async fn require(
    State((state, dialect, body_limit)): State<(Arc<AppState>, Dialect, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let auth = &state.auth;
    let body = if auth.needs_body(&parts.headers) {
        match axum::body::to_bytes(body, body_limit).await {
            Ok(b) => b,
            Err(_) => {
                let e = BasaltError::new(
                    ErrorKind::PayloadTooLarge,
                    "The request body is larger than the server accepts.",
                )
                .with_param("body");
                return dialect.render(e, None);
            }
        }
    } else {
        // Not needed: leave the body streaming to the handler untouched.
        return match authenticate(&state, &parts, &[]) {
            Ok(principal) => {
                parts.extensions.insert(principal);
                next.run(Request::from_parts(parts, body)).await
            }
            Err(e) => failure(dialect, e),
        };
    };
    match authenticate(&state, &parts, &body) {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => failure(dialect, e),
    }
}

fn authenticate(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<basalt_auth::Principal, AuthError> {
    let line = RequestLine {
        method: parts.method.as_str(),
        raw_path: parts.uri.path(),
        raw_query: parts.uri.query(),
    };
    state
        .auth
        .authenticate(&line, &parts.headers, body, crate::unix_now() as i64)
}

fn failure(dialect: Dialect, e: AuthError) -> Response {
    tracing::info!(reason = %e, "authentication failed");
    let code = e.aws_error_code();
    dialect.render(e.into(), Some(code))
}
