//! One suite, every backend: what a client can observe of the store must not depend on
//! whether it is the embedded SQLite file or the PostgreSQL database replicas share.
//!
//! PostgreSQL comes from `BASALT_TEST_POSTGRES_URL` (a superuser URL; `scripts/with-services`
//! starts a throwaway server and sets it, as `make test` does); each test gets a database
//! of its own. Without it the PostgreSQL half is skipped with a note, unless
//! `BASALT_REQUIRE_SERVICES` is set (CI), where a missing server fails the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::sync::Arc;
use std::time::Duration;

use basalt_store::{
    now, random_token, GuardrailDraft, GuardrailRef, GuardrailUnits, PostgresStore, Quota,
    ReplicaStatus, SecretBox, SqliteStore, Store, StoreError, StoredObject, UsageQuery,
    UsageRecord, DRAFT, INTERRUPTED, IN_PROGRESS,
};

const KEY: [u8; 32] = [7; 32];

/// A fresh, empty PostgreSQL database's URL, or `None` when no server is configured.
async fn fresh_postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var("BASALT_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("BASALT_REQUIRE_SERVICES").is_none(),
            "BASALT_REQUIRE_SERVICES is set but BASALT_TEST_POSTGRES_URL is not: run under \
             scripts/with-services"
        );
        eprintln!(
            "note: BASALT_TEST_POSTGRES_URL is not set; the PostgreSQL backend is not tested"
        );
        return None;
    };
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = format!("basalt_{}", random_token(10).unwrap().to_ascii_lowercase());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    // The admin URL names a database last: the same server, the new database.
    let base = admin.rsplit_once('/').unwrap().0;
    Some(format!("{base}/{name}"))
}

async fn postgres(replica: &str) -> Option<Arc<dyn Store>> {
    let url = fresh_postgres_database().await?;
    Some(Arc::new(
        PostgresStore::connect(&url, SecretBox::new(&KEY), replica)
            .await
            .unwrap(),
    ))
}

fn sqlite() -> Arc<dyn Store> {
    Arc::new(SqliteStore::in_memory(SecretBox::new(&KEY)).unwrap())
}

