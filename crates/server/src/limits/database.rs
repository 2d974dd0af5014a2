//! Quotas counted in the PostgreSQL database replicas share, for deployments without
//! Redis: exact across replicas (the store admits in one transaction per request, holding
//! the tenant's lock), at the price of a database round trip or three per admission.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_store::{QuotaCounter, QuotaDecision, QuotaRequest};
use basalt_types::{BasaltError, ErrorKind};

use super::{Admission, Held, Refusal, Reservation};

/// The most an admission may take before it is answered with 503.
const DEADLINE: Duration = Duration::from_secs(5);

/// Tenants whose turn-taking locks are kept before the map is emptied.
const MAX_TENANTS: usize = 10_000;

pub struct DatabaseLedger {
    counter: Arc<dyn QuotaCounter>,
    /// One lock per tenant: this replica's admissions of a tenant take turns here, so they
    /// wait without each holding a pooled database connection on the tenant's database lock
    /// (which would starve usage writes and heartbeats under one tenant's burst).
    turns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl DatabaseLedger {
    pub fn new(counter: Arc<dyn QuotaCounter>) -> Self {
        Self {
            counter,
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn turn(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        if turns.len() >= MAX_TENANTS && !turns.contains_key(tenant) {
            turns.clear();
        }
        Arc::clone(turns.entry(tenant.to_string()).or_default())
    }

    pub(crate) async fn admit(&self, a: &Admission<'_>) -> Result<Reservation, BasaltError> {
        let id = basalt_store::random_u64().map_err(|e| BasaltError::internal(e.to_string()))?;
        let request = QuotaRequest {
            tenant: a.tenant,
            quotas: a.quotas,
            tokens: a.tokens,
            reservation: id,
            now: a.now,
        };
        let unavailable = |why: String| {
            BasaltError::new(
                ErrorKind::Unavailable,
                format!("The quota counters in the database cannot be read ({why}). Try again."),
            )
            .with_retry_after(1)
        };
        let turn = self.turn(a.tenant);
        let decided = tokio::time::timeout(DEADLINE, async {
            let _turn = turn.lock().await;
            self.counter.admit(&request).await
        })
        .await
        .map_err(|_| unavailable("timed out".into()))?;
        let decision = decided.map_err(|e| unavailable(e.to_string()))?;
        match decision {
            QuotaDecision::Admitted => Ok(Reservation {
                tenant: a.tenant.to_string(),
                reserved: a.tokens,
                held: Held::Database {
                    id,
                    quotas: a.quotas.to_vec(),
                    now: a.now,
                },
            }),
            QuotaDecision::Refused {
                scope,
                limit,
                retry_after_secs,
                used,
            } => {
                let (scope, quota) = a
                    .quotas
                    .get(scope)
                    .map(|(s, q)| (s.as_str(), q.clone()))
                    .unwrap_or_default();
                let refusal = Refusal::from_counter(limit, &quota, retry_after_secs, used);
                Err(refusal.into_error(scope, a.tokens))
            }
        }
    }

    /// Settles in the background: the request's answer does not wait for it.
    pub(crate) fn settle(&self, r: Reservation, used_tokens: u64, cost: f64) {
        let Held::Database { id, quotas, now } = r.held else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let counter = Arc::clone(&self.counter);
        runtime.spawn(async move {
            let request = QuotaRequest {
                tenant: &r.tenant,
                quotas: &quotas,
                tokens: r.reserved,
                reservation: id,
                now,
            };
            if let Err(e) = counter.settle(&request, used_tokens, cost).await {
                tracing::warn!(
                    "settling a quota reservation in the database failed ({e}): its whole \
                     reservation stays counted (this minute, and the day's tokens until the \
                     day ends)"
                );
            }
        });
    }
}
