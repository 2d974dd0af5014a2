//! Usage, from the usage store: tokens and requests per day by model (SVG charts), and per
//! tenant and model the requests, tokens, cost, and latency and time-to-first-token
//! percentiles. A tenant sees only its own rows; the operator every tenant's, or one's.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::response::Html;
use basalt_store::{UsageQuery, UsageRecord};
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use crate::chart::{stacked_bars, Series};
use crate::page::{self, civil_date, ConsoleError};
use crate::session::Viewer;
use crate::Shared;

/// The most records one page reads; a window with more says so.
const RECORD_LIMIT: u32 = 100_000;

#[derive(Deserialize)]
pub(crate) struct Params {
    days: Option<u32>,
    /// The operator's filter (a tenant's own view ignores it).
    tenant: Option<String>,
}

#[derive(Serialize, Default)]
struct Row {
    tenant: String,
    model: String,
    requests: u64,
    failed: u64,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
    latency_p50_ms: Option<u64>,
    latency_p95_ms: Option<u64>,
    ttft_p50_ms: Option<u64>,
    ttft_p95_ms: Option<u64>,
}

pub(crate) async fn show(
    State(console): Shared,
    viewer: Viewer,
    Query(params): Query<Params>,
) -> Result<Html<String>, ConsoleError> {
    let Some(platform) = &console.app.platform else {
        return Err(ConsoleError::NotFound);
    };
    let store = &platform.store;
    let days = params.days.unwrap_or(14).clamp(1, 90);
    let now = crate::session::unix_now();
    let today = now.div_euclid(86_400);
    let first_day = today - i64::from(days) + 1;
    let names: BTreeMap<String, String> = match viewer.own_tenant() {
        None => store
            .tenants()
            .await?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect(),
        Some(own) => BTreeMap::from([(own.to_string(), own.to_string())]),
    };
    let tenant_id = match viewer.own_tenant() {
        Some(own) => Some(own.to_string()),
        None => match params.tenant.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => Some(store.tenant(t).await?.id),
            None => None,
        },
    };
    let query = UsageQuery {
        tenant_id: tenant_id.clone(),
        model_id: None,
        from: Some(first_day * 86_400),
        to: None,
        limit: Some(RECORD_LIMIT),
    };
    let records = store.usage(&query).await?;
    let totals = store.usage_totals(&query).await?;
    let labels: Vec<String> = (first_day..=today)
        .map(|d| {
            let (_, m, day) = civil_date(d);
            format!("{m:02}-{day:02}")
        })
        .collect();
    let (tokens, requests) =
        daily_series(&records, first_day, labels.len(), |r| r.model_id.clone());
    // The operator looking at every tenant also sees who used what.
    let tenant_chart = (viewer.own_tenant().is_none() && tenant_id.is_none()).then(|| {
        let name = |r: &UsageRecord| names.get(&r.tenant_id).unwrap_or(&r.tenant_id).clone();
        let (by_tenant, _) = daily_series(&records, first_day, labels.len(), name);
        Value::from_safe_string(stacked_bars(
            "Tokens per day by tenant",
            &labels,
            &by_tenant,
        ))
    });
    let rows = table(&records, &names);
    page::render(
        &console,
        "usage.html",
        &viewer,
        context! {
            nav => "usage",
            days => days,
            tenant => tenant_id,
            tenants => Value::from_serialize(&names),
            truncated => records.len() as u32 >= RECORD_LIMIT,
            totals => Value::from_serialize(&totals),
            tokens_chart => Value::from_safe_string(stacked_bars("Tokens per day by model", &labels, &tokens)),
            requests_chart => Value::from_safe_string(stacked_bars("Requests per day by model", &labels, &requests)),
            tenant_chart => tenant_chart,
            rows => rows,
        },
    )
}

/// Per `key` (a model, a tenant), tokens (input and output) and requests on each day of
/// the window.
fn daily_series(
    records: &[UsageRecord],
    first_day: i64,
    days: usize,
    key: impl Fn(&UsageRecord) -> String,
) -> (Vec<Series>, Vec<Series>) {
    let mut tokens: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut requests: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in records {
        let day = r.created_at.div_euclid(86_400) - first_day;
        let Ok(i) = usize::try_from(day) else {
            continue;
        };
        if i >= days {
            continue;
        }
        tokens.entry(key(r)).or_insert_with(|| vec![0.0; days])[i] +=
            (r.input_tokens + r.output_tokens) as f64;
        requests.entry(key(r)).or_insert_with(|| vec![0.0; days])[i] += 1.0;
    }
    let series = |m: BTreeMap<String, Vec<f64>>| {
        m.into_iter()
            .map(|(name, values)| Series { name, values })
            .collect()
    };
    (series(tokens), series(requests))
}

