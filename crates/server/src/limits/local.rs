//! Quotas counted in this process's memory: exact for one replica (checks and reservation
//! under one lock, so parallel requests cannot overshoot a limit together), and what a
//! shared ledger falls back to when it is allowed to fail open.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_store::Store;
use basalt_types::BasaltError;

use super::{
    totals_from_store, utc_day, utc_month, Admission, Held, LoadedTotals, Refusal, Reservation,
};

const MINUTE: Duration = Duration::from_secs(60);

pub struct LocalLedger {
    store: Arc<dyn Store>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
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
}

fn seconds_until_expiry(oldest: Option<Instant>, now: Instant) -> u64 {
    oldest.map_or(1, |t| {
        MINUTE
            .saturating_sub(now.duration_since(t))
            .as_secs()
            .max(1)
    })
}

impl LocalLedger {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn admit(&self, a: &Admission<'_>) -> Result<Reservation, BasaltError> {
        let (day, day_left) = utc_day(a.now);
        let (_, month) = utc_month(a.now);
        let loaded = self.load_missing_totals(a, day, month).await?;
        let now = Instant::now();
        let mut state = self.lock();
        for (scope, q) in a.quotas {
            let w = state
                .windows
                .entry((a.tenant.to_string(), scope.clone()))
                .or_default();
            w.prune(now);
            let refuse = |r: Refusal| Err(r.into_error(scope, a.tokens));
            if let Some(rpm) = q.requests_per_minute {
                if w.requests.len() as u64 >= u64::from(rpm) {
                    let retry_after = seconds_until_expiry(w.requests.front().copied(), now);
                    return refuse(Refusal::Requests { rpm, retry_after });
                }
            }
            if let Some(tpm) = q.tokens_per_minute {
                let used: u64 = w.tokens.iter().map(|(_, _, t)| t).sum();
                if a.tokens > tpm {
                    return refuse(Refusal::TooLarge { tpm });
                }
                if used + a.tokens > tpm {
                    let retry_after = seconds_until_expiry(w.tokens.front().map(|e| e.0), now);
                    return refuse(Refusal::Tokens {
                        tpm,
                        used,
                        retry_after,
                    });
                }
            }
            if let Some(tpd) = q.tokens_per_day {
                let used = match (w.day, loaded.get(scope)) {
                    (Some((d, used)), _) if d == day => used,
                    (_, Some(t)) => t.day_tokens,
                    (_, None) => 0,
                };
                w.day = Some((day, used));
                if used + a.tokens > tpd {
                    return refuse(Refusal::Day {
                        tpd,
                        retry_after: day_left,
                    });
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
                    return refuse(Refusal::Budget {
                        budget,
                        spent,
                        retry_after: day_left,
                    });
                }
            }
        }
        // Every check passed: take the reservation in every scope.
        state.next_reservation += 1;
        let id = state.next_reservation;
        let mut scopes = Vec::new();
        for (scope, _) in a.quotas {
            if let Some(w) = state
                .windows
                .get_mut(&(a.tenant.to_string(), scope.clone()))
            {
                w.requests.push_back(now);
                w.tokens.push_back((now, id, a.tokens));
                if let Some((_, used)) = w.day.as_mut() {
                    *used += a.tokens;
                }
                scopes.push(scope.clone());
            }
        }
        Ok(Reservation {
            tenant: a.tenant.to_string(),
            reserved: a.tokens,
            held: Held::Local {
                id,
                scopes,
                now: a.now,
            },
        })
    }

    /// The day's tokens and the month's cost, per scope, for the quotas whose windows do not
    /// hold this day's or month's yet (the first request of a day, or after a restart).
    async fn load_missing_totals(
        &self,
        a: &Admission<'_>,
        day: i64,
        month: i64,
    ) -> Result<LoadedTotals, BasaltError> {
        let missing: Vec<(String, bool, bool)> = {
            let state = self.lock();
            a.quotas
                .iter()
                .map(|(scope, q)| {
                    let w = state.windows.get(&(a.tenant.to_string(), scope.clone()));
                    let day_missing = q.tokens_per_day.is_some()
                        && w.is_none_or(|w| w.day.is_none_or(|(d, _)| d != day));
                    let month_missing = q.monthly_budget_usd.is_some()
                        && w.is_none_or(|w| w.month.is_none_or(|(m, _)| m != month));
                    (scope.clone(), day_missing, month_missing)
                })
                .filter(|(_, d, m)| *d || *m)
                .collect()
        };
        let mut loaded = LoadedTotals::new();
        for (scope, day_missing, month_missing) in missing {
            let totals = totals_from_store(
                &self.store,
                a.tenant,
                &scope,
                a.now,
                (day_missing, month_missing),
            )
            .await?;
            loaded.insert(scope, totals);
        }
        Ok(loaded)
    }

    /// Replaces a reservation by what the request really used (returning the unused part).
    pub(crate) fn settle(&self, r: &Reservation, used_tokens: u64, cost: f64) {
        let Held::Local { id, scopes, now } = &r.held else {
            return;
        };
        let (day, month) = (utc_day(*now).0, utc_month(*now).1);
        let mut state = self.lock();
        for scope in scopes {
            if let Some(w) = state.windows.get_mut(&(r.tenant.clone(), scope.clone())) {
                if let Some(entry) = w.tokens.iter_mut().find(|e| e.1 == *id) {
                    entry.2 = used_tokens;
                }
                if let Some((d, used)) = w.day.as_mut() {
                    if *d == day {
                        *used = (*used + used_tokens).saturating_sub(r.reserved);
                    }
                }
                if let Some((m, spent)) = w.month.as_mut() {
                    if *m == month {
                        *spent += cost;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_store::{Quota, SecretBox, SqliteStore};

    /// A request admitted before midnight and settled after corrects the day it was
    /// counted in, not the new one.
    #[tokio::test]
    async fn settling_after_midnight_leaves_the_new_day_alone() {
        let store = Arc::new(SqliteStore::in_memory(SecretBox::new(&[1; 32])).unwrap());
        let ledger = LocalLedger::new(store);
        let quotas = vec![(
            "*".to_string(),
            Quota {
                tokens_per_day: Some(150),
                ..Quota::default()
            },
        )];
        let midnight = 1_795_996_800; // 2026-11-30T00:00:00Z
        let at = |now| Admission {
            tenant: "t",
            quotas: &quotas,
            tokens: 100,
            now,
        };
        let before = ledger.admit(&at(midnight - 10)).await.unwrap();
        let _after = ledger.admit(&at(midnight + 10)).await.unwrap();
        // The first request used 2 of its 100 tokens: yesterday's count falls, today's stays.
        ledger.settle(&before, 2, 0.0);
        let refused = ledger.admit(&at(midnight + 20)).await.unwrap_err();
        assert!(
            refused.message.contains("daily token quota"),
            "{}",
            refused.message
        );
    }
}
