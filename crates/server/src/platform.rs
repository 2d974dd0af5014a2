//! The platform layer between the API surfaces and the engine, one code path for all of
//! them: model access (Bedrock's "model access" grants), quotas with token reservations,
//! and exact metering of every request into the store.
//!
//! Only principals the store manages (tenants) are subject to grants and quotas; operator
//! keys from the configuration and the local user see every model without limits. Every
//! principal is metered.

use std::collections::HashMap;
use std::sync::Arc;

use basalt_auth::Principal;
use basalt_engine::TenantLane;
use basalt_store::{Quota, Store};
use basalt_types::{BasaltError, ErrorKind, Usage};

use crate::limits::database::DatabaseLedger;
use crate::limits::local::LocalLedger;
use crate::limits::shared::RedisLedger;
use crate::limits::Admission;
pub use crate::limits::Reservation;
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
    ledger: Ledger,
}

/// Where quota counts are kept.
pub enum Ledger {
    /// In this process (one replica).
    Local(LocalLedger),
    /// In Redis, shared by every replica.
    Redis(Arc<RedisLedger>),
    /// In the database replicas share (no Redis).
    Database(DatabaseLedger),
}

impl Platform {
    /// A platform whose quotas are counted in this process.
    pub fn new(store: Arc<dyn Store>, prices: Prices) -> Self {
        let ledger = Ledger::Local(LocalLedger::new(Arc::clone(&store)));
        Self::with_ledger(store, prices, ledger)
    }

    pub fn with_ledger(store: Arc<dyn Store>, prices: Prices, ledger: Ledger) -> Self {
        Self {
            store,
            prices,
            ledger,
        }
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
    /// as Bedrock does; the ledger checks and reserves atomically, so parallel requests
    /// cannot overshoot a limit together.
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
        if quotas.is_empty() {
            // Nothing to count: no ledger is asked (a shared one may be away).
            return Ok(None);
        }
        let admission = Admission {
            tenant: &p.tenant,
            quotas: &quotas,
            tokens,
            now: basalt_store::now(),
        };
        let reservation = match &self.ledger {
            Ledger::Local(local) => local.admit(&admission).await?,
            Ledger::Redis(redis) => redis.admit(&admission).await?,
            Ledger::Database(database) => database.admit(&admission).await?,
        };
        Ok(Some(reservation))
    }

    /// Replaces a reservation by what the request really used (returning the unused part).
    pub fn settle(&self, r: Reservation, used_tokens: u64, cost: f64) {
        match &self.ledger {
            Ledger::Local(local) => local.settle(&r, used_tokens, cost),
            Ledger::Redis(redis) => redis.settle(r, used_tokens, cost),
            Ledger::Database(database) => database.settle(r, used_tokens, cost),
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
}
