//! The Amazon Bedrock dialect: the runtime (`Converse`, `ConverseStream`, `InvokeModel`,
//! `InvokeModelWithResponseStream`, `CountTokens`) and the catalog part of the control plane
//! (`ListFoundationModels`, `GetFoundationModel`).
//!
//! Shapes follow botocore's service models (`bedrock-runtime/2023-09-30`,
//! `bedrock/2023-04-20`); streaming responses use AWS event-stream framing
//! ([`eventstream`]). Errors are `{"message"}` bodies named by the `x-amzn-ErrorType`
//! header, or exception frames inside a stream.

pub mod content;
pub mod control;
pub mod converse;
pub mod eventstream;
pub mod guardrails;
pub mod invocation_jobs;
pub mod invoke;
pub mod knowledge;
pub mod output;

use basalt_types::{BasaltError, ErrorKind};
use serde::de::DeserializeOwned;

/// Parses a Bedrock request body; errors name the field at fault as Bedrock does
/// (`messages.0.content.1`).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, BasaltError> {
    crate::parse_json_naming(body, crate::FieldPath::Dotted)
}

/// Bedrock's exception name and HTTP status for an error.
pub fn error_code(kind: ErrorKind) -> (&'static str, u16) {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::UnsupportedForModel
        | ErrorKind::PayloadTooLarge => ("ValidationException", 400),
        ErrorKind::ModelNotFound | ErrorKind::NotFound => ("ResourceNotFoundException", 404),
        ErrorKind::RequestTimeout => ("RequestTimeoutException", 408),
        ErrorKind::Overloaded | ErrorKind::QuotaExceeded => ("ThrottlingException", 429),
        ErrorKind::Unauthenticated => ("UnrecognizedClientException", 403),
        ErrorKind::InvalidSignature => ("InvalidSignatureException", 403),
        ErrorKind::PermissionDenied => ("AccessDeniedException", 403),
        ErrorKind::Internal => ("InternalServerException", 500),
        ErrorKind::Unavailable => ("ServiceUnavailableException", 503),
    }
}

/// The body of an error response: `{"message": ...}`, with the field named when known
/// (Bedrock's own validation messages name the member the same way).
pub fn error_body(e: &BasaltError) -> output::ErrorBody {
    let message = match &e.param {
        Some(p) if !e.message.contains(p.as_str()) => format!("{p}: {}", e.message),
        _ => e.message.clone(),
    };
    output::ErrorBody { message }
}

/// The in-stream exception frame for an error that happens after the stream started.
pub fn stream_exception(e: &BasaltError) -> Vec<u8> {
    let name = match e.kind {
        ErrorKind::Overloaded | ErrorKind::QuotaExceeded => "throttlingException",
        ErrorKind::InvalidRequest
        | ErrorKind::ContextLengthExceeded
        | ErrorKind::UnsupportedForModel
        | ErrorKind::PayloadTooLarge => "validationException",
        ErrorKind::Internal => "internalServerException",
        ErrorKind::Unavailable => "serviceUnavailableException",
        _ => "modelStreamErrorException",
    };
    let body = serde_json::to_string(&error_body(e)).unwrap_or_default();
    eventstream::exception(name, body.as_bytes())
}

/// Ids under which a model may be addressed, most specific first: the id itself, the
/// resource of an ARN (`arn:aws:bedrock:<region>::foundation-model/<id>`), and a
/// cross-region inference-profile id without its geography (`us.<id>`).
pub fn model_id_candidates(raw: &str) -> Vec<String> {
    let mut out = vec![raw.to_string()];
    let resource = if raw.starts_with("arn:") {
        raw.rsplit('/').next().unwrap_or(raw)
    } else {
        raw
    };
    if resource != raw {
        out.push(resource.to_string());
    }
    const GEOGRAPHIES: [&str; 8] = [
        "us.", "eu.", "apac.", "global.", "us-gov.", "jp.", "au.", "ca.",
    ];
    for geo in GEOGRAPHIES {
        if let Some(rest) = resource.strip_prefix(geo) {
            if rest.contains('.') {
                out.push(rest.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_resolve_from_arns_and_profiles() {
        assert_eq!(
            model_id_candidates("meta.llama3-8b-instruct-v1:0"),
            ["meta.llama3-8b-instruct-v1:0"]
        );
        assert_eq!(
            model_id_candidates(
                "arn:aws:bedrock:us-east-1::foundation-model/google.gemma-3-270m-v1:0"
            ),
            [
                "arn:aws:bedrock:us-east-1::foundation-model/google.gemma-3-270m-v1:0",
                "google.gemma-3-270m-v1:0"
            ]
        );
        assert_eq!(
            model_id_candidates("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.google.gemma-3-270m-v1:0")
                .last()
                .map(String::as_str),
            Some("google.gemma-3-270m-v1:0")
        );
        assert_eq!(model_id_candidates("us.google.x-v1:0")[1], "google.x-v1:0");
    }

    #[test]
    fn errors_carry_bedrock_names() {
        assert_eq!(
            error_code(ErrorKind::InvalidRequest),
            ("ValidationException", 400)
        );
        assert_eq!(error_code(ErrorKind::ModelNotFound).1, 404);
        assert_eq!(
            error_code(ErrorKind::Overloaded),
            ("ThrottlingException", 429)
        );
        let body = error_body(&BasaltError::invalid(
            "inferenceConfig.temperature",
            "must be between 0 and 1",
        ));
        assert_eq!(
            body.message,
            "inferenceConfig.temperature: must be between 0 and 1"
        );
        let frame = stream_exception(&BasaltError::internal("boom"));
        let msgs = eventstream::decode_all(&frame).unwrap();
        assert_eq!(
            msgs[0].header(":exception-type"),
            Some("internalServerException")
        );
    }
}
