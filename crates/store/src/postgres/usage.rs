//! Usage records in PostgreSQL: one row per request, written by the replica that served it.
//!
//! Writes are group-committed, as in the SQLite store: every request writes twice (when it
//! is admitted and when it ends), each durably before it goes on, and a commit waits for
//! the WAL to reach the disk. One writer task takes every write queued meanwhile and
//! commits them in one transaction, so concurrent requests share each flush. A write that
//! fails makes its batch run again one write at a time, so it fails only its own caller.

use deadpool_postgres::{GenericClient, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::{backend, pool_error, PostgresStore};
use crate::{GuardrailUnits, StoreError, UsageQuery, UsageRecord, UsageTotals};

/// The most writes one transaction takes.
const MAX_BATCH: usize = 256;

/// A usage write for the group commit.
pub(super) enum UsageWrite {
    Insert(UsageRecord),
    Complete(i64, UsageRecord),
    /// A guardrail's units onto its call's row, or a row of their own if there is none.
    AddGuardrailUnits(UsageRecord),
}

struct Queued {
    write: UsageWrite,
    done: oneshot::Sender<Result<i64, StoreError>>,
}

/// The group commit's queue; its task ends when the store is dropped.
pub(super) struct UsageWriter {
    queue: mpsc::UnboundedSender<Queued>,
}

impl UsageWriter {
    pub(super) fn start(pool: Pool, replica_id: String) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            StoreError::Backend("the PostgreSQL store needs a tokio runtime".into())
        })?;
        let (queue, mut queued) = mpsc::unbounded_channel::<Queued>();
        runtime.spawn(async move {
            while let Some(first) = queued.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queued.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                commit_batch(&pool, &replica_id, batch).await;
            }
        });
        Ok(Self { queue })
    }

    /// Queues a write and waits until it is committed: the record's id for an insert.
    pub(super) async fn write(&self, write: UsageWrite) -> Result<i64, StoreError> {
        let (done, result) = oneshot::channel();
        self.queue
            .send(Queued { write, done })
            .map_err(|_| StoreError::Backend("the usage writer has stopped".into()))?;
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::Backend("a usage write was lost".into())))
    }
}

/// Commits a batch in one transaction and tells each writer its own result. If the
/// transaction fails, each write runs again on its own, so only a bad write's caller hears
/// of it.
async fn commit_batch(pool: &Pool, replica_id: &str, batch: Vec<Queued>) {
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let e = pool_error(e);
            for q in batch {
                let _ = q.done.send(Err(StoreError::Backend(e.to_string())));
            }
            return;
        }
    };
    let together = async {
        let tx = client.transaction().await.map_err(backend)?;
        let mut results = Vec::with_capacity(batch.len());
        for q in &batch {
            // NotFound (a completion of an unknown record) is the caller's answer, not a
            // failed statement: it does not abort the transaction.
            match apply(&tx, replica_id, &q.write).await {
                Err(StoreError::Backend(e)) => return Err(StoreError::Backend(e)),
                result => results.push(result),
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok::<_, StoreError>(results)
    }
    .await;
    match together {
        Ok(results) => {
            for (q, result) in batch.into_iter().zip(results) {
                let _ = q.done.send(result);
            }
        }
        Err(_) if batch.len() > 1 => {
            for q in batch {
                let result = apply(&client, replica_id, &q.write).await;
                let _ = q.done.send(result);
            }
        }
        Err(e) => {
            for q in batch {
                let _ = q.done.send(Err(StoreError::Backend(e.to_string())));
            }
        }
    }
}

async fn apply(
    client: &impl GenericClient,
    replica_id: &str,
    write: &UsageWrite,
) -> Result<i64, StoreError> {
    match write {
        UsageWrite::Insert(u) => insert(client, replica_id, u).await,
        UsageWrite::Complete(id, u) => complete(client, *id, u).await.map(|()| *id),
        UsageWrite::AddGuardrailUnits(u) => {
            if add_units(client, u).await? == 0 {
                insert(client, replica_id, u).await?;
            }
            Ok(0)
        }
    }
}

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

async fn insert(
    client: &impl GenericClient,
    replica_id: &str,
    u: &UsageRecord,
) -> Result<i64, StoreError> {
    let [word, sensitive, grounding, topic, content] = u.guardrail_units.columns();
    let row = client
        .query_one(
            &format!(
                "INSERT INTO usage (replica_id, {RECORD_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                    $16, $17, $18, $19, $20)
                 RETURNING id"
            ),
            &[
                &replica_id,
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
                &word,
                &sensitive,
                &grounding,
                &topic,
                &content,
            ],
        )
        .await
        .map_err(backend)?;
    Ok(row.get(0))
}

async fn complete(client: &impl GenericClient, id: i64, u: &UsageRecord) -> Result<(), StoreError> {
    let changed = client
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

/// Adds a guardrail's units to its call's row (the first with its request id and tenant);
/// the rows changed (none when the call has no row).
async fn add_units(client: &impl GenericClient, u: &UsageRecord) -> Result<u64, StoreError> {
    let [word, sensitive, grounding, topic, content] = u.guardrail_units.columns();
    client
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
                &word,
                &sensitive,
                &grounding,
                &topic,
                &content,
            ],
        )
        .await
        .map_err(backend)
}

impl PostgresStore {
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