/// A table row being summed, with the latencies and times to first token its
/// percentiles come from.
type Group = (Row, Vec<u64>, Vec<u64>);

/// One row per tenant and model, with its percentiles.
fn table(records: &[UsageRecord], names: &BTreeMap<String, String>) -> Vec<Row> {
    let mut groups: BTreeMap<(&str, &str), Group> = BTreeMap::new();
    for r in records {
        let (row, latencies, ttfts) =
            groups
                .entry((&r.tenant_id, &r.model_id))
                .or_insert_with(|| {
                    let tenant = names
                        .get(&r.tenant_id)
                        .cloned()
                        .unwrap_or_else(|| r.tenant_id.clone());
                    (
                        Row {
                            tenant,
                            model: r.model_id.clone(),
                            ..Row::default()
                        },
                        Vec::new(),
                        Vec::new(),
                    )
                });
        row.requests += 1;
        if r.status != "ok" {
            row.failed += 1;
        }
        row.input_tokens += r.input_tokens;
        row.cached_input_tokens += r.cached_input_tokens;
        row.output_tokens += r.output_tokens;
        row.cost_usd += r.cost_usd;
        latencies.push(r.latency_ms);
        ttfts.extend(r.time_to_first_token_ms);
    }
    groups
        .into_values()
        .map(|(mut row, mut latencies, mut ttfts)| {
            row.latency_p50_ms = percentile(&mut latencies, 50);
            row.latency_p95_ms = percentile(&mut latencies, 95);
            row.ttft_p50_ms = percentile(&mut ttfts, 50);
            row.ttft_p95_ms = percentile(&mut ttfts, 95);
            row
        })
        .collect()
}

/// The nearest-rank percentile (the smallest value with at least `p`% at or below it).
fn percentile(values: &mut [u64], p: usize) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = (p * values.len()).div_ceil(100).max(1);
    values.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tenant: &str, model: &str, day: i64, tokens: u64, latency: u64) -> UsageRecord {
        UsageRecord {
            request_id: "r".into(),
            tenant_id: tenant.into(),
            key_id: "k".into(),
            model_id: model.into(),
            surface: "openai".into(),
            operation: "chat.completions".into(),
            input_tokens: tokens,
            cached_input_tokens: 0,
            output_tokens: 1,
            latency_ms: latency,
            time_to_first_token_ms: Some(latency / 2),
            status: "ok".into(),
            cost_usd: 0.5,
            guardrail_units: Default::default(),
            created_at: day * 86_400 + 5,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 50), Some(50));
        assert_eq!(percentile(&mut v, 95), Some(95));
        assert_eq!(percentile(&mut [7], 95), Some(7));
        assert_eq!(percentile(&mut [], 50), None);
    }

    #[test]
    fn days_and_groups_add_up() {
        let records = vec![
            record("t1", "m", 10, 4, 100),
            record("t1", "m", 11, 6, 300),
            record("t2", "m", 11, 1, 200),
            record("t2", "m", 3, 1, 200), // before the window
        ];
        let (tokens, requests) = daily_series(&records, 10, 2, |r| r.model_id.clone());
        assert_eq!(tokens[0].values, vec![5.0, 9.0]);
        assert_eq!(requests[0].values, vec![1.0, 2.0]);
        let (by_tenant, _) = daily_series(&records, 10, 2, |r| r.tenant_id.clone());
        assert_eq!(by_tenant[0].name, "t1");
        assert_eq!(by_tenant[0].values, vec![5.0, 7.0]);
        assert_eq!(by_tenant[1].values, vec![0.0, 2.0]);
        let names = BTreeMap::from([("t1".to_string(), "alpha".to_string())]);
        let rows = table(&records, &names);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].tenant, "alpha");
        assert_eq!(rows[0].requests, 2);
        assert_eq!(rows[0].latency_p50_ms, Some(100));
        assert_eq!(rows[0].latency_p95_ms, Some(300));
        assert_eq!(rows[1].tenant, "t2");
    }
}
