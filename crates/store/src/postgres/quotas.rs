//! Quotas counted in PostgreSQL, for replicas that share a database but no Redis: each
//! admission is one transaction holding the tenant's advisory lock, so admissions of one
//! tenant on any replica run one at a time and none can overshoot a limit. Reservations of
//! the last minute and the day's and month's counters live in unlogged tables: they are
//! cheap to write, and after a database crash the counters are rebuilt from usage.

use async_trait::async_trait;
use deadpool_postgres::Transaction;

use super::{backend, PostgresStore};
use crate::{QuotaCounter, QuotaDecision, QuotaLimit, QuotaRequest, StoreError};

/// The database's clock, in milliseconds since the epoch.
const NOW_MS: &str = "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

const WINDOW_MS: i64 = 60_000;

fn signed(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The UTC day's and month's counter names, and the first second of each.
fn periods(now: i64) -> ((String, i64), (String, i64)) {
    let day = now.div_euclid(86_400);
    let (y, m, d) = basalt_auth::sigv4::civil_date(now);
    let month_start = (day - (d - 1)) * 86_400;
    (
        (format!("day:{day}"), day * 86_400),
        (format!("month:{y}-{m:02}"), month_start),
    )
}

/// What a counter holds, created from the usage table (the same transaction's view of it)
/// when this period has none yet.
async fn counter(
    tx: &Transaction<'_>,
    tenant: &str,
    scope: &str,
    period: &str,
    seed: &str,
    since: i64,
) -> Result<f64, StoreError> {
    if let Some(row) = tx
        .query_opt(
            "SELECT value FROM quota_counters WHERE tenant_id = $1 AND scope = $2 AND period = $3",
            &[&tenant, &scope, &period],
        )
        .await
        .map_err(backend)?
    {
        return Ok(row.get(0));
    }
    let kind = period.split(':').next().unwrap_or("day");
    tx.execute(
        "DELETE FROM quota_counters WHERE tenant_id = $1 AND scope = $2
            AND period LIKE $3 || ':%' AND period <> $4",
        &[&tenant, &scope, &kind, &period],
    )
    .await
    .map_err(backend)?;
    let value: f64 = tx
        .query_one(
            &format!(
                "SELECT COALESCE({seed}, 0)::DOUBLE PRECISION FROM usage
                 WHERE tenant_id = $1 AND ($2 = '*' OR model_id = $2) AND created_at >= $3"
            ),
            &[&tenant, &scope, &since],
        )
        .await
        .map_err(backend)?
        .get(0);
    tx.execute(
        "INSERT INTO quota_counters (tenant_id, scope, period, value) VALUES ($1, $2, $3, $4)",
        &[&tenant, &scope, &period, &value],
    )
    .await
    .map_err(backend)?;
    Ok(value)
}

async fn add_to_counter(
    tx: &Transaction<'_>,
    tenant: &str,
    scope: &str,
    period: &str,
    by: f64,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE quota_counters SET value = value + $4
         WHERE tenant_id = $1 AND scope = $2 AND period = $3",
        &[&tenant, &scope, &period, &by],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl QuotaCounter for PostgresStore {
    async fn admit(&self, r: &QuotaRequest<'_>) -> Result<QuotaDecision, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        // The counters are unlogged (a database crash empties them anyway), so the commit
        // need not wait for the WAL to reach the disk while the tenant's lock is held.
        // A tenant's admissions queue on its lock; one that waits long fails rather than
        // holding a pooled connection indefinitely.
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF; SET LOCAL lock_timeout = '3s'")
            .await
            .map_err(backend)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            &[&r.tenant],
        )
        .await
        .map_err(backend)?;
        let now_ms: i64 = tx.query_one(NOW_MS, &[]).await.map_err(backend)?.get(0);
        let ((day, day_start), (month, month_start)) = periods(r.now);
        let day_left = (day_start + 86_400 - r.now).max(1) as u64;
        let tokens = signed(r.tokens);
        let refuse = |scope, limit, retry_after_secs, used| {
            Ok(QuotaDecision::Refused {
                scope,
                limit,
                retry_after_secs,
                used,
            })
        };
        for (i, (scope, q)) in r.quotas.iter().enumerate() {
            tx.execute(
                "DELETE FROM quota_reservations WHERE tenant_id = $1 AND scope = $2 AND at_ms <= $3",
                &[&r.tenant, scope, &(now_ms - WINDOW_MS)],
            )
            .await
            .map_err(backend)?;
            let window = tx
                .query_one(
                    "SELECT COUNT(*), COALESCE(SUM(tokens), 0)::BIGINT, MIN(at_ms)
                     FROM quota_reservations WHERE tenant_id = $1 AND scope = $2",
                    &[&r.tenant, scope],
                )
                .await
                .map_err(backend)?;
            let (requests, used): (i64, i64) = (window.get(0), window.get(1));
            let oldest: Option<i64> = window.get(2);
            let retry = oldest.map_or(1, |at| {
                ((at + WINDOW_MS - now_ms + 999) / 1000).max(1) as u64
            });
            if q.requests_per_minute
                .is_some_and(|rpm| requests >= i64::from(rpm))
            {
                return refuse(i, QuotaLimit::RequestsPerMinute, retry, requests as f64);
            }
            if let Some(tpm) = q.tokens_per_minute.map(signed) {
                if tokens > tpm {
                    return refuse(i, QuotaLimit::LargerThanTokensPerMinute, 0, used as f64);
                }
                if used + tokens > tpm {
                    return refuse(i, QuotaLimit::TokensPerMinute, retry, used as f64);
                }
            }
            if let Some(tpd) = q.tokens_per_day {
                let seed = "SUM(input_tokens + output_tokens)";
                let used = counter(&tx, r.tenant, scope, &day, seed, day_start).await?;
                if used + r.tokens as f64 > tpd as f64 {
                    return refuse(i, QuotaLimit::TokensPerDay, day_left, used);
                }
            }
            if let Some(budget) = q.monthly_budget_usd {
                let spent =
                    counter(&tx, r.tenant, scope, &month, "SUM(cost_usd)", month_start).await?;
                if spent >= budget {
                    return refuse(i, QuotaLimit::MonthlyBudget, day_left, spent);
                }
            }
        }
        let reservation = r.reservation as i64;
        for (scope, q) in r.quotas {
            tx.execute(
                "INSERT INTO quota_reservations (tenant_id, scope, id, at_ms, tokens)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&r.tenant, scope, &reservation, &now_ms, &tokens],
            )
            .await
            .map_err(backend)?;
            if q.tokens_per_day.is_some() {
                add_to_counter(&tx, r.tenant, scope, &day, r.tokens as f64).await?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(QuotaDecision::Admitted)
    }

    async fn settle(
        &self,
        r: &QuotaRequest<'_>,
        used_tokens: u64,
        cost: f64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(backend)?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await
            .map_err(backend)?;
        let ((day, _), (month, _)) = periods(r.now);
        let reservation = r.reservation as i64;
        for (scope, q) in r.quotas {
            tx.execute(
                "UPDATE quota_reservations SET tokens = $4
                 WHERE tenant_id = $1 AND scope = $2 AND id = $3",
                &[&r.tenant, scope, &reservation, &signed(used_tokens)],
            )
            .await
            .map_err(backend)?;
            if q.tokens_per_day.is_some() {
                let by = used_tokens as f64 - r.tokens as f64;
                add_to_counter(&tx, r.tenant, scope, &day, by).await?;
            }
            if q.monthly_budget_usd.is_some() {
                add_to_counter(&tx, r.tenant, scope, &month, cost).await?;
            }
        }
        tx.commit().await.map_err(backend)
    }
}
