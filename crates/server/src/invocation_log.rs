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
use basalt_types::GenerateEvent;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// What the model answered, as the log records it.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    pub text: String,
    /// (id, name, arguments JSON text)
    pub tool_calls: Vec<(String, String, String)>,
    pub stop_reason: Option<String>,
    pub error: Option<String>,
}

/// Copies a generation's events into a transcript on their way to the route. Dropping the
/// route's receiver still cancels the generation: the copier then drops the engine's.
pub fn tap(mut engine: EventReceiver) -> (EventReceiver, oneshot::Receiver<Transcript>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut t = Transcript::default();
        while let Some(event) = engine.recv().await {
            match &event {
                GenerateEvent::Text { text, .. } => t.text.push_str(text),
                GenerateEvent::ToolCallStart { id, name, .. } => {
                    t.tool_calls.push((id.clone(), name.clone(), String::new()))
                }
                GenerateEvent::ToolArguments { index, json } => {
                    if let Some(c) = t.tool_calls.get_mut(*index as usize) {
                        c.2.push_str(json);
                    }
                }
                GenerateEvent::Finished { reason, .. } => {
                    t.stop_reason = Some(format!("{reason:?}"))
                }
                GenerateEvent::Failed { error, .. } => t.error = Some(error.message.clone()),
            }
            if tx.send(event).is_err() {
                break; // the client left
            }
        }
        let _ = done_tx.send(t);
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
    pub output: Transcript,
    pub output_tokens: u64,
}

fn iso8601(unix: i64) -> String {
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
        let output = json!({
            "text": entry.output.text,
            "toolCalls": entry.output.tool_calls.iter().map(|(id, name, args)| json!({
                "id": id, "name": name,
                "input": serde_json::from_str::<Value>(args).unwrap_or(Value::String(args.clone())),
            })).collect::<Vec<_>>(),
            "stopReason": entry.output.stop_reason,
            "error": entry.output.error,
        });
        json!({
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
        })
    }

    /// Appends one line to the tenant's current file.
    pub fn write(&self, entry: &Entry) -> std::io::Result<PathBuf> {
        let line = format!("{}\n", Self::record(entry));
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Tenant ids are ours (`tnt_` + base62), never a path from a client; still, refuse
        // anything that could leave the log directory.
        if entry.tenant.is_empty()
            || !entry
                .tenant
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
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

    fn entry(t: &Transcript, ts: i64) -> Entry {
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
            output: t.clone(),
            output_tokens: 2,
        }
    }

    #[test]
    fn writes_bedrock_shaped_lines_and_rotates_by_day_and_size() {
        let dir = std::env::temp_dir().join(format!("basalt-ilog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = InvocationLog::new(&dir, 4096);
        let t = Transcript {
            text: "hello".into(),
            ..Default::default()
        };
        let day1 = 1_795_953_600; // 2026-11-29
        let p1 = log.write(&entry(&t, day1)).unwrap();
        assert!(p1.ends_with("tnt_abc/2026-11-29.jsonl"), "{}", p1.display());
        let line = std::fs::read_to_string(&p1).unwrap();
        let v: Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["schemaType"], "ModelInvocationLog");
        assert_eq!(v["timestamp"], "2026-11-29T12:00:00Z");
        assert_eq!(v["input"]["inputTokenCount"], 3);
        assert_eq!(v["output"]["outputBodyJson"]["text"], "hello");
        let p2 = log.write(&entry(&t, day1 + 86_400)).unwrap();
        assert!(p2.ends_with("2026-11-30.jsonl"));
        // Past the size limit, the day continues in a numbered file.
        let mut last = p1.clone();
        for _ in 0..20 {
            last = log.write(&entry(&t, day1)).unwrap();
        }
        assert!(
            last.to_string_lossy().contains("2026-11-29.1")
                || last.to_string_lossy().contains("2026-11-29.2")
        );
        assert!(std::fs::metadata(&p1).unwrap().len() <= 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
