//! Quotas counted in Redis, exact across every replica: each admission is one atomic
//! server-side script (`admit.lua`: sliding one-minute windows for requests and reserved
//! tokens, the latter with a running sum so a check costs what expires rather than the
//! whole window; counters for the day's tokens and the month's spend; checked and taken
//! together), each completion another (`settle.lua`: the reservation replaced by the real
//! use, the unused part returned). Time is Redis's clock, so replicas' clocks need not agree.
//!
//! When Redis cannot be reached, a request fails closed with a 503 — or, if the operator
//! chose `--redis-fail-open`, is admitted under this replica's own in-memory counts (each
//! replica then enforces the limits alone: degraded, never unlimited). Nothing here may
//! block a runtime worker: every call is async with a deadline, and after a failure Redis
//! is left alone for a second, so an outage costs each request nothing but the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_store::Store;
use basalt_types::{BasaltError, ErrorKind};
use redis::aio::MultiplexedConnection;

use super::local::LocalLedger;
use super::{
    totals_from_store, utc_day, utc_month, Admission, Held, LoadedTotals, Refusal, Reservation,
};

/// The most one round trip to Redis may take before the request is answered without it.
const DEADLINE: Duration = Duration::from_millis(750);

/// After Redis failed, how long requests are answered without trying it again: during an
/// outage each request fails (or falls back) at once instead of waiting its turn to time out.
const BACK_OFF: Duration = Duration::from_secs(1);

pub struct RedisLedger {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    store: Arc<dyn Store>,
    /// With `--redis-fail-open`: this replica's own counts while Redis is away.
    fallback: Option<LocalLedger>,
    /// Whether the last call failed (so a long outage is logged once, not per request).
    down: AtomicBool,
    /// Until when Redis is not asked again, after a failure.
    backing_off_until: std::sync::Mutex<Option<Instant>>,
    admit: redis::Script,
    settle: redis::Script,
}

/// What the admission script answered.
enum Answer {
    Admitted,
    /// A day or month counter is missing: read the store's totals and ask again.
    NeedsTotals,
    Refused(usize, Refusal),
}

fn unavailable() -> BasaltError {
    BasaltError::new(
        ErrorKind::Unavailable,
        "The quota service cannot be reached, so the request cannot be checked against its \
         quotas. Try again shortly.",
    )
    .with_retry_after(1)
}

