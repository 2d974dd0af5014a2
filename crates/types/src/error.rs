//! The error taxonomy shared by every layer.
//!
//! An error knows its kind (and so its HTTP status) and, for validation errors, the request
//! field it is about. Each API dialect renders it in its own shape (`basalt-wire`); nothing
//! here knows about any dialect.

use thiserror::Error;

/// What went wrong, coarsely: enough to pick an HTTP status and a dialect's error type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or a parameter is out of range.
    InvalidRequest,
    /// The prompt (plus the requested output) does not fit the model's context window.
    ContextLengthExceeded,
    /// The model id is not in the catalog.
    ModelNotFound,
    /// Any other unknown resource (route, file).
    NotFound,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// The client did not send its request (the body) within the server's deadline.
    RequestTimeout,
    /// The server cannot take more work right now; the client may retry.
    Overloaded,
    /// No credentials, or credentials that name no known key.
    Unauthenticated,
    /// A SigV4 signature that does not verify (wrong secret, tampered request, stale clock).
    InvalidSignature,
    /// The caller is known but may not do this (e.g. no access to the model).
    PermissionDenied,
    /// A quota (requests or tokens per minute, tokens per day, budget) is used up.
    QuotaExceeded,
    /// The model cannot serve this kind of request (e.g. chat on a base model).
    UnsupportedForModel,
    /// A bug or an I/O failure on our side.
    Internal,
    /// A service the request depends on (the shared quota store) cannot be reached; the
    /// client may retry.
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status code this kind of error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::ContextLengthExceeded
            | ErrorKind::UnsupportedForModel => 400,
            ErrorKind::Unauthenticated | ErrorKind::InvalidSignature => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => 404,
            ErrorKind::RequestTimeout => 408,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::Overloaded | ErrorKind::QuotaExceeded => 429,
            ErrorKind::Internal => 500,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// An error that can reach a client.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{message}")]
pub struct BasaltError {
    pub kind: ErrorKind,
    pub message: String,
    /// The request field the error is about, when there is one (`messages[0].content`).
    pub param: Option<String>,
    /// When the client may retry (`Retry-After`), for overload and quota errors.
    pub retry_after_secs: Option<u64>,
}

impl BasaltError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            param: None,
            retry_after_secs: None,
        }
    }

    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::InvalidRequest,
            message: message.into(),
            param: Some(param.into()),
            retry_after_secs: None,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            kind: ErrorKind::ModelNotFound,
            message: format!("The model `{model}` does not exist or is not loaded"),
            param: Some("model".into()),
            retry_after_secs: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_kind() {
        assert_eq!(BasaltError::invalid("n", "bad").status(), 400);
        assert_eq!(BasaltError::model_not_found("x").status(), 404);
        assert_eq!(
            BasaltError::new(ErrorKind::PayloadTooLarge, "big").status(),
            413
        );
        assert_eq!(
            BasaltError::new(ErrorKind::Overloaded, "busy").status(),
            429
        );
        assert_eq!(BasaltError::internal("oops").status(), 500);
    }
}
