//! Quota enforcement: requests per minute, tokens per minute (reserved at admission,
//! corrected to the real use at the end), tokens per UTC day and a monthly budget, per
//! tenant and per model or for all models (`*`).
//!
//! Three ledgers keep the counts: [`local::LocalLedger`] in this process's memory (exact
//! for one replica), [`shared::RedisLedger`] in Redis (exact across every replica: each
//! admission is one atomic server-side script), and [`database::DatabaseLedger`] in the
//! PostgreSQL database replicas share when there is no Redis (exact too: one transaction
//! per admission, serialised per tenant). What a check needs from the usage store
//! (this day's tokens, this month's spend, after a restart) is read by the ledger, never
//! while holding a lock. This module decides admission; it never meters (the store does).

pub mod database;
pub mod local;
pub mod shared;

use std::collections::HashMap;
use std::sync::Arc;

use basalt_store::QuotaLimit;
use basalt_store::{Quota, Store, UsageQuery};
use basalt_types::{BasaltError, ErrorKind};

/// One admission: a tenant's quotas that apply to the model, and what the request may use.
pub struct Admission<'a> {
    pub tenant: &'a str,
    /// (scope: the model id or `*`, its quota).
    pub quotas: &'a [(String, Quota)],
    /// Prompt tokens plus the most the request may generate.
    pub tokens: u64,
    /// Seconds since the epoch.
    pub now: i64,
}

/// Tokens and requests held for an admitted request until it is settled.
#[derive(Debug)]
pub struct Reservation {
    pub(crate) tenant: String,
    pub(crate) reserved: u64,
    pub(crate) held: Held,
}

/// Where a reservation is held, and what its ledger needs to settle it.
#[derive(Debug)]
pub(crate) enum Held {
    /// In this process (also what a shared ledger allowed to fail open falls back to).
    /// Settlement corrects the day's and month's counts of the admission's own UTC day
    /// and month, never those of a day that began since.
    Local {
        id: u64,
        scopes: Vec<String>,
        now: i64,
    },
    /// In Redis; per scope, whether its day tokens and month's spend were counted.
    Redis {
        id: u64,
        scopes: Vec<String>,
        counted: Vec<(bool, bool)>,
        now: i64,
    },
    /// In the shared database: the quotas it was admitted under, and when.
    Database {
        id: u64,
        quotas: Vec<(String, Quota)>,
        now: i64,
    },
}

/// Why a request was refused, before it becomes an error in the API's dialect.
pub(crate) enum Refusal {
    Requests {
        rpm: u32,
        retry_after: u64,
    },
    Tokens {
        tpm: u64,
        used: u64,
        retry_after: u64,
    },
    TooLarge {
        tpm: u64,
    },
    Day {
        tpd: u64,
        retry_after: u64,
    },
    Budget {
        budget: f64,
        spent: f64,
        retry_after: u64,
    },
}

impl Refusal {
    /// A refusal the database's counter decided, with the limit from the quota.
    pub(crate) fn from_counter(limit: QuotaLimit, q: &Quota, retry_after: u64, used: f64) -> Self {
        match limit {
            QuotaLimit::RequestsPerMinute => Refusal::Requests {
                rpm: q.requests_per_minute.unwrap_or(0),
                retry_after,
            },
            QuotaLimit::TokensPerMinute => Refusal::Tokens {
                tpm: q.tokens_per_minute.unwrap_or(0),
                used: used as u64,
                retry_after,
            },
            QuotaLimit::LargerThanTokensPerMinute => Refusal::TooLarge {
                tpm: q.tokens_per_minute.unwrap_or(0),
            },
            QuotaLimit::TokensPerDay => Refusal::Day {
                tpd: q.tokens_per_day.unwrap_or(0),
                retry_after,
            },
            QuotaLimit::MonthlyBudget => Refusal::Budget {
                budget: q.monthly_budget_usd.unwrap_or(0.0),
                spent: used,
                retry_after,
            },
        }
    }

    pub(crate) fn into_error(self, scope: &str, tokens: u64) -> BasaltError {
        let what = if scope == "*" {
            "all models".to_string()
        } else {
            format!("model {scope}")
        };
        let quota = |message: String, retry: u64| {
            BasaltError::new(ErrorKind::QuotaExceeded, message).with_retry_after(retry)
        };
        match self {
            Refusal::Requests { rpm, retry_after } => quota(
                format!("Too many requests: the quota for {what} is {rpm} requests per minute."),
                retry_after,
            ),
            Refusal::Tokens {
                tpm,
                used,
                retry_after,
            } => quota(
                format!("Too many tokens: the quota for {what} is {tpm} tokens per minute ({used} in use)."),
                retry_after,
            ),
            Refusal::TooLarge { tpm } => BasaltError::invalid(
                "max_tokens",
                format!("This request may use {tokens} tokens (prompt plus max tokens), more than the quota of {tpm} tokens per minute for {what}. Lower the maximum tokens."),
            ),
            Refusal::Day { tpd, retry_after } => quota(
                format!("The daily token quota for {what} ({tpd} tokens) is used up until the end of the UTC day."),
                retry_after,
            ),
            Refusal::Budget {
                budget,
                spent,
                retry_after,
            } => quota(
                format!("The monthly budget for {what} (${budget:.2}) is exhausted (${spent:.4} spent this month)."),
                retry_after,
            ),
        }
    }
}

/// Seconds since the epoch to (UTC day number, seconds left in it).
pub(crate) fn utc_day(now: i64) -> (i64, u64) {
    (
        now.div_euclid(86_400),
        (86_400 - now.rem_euclid(86_400)) as u64,
    )
}

/// The first second of the UTC month containing `now`, and a key for the month.
pub(crate) fn utc_month(now: i64) -> (i64, i64) {
    let (y, m, d) = basalt_auth::sigv4::civil_date(now);
    ((now.div_euclid(86_400) - (d - 1)) * 86_400, y * 12 + m)
}

/// What a scope used before its counters existed: this UTC day's tokens and this month's
/// spend, from the usage store.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    pub(crate) day_tokens: u64,
    pub(crate) month_cost: f64,
}

/// Reads a scope's day tokens and month cost from the store (whichever are asked for).
pub(crate) async fn totals_from_store(
    store: &Arc<dyn Store>,
    tenant: &str,
    scope: &str,
    now: i64,
    (day, month): (bool, bool),
) -> Result<Totals, BasaltError> {
    let since = |from: i64| UsageQuery {
        tenant_id: Some(tenant.to_string()),
        model_id: (scope != "*").then(|| scope.to_string()),
        from: Some(from),
        ..Default::default()
    };
    let mut totals = Totals::default();
    if day {
        let t = store
            .usage_totals(&since(utc_day(now).0 * 86_400))
            .await
            .map_err(|e| BasaltError::internal(e.to_string()))?;
        totals.day_tokens = t.input_tokens + t.output_tokens;
    }
    if month {
        totals.month_cost = store
            .usage_totals(&since(utc_month(now).0))
            .await
            .map_err(|e| BasaltError::internal(e.to_string()))?
            .cost_usd;
    }
    Ok(totals)
}

/// Totals already loaded for this admission, by scope.
pub(crate) type LoadedTotals = HashMap<String, Totals>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_helpers() {
        // 2026-11-29T12:00:00Z
        let t = 1_795_953_600;
        let (start, key) = utc_month(t);
        assert_eq!(start, 1_793_491_200); // 2026-11-01
        assert_eq!(key, 2026 * 12 + 11);
        assert_eq!(utc_day(t).1, 43_200);
    }
}