impl RedisLedger {
    /// A ledger on the Redis at `url` (`redis://host:6379/0`). Connects lazily: a replica
    /// starts while Redis is still coming up.
    pub fn new(url: &str, store: Arc<dyn Store>, fail_open: bool) -> Result<Self, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("the Redis URL is not valid: {e}"))?;
        Ok(Self {
            client,
            connection: tokio::sync::Mutex::new(None),
            fallback: fail_open.then(|| LocalLedger::new(Arc::clone(&store))),
            store,
            down: AtomicBool::new(false),
            backing_off_until: std::sync::Mutex::new(None),
            admit: redis::Script::new(include_str!("admit.lua")),
            settle: redis::Script::new(include_str!("settle.lua")),
        })
    }

    fn backing_off(&self) -> bool {
        self.backing_off_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until)
    }

    fn back_off(&self) {
        *self
            .backing_off_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + BACK_OFF);
    }

    /// The connection, (re)opened if needed. Multiplexed: clones share one socket. Callers
    /// that queued behind a connection attempt that failed do not try again themselves.
    async fn connection(&self) -> Result<MultiplexedConnection, String> {
        if self.backing_off() {
            return Err("unreachable a moment ago".into());
        }
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        if self.backing_off() {
            return Err("unreachable a moment ago".into());
        }
        let connected =
            tokio::time::timeout(DEADLINE, self.client.get_multiplexed_async_connection()).await;
        let c = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.back_off();
                return Err(e.to_string());
            }
            Err(_) => {
                self.back_off();
                return Err("connecting timed out".into());
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs a script invocation within the deadline; a failure drops the connection so the
    /// next call reconnects.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut c = self.connection().await?;
        let result = tokio::time::timeout(DEADLINE, invocation.invoke_async(&mut c)).await;
        let outcome = match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        if outcome.is_err() {
            *self.connection.lock().await = None;
            self.back_off();
        }
        outcome
    }

    fn key(a: &Admission<'_>, scope: &str, what: &str) -> String {
        format!("basalt:quota:{}:{scope}:{what}", a.tenant)
    }

    pub(crate) async fn admit(&self, a: &Admission<'_>) -> Result<Reservation, BasaltError> {
        let raw_id =
            basalt_store::random_u64().map_err(|e| BasaltError::internal(e.to_string()))?;
        let id = format!("{raw_id:016x}");
        let mut totals: Option<LoadedTotals> = None;
        for _ in 0..2 {
            match self.ask(a, &id, totals.as_ref()).await {
                Ok(Answer::Admitted) => {
                    self.recovered();
                    return Ok(Reservation {
                        tenant: a.tenant.to_string(),
                        reserved: a.tokens,
                        held: Held::Redis {
                            id: raw_id,
                            scopes: a.quotas.iter().map(|(s, _)| s.clone()).collect(),
                            counted: a
                                .quotas
                                .iter()
                                .map(|(_, q)| {
                                    (q.tokens_per_day.is_some(), q.monthly_budget_usd.is_some())
                                })
                                .collect(),
                            now: a.now,
                        },
                    });
                }
                Ok(Answer::Refused(scope, refusal)) => {
                    self.recovered();
                    let scope = a.quotas.get(scope).map_or("*", |(s, _)| s.as_str());
                    return Err(refusal.into_error(scope, a.tokens));
                }
                Ok(Answer::NeedsTotals) => totals = Some(self.read_totals(a).await?),
                Err(e) => return self.without_redis(a, &e).await,
            }
        }
        Err(BasaltError::internal(
            "the quota counters could not be initialised",
        ))
    }

    /// The store's day tokens and month spend for every scope that limits them.
    async fn read_totals(&self, a: &Admission<'_>) -> Result<LoadedTotals, BasaltError> {
        let mut loaded = LoadedTotals::new();
        for (scope, q) in a.quotas {
            let wanted = (q.tokens_per_day.is_some(), q.monthly_budget_usd.is_some());
            if wanted.0 || wanted.1 {
                let totals = totals_from_store(&self.store, a.tenant, scope, a.now, wanted).await?;
                loaded.insert(scope.clone(), totals);
            }
        }
        Ok(loaded)
    }

    async fn ask(
        &self,
        a: &Admission<'_>,
        id: &str,
        totals: Option<&LoadedTotals>,
    ) -> Result<Answer, String> {
        let (day, day_left) = utc_day(a.now);
        let (month_start, month) = utc_month(a.now);
        // A month counter lives until the month's end (at most 31 days from its start).
        let month_left = (month_start + 31 * 86_400 - a.now).max(1);
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .arg(id)
            .arg(a.tokens)
            .arg(day_left)
            .arg(month_left);
        let text = |v: Option<String>| v.unwrap_or_default();
        for (scope, q) in a.quotas {
            invocation
                .key(Self::key(a, scope, "requests"))
                .key(Self::key(a, scope, "tokens"))
                .key(Self::key(a, scope, "tokens-sum"))
                .key(Self::key(a, scope, &format!("day:{day}")))
                .key(Self::key(a, scope, &format!("month:{month}")));
            let seed = totals.and_then(|t| t.get(scope));
            invocation
                .arg(text(q.requests_per_minute.map(|v| v.to_string())))
                .arg(text(q.tokens_per_minute.map(|v| v.to_string())))
                .arg(text(q.tokens_per_day.map(|v| v.to_string())))
                .arg(text(q.monthly_budget_usd.map(|v| v.to_string())))
                .arg(text(seed.map(|t| t.day_tokens.to_string())))
                .arg(text(seed.map(|t| t.month_cost.to_string())));
        }
        let answer: Vec<String> = self.invoke(invocation).await?;
        parse_answer(&answer, a.quotas)
    }

    /// Redis is away: refuse (503), or count this replica's requests alone if allowed.
    async fn without_redis(
        &self,
        a: &Admission<'_>,
        error: &str,
    ) -> Result<Reservation, BasaltError> {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::error!(
                fail_open = self.fallback.is_some(),
                "the quota service (Redis) cannot be reached: {error}"
            );
        }
        match &self.fallback {
            Some(local) => local.admit(a).await,
            None => Err(unavailable()),
        }
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("the quota service (Redis) is reachable again");
        }
    }

    /// Settles a reservation in the background: the request's answer does not wait for it.
    pub(crate) fn settle(self: &Arc<Self>, r: Reservation, used_tokens: u64, cost: f64) {
        let Held::Redis {
            id,
            scopes,
            counted,
            now,
        } = &r.held
        else {
            if let Some(local) = &self.fallback {
                local.settle(&r, used_tokens, cost);
            }
            return;
        };
        let (id, scopes, counted, now) = (*id, scopes.clone(), counted.clone(), *now);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ledger = Arc::clone(self);
        runtime.spawn(async move {
            let mut invocation = ledger.settle.prepare_invoke();
            invocation
                .arg(format!("{id:016x}"))
                .arg(r.reserved)
                .arg(used_tokens)
                .arg(cost);
            // The admission's day and month: a request that ends after midnight corrects
            // the day it was counted in.
            let (day, _) = utc_day(now);
            let (_, month) = utc_month(now);
            for (scope, (counts_day, counts_month)) in scopes.iter().zip(&counted) {
                let key = |what: &str| format!("basalt:quota:{}:{scope}:{what}", r.tenant);
                invocation
                    .key(key("tokens"))
                    .key(key("tokens-sum"))
                    .key(key(&format!("day:{day}")))
                    .key(key(&format!("month:{month}")));
                let mut flags = String::from("-");
                if *counts_day {
                    flags.push('d');
                }
                if *counts_month {
                    flags.push('m');
                }
                invocation.arg(flags);
            }
            if let Err(e) = ledger.invoke::<String>(invocation).await {
                tracing::warn!(
                    "settling a quota reservation in Redis failed ({e}): its whole reservation \
                     stays counted (this minute, and the day's tokens until the day ends)"
                );
            }
        });
    }
}

