//! The platform database's schema, as numbered migrations: applied in order at open,
//! `PRAGMA user_version` recording the last one applied. Append only: a migration that has
//! shipped is never edited, since databases in the field have already run it.

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the platform's first schema.
    "CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'active',
        weight INTEGER NOT NULL DEFAULT 1,
        log_invocations INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        name TEXT NOT NULL,
        key_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        sealed_secret BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE model_grants (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        model_id TEXT NOT NULL,
        PRIMARY KEY (tenant_id, model_id)
    );
    CREATE TABLE quotas (
        tenant_id TEXT NOT NULL REFERENCES tenants(id),
        model_id TEXT NOT NULL,
        requests_per_minute INTEGER,
        tokens_per_minute INTEGER,
        tokens_per_day INTEGER,
        monthly_budget_usd REAL,
        PRIMARY KEY (tenant_id, model_id)
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model_id TEXT NOT NULL,
        surface TEXT NOT NULL,
        operation TEXT NOT NULL,
        input_tokens INTEGER NOT NULL,
        cached_input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        ttft_ms INTEGER,
        status TEXT NOT NULL,
        cost_usd REAL NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX usage_by_tenant_time ON usage (tenant_id, created_at);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
    // 2: guardrails. One row per version: `DRAFT` (editable) and the numbered, immutable
    // snapshots of it. Scoped by tenant without a foreign key: local mode's and operator
    // keys' principals own guardrails too, and are not rows of `tenants`.
    "CREATE TABLE guardrails (
        tenant_id TEXT NOT NULL,
        id TEXT NOT NULL,
        version TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        definition TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, id, version)
    );
    CREATE UNIQUE INDEX guardrail_names ON guardrails (tenant_id, name) WHERE version = 'DRAFT';",
    // 3: guardrail text units (1,000 characters) per policy on usage rows, as Bedrock bills
    // them: a guardrail's assessments are rows of their own, beside the model call's.
    "ALTER TABLE usage ADD COLUMN guardrail_word_units INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN guardrail_sensitive_information_units INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN guardrail_contextual_grounding_units INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN guardrail_topic_units INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN guardrail_content_units INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX usage_by_request ON usage (request_id);",
    // 4: the guardrail an operator enforces on every model call of a tenant.
    "ALTER TABLE tenants ADD COLUMN enforced_guardrail_id TEXT;
    ALTER TABLE tenants ADD COLUMN enforced_guardrail_version TEXT;",
    // 5: stored API objects (OpenAI responses, files, batches), one table for every kind,
    // each a JSON body scoped by tenant. Like guardrails, no foreign key to `tenants`.
    "CREATE TABLE objects (
        tenant_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (tenant_id, kind, id)
    );
    CREATE INDEX objects_by_time ON objects (tenant_id, kind, created_at, id);",
];
