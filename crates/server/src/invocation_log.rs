//! Invocation logging, opt-in per tenant: one JSON line per request in Bedrock's
//! `ModelInvocationLog` schema (request id, identity, model, operation, input and output
//! bodies, token counts, timestamp), under `<dir>/<tenant id>/<UTC date>.jsonl`, a new file
//! each day and whenever one passes the size limit.
//!
//! Only tenants that turned logging on are ever written; for everyone else no prompt or
//! completion text is kept anywhere (Basalt logs no bodies through `tracing` either).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use basalt_engine::EventReceiver;

use crate::generation::Answer;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// The response body the API returns for `answer`, as Bedrock's `ModelInvocationLog`
/// records it (`outputBodyJson`): a Converse response for Converse, the model's native
/// body for InvokeModel, a Messages response, an OpenAI completion with this sequence's
/// choice. Streamed calls are logged as the body the same call would have returned whole.
/// A failed generation is logged as the error body the API sent.
pub(crate) fn response_body(
    operation: &str,
    request_id: &str,
    model_id: &str,
    answer: &Answer,
    latency_ms: u64,
) -> Value {
    use basalt_wire::{anthropic, bedrock, openai};
    if let Some(e) = &answer.error {
        return match operation {
            "messages" => to_value(anthropic::error_body(e)),
            "chat.completions" | "completions" => to_value(openai::error_body(e)),
            _ => to_value(bedrock::error_body(e)),
        };
    }
    let reason = answer.reason();
    let usage = &answer.usage;
    match operation {
        "Converse" | "ConverseStream" => to_value(bedrock::converse::response(
            &answer.reasoning,
            &answer.text,
            &answer.calls,
            reason,
            usage,
            latency_ms,
        )),
        "InvokeModel" | "InvokeModelWithResponseStream" => {
            to_value(bedrock::invoke::llama_response(&answer.text, reason, usage))
        }
        "messages" => to_value(anthropic::message(
            request_id,
            model_id,
            &answer.reasoning,
            &answer.text,
            &answer.calls,
            reason,
            answer.stop_sequence.as_deref(),
            usage,
        )),
        "chat.completions" => to_value(openai::Completion {
            id: request_id,
            object: "chat.completion",
            created: crate::generation::unix_now(),
            model: model_id,
            system_fingerprint: "basalt",
            choices: vec![openai::ChatChoice {
                index: 0,
                message: openai::AssistantMessage::new(
                    &answer.reasoning,
                    &answer.text,
                    &answer.calls,
                ),
                logprobs: None,
                finish_reason: Some(openai::finish_reason(reason)),
            }],
            usage: Some(Some(openai::CompletionUsage::of(usage))),
        }),
        _ => to_value(openai::Completion {
            id: request_id,
            object: "text_completion",
            created: crate::generation::unix_now(),
            model: model_id,
            system_fingerprint: "basalt",
            choices: vec![openai::TextChoice {
                index: 0,
                text: answer.text.as_str().into(),
                logprobs: None,
                finish_reason: Some(openai::finish_reason(reason)),
            }],
            usage: Some(Some(openai::CompletionUsage::of(usage))),
        }),
    }
}

/// A typed response body as the log's JSON.
fn to_value(body: impl serde::Serialize) -> Value {
    serde_json::to_value(body).unwrap_or(Value::Null)
}

/// Copies a generation's events into its [`Answer`] on their way to the route. Dropping the
/// route's receiver still cancels the generation: the copier then drops the engine's.
pub(crate) fn tap(mut engine: EventReceiver) -> (EventReceiver, oneshot::Receiver<Answer>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut answer = Answer::default();
        while let Some(event) = engine.recv().await {
            answer.apply(&event);
            if tx.send(event).is_err() {
                break; // the client left
            }
        }
        let _ = done_tx.send(answer);
    });
    (rx, done_rx)
}

pub struct InvocationLog {
    dir: PathBuf,
    max_file_bytes: u64,
    /// Serialises writers so lines never interleave.
    lock: Mutex<()>,
}

