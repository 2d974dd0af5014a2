//! Usage records in SQLite: the group commit that lets concurrent records share one fsync,
//! and the filter every usage query shares.

use rusqlite::{params, Connection};

use super::backend;
use crate::{StoreError, UsageQuery, UsageRecord};

/// A usage write for the group commit.
pub(super) enum UsageWrite {
    Insert(UsageRecord),
    Complete(i64, UsageRecord),
    /// A guardrail's units onto its call's row, or a row of their own if there is none.
    AddGuardrailUnits(UsageRecord),
}

pub(super) struct QueuedUsage {
    pub(super) write: UsageWrite,
    pub(super) done: std::sync::mpsc::SyncSender<Result<i64, StoreError>>,
}

/// Runs a batch of usage writes in one transaction and tells each writer its own result;
/// one write failing (a record id that does not exist) fails only that writer. If the
/// commit itself fails, every writer of the batch hears so.
pub(super) fn apply_usage_batch(conn: &mut Connection, batch: Vec<QueuedUsage>) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return fail_batch(batch, &e),
    };
    let results: Vec<Result<i64, StoreError>> =
        batch.iter().map(|q| apply_usage(&tx, &q.write)).collect();
    match tx.commit() {
        Ok(()) => {
            for (q, r) in batch.into_iter().zip(results) {
                let _ = q.done.send(r);
            }
        }
        Err(e) => fail_batch(batch, &e),
    }
}

fn fail_batch(batch: Vec<QueuedUsage>, e: &rusqlite::Error) {
    for q in batch {
        let _ = q.done.send(Err(StoreError::Backend(e.to_string())));
    }
}

fn apply_usage(conn: &Connection, write: &UsageWrite) -> Result<i64, StoreError> {
    match write {
        UsageWrite::AddGuardrailUnits(u) => {
            let [word, sensitive, grounding, topic, content] = u.guardrail_units.columns();
            let changed = conn
                .execute(
                    "UPDATE usage SET
                        guardrail_word_units = guardrail_word_units + ?3,
                        guardrail_sensitive_information_units =
                            guardrail_sensitive_information_units + ?4,
                        guardrail_contextual_grounding_units =
                            guardrail_contextual_grounding_units + ?5,
                        guardrail_topic_units = guardrail_topic_units + ?6,
                        guardrail_content_units = guardrail_content_units + ?7
                     WHERE id = (SELECT MIN(id) FROM usage
                                 WHERE request_id = ?1 AND tenant_id = ?2)",
                    params![
                        u.request_id,
                        u.tenant_id,
                        word,
                        sensitive,
                        grounding,
                        topic,
                        content
                    ],
                )
                .map_err(backend)?;
            if changed == 0 {
                return apply_usage(conn, &UsageWrite::Insert(u.clone()));
            }
            Ok(0)
        }
        UsageWrite::Insert(u) => {
            let [word, sensitive, grounding, topic, content] = u.guardrail_units.columns();
            conn.execute(
                "INSERT INTO usage (request_id, tenant_id, key_id, model_id, surface, operation,
                    input_tokens, cached_input_tokens, output_tokens, latency_ms, ttft_ms, status,
                    cost_usd, created_at, guardrail_word_units,
                    guardrail_sensitive_information_units, guardrail_contextual_grounding_units,
                    guardrail_topic_units, guardrail_content_units)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19)",
                params![
                    u.request_id,
                    u.tenant_id,
                    u.key_id,
                    u.model_id,
                    u.surface,
                    u.operation,
                    u.input_tokens as i64,
                    u.cached_input_tokens as i64,
                    u.output_tokens as i64,
                    u.latency_ms as i64,
                    u.time_to_first_token_ms.map(|v| v as i64),
                    u.status,
                    u.cost_usd,
                    u.created_at,
                    word,
                    sensitive,
                    grounding,
                    topic,
                    content
                ],
            )
            .map_err(backend)?;
            Ok(conn.last_insert_rowid())
        }
        UsageWrite::Complete(id, u) => {
            let changed = conn
                .execute(
                    "UPDATE usage SET input_tokens = ?2, cached_input_tokens = ?3,
                        output_tokens = ?4, latency_ms = ?5, ttft_ms = ?6, status = ?7,
                        cost_usd = ?8
                     WHERE id = ?1",
                    params![
                        id,
                        u.input_tokens as i64,
                        u.cached_input_tokens as i64,
                        u.output_tokens as i64,
                        u.latency_ms as i64,
                        u.time_to_first_token_ms.map(|v| v as i64),
                        u.status,
                        u.cost_usd,
                    ],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("usage record {id}")));
            }
            Ok(*id)
        }
    }
}

pub(super) fn where_usage(q: &UsageQuery) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let mut clauses = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(t) = &q.tenant_id {
        clauses.push("tenant_id = ?");
        args.push(Value::Text(t.clone()));
    }
    if let Some(m) = &q.model_id {
        clauses.push("model_id = ?");
        args.push(Value::Text(m.clone()));
    }
    if let Some(f) = q.from {
        clauses.push("created_at >= ?");
        args.push(Value::Integer(f));
    }
    if let Some(t) = q.to {
        clauses.push("created_at < ?");
        args.push(Value::Integer(t));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}
