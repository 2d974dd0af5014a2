//! Usage records in PostgreSQL: one row per request, written by the replica that served it.
//! PostgreSQL commits concurrent writers together itself, so there is no group commit here
//! as in SQLite.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{backend, PostgresStore};
use crate::{GuardrailUnits, StoreError, UsageQuery, UsageRecord, UsageTotals};

const RECORD_COLUMNS: &str = "request_id, tenant_id, key_id, model_id, surface, operation, \
    input_tokens, cached_input_tokens, output_tokens, latency_ms, ttft_ms, status, cost_usd, \
    created_at, guardrail_word_units, guardrail_sensitive_information_units, \
    guardrail_contextual_grounding_units, guardrail_topic_units, guardrail_content_units";

/// Counts are BIGINT; none is ever negative.
fn count(r: &Row, i: usize) -> u64 {
    r.get::<_, i64>(i).max(0) as u64
}

fn units(r: &Row, first: usize) -> GuardrailUnits {
    GuardrailUnits {
        word: count(r, first),
        sensitive_information: count(r, first + 1),
        contextual_grounding: count(r, first + 2),
        topic: count(r, first + 3),
        content: count(r, first + 4),
    }
}

fn record(r: &Row) -> UsageRecord {
    UsageRecord {
        request_id: r.get(0),
        tenant_id: r.get(1),
        key_id: r.get(2),
        model_id: r.get(3),
        surface: r.get(4),
        operation: r.get(5),
        input_tokens: count(r, 6),
        cached_input_tokens: count(r, 7),
        output_tokens: count(r, 8),
        latency_ms: count(r, 9),
        time_to_first_token_ms: r.get::<_, Option<i64>>(10).map(|v| v.max(0) as u64),
        status: r.get(11),
        cost_usd: r.get(12),
        created_at: r.get(13),
        guardrail_units: units(r, 14),
    }
}

fn signed(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The filter of a usage query, as a `WHERE` clause and its parameters.
struct Filter {
    clause: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    fn of(q: &UsageQuery) -> Self {
        let mut clauses = Vec::new();
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |column: &str, op: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            clauses.push(format!("{column} {op} ${}", args.len()));
        };
        if let Some(t) = &q.tenant_id {
            add("tenant_id", "=", Box::new(t.clone()));
        }
        if let Some(m) = &q.model_id {
            add("model_id", "=", Box::new(m.clone()));
        }
        if let Some(f) = q.from {
            add("created_at", ">=", Box::new(f));
        }
        if let Some(t) = q.to {
            add("created_at", "<", Box::new(t));
        }
        let clause = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        Self { clause, args }
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

impl PostgresStore {
    pub(super) async fn insert_usage(&self, u: &UsageRecord) -> Result<i64, StoreError> {
        let g = &u.guardrail_units;
        let row = self
            .client()
            .await?
            .query_one(
                &format!(
                    "INSERT INTO usage (replica_id, {RECORD_COLUMNS})
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17, $18, $19, $20)
                     RETURNING id"
                ),
                &[
                    &self.replica_id,
                    &u.request_id,
                    &u.tenant_id,
                    &u.key_id,
                    &u.model_id,
                    &u.surface,
                    &u.operation,
                    &signed(u.input_tokens),
                    &signed(u.cached_input_tokens),
                    &signed(u.output_tokens),
                    &signed(u.latency_ms),
                    &u.time_to_first_token_ms.map(signed),
                    &u.status,
                    &u.cost_usd,
                    &u.created_at,
                    &signed(g.word),
                    &signed(g.sensitive_information),
                    &signed(g.contextual_grounding),
                    &signed(g.topic),
                    &signed(g.content),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(row.get(0))
    }

    pub(super) async fn complete_usage_row(
        &self,
        id: i64,
        u: &UsageRecord,
    ) -> Result<(), StoreError> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE usage SET input_tokens = $2, cached_input_tokens = $3,
                    output_tokens = $4, latency_ms = $5, ttft_ms = $6, status = $7, cost_usd = $8
                 WHERE id = $1",
                &[
                    &id,
                    &signed(u.input_tokens),
                    &signed(u.cached_input_tokens),
                    &signed(u.output_tokens),
                    &signed(u.latency_ms),
                    &u.time_to_first_token_ms.map(signed),
                    &u.status,
                    &u.cost_usd,
                ],
            )
            .await
            .map_err(backend)?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("usage record {id}")));
        }
        Ok(())
    }

    /// A guardrail's units onto its call's row (the first with its request id and tenant),
    /// or a row of their own when the call has none.
    pub(super) async fn add_guardrail_units(&self, u: &UsageRecord) -> Result<(), StoreError> {
        let g = &u.guardrail_units;
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE usage SET
                    guardrail_word_units = guardrail_word_units + $3,
                    guardrail_sensitive_information_units =
                        guardrail_sensitive_information_units + $4,
                    guardrail_contextual_grounding_units =
                        guardrail_contextual_grounding_units + $5,
                    guardrail_topic_units = guardrail_topic_units + $6,
                    guardrail_content_units = guardrail_content_units + $7
                 WHERE id = (SELECT MIN(id) FROM usage WHERE request_id = $1 AND tenant_id = $2)",
                &[
                    &u.request_id,
                    &u.tenant_id,
                    &signed(g.word),
                    &signed(g.sensitive_information),
                    &signed(g.contextual_grounding),
                    &signed(g.topic),
                    &signed(g.content),
                ],
            )
            .await
            .map_err(backend)?;
        if changed == 0 {
            self.insert_usage(u).await?;
        }
        Ok(())
    }

    pub(super) async fn usage_rows(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        let filter = Filter::of(q);
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM usage {} ORDER BY id DESC LIMIT {}",
            filter.clause,
            q.limit.unwrap_or(1000).min(100_000)
        );
        let rows = self
            .client()
            .await?
            .query(&sql, &filter.params())
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(record).collect())
    }

    pub(super) async fn usage_sums(&self, q: &UsageQuery) -> Result<UsageTotals, StoreError> {
        let filter = Filter::of(q);
        // SUM of BIGINT is NUMERIC in PostgreSQL: cast back so the row reads as integers.
        let sql = format!(
            "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0)::BIGINT,
                    COALESCE(SUM(cached_input_tokens), 0)::BIGINT,
                    COALESCE(SUM(output_tokens), 0)::BIGINT,
                    COALESCE(SUM(cost_usd), 0)::DOUBLE PRECISION,
                    COALESCE(SUM(guardrail_word_units), 0)::BIGINT,
                    COALESCE(SUM(guardrail_sensitive_information_units), 0)::BIGINT,
                    COALESCE(SUM(guardrail_contextual_grounding_units), 0)::BIGINT,
                    COALESCE(SUM(guardrail_topic_units), 0)::BIGINT,
                    COALESCE(SUM(guardrail_content_units), 0)::BIGINT
             FROM usage {}",
            filter.clause
        );
        let r = self
            .client()
            .await?
            .query_one(&sql, &filter.params())
            .await
            .map_err(backend)?;
        Ok(UsageTotals {
            requests: count(&r, 0),
            input_tokens: count(&r, 1),
            cached_input_tokens: count(&r, 2),
            output_tokens: count(&r, 3),
            cost_usd: r.get(4),
            guardrail_units: units(&r, 5),
        })
    }
}