fn parse_answer(
    answer: &[String],
    quotas: &[(String, basalt_store::Quota)],
) -> Result<Answer, String> {
    let field = |i: usize| answer.get(i).map(String::as_str).unwrap_or("0");
    let number = |i: usize| field(i).parse::<u64>().unwrap_or(1);
    let scope: usize = field(1).parse().unwrap_or(0);
    let quota = quotas
        .get(scope)
        .map(|(_, q)| q.clone())
        .unwrap_or_default();
    let refusal = match field(0) {
        "ok" => return Ok(Answer::Admitted),
        "seed" => return Ok(Answer::NeedsTotals),
        "requests" => Refusal::Requests {
            rpm: quota.requests_per_minute.unwrap_or(0),
            retry_after: number(2),
        },
        "too_large" => Refusal::TooLarge {
            tpm: quota.tokens_per_minute.unwrap_or(0),
        },
        "tokens" => Refusal::Tokens {
            tpm: quota.tokens_per_minute.unwrap_or(0),
            used: number(3),
            retry_after: number(2),
        },
        "day" => Refusal::Day {
            tpd: quota.tokens_per_day.unwrap_or(0),
            retry_after: number(2),
        },
        "budget" => Refusal::Budget {
            budget: quota.monthly_budget_usd.unwrap_or(0.0),
            spent: field(3).parse().unwrap_or(0.0),
            retry_after: number(2),
        },
        other => return Err(format!("unexpected answer from the quota script: {other}")),
    };
    Ok(Answer::Refused(scope, refusal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_store::{Quota, SecretBox, SqliteStore};

    /// A Redis from `scripts/with-services`, under a key prefix of its own per test run.
    fn redis_url() -> Option<String> {
        let url = std::env::var("BASALT_TEST_REDIS_URL").ok();
        assert!(
            url.is_some() || std::env::var_os("BASALT_REQUIRE_SERVICES").is_none(),
            "BASALT_REQUIRE_SERVICES is set but BASALT_TEST_REDIS_URL is not"
        );
        url
    }

    fn store() -> Arc<dyn Store> {
        Arc::new(SqliteStore::in_memory(SecretBox::new(&[1; 32])).unwrap())
    }

    fn tenant() -> String {
        format!("tnt_{}", basalt_store::random_token(12).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_ledgers_on_one_redis_share_a_requests_per_minute_limit() {
        let Some(url) = redis_url() else { return };
        let store = store();
        let replicas = [
            Arc::new(RedisLedger::new(&url, Arc::clone(&store), false).unwrap()),
            Arc::new(RedisLedger::new(&url, Arc::clone(&store), false).unwrap()),
        ];
        let tenant = tenant();
        let quotas = vec![(
            "m".to_string(),
            Quota {
                requests_per_minute: Some(7),
                ..Quota::default()
            },
        )];
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let ledger = Arc::clone(&replicas[i % 2]);
                let (tenant, quotas) = (tenant.clone(), quotas.clone());
                tokio::spawn(async move {
                    let a = Admission {
                        tenant: &tenant,
                        quotas: &quotas,
                        tokens: 1,
                        now: basalt_store::now(),
                    };
                    ledger.admit(&a).await.is_ok() as usize
                })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert_eq!(admitted, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn token_reservations_are_settled_to_real_use() {
        let Some(url) = redis_url() else { return };
        let ledger = Arc::new(RedisLedger::new(&url, store(), false).unwrap());
        let tenant = tenant();
        let quotas = vec![(
            "*".to_string(),
            Quota {
                tokens_per_minute: Some(100),
                tokens_per_day: Some(1000),
                ..Quota::default()
            },
        )];
        let admission = |tokens| Admission {
            tenant: &tenant,
            quotas: &quotas,
            tokens,
            now: basalt_store::now(),
        };
        let too_large = ledger.admit(&admission(101)).await.unwrap_err();
        assert_eq!(too_large.kind, ErrorKind::InvalidRequest);
        let first = ledger.admit(&admission(60)).await.unwrap();
        let refused = ledger.admit(&admission(50)).await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::QuotaExceeded);
        assert!(
            refused.message.contains("(60 in use)"),
            "{}",
            refused.message
        );
        ledger.settle(first, 20, 0.0);
        // Settling runs in the background: wait for the refund.
        let mut second = None;
        for _ in 0..50 {
            if let Ok(r) = ledger.admit(&admission(50)).await {
                second = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(second.is_some(), "the unused 40 tokens were never returned");
    }

    /// Entries older than the window leave the token log and its running sum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_reservations_leave_the_running_sum() {
        let Some(url) = redis_url() else { return };
        let ledger = RedisLedger::new(&url, store(), false).unwrap();
        let tenant = tenant();
        let quotas = vec![(
            "*".to_string(),
            Quota {
                tokens_per_minute: Some(60),
                ..Quota::default()
            },
        )];
        let a = Admission {
            tenant: &tenant,
            quotas: &quotas,
            tokens: 20,
            now: basalt_store::now(),
        };
        // A reservation of 50 tokens made two minutes ago, as Redis would still hold it.
        let mut c = ledger.connection().await.unwrap();
        let (time,): ((i64, i64),) = redis::pipe().cmd("TIME").query_async(&mut c).await.unwrap();
        let old = time.0 * 1000 - 120_000;
        let log = RedisLedger::key(&a, "*", "tokens");
        let sum = RedisLedger::key(&a, "*", "tokens-sum");
        let _: () = redis::pipe()
            .zadd(&log, "old:50", old)
            .incr(&sum, 50)
            .query_async(&mut c)
            .await
            .unwrap();
        ledger.admit(&a).await.unwrap();
        let (left, members): (i64, Vec<String>) = redis::pipe()
            .get(&sum)
            .zrange(&log, 0, -1)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(left, 20);
        assert_eq!(members.len(), 1);
        ledger.admit(&a).await.unwrap();
        assert!(ledger.admit(&a).await.is_ok());
        assert!(
            ledger.admit(&a).await.is_err(),
            "60 of 60 tokens are reserved"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_day_counter_starts_from_the_usage_store() {
        let Some(url) = redis_url() else { return };
        let store = store();
        let t = store.create_tenant("acme", 1).await.unwrap();
        store
            .record_usage(&basalt_store::UsageRecord {
                request_id: "r".into(),
                tenant_id: t.id.clone(),
                key_id: "k".into(),
                model_id: "m".into(),
                surface: "openai".into(),
                operation: "chat.completions".into(),
                input_tokens: 900,
                cached_input_tokens: 0,
                output_tokens: 50,
                latency_ms: 1,
                time_to_first_token_ms: None,
                status: "ok".into(),
                cost_usd: 0.0,
                guardrail_units: Default::default(),
                created_at: basalt_store::now(),
            })
            .await
            .unwrap();
        let ledger = RedisLedger::new(&url, Arc::clone(&store), false).unwrap();
        let quotas = vec![(
            "*".to_string(),
            Quota {
                tokens_per_day: Some(1000),
                ..Quota::default()
            },
        )];
        let admission = |tokens| Admission {
            tenant: &t.id,
            quotas: &quotas,
            tokens,
            now: basalt_store::now(),
        };
        ledger.admit(&admission(40)).await.unwrap();
        let e = ledger.admit(&admission(40)).await.unwrap_err();
        assert!(e.message.contains("daily token quota"), "{}", e.message);
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_closed_or_open_as_configured() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let quotas = vec![(
            "*".to_string(),
            Quota {
                requests_per_minute: Some(1),
                ..Quota::default()
            },
        )];
        let a = Admission {
            tenant: "t",
            quotas: &quotas,
            tokens: 1,
            now: basalt_store::now(),
        };
        let closed = RedisLedger::new(&url, store(), false).unwrap();
        let e = closed.admit(&a).await.unwrap_err();
        assert_eq!(
            (e.kind, e.retry_after_secs),
            (ErrorKind::Unavailable, Some(1))
        );
        // Open: this replica's own counts, still a limit.
        let open = RedisLedger::new(&url, store(), true).unwrap();
        assert!(matches!(
            open.admit(&a).await.unwrap().held,
            Held::Local { .. }
        ));
        assert_eq!(
            open.admit(&a).await.unwrap_err().kind,
            ErrorKind::QuotaExceeded
        );
    }
}
