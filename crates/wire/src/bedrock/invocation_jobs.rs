//! Bedrock batch inference (`CreateModelInvocationJob` and the rest of the `bedrock`
//! client's model-invocation-job operations) as data: the create body, the job as `Get`
//! and `List` return it, and the JSONL records a job reads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /model-invocation-job`. `roleArn`, `vpcConfig` and `tags` are accepted and kept
/// (Basalt reads the tenant's own storage, not through a role).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInvocationJob {
    pub job_name: String,
    pub role_arn: String,
    pub model_id: String,
    pub client_request_token: Option<String>,
    pub input_data_config: InputDataConfig,
    pub output_data_config: OutputDataConfig,
    pub timeout_duration_in_hours: Option<u32>,
    pub model_invocation_type: Option<InvocationType>,
    pub vpc_config: Option<Value>,
    pub tags: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputDataConfig {
    pub s3_input_data_config: S3InputDataConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3InputDataConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_input_format: Option<String>,
    pub s3_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_bucket_owner: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputDataConfig {
    pub s3_output_data_config: S3OutputDataConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3OutputDataConfig {
    pub s3_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_encryption_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_bucket_owner: Option<String>,
}

/// What each record's `modelInput` is: an `InvokeModel` body or a `Converse` body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvocationType {
    #[default]
    InvokeModel,
    Converse,
}

/// A job as `GetModelInvocationJob` returns it (and, whole, each entry of a listing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationJob {
    pub job_arn: String,
    pub job_name: String,
    pub model_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_request_token: Option<String>,
    pub role_arn: String,
    /// `Submitted`, `InProgress`, `Completed`, `PartiallyCompleted`, `Failed`, `Stopping`,
    /// `Stopped`.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub submit_time: String,
    pub last_modified_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub input_data_config: InputDataConfig,
    pub output_data_config: OutputDataConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_duration_in_hours: Option<u32>,
    pub model_invocation_type: InvocationType,
    pub total_record_count: u64,
    pub processed_record_count: u64,
    pub success_record_count: u64,
    pub error_record_count: u64,
}

impl InvocationJob {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Completed" | "PartiallyCompleted" | "Failed" | "Stopped" | "Expired"
        )
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobList<'a> {
    pub invocation_job_summaries: &'a [InvocationJob],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<&'a str>,
}

/// One input record: `recordId` (optional) and the body to run.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputRecord {
    pub record_id: Option<String>,
    pub model_input: Value,
}

/// `manifest.json.out`: the job's totals.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub total_record_count: u64,
    pub processed_record_count: u64,
    pub success_record_count: u64,
    pub error_record_count: u64,
    pub input_token_count: u64,
    pub output_token_count: u64,
}

/// The tokens an output record used, read from its `modelOutput` (a Converse body's
/// `usage`, or a Llama body's counts); zero for an error record.
pub fn record_tokens(record: &Value) -> (u64, u64) {
    let Some(out) = record.get("modelOutput") else {
        return (0, 0);
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    match out.get("usage") {
        Some(u) => (n(u.get("inputTokens")), n(u.get("outputTokens"))),
        None => (
            n(out.get("prompt_token_count")),
            n(out.get("generation_token_count")),
        ),
    }
}