/// Runs a suite on SQLite, then on PostgreSQL when there is one.
macro_rules! on_every_backend {
    ($($suite:ident),* $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    super::$suite(super::sqlite()).await;
                }
            )*
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $suite() {
                    if let Some(store) = super::postgres("replica-a").await {
                        super::$suite(store).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    tenants_and_api_keys,
    access_keys_are_sealed_and_scoped,
    grants_and_quotas,
    usage_is_metered_and_summed,
    guardrails_version_and_stay_while_enforced,
    objects_page_newest_first,
    the_admin_token_is_kept,
    concurrent_tasks_see_their_writes,
    concurrent_usage_writes_each_get_their_own_result,
);

fn usage(tenant: &str, request: &str, input: u64, output: u64) -> UsageRecord {
    UsageRecord {
        request_id: request.into(),
        tenant_id: tenant.into(),
        key_id: "k".into(),
        model_id: "m1".into(),
        surface: "openai".into(),
        operation: "chat.completions".into(),
        input_tokens: input,
        cached_input_tokens: 0,
        output_tokens: output,
        latency_ms: 3,
        time_to_first_token_ms: Some(1),
        status: "ok".into(),
        cost_usd: 0.5,
        guardrail_units: GuardrailUnits::default(),
        created_at: now(),
    }
}

async fn tenants_and_api_keys(s: Arc<dyn Store>) {
    let t = s.create_tenant("acme", 2).await.unwrap();
    assert!(matches!(
        s.create_tenant("acme", 1).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.create_tenant("bad name!", 1).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_tenant("zero", 0).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.tenant("acme").await.unwrap(), t);
    assert_eq!(s.tenant(&t.id).await.unwrap(), t);
    assert!(matches!(
        s.tenant("nobody").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(s.tenants().await.unwrap(), vec![t.clone()]);

    let k = s.create_api_key(&t.id, "ci", None).await.unwrap();
    assert!(matches!(
        s.create_api_key("tnt_missing", "ci", None).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.create_api_key(&t.id, "  ", None).await,
        Err(StoreError::Invalid(_))
    ));
    let hash = basalt_auth::sha256(k.key.as_bytes());
    let p = s
        .principal_for_api_key(&hash, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p.tenant.as_str(), p.key_id.as_str()),
        (t.id.as_str(), k.info.id.as_str())
    );
    assert!(p.managed);
    let listed = s.api_keys(&t.id).await.unwrap();
    assert_eq!(listed, vec![k.info.clone()]);
    assert!(!format!("{listed:?}").contains(&k.key));

    // Another tenant cannot revoke it; its owner can, once and for all.
    let other = s.create_tenant("other", 1).await.unwrap();
    assert!(matches!(
        s.revoke_api_key(&other.id, &k.info.id).await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_api_key(&t.id, &k.info.id).await.unwrap();
    assert!(s
        .principal_for_api_key(&hash, now())
        .await
        .unwrap()
        .is_none());
    assert!(s.api_keys(&t.id).await.unwrap()[0].revoked_at.is_some());

    let expiring = s
        .create_api_key(&t.id, "short", Some(now() + 60))
        .await
        .unwrap();
    let h = basalt_auth::sha256(expiring.key.as_bytes());
    assert!(s.principal_for_api_key(&h, now()).await.unwrap().is_some());
    assert!(s
        .principal_for_api_key(&h, now() + 61)
        .await
        .unwrap()
        .is_none());

    let updated = s
        .update_tenant(&t.id, Some("suspended"), Some(5), Some(true))
        .await
        .unwrap();
    assert_eq!(
        (
            updated.status.as_str(),
            updated.weight,
            updated.log_invocations
        ),
        ("suspended", 5, true)
    );
    assert!(s.principal_for_api_key(&h, now()).await.unwrap().is_none());
    assert!(matches!(
        s.update_tenant(&t.id, Some("gone"), None, None).await,
        Err(StoreError::Invalid(_))
    ));
    // Fields not given are kept.
    let again = s
        .update_tenant(&t.id, Some("active"), None, None)
        .await
        .unwrap();
    assert_eq!((again.weight, again.log_invocations), (5, true));
    assert!(s.principal_for_api_key(&h, now()).await.unwrap().is_some());
}

async fn access_keys_are_sealed_and_scoped(s: Arc<dyn Store>) {
    let t = s.create_tenant("acme", 1).await.unwrap();
    let k = s.create_access_key(&t.id).await.unwrap();
    let found = s
        .access_key_secret(&k.info.access_key_id, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.secret, k.secret_access_key);
    assert_eq!(found.principal.tenant, t.id);
    assert_eq!(s.access_keys(&t.id).await.unwrap(), vec![k.info.clone()]);
    let other = s.create_tenant("other", 1).await.unwrap();
    assert!(s
        .revoke_access_key(&other.id, &k.info.access_key_id)
        .await
        .is_err());
    s.revoke_access_key(&t.id, &k.info.access_key_id)
        .await
        .unwrap();
    assert!(s
        .access_key_secret(&k.info.access_key_id, now())
        .await
        .unwrap()
        .is_none());
    assert!(s
        .access_key_secret("BSAKNOSUCHKEY", now())
        .await
        .unwrap()
        .is_none());
}

async fn grants_and_quotas(s: Arc<dyn Store>) {
    let a = s.create_tenant("a", 1).await.unwrap();
    let b = s.create_tenant("b", 1).await.unwrap();
    s.grant_model(&a.id, "m1").await.unwrap();
    s.grant_model(&a.id, "m1").await.unwrap();
    s.grant_model(&a.id, "*").await.unwrap();
    assert_eq!(s.granted_models(&a.id).await.unwrap(), ["*", "m1"]);
    assert!(s.granted_models(&b.id).await.unwrap().is_empty());
    assert!(matches!(
        s.grant_model("tnt_missing", "m1").await,
        Err(StoreError::NotFound(_))
    ));
    s.revoke_model(&a.id, "*").await.unwrap();
    assert_eq!(s.granted_models(&a.id).await.unwrap(), ["m1"]);

    let q = Quota {
        requests_per_minute: Some(5),
        tokens_per_minute: Some(1000),
        tokens_per_day: Some(u64::from(u32::MAX) + 1),
        monthly_budget_usd: Some(12.5),
    };
    s.set_quota(&a.id, "*", &q).await.unwrap();
    assert_eq!(s.quotas(&a.id).await.unwrap(), vec![("*".to_string(), q)]);
    let lower = Quota {
        requests_per_minute: Some(1),
        ..Quota::default()
    };
    s.set_quota(&a.id, "*", &lower).await.unwrap();
    assert_eq!(
        s.quotas(&a.id).await.unwrap(),
        vec![("*".to_string(), lower)]
    );
    assert!(s.quotas(&b.id).await.unwrap().is_empty());
}

async fn usage_is_metered_and_summed(s: Arc<dyn Store>) {
    for (tenant, request, tokens) in [("a", "r1", 10), ("a", "r2", 20), ("b", "r3", 5)] {
        s.record_usage(&usage(tenant, request, tokens, 1))
            .await
            .unwrap();
    }
    let of_a = UsageQuery {
        tenant_id: Some("a".into()),
        ..Default::default()
    };
    let totals = s.usage_totals(&of_a).await.unwrap();
    assert_eq!(
        (totals.requests, totals.input_tokens, totals.output_tokens),
        (2, 30, 2)
    );
    assert!((totals.cost_usd - 1.0).abs() < 1e-9);
    let rows = s.usage(&of_a).await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|u| u.request_id.as_str())
            .collect::<Vec<_>>(),
        ["r2", "r1"],
        "newest first"
    );
    assert_eq!(
        rows[1],
        usage("a", "r1", 10, 1).with_created_at(rows[1].created_at)
    );
    let none = UsageQuery {
        from: Some(now() + 3600),
        ..Default::default()
    };
    assert_eq!(s.usage_totals(&none).await.unwrap().requests, 0);

    // Begun, then completed; an unknown record cannot be completed.
    let begun = UsageRecord {
        status: IN_PROGRESS.into(),
        output_tokens: 0,
        ..usage("c", "r4", 7, 0)
    };
    let id = s.begin_usage(&begun).await.unwrap();
    let done = UsageRecord {
        status: "ok".into(),
        output_tokens: 9,
        ..begun.clone()
    };
    assert!(matches!(
        s.complete_usage(id + 1000, &done).await,
        Err(StoreError::NotFound(_))
    ));
    s.complete_usage(id, &done).await.unwrap();
    let c = UsageQuery {
        tenant_id: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(s.usage(&c).await.unwrap(), vec![done]);

    // A guardrail's units join its call's row; a call without one gets its own.
    let units = |request: &str, word| UsageRecord {
        guardrail_units: GuardrailUnits {
            word,
            sensitive_information: 2,
            ..GuardrailUnits::default()
        },
        ..usage("c", request, 0, 0)
    };
    s.record_guardrail_units(&units("r4", 10)).await.unwrap();
    s.record_guardrail_units(&units("r5", 3)).await.unwrap();
    let rows = s.usage(&c).await.unwrap();
    let words: Vec<u64> = rows.iter().map(|r| r.guardrail_units.word).collect();
    assert_eq!(words, [3, 10]);
    let sums = s.usage_totals(&c).await.unwrap().guardrail_units;
    assert_eq!((sums.word, sums.sensitive_information), (13, 4));

    // A server that starts marks what it left unfinished.
    let id = s.begin_usage(&begun).await.unwrap();
    assert_eq!(s.interrupt_unfinished_usage().await.unwrap(), 1);
    let statuses: Vec<String> = s
        .usage(&c)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.status)
        .collect();
    assert_eq!(statuses[0], INTERRUPTED);
    // A request that ends after all still records its real use.
    s.complete_usage(
        id,
        &UsageRecord {
            status: "ok".into(),
            ..begun
        },
    )
    .await
    .unwrap();
}

trait WithCreatedAt {
    fn with_created_at(self, at: i64) -> Self;
}

impl WithCreatedAt for UsageRecord {
    fn with_created_at(self, created_at: i64) -> Self {
        UsageRecord { created_at, ..self }
    }
}

async fn guardrails_version_and_stay_while_enforced(s: Arc<dyn Store>) {
    let acme = s.create_tenant("acme", 1).await.unwrap();
    let draft = |name: &str, definition: &str| GuardrailDraft {
        name: name.into(),
        description: Some("d".into()),
        definition: definition.into(),
    };
    let g = s
        .create_guardrail(&acme.id, &draft("pii", "{}"))
        .await
        .unwrap();
    assert!(matches!(
        s.create_guardrail(&acme.id, &draft("pii", "{}")).await,
        Err(StoreError::Conflict(_))
    ));
    // Names are unique per tenant, not across them.
    s.create_guardrail("other", &draft("pii", "{}"))
        .await
        .unwrap();
    let v1 = s
        .create_guardrail_version(&acme.id, &g.id, None)
        .await
        .unwrap();
    s.update_guardrail(&acme.id, &g.id, &draft("pii", "{\"v\":2}"))
        .await
        .unwrap();
    let v2 = s
        .create_guardrail_version(&acme.id, &g.id, Some("second"))
        .await
        .unwrap();
    assert_eq!((v1.version.as_str(), v2.version.as_str()), ("1", "2"));
    assert_eq!(v2.description.as_deref(), Some("second"));
    assert_eq!(
        s.guardrail(&acme.id, &g.id, "1").await.unwrap().definition,
        "{}"
    );
    let versions: Vec<String> = s
        .guardrails(&acme.id, Some(&g.id))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(versions, [DRAFT, "1", "2"]);
    assert_eq!(s.guardrails(&acme.id, None).await.unwrap().len(), 1);
    assert!(matches!(
        s.guardrail("other", &g.id, DRAFT).await,
        Err(StoreError::NotFound(_))
    ));

    let enforced = GuardrailRef {
        id: g.id.clone(),
        version: "1".into(),
    };
    let t = s
        .set_enforced_guardrail(&acme.id, Some(&enforced))
        .await
        .unwrap();
    assert_eq!(t.enforced_guardrail, Some(enforced.clone()));
    assert!(matches!(
        s.delete_guardrail(&acme.id, &g.id, Some("1")).await,
        Err(StoreError::Conflict(_))
    ));
    s.delete_guardrail(&acme.id, &g.id, Some("2"))
        .await
        .unwrap();
    let missing = GuardrailRef {
        version: "9".into(),
        ..enforced
    };
    assert!(s
        .set_enforced_guardrail(&acme.id, Some(&missing))
        .await
        .is_err());
    s.set_enforced_guardrail(&acme.id, None).await.unwrap();
    s.delete_guardrail(&acme.id, &g.id, None).await.unwrap();
    assert!(s
        .guardrails(&acme.id, Some(&g.id))
        .await
        .unwrap()
        .is_empty());
}

async fn objects_page_newest_first(s: Arc<dyn Store>) {
    let object = |tenant: &str, id: &str, at: i64| StoredObject {
        tenant_id: tenant.into(),
        kind: "response".into(),
        id: id.into(),
        created_at: at,
        body: format!("{{\"id\":\"{id}\"}}"),
    };
    for (id, at) in [("a", 1), ("b", 2), ("c", 2), ("d", 3)] {
        s.put_object(&object("acme", id, at)).await.unwrap();
    }
    s.put_object(&object("other", "z", 5)).await.unwrap();
    let ids =
        |p: &basalt_store::ObjectPage| p.objects.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    let first = s.objects("acme", "response", None, 2).await.unwrap();
    assert_eq!(
        (ids(&first), first.has_more),
        (vec!["d".into(), "c".into()], true)
    );
    let second = s.objects("acme", "response", Some("c"), 2).await.unwrap();
    assert_eq!(
        (ids(&second), second.has_more),
        (vec!["b".into(), "a".into()], false)
    );
    assert!(matches!(
        s.objects("acme", "response", Some("z"), 2).await,
        Err(StoreError::NotFound(_))
    ));
    // Putting again replaces the body, not the creation time; others' ids are not found.
    let mut replaced = object("acme", "a", 99);
    replaced.body = "{}".into();
    s.put_object(&replaced).await.unwrap();
    let stored = s.object("acme", "response", "a").await.unwrap();
    assert_eq!((stored.body.as_str(), stored.created_at), ("{}", 1));
    assert!(matches!(
        s.object("other", "response", "a").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_object("other", "response", "a").await,
        Err(StoreError::NotFound(_))
    ));
    s.delete_object("acme", "response", "a").await.unwrap();
    assert!(s.object("acme", "response", "a").await.is_err());
}

async fn the_admin_token_is_kept(s: Arc<dyn Store>) {
    assert_eq!(s.admin_token_hash().await.unwrap(), None);
    s.set_admin_token_hash(&[3; 32]).await.unwrap();
    s.set_admin_token_hash(&[4; 32]).await.unwrap();
    assert_eq!(s.admin_token_hash().await.unwrap(), Some([4; 32]));
}

async fn concurrent_tasks_see_their_writes(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let t = s.create_tenant(&format!("t{i}"), 1).await.unwrap();
                s.grant_model(&t.id, "m").await.unwrap();
                assert_eq!(s.granted_models(&t.id).await.unwrap(), ["m"]);
                let key = s.create_api_key(&t.id, "k", None).await.unwrap();
                let hash = basalt_auth::sha256(key.key.as_bytes());
                let p = s
                    .principal_for_api_key(&hash, now())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(p.tenant, t.id);
                let record = usage(&t.id, &format!("r{i}"), 3, 4);
                let id = s.begin_usage(&record).await.unwrap();
                s.complete_usage(id, &record).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(s.tenants().await.unwrap().len(), 16);
    let totals = s.usage_totals(&UsageQuery::default()).await.unwrap();
    assert_eq!((totals.requests, totals.output_tokens), (16, 64));
}

/// Usage writes are group-committed: many at once, each caller gets its own record's id
/// back, and a write that fails (completing an unknown record) fails only its caller.
async fn concurrent_usage_writes_each_get_their_own_result(s: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let begun = UsageRecord {
                    status: IN_PROGRESS.into(),
                    ..usage("t", &format!("r{i}"), i, 0)
                };
                let id = s.begin_usage(&begun).await.unwrap();
                let done = UsageRecord {
                    status: "ok".into(),
                    output_tokens: i + 1,
                    ..begun
                };
                assert!(matches!(
                    s.complete_usage(-id, &done).await,
                    Err(StoreError::NotFound(_))
                ));
                s.complete_usage(id, &done).await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = s.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(all.len(), 64);
    assert!(all
        .iter()
        .all(|u| u.status == "ok" && u.output_tokens == u.input_tokens + 1));
}

// What only a shared database does.

/// Replicas starting at once on an empty database: one migrates, all connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let starts: Vec<_> = (0..6)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                PostgresStore::connect(&url, SecretBox::new(&KEY), &format!("r{i}")).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for start in starts {
        stores.push(start.await.unwrap().unwrap());
    }
    let t = stores[0].create_tenant("shared", 1).await.unwrap();
    assert_eq!(stores[5].tenant("shared").await.unwrap(), t);
}

/// A replica's unfinished requests are its own until its heartbeat stops; then the next
/// survivor's heartbeat marks them interrupted, and a replica that restarts marks its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_unfinished_requests_are_interrupted() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let connect = |replica: &'static str| {
        let url = url.clone();
        async move {
            PostgresStore::connect(&url, SecretBox::new(&KEY), replica)
                .await
                .unwrap()
        }
    };
    let (a, b) = (connect("a").await, connect("b").await);
    let status = |id: &str| ReplicaStatus {
        id: id.into(),
        address: format!("http://{id}:8080"),
        models: vec!["m1".into()],
        catalog: "[{\"id\":\"m1\"}]".into(),
        queued: 1,
        running: 2,
        kv_bytes: 4096,
        heartbeat_at_ms: 0,
    };
    a.heartbeat(&status("a")).await.unwrap();
    b.heartbeat(&status("b")).await.unwrap();
    let live = a.replicas().await.unwrap();
    assert_eq!(
        live.iter()
            .map(|r| (r.id.as_str(), r.running))
            .collect::<Vec<_>>(),
        [("a", 2), ("b", 2)]
    );
    assert_eq!(live[0].catalog, "[{\"id\":\"m1\"}]");
    assert_eq!(live[0].kv_bytes, 4096);
    let begun = UsageRecord {
        status: IN_PROGRESS.into(),
        ..usage("t", "on-b", 5, 0)
    };
    b.begin_usage(&begun).await.unwrap();
    a.begin_usage(&UsageRecord {
        request_id: "on-a".into(),
        ..begun.clone()
    })
    .await
    .unwrap();
    // B is alive: A's heartbeat and A's restart leave B's request alone.
    a.heartbeat(&status("a")).await.unwrap();
    assert_eq!(
        a.interrupt_unfinished_usage().await.unwrap(),
        1,
        "only A's own"
    );
    let status_of = |rows: &[UsageRecord], request: &str| {
        rows.iter()
            .find(|u| u.request_id == request)
            .unwrap()
            .status
            .clone()
    };
    let rows = a.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(status_of(&rows, "on-b"), IN_PROGRESS);
    assert_eq!(status_of(&rows, "on-a"), INTERRUPTED);

    // B stops heartbeating (its row is aged past the timeout, as time would).
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute(
            "UPDATE replicas SET heartbeat_at_ms = heartbeat_at_ms - 60000 WHERE id = 'b'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        a.replicas()
            .await
            .unwrap()
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    a.heartbeat(&status("a")).await.unwrap();
    let rows = a.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(status_of(&rows, "on-b"), INTERRUPTED);
}

