//! The platform layer between the API surfaces and the engine, one code path for all of
//! them: model access (Bedrock's "model access" grants), quotas with token reservations,
//! and exact metering of every request into the store.
//!
//! Only principals the store manages (tenants) are subject to grants and quotas; operator
//! keys from the configuration and the local user see every model without limits. Every
//! principal is metered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_auth::Principal;
use basalt_engine::TenantLane;
use basalt_store::{Quota, Store, UsageQuery};
use basalt_types::{BasaltError, ErrorKind, Usage};
use serde::Deserialize;

/// Price of a model, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct Price {
    #[serde(default)]
    pub input_per_million: f64,
    #[serde(default)]
    pub cached_input_per_million: Option<f64>,
    #[serde(default)]
    pub output_per_million: f64,
}

/// Prices by model id; `*` is the default for models not listed.
pub type Prices = HashMap<String, Price>;

pub struct Platform {
    pub store: Arc<dyn Store>,
    prices: Prices,
    quotas: Mutex<QuotaState>,
}

#[derive(Default)]
struct QuotaState {
    windows: HashMap<(String, String), Window>,
    next_reservation: u64,
}

/// One (tenant, scope) pair's recent use; scope is a model id or `*`.
#[derive(Default)]
struct Window {
    requests: VecDeque<Instant>,
    /// (when, reservation id, tokens): reserved at admission, corrected at completion.
    tokens: VecDeque<(Instant, u64, u64)>,
    /// (UTC day number, tokens that day), loaded from the store on first use.
    day: Option<(i64, u64)>,
    /// (month key, dollars that month), loaded from the store on first use.
    month: Option<(i64, f64)>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl Window {
    fn prune(&mut self, now: Instant) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.requests.pop_front();
        }
        while self
            .tokens
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) >= MINUTE)
        {
            self.tokens.pop_front();
        }
    }

    fn seconds_until_oldest_expires(&self, oldest: Option<Instant>, now: Instant) -> u64 {
        oldest.map_or(1, |t| {
            MINUTE
                .saturating_sub(now.duration_since(t))
                .as_secs()
                .max(1)
        })
    }
}

/// What a scope used before its window was loaded: this UTC day's tokens and this month's
/// cost, from the store.
#[derive(Default)]
struct LoadedTotals {
    day_tokens: u64,
    month_cost: f64,
}

/// Tokens and requests held for an admitted request until it is metered.
#[derive(Debug)]
pub struct Reservation {
    tenant: String,
    scopes: Vec<String>,
    id: u64,
    reserved: u64,
}

fn quota_error(message: String, retry_after: u64) -> BasaltError {
    BasaltError::new(ErrorKind::QuotaExceeded, message).with_retry_after(retry_after)
}

/// Seconds since the epoch to (UTC day number, seconds left in it).
fn utc_day(now: i64) -> (i64, u64) {
    (
        now.div_euclid(86_400),
        (86_400 - now.rem_euclid(86_400)) as u64,
    )
}

/// The first second of the UTC month containing `now`, and a key for the month.
fn utc_month(now: i64) -> (i64, i64) {
    let (y, m, d) = basalt_auth::sigv4::civil_date(now);
    ((now.div_euclid(86_400) - (d - 1)) * 86_400, y * 12 + m)
}

