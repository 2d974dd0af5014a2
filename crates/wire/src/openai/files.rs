//! OpenAI's files and batches as data: the `file` and `batch` objects as returned and
//! stored, the create-batch body, and the JSONL lines a batch reads and writes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `file` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileObject {
    pub id: String,
    pub object: String,
    pub bytes: u64,
    pub created_at: u64,
    pub filename: String,
    /// `batch`, `batch_output`, `user_data`, ...
    pub purpose: String,
    pub status: String,
    pub expires_at: Option<u64>,
    pub status_details: Option<String>,
}

/// The purposes a client may upload for.
pub const UPLOAD_PURPOSES: &[&str] = &[
    "batch",
    "user_data",
    "assistants",
    "fine-tune",
    "vision",
    "evals",
];

/// A page of a list (`object: "list"`).
#[derive(Debug, Serialize)]
pub struct List<'a, T> {
    pub object: &'static str,
    pub data: &'a [T],
    pub first_id: Option<&'a str>,
    pub last_id: Option<&'a str>,
    pub has_more: bool,
}

/// `DELETE /v1/files/{id}`.
#[derive(Debug, Serialize)]
pub struct FileDeleted<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub deleted: bool,
}

/// `POST /v1/batches`.
#[derive(Debug, Deserialize)]
pub struct CreateBatch {
    pub input_file_id: String,
    pub endpoint: String,
    pub completion_window: String,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// The endpoints a batch may run.
pub const BATCH_ENDPOINTS: &[&str] = &["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

/// Errors that failed a whole batch (before any record ran).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchErrors {
    pub object: String,
    pub data: Vec<BatchError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub line: Option<u64>,
}

/// The `batch` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchObject {
    pub id: String,
    pub object: String,
    pub endpoint: String,
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `cancelling`,
    /// `cancelled` (`expired` never happens: Basalt runs a batch until it is done).
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: u64,
    pub in_progress_at: Option<u64>,
    pub expires_at: Option<u64>,
    pub finalizing_at: Option<u64>,
    pub completed_at: Option<u64>,
    pub failed_at: Option<u64>,
    pub expired_at: Option<u64>,
    pub cancelling_at: Option<u64>,
    pub cancelled_at: Option<u64>,
    pub request_counts: RequestCounts,
    pub metadata: Option<BTreeMap<String, String>>,
}

impl BatchObject {
    /// Whether the batch has ended (nothing more will change).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "completed" | "failed" | "cancelled" | "expired"
        )
    }
}

/// One line of a batch's input file.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchInputLine {
    pub custom_id: String,
    pub method: String,
    pub url: String,
    pub body: Value,
}

/// One line of a batch's output or error file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchOutputLine {
    pub id: String,
    pub custom_id: Option<String>,
    pub response: Option<BatchResponse>,
    pub error: Option<BatchLineError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub status_code: u16,
    pub request_id: String,
    pub body: Value,
}

/// A line that could not be run at all (not JSON, no `custom_id`, the wrong endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}

impl BatchOutputLine {
    /// Whether the record succeeded (it goes to the output file, else to the error file).
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.response.as_ref().is_some_and(|r| r.status_code == 200)
    }
}
