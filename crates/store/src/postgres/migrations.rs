//! The PostgreSQL schema, as numbered migrations applied at connect. Several replicas may
//! start at once: each applies what is missing inside one transaction holding an advisory
//! lock, so exactly one of them migrates and the others find the work done. Append only:
//! a migration that has shipped is never edited.
//!
//! The schema is the SQLite one's end state (`sqlite/migrations.rs`), with PostgreSQL's
//! types, plus what only a shared database needs: the replica that wrote each usage row,
//! the replicas' registry, and triggers that announce every change to what requests read.

use deadpool_postgres::Client;

use super::backend;
use crate::StoreError;

/// The advisory lock migrations hold (any constant; "basalt" in ASCII).
const MIGRATION_LOCK: i64 = 0x62_61_73_61_6c_74;

const MIGRATIONS: &[&str] = &[
    // 1: the platform's schema as of the first PostgreSQL release.
    "CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'active',
        weight INTEGER NOT NULL DEFAULT 1,
        log_invocations BOOLEAN NOT NULL DEFAULT FALSE,
        created_at BIGINT NOT NULL,
        enforced_guardrail_id TEXT,
        enforced_guardrail_version TEXT
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        name TEXT NOT NULL,
        key_hash BYTEA NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        revoked_at BIGINT
    );
    CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        sealed_secret BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE model_grants (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        model_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, model_id)
    );
    CREATE TABLE quotas (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        model_id TEXT NOT NULL,
        requests_per_minute BIGINT,
        tokens_per_minute BIGINT,
        tokens_per_day BIGINT,
        monthly_budget_usd DOUBLE PRECISION,
        PRIMARY KEY (tenant_id, model_id)
    );
    CREATE TABLE usage (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        replica_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        surface TEXT NOT NULL,
        operation TEXT NOT NULL,
        input_tokens BIGINT NOT NULL,
        cached_input_tokens BIGINT NOT NULL,
        output_tokens BIGINT NOT NULL,
        latency_ms BIGINT NOT NULL,
        ttft_ms BIGINT,
        status TEXT NOT NULL,
        cost_usd DOUBLE PRECISION NOT NULL,
        created_at BIGINT NOT NULL,
        guardrail_word_units BIGINT NOT NULL DEFAULT 0,
        guardrail_sensitive_information_units BIGINT NOT NULL DEFAULT 0,
        guardrail_contextual_grounding_units BIGINT NOT NULL DEFAULT 0,
        guardrail_topic_units BIGINT NOT NULL DEFAULT 0,
        guardrail_content_units BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX usage_by_tenant_time ON usage (tenant_id, created_at);
    CREATE INDEX usage_by_request ON usage (request_id);
    CREATE INDEX usage_in_progress ON usage (replica_id) WHERE status = 'in_progress';
    CREATE TABLE settings (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE guardrails (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        version TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        definition TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, id, version)
    );
    CREATE UNIQUE INDEX guardrail_names ON guardrails (tenant_id, name) WHERE version = 'DRAFT';
    CREATE TABLE objects (
        tenant_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (tenant_id, kind, id)
    );
    CREATE INDEX objects_by_time ON objects (tenant_id, kind, created_at, id);
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        models TEXT[] NOT NULL,
        catalog TEXT NOT NULL DEFAULT '[]',
        queued BIGINT NOT NULL,
        running BIGINT NOT NULL,
        kv_bytes BIGINT NOT NULL DEFAULT 0,
        heartbeat_at_ms BIGINT NOT NULL
    );
    -- Every change to what requests read is announced on commit, whoever made it (a
    -- replica's admin API, the CLI, an operator's SQL), so replicas drop their caches.
    CREATE FUNCTION basalt_announce_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('basalt_changes', TG_TABLE_NAME);
        RETURN NULL;
    END $$;
    CREATE TRIGGER tenants_changed AFTER INSERT OR UPDATE OR DELETE ON tenants
        FOR EACH STATEMENT EXECUTE FUNCTION basalt_announce_change();
    CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
        FOR EACH STATEMENT EXECUTE FUNCTION basalt_announce_change();
    CREATE TRIGGER access_keys_changed AFTER INSERT OR UPDATE OR DELETE ON access_keys
        FOR EACH STATEMENT EXECUTE FUNCTION basalt_announce_change();
    CREATE TRIGGER model_grants_changed AFTER INSERT OR UPDATE OR DELETE ON model_grants
        FOR EACH STATEMENT EXECUTE FUNCTION basalt_announce_change();
    CREATE TRIGGER quotas_changed AFTER INSERT OR UPDATE OR DELETE ON quotas
        FOR EACH STATEMENT EXECUTE FUNCTION basalt_announce_change();",
    // 2: quotas counted in the database, for replicas without Redis: the reservations of
    // the last minute, and each scope's counter for this UTC day's tokens and this month's
    // spend. Unlogged: after a crash they are empty, and the counters are rebuilt from usage.
    "CREATE UNLOGGED TABLE quota_reservations (
        tenant_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        id BIGINT NOT NULL,
        at_ms BIGINT NOT NULL,
        tokens BIGINT NOT NULL,
        PRIMARY KEY (tenant_id, scope, id)
    );
    CREATE INDEX quota_reservations_by_time ON quota_reservations (tenant_id, scope, at_ms);
    CREATE UNLOGGED TABLE quota_counters (
        tenant_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        period TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (tenant_id, scope, period)
    );",
];

/// The channel the change triggers notify.
pub(super) const CHANGES_CHANNEL: &str = "basalt_changes";

/// Brings the schema up to date; safe when several processes call it at once.
pub(super) async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS basalt_schema (version INTEGER PRIMARY KEY)")
        .await
        .map_err(backend)?;
    let applied: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM basalt_schema", &[])
        .await
        .map_err(backend)?
        .get(0);
    if applied as usize > MIGRATIONS.len() {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {applied}, newer than this Basalt knows ({}): \
             run the newer release",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.execute(
            "INSERT INTO basalt_schema (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(backend)?;
    }
    tx.commit().await.map_err(backend)
}