/// One invocation, in the `ModelInvocationLog` schema.
pub struct Entry {
    pub timestamp: i64,
    pub tenant: String,
    pub key_id: String,
    pub region: String,
    pub request_id: String,
    pub operation: &'static str,
    pub model_id: String,
    pub input_body: Value,
    pub input_tokens: u64,
    /// What the API returned for this generation, in its own response shape (see
    /// `response_body`).
    pub output: Value,
    pub output_tokens: u64,
}

/// A file's lines, last first, read backwards a block at a time.
struct LinesFromEnd {
    file: std::fs::File,
    /// Bytes before `pending` not yet read.
    unread: u64,
    /// The part of the file read but not yet returned (it starts mid-line unless `unread`
    /// is zero).
    pending: Vec<u8>,
}

impl LinesFromEnd {
    const BLOCK: u64 = 64 << 10;

    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let unread = file.metadata()?.len();
        Ok(Self {
            file,
            unread,
            pending: Vec::new(),
        })
    }

    /// The next line back (without its newline), or `None` at the start of the file.
    fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        loop {
            // A trailing newline ends the last line; it does not start an empty one.
            if self.pending.last() == Some(&b'\n') {
                self.pending.pop();
            }
            if let Some(at) = self.pending.iter().rposition(|&b| b == b'\n') {
                let line = self.pending.split_off(at + 1);
                return Ok(Some(line));
            }
            if self.unread == 0 {
                return Ok((!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending)));
            }
            let take = self.unread.min(Self::BLOCK);
            self.unread -= take;
            let mut block = vec![0u8; take as usize];
            self.file.seek(SeekFrom::Start(self.unread))?;
            self.file.read_exact(&mut block)?;
            block.extend_from_slice(&self.pending);
            self.pending = block;
        }
    }
}

/// Tenant ids are ours (`tnt_` + base62), never a path from a client; still, nothing that
/// could leave the log directory is used as one.
fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(crate) fn iso8601(unix: i64) -> String {
    // YYYYMMDDTHHMMSSZ -> YYYY-MM-DDTHH:MM:SSZ
    let c = basalt_auth::sigv4::format_amz_date(unix);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &c[0..4],
        &c[4..6],
        &c[6..8],
        &c[9..11],
        &c[11..13],
        &c[13..15]
    )
}

