//! Errors as each API dialect answers them: the status from the error's kind, the body in
//! the dialect's shape (`basalt-wire`), `Retry-After` when a retry can succeed, and
//! AWS's exception name on Bedrock routes. Server-side failures are logged here, once.
//!
//! This module renders errors; it never decides what went wrong.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use basalt_types::{BasaltError, ErrorKind};

/// An error on an OpenAI-dialect route, rendered in OpenAI's error shape.
pub struct OpenAiError(pub BasaltError);

impl From<BasaltError> for OpenAiError {
    fn from(e: BasaltError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        error_response(&self.0, basalt_wire::openai::error_body(&self.0))
    }
}

/// An error response: the error's status, a dialect's JSON body, `Retry-After` when the
/// client should retry; server-side failures are logged.
pub(crate) fn error_response(error: &BasaltError, body: impl serde::Serialize) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %error.message, "request failed");
    }
    let body = serde_json::to_string(&body).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let retry = match (error.retry_after_secs, error.kind) {
        (Some(s), _) => Some(s),
        (None, ErrorKind::Overloaded) => Some(1),
        _ => None,
    };
    if let Some(secs) = retry {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// An error on an Anthropic-dialect route, rendered in Anthropic's error shape.
pub struct AnthropicError(pub BasaltError);

impl From<BasaltError> for AnthropicError {
    fn from(e: BasaltError) -> Self {
        Self(e)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        error_response(&self.0, basalt_wire::anthropic::error_body(&self.0))
    }
}

/// An error on a Bedrock route: `{"message"}` named by `x-amzn-ErrorType`.
pub struct BedrockError {
    pub error: BasaltError,
    /// Overrides the exception name derived from the error's kind (auth failures use
    /// AWS's own names, such as `InvalidSignatureException`).
    pub code: Option<&'static str>,
}

impl From<BasaltError> for BedrockError {
    fn from(error: BasaltError) -> Self {
        Self { error, code: None }
    }
}

impl IntoResponse for BedrockError {
    fn into_response(self) -> Response {
        let (name, status) = basalt_wire::bedrock::error_code(self.error.kind);
        let name = self.code.unwrap_or(name);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = error_response(&self.error, basalt_wire::bedrock::error_body(&self.error))
            .into_response();
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            HeaderName::from_static("x-amzn-errortype"),
            HeaderValue::from_static(name),
        );
        resp
    }
}

pub(crate) fn body_error(rejection: axum::extract::rejection::BytesRejection) -> BasaltError {
    if rejection.status().as_u16() == 413 {
        BasaltError::new(
            ErrorKind::PayloadTooLarge,
            "The request body is larger than the server accepts.",
        )
        .with_param("body")
    } else {
        BasaltError::invalid("body", format!("Cannot read the request body: {rejection}"))
    }
}