impl Platform {
    pub fn new(store: Arc<dyn Store>, prices: Prices) -> Self {
        Self {
            store,
            prices,
            quotas: Mutex::new(QuotaState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QuotaState> {
        self.quotas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the principal may use the model (a grant for it, or for `*`).
    pub async fn may_use(&self, p: &Principal, model_id: &str) -> bool {
        if !p.managed {
            return true;
        }
        self.store
            .granted_models(&p.tenant)
            .await
            .map(|g| g.iter().any(|m| m == model_id || m == "*"))
            .unwrap_or(false)
    }

    pub async fn check_access(&self, p: &Principal, model_id: &str) -> Result<(), BasaltError> {
        if self.may_use(p, model_id).await {
            Ok(())
        } else {
            Err(BasaltError::new(
                ErrorKind::PermissionDenied,
                format!("You don't have access to the model with the specified model ID (`{model_id}`). Ask an administrator to grant it."),
            )
            .with_param("model"))
        }
    }

    /// The tenant's lane in the engine's fair admission queue; `known` is the tenant record
    /// when the caller already read it.
    pub async fn lane(
        &self,
        p: &Principal,
        known: Option<&basalt_store::Tenant>,
    ) -> Option<TenantLane> {
        if !p.managed {
            return None;
        }
        let weight = match known {
            Some(t) => t.weight,
            None => self.store.tenant(&p.tenant).await.map_or(1, |t| t.weight),
        };
        Some(TenantLane {
            id: p.tenant.clone(),
            weight,
        })
    }

    pub fn cost(&self, model_id: &str, u: &Usage) -> f64 {
        let Some(price) = self.prices.get(model_id).or_else(|| self.prices.get("*")) else {
            return 0.0;
        };
        let cached = u.cached_input_tokens as f64;
        let fresh = u.input_tokens as f64 - cached;
        (fresh * price.input_per_million
            + cached
                * price
                    .cached_input_per_million
                    .unwrap_or(price.input_per_million)
            + u.output_tokens as f64 * price.output_per_million)
            / 1e6
    }

    /// Admits a request under the tenant's quotas for this model and for all models,
    /// reserving `tokens` (prompt plus the most it may generate) against the token limits,
    /// as Bedrock does. Checks and reservation happen under one lock, so parallel requests
    /// cannot overshoot a limit together; the day's and month's totals a check needs are
    /// read from the store before it, never while holding the lock.
    pub async fn admit(
        &self,
        p: &Principal,
        model_id: &str,
        tokens: u64,
    ) -> Result<Option<Reservation>, BasaltError> {
        if !p.managed {
            return Ok(None);
        }
        let quotas: Vec<(String, Quota)> = self
            .store
            .quotas(&p.tenant)
            .await
            .map_err(|e| BasaltError::internal(e.to_string()))?
            .into_iter()
            .filter(|(scope, _)| scope == model_id || scope == "*")
            .collect();
        let wall = basalt_store::now();
        let (day, day_left) = utc_day(wall);
        let (month_start, month) = utc_month(wall);
        let loaded = self
            .load_totals(&p.tenant, &quotas, (day, month_start, month))
            .await?;
        let now = Instant::now();
        let mut state = self.lock();
        for (scope, q) in &quotas {
            let key = (p.tenant.clone(), scope.clone());
            if !state.windows.contains_key(&key) {
                state.windows.insert(key.clone(), Window::default());
            }
            let Some(w) = state.windows.get_mut(&key) else {
                continue;
            };
            w.prune(now);
            let what = if scope == "*" {
                "all models".to_string()
            } else {
                format!("model {scope}")
            };
            if let Some(rpm) = q.requests_per_minute {
                if w.requests.len() as u64 >= rpm as u64 {
                    let retry = w.seconds_until_oldest_expires(w.requests.front().copied(), now);
                    return Err(quota_error(
                        format!(
                            "Too many requests: the quota for {what} is {rpm} requests per minute."
                        ),
                        retry,
                    ));
                }
            }
            if let Some(tpm) = q.tokens_per_minute {
                let used: u64 = w.tokens.iter().map(|(_, _, t)| t).sum();
                if tokens > tpm {
                    return Err(BasaltError::invalid(
                        "max_tokens",
                        format!("This request may use {tokens} tokens (prompt plus max tokens), more than the quota of {tpm} tokens per minute for {what}. Lower the maximum tokens."),
                    ));
                }
                if used + tokens > tpm {
                    let retry = w.seconds_until_oldest_expires(w.tokens.front().map(|e| e.0), now);
                    return Err(quota_error(
                        format!("Too many tokens: the quota for {what} is {tpm} tokens per minute ({used} in use)."),
                        retry,
                    ));
                }
            }
            if let Some(tpd) = q.tokens_per_day {
                let used = match (w.day, loaded.get(scope)) {
                    (Some((d, used)), _) if d == day => used,
                    (_, Some(t)) => t.day_tokens,
                    (_, None) => 0,
                };
                w.day = Some((day, used));
                if used + tokens > tpd {
                    return Err(quota_error(
                        format!("The daily token quota for {what} ({tpd} tokens) is used up until the end of the UTC day."),
                        day_left,
                    ));
                }
            }
            if let Some(budget) = q.monthly_budget_usd {
                let spent = match (w.month, loaded.get(scope)) {
                    (Some((m, spent)), _) if m == month => spent,
                    (_, Some(t)) => t.month_cost,
                    (_, None) => 0.0,
                };
                w.month = Some((month, spent));
                if spent >= budget {
                    return Err(quota_error(
                        format!("The monthly budget for {what} (${budget:.2}) is exhausted (${spent:.4} spent this month)."),
                        day_left,
                    ));
                }
            }
        }
        // Every check passed: take the reservation in every scope.
        state.next_reservation += 1;
        let id = state.next_reservation;
        let mut scopes = Vec::new();
        for (scope, _) in &quotas {
            if let Some(w) = state.windows.get_mut(&(p.tenant.clone(), scope.clone())) {
                w.requests.push_back(now);
                w.tokens.push_back((now, id, tokens));
                if let Some((_, used)) = w.day.as_mut() {
                    *used += tokens;
                }
                scopes.push(scope.clone());
            }
        }
        Ok(Some(Reservation {
            tenant: p.tenant.clone(),
            scopes,
            id,
            reserved: tokens,
        }))
    }

    /// The day's tokens and the month's cost, per scope, for the quotas whose windows do not
    /// hold this day's or month's yet (the first request of a day, or after a restart).
    async fn load_totals(
        &self,
        tenant: &str,
        quotas: &[(String, Quota)],
        (day, month_start, month): (i64, i64, i64),
    ) -> Result<HashMap<String, LoadedTotals>, BasaltError> {
        let missing: Vec<(&str, bool, bool)> = {
            let state = self.lock();
            quotas
                .iter()
                .map(|(scope, q)| {
                    let w = state.windows.get(&(tenant.to_string(), scope.clone()));
                    let day_missing = q.tokens_per_day.is_some()
                        && w.is_none_or(|w| w.day.is_none_or(|(d, _)| d != day));
                    let month_missing = q.monthly_budget_usd.is_some()
                        && w.is_none_or(|w| w.month.is_none_or(|(m, _)| m != month));
                    (scope.as_str(), day_missing, month_missing)
                })
                .filter(|(_, d, m)| *d || *m)
                .collect()
        };
        let mut loaded = HashMap::new();
        for (scope, day_missing, month_missing) in missing {
            let mut totals = LoadedTotals::default();
            if day_missing {
                let t = self.totals_since(tenant, scope, day * 86_400).await?;
                totals.day_tokens = t.input_tokens + t.output_tokens;
            }
            if month_missing {
                totals.month_cost = self
                    .totals_since(tenant, scope, month_start)
                    .await?
                    .cost_usd;
            }
            loaded.insert(scope.to_string(), totals);
        }
        Ok(loaded)
    }

    /// The tenant's usage (of one model, or of all for `*`) since `from`, from the store.
    async fn totals_since(
        &self,
        tenant: &str,
        scope: &str,
        from: i64,
    ) -> Result<basalt_store::UsageTotals, BasaltError> {
        self.store
            .usage_totals(&UsageQuery {
                tenant_id: Some(tenant.to_string()),
                model_id: (scope != "*").then(|| scope.to_string()),
                from: Some(from),
                ..Default::default()
            })
            .await
            .map_err(|e| BasaltError::internal(e.to_string()))
    }

    /// Replaces a reservation by what the request really used (returning the unused part).
    pub fn settle(&self, r: Reservation, used_tokens: u64, cost: f64) {
        let mut state = self.lock();
        for scope in &r.scopes {
            if let Some(w) = state.windows.get_mut(&(r.tenant.clone(), scope.clone())) {
                if let Some(entry) = w.tokens.iter_mut().find(|e| e.1 == r.id) {
                    entry.2 = used_tokens;
                }
                if let Some((_, used)) = w.day.as_mut() {
                    *used = (*used + used_tokens).saturating_sub(r.reserved);
                }
                if let Some((_, spent)) = w.month.as_mut() {
                    *spent += cost;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_store::{SecretBox, SqliteStore};

    async fn platform() -> (Platform, Principal) {
        let store = Arc::new(SqliteStore::in_memory(SecretBox::new(&[1; 32])).unwrap());
        let t = store.create_tenant("acme", 1).await.unwrap();
        let p = Principal {
            tenant: t.id.clone(),
            key_id: "k".into(),
            managed: true,
        };
        (Platform::new(store, Prices::new()), p)
    }

    #[tokio::test]
    async fn grants_decide_access() {
        let (pl, p) = platform().await;
        assert!(pl.check_access(&p, "m").await.is_err());
        pl.store.grant_model(&p.tenant, "m").await.unwrap();
        assert!(pl.check_access(&p, "m").await.is_ok());
        assert!(!pl.may_use(&p, "other").await);
        pl.store.grant_model(&p.tenant, "*").await.unwrap();
        assert!(pl.may_use(&p, "other").await);
        assert!(pl.may_use(&Principal::local(), "anything").await);
    }

    #[tokio::test]
    async fn requests_per_minute_and_token_reservations() {
        let (pl, p) = platform().await;
        pl.store
            .set_quota(
                &p.tenant,
                "*",
                &Quota {
                    requests_per_minute: Some(3),
                    tokens_per_minute: Some(100),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        // Larger than the quota itself: the caller must lower max tokens.
        assert_eq!(
            pl.admit(&p, "m", 1000).await.unwrap_err().kind,
            ErrorKind::InvalidRequest
        );
        let r1 = pl.admit(&p, "m", 60).await.unwrap().unwrap();
        // 60 of 100 reserved: 50 more does not fit until the first settles at its real use.
        let e = pl.admit(&p, "m", 50).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::QuotaExceeded);
        assert!(e.retry_after_secs.is_some());
        pl.settle(r1, 20, 0.0);
        let _r2 = pl.admit(&p, "m", 50).await.unwrap();
        let _r3 = pl.admit(&p, "m", 10).await.unwrap();
        let e = pl.admit(&p, "m", 1).await.unwrap_err();
        assert!(e.message.contains("requests per minute"), "{}", e.message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_admissions_never_exceed_the_limit() {
        let (pl, p) = platform().await;
        pl.store
            .set_quota(
                &p.tenant,
                "m",
                &Quota {
                    requests_per_minute: Some(7),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let pl = Arc::new(pl);
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let pl = Arc::clone(&pl);
                let p = p.clone();
                tokio::spawn(async move { pl.admit(&p, "m", 1).await.is_ok() as usize })
            })
            .collect();
        let mut admitted = 0;
        for task in tasks {
            admitted += task.await.unwrap_or(0);
        }
        assert_eq!(admitted, 7);
    }

    #[tokio::test]
    async fn an_exhausted_budget_says_so() {
        let (pl, p) = platform().await;
        pl.store
            .set_quota(
                &p.tenant,
                "*",
                &Quota {
                    monthly_budget_usd: Some(1.0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let r = pl.admit(&p, "m", 10).await.unwrap().unwrap();
        pl.settle(r, 10, 1.5);
        let e = pl.admit(&p, "m", 10).await.unwrap_err();
        assert!(e.message.contains("budget"), "{}", e.message);
    }

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