impl InvocationLog {
    pub fn new(dir: impl Into<PathBuf>, max_file_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_file_bytes: max_file_bytes.max(4096),
            lock: Mutex::new(()),
        }
    }

    pub fn record(entry: &Entry) -> Value {
        let output = &entry.output;
        let mut record = json!({
            "schemaType": "ModelInvocationLog",
            "schemaVersion": "1.0",
            "timestamp": iso8601(entry.timestamp),
            "accountId": entry.tenant,
            "identity": {"arn": format!("arn:basalt:iam::{}:key/{}", entry.tenant, entry.key_id)},
            "region": entry.region,
            "requestId": entry.request_id,
            "operation": entry.operation,
            "modelId": entry.model_id,
            "input": {
                "inputContentType": "application/json",
                "inputBodyJson": entry.input_body,
                "inputTokenCount": entry.input_tokens,
            },
            "output": {
                "outputContentType": "application/json",
                "outputBodyJson": output,
                "outputTokenCount": entry.output_tokens,
            },
        });
        // Converse's `requestMetadata` (key-value tags for filtering logs) goes where
        // Bedrock's log puts it: beside the input, not only inside it.
        if let (Some(tags), Some(map)) = (
            entry.input_body.get("requestMetadata"),
            record.as_object_mut(),
        ) {
            map.insert("requestMetadata".into(), tags.clone());
        }
        record
    }

    /// Appends one line to the tenant's current file.
    pub fn write(&self, entry: &Entry) -> std::io::Result<PathBuf> {
        let line = format!("{}\n", Self::record(entry));
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if !valid_tenant_id(&entry.tenant) {
            return Err(std::io::Error::other("bad tenant id for a log path"));
        }
        let dir = self.dir.join(&entry.tenant);
        std::fs::create_dir_all(&dir)?;
        let day = &iso8601(entry.timestamp)[..10];
        let path = self.current_file(&dir, day, line.len() as u64);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(line.as_bytes())?;
        f.flush()?;
        Ok(path)
    }

    /// The tenant's latest `limit` entries, newest first (the console's log browser).
    /// Blocking: call it off the async runtime.
    pub fn recent(&self, tenant: &str, limit: usize) -> std::io::Result<Vec<Value>> {
        if !valid_tenant_id(tenant) {
            return Ok(Vec::new());
        }
        let dir = self.dir.join(tenant);
        let mut files: Vec<((String, u32), PathBuf)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_str()?.strip_suffix(".jsonl")?.to_string();
                    let order = match name.split_once('.') {
                        Some((day, n)) => (day.to_string(), n.parse().ok()?),
                        None => (name, 0),
                    };
                    Some((order, e.path()))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        files.sort_by(|a, b| b.0.cmp(&a.0));
        let mut entries = Vec::new();
        for (_, path) in files {
            // Files grow to the rotation size (64 MiB by default): read from the end, only
            // as far back as the entries wanted.
            let mut from_end = LinesFromEnd::open(&path)?;
            while entries.len() < limit {
                let Some(line) = from_end.next_line()? else {
                    break;
                };
                // A line cut short by a crash mid-write is skipped, not fatal.
                if let Ok(entry) = serde_json::from_slice(&line) {
                    entries.push(entry);
                }
            }
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    /// `<day>.jsonl`, or `<day>.<n>.jsonl` for the first `n` whose file has room.
    fn current_file(&self, dir: &Path, day: &str, adding: u64) -> PathBuf {
        let mut n = 0;
        loop {
            let name = if n == 0 {
                format!("{day}.jsonl")
            } else {
                format!("{day}.{n}.jsonl")
            };
            let path = dir.join(name);
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            if size == 0 || size + adding <= self.max_file_bytes {
                return path;
            }
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(output: &Value, ts: i64) -> Entry {
        Entry {
            timestamp: ts,
            tenant: "tnt_abc".into(),
            key_id: "key_1".into(),
            region: "us-east-1".into(),
            request_id: "req_1".into(),
            operation: "Converse",
            model_id: "m".into(),
            input_body: json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}),
            input_tokens: 3,
            output: output.clone(),
            output_tokens: 2,
        }
    }

    #[test]
    fn lines_are_read_back_from_the_end_across_blocks() {
        let path = std::env::temp_dir().join(format!("basalt-lines-{}.txt", std::process::id()));
        let long = "x".repeat(150_000); // longer than two blocks
        let lines = ["first", long.as_str(), "", "third", "last, no newline"];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut back = LinesFromEnd::open(&path).unwrap();
        let mut got = Vec::new();
        while let Some(line) = back.next_line().unwrap() {
            got.push(String::from_utf8(line).unwrap());
        }
        let mut want: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        want.reverse();
        assert_eq!(got, want);
        std::fs::write(&path, "one\ntwo\n").unwrap();
        let mut back = LinesFromEnd::open(&path).unwrap();
        assert_eq!(back.next_line().unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(back.next_line().unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(back.next_line().unwrap(), None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn the_latest_entries_come_back_newest_first_across_files() {
        let dir = std::env::temp_dir().join(format!("basalt-ilog-recent-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Files this small rotate every few lines, so the entries span several.
        let log = InvocationLog::new(&dir, 4096);
        let day = 86_400 * 20_000;
        for i in 0..12 {
            let mut e = entry(&json!({"n": i}), day + i * 3600);
            e.request_id = format!("req_{i}");
            log.write(&e).unwrap();
        }
        let mut tomorrow = entry(&json!({}), day + 86_400);
        tomorrow.request_id = "req_tomorrow".into();
        log.write(&tomorrow).unwrap();
        let files = std::fs::read_dir(dir.join("tnt_abc")).unwrap().count();
        assert!(files > 2, "{files} files");
        let ids: Vec<String> = log
            .recent("tnt_abc", 4)
            .unwrap()
            .iter()
            .map(|v| v["requestId"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["req_tomorrow", "req_11", "req_10", "req_9"]);
        assert_eq!(log.recent("tnt_abc", 100).unwrap().len(), 13);
        assert!(log.recent("tnt_nobody", 5).unwrap().is_empty());
        assert!(log.recent("../tnt_abc", 5).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_bedrock_shaped_lines_and_rotates_by_day_and_size() {
        let dir = std::env::temp_dir().join(format!("basalt-ilog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = InvocationLog::new(&dir, 4096);
        let answer = Answer {
            text: "hello".into(),
            finish: Some(basalt_types::FinishReason::EndOfTurn),
            ..Default::default()
        };
        let t = response_body("Converse", "req_1", "m", &answer, 5);
        let day1 = 1_795_953_600; // 2026-11-29
        let p1 = log.write(&entry(&t, day1)).unwrap();
        assert!(p1.ends_with("tnt_abc/2026-11-29.jsonl"), "{}", p1.display());
        let line = std::fs::read_to_string(&p1).unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["schemaType"], "ModelInvocationLog");
        assert_eq!(v["timestamp"], "2026-11-29T12:00:00Z");
        assert_eq!(v["input"]["inputTokenCount"], 3);
        let body = &v["output"]["outputBodyJson"];
        assert_eq!(body["output"]["message"]["content"][0]["text"], "hello");
        assert_eq!(body["stopReason"], "end_turn");
        let p2 = log.write(&entry(&t, day1 + 86_400)).unwrap();
        assert!(p2.ends_with("2026-11-30.jsonl"));
        // Past the size limit, the day continues in a numbered file.
        let mut last = p1.clone();
        for _ in 0..20 {
            last = log.write(&entry(&t, day1)).unwrap();
        }
        let name = last.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("2026-11-29.") && name != "2026-11-29.jsonl",
            "{name}"
        );
        assert!(std::fs::metadata(&p1).unwrap().len() <= 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Each operation is logged in the shape its API returned, never an internal one (no
    /// Rust variant names, no empty tool lists that the API would not send).
    #[test]
    fn bodies_are_each_apis_own_response() {
        use basalt_types::{FinishReason, ToolCall, Usage};
        let answer = Answer {
            text: String::new(),
            calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }],
            finish: Some(FinishReason::ToolUse),
            usage: Usage {
                input_tokens: 7,
                output_tokens: 3,
                ..Usage::default()
            },
            ..Default::default()
        };
        let converse = response_body("ConverseStream", "r", "m", &answer, 9);
        assert_eq!(converse["stopReason"], "tool_use");
        assert_eq!(
            converse["output"]["message"]["content"][0]["toolUse"]["input"]["city"],
            "Paris"
        );
        let messages = response_body("messages", "msg_1", "m", &answer, 9);
        assert_eq!(messages["stop_reason"], "tool_use");
        assert_eq!(messages["content"][0]["type"], "tool_use");
        let chat = response_body("chat.completions", "chatcmpl-1", "m", &answer, 9);
        assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
            "get_weather"
        );
        assert_eq!(chat["usage"]["prompt_tokens"], 7);
        let plain = Answer {
            text: "hi".into(),
            finish: Some(FinishReason::MaxTokens),
            ..Default::default()
        };
        let llama = response_body("InvokeModel", "r", "m", &plain, 9);
        assert_eq!(llama["generation"], "hi");
        assert_eq!(llama["stop_reason"], "length");
        assert!(!converse.to_string().contains("ToolUse"), "{converse}");
        let failed = Answer {
            error: Some(basalt_types::BasaltError::invalid("tools", "bad schema")),
            ..Default::default()
        };
        let error = response_body("Converse", "r", "m", &failed, 9);
        assert!(
            error["message"].as_str().unwrap().contains("bad schema"),
            "{error}"
        );
    }
}