/// A change to keys, grants or quotas by any process is heard by every watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_announced_to_every_replica() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let a = PostgresStore::connect(&url, SecretBox::new(&KEY), "a")
        .await
        .unwrap();
    let b = PostgresStore::connect(&url, SecretBox::new(&KEY), "b")
        .await
        .unwrap();
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    b.watch_changes(Arc::new(move || {
        let _ = heard.send(());
    }))
    .unwrap();
    // The first call says "you may have missed changes": the watch is listening now.
    tokio::time::timeout(Duration::from_secs(10), hearing.recv())
        .await
        .unwrap();
    let t = a.create_tenant("acme", 1).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), hearing.recv())
        .await
        .expect("a new tenant is announced");
    a.grant_model(&t.id, "m").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), hearing.recv())
        .await
        .expect("a grant is announced");
    // Usage is not what caches hold: it is not announced.
    a.record_usage(&usage(&t.id, "r", 1, 1)).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), hearing.recv())
            .await
            .is_err()
    );
}

/// Quotas counted in the database: replicas admitting at once never overshoot, unused
/// reserved tokens come back at settlement, and the day's count starts from usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_counted_in_the_database_hold_across_replicas() {
    use basalt_store::{QuotaCounter, QuotaDecision, QuotaLimit, QuotaRequest};
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    let replicas: Vec<Arc<PostgresStore>> = vec![
        Arc::new(
            PostgresStore::connect(&url, SecretBox::new(&KEY), "a")
                .await
                .unwrap(),
        ),
        Arc::new(
            PostgresStore::connect(&url, SecretBox::new(&KEY), "b")
                .await
                .unwrap(),
        ),
    ];
    let rpm = vec![(
        "m".to_string(),
        Quota {
            requests_per_minute: Some(7),
            ..Quota::default()
        },
    )];
    let tasks: Vec<_> = (0..20u64)
        .map(|i| {
            let (store, quotas) = (Arc::clone(&replicas[i as usize % 2]), rpm.clone());
            tokio::spawn(async move {
                let request = QuotaRequest {
                    tenant: "t1",
                    quotas: &quotas,
                    tokens: 1,
                    reservation: i,
                    now: now(),
                };
                store.admit(&request).await.unwrap() == QuotaDecision::Admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap() as usize;
    }
    assert_eq!(admitted, 7);

    let tokens = vec![(
        "*".to_string(),
        Quota {
            tokens_per_minute: Some(100),
            tokens_per_day: Some(1000),
            ..Quota::default()
        },
    )];
    let request = |reservation, tokens_wanted| QuotaRequest {
        tenant: "t2",
        quotas: &tokens,
        tokens: tokens_wanted,
        reservation,
        now: now(),
    };
    let (a, b) = (&replicas[0], &replicas[1]);
    assert!(matches!(
        a.admit(&request(1, 101)).await.unwrap(),
        QuotaDecision::Refused {
            limit: QuotaLimit::LargerThanTokensPerMinute,
            ..
        }
    ));
    assert_eq!(
        a.admit(&request(2, 60)).await.unwrap(),
        QuotaDecision::Admitted
    );
    assert!(matches!(
        b.admit(&request(3, 50)).await.unwrap(),
        QuotaDecision::Refused { limit: QuotaLimit::TokensPerMinute, used, .. } if used == 60.0
    ));
    a.settle(&request(2, 60), 20, 0.0).await.unwrap();
    assert_eq!(
        b.admit(&request(4, 50)).await.unwrap(),
        QuotaDecision::Admitted
    );

    // The day's count starts from what usage already holds.
    a.record_usage(&usage("t3", "r", 900, 50)).await.unwrap();
    let daily = vec![(
        "m1".to_string(),
        Quota {
            tokens_per_day: Some(1000),
            ..Quota::default()
        },
    )];
    let day = |reservation| QuotaRequest {
        tenant: "t3",
        quotas: &daily,
        tokens: 40,
        reservation,
        now: now(),
    };
    assert_eq!(b.admit(&day(1)).await.unwrap(), QuotaDecision::Admitted);
    assert!(matches!(
        a.admit(&day(2)).await.unwrap(),
        QuotaDecision::Refused {
            limit: QuotaLimit::TokensPerDay,
            ..
        }
    ));
}
