//! Tenancy from the command line: opening the platform database (shared with `serve`), and
//! `basalt tenants`, `basalt keys`, `basalt usage`, which work on the database directly,
//! with or without a running server. (The model catalog is `models`'.)

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use basalt_store::{PostgresStore, Quota, QuotaCounter, SecretBox, SqliteStore, Store, UsageQuery};

use crate::CliResult;

#[derive(clap::Args, Clone)]
pub struct DatabaseArgs {
    /// Data directory (the platform database, the server key) [default: ${XDG_DATA_HOME:-~/.local/share}/basalt]
    #[arg(long, env = "BASALT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Key that encrypts SigV4 secrets at rest, 64 hex digits [default: generated once into <data dir>/server.key]
    /// (replicas sharing a database must share it)
    #[arg(long, env = "BASALT_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// A PostgreSQL database to keep the platform's state in, shared by every replica
    /// (`postgres://user:password@host:5432/basalt`) [default: SQLite in the data directory]
    #[arg(long, env = "BASALT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// This process's name among replicas sharing a database: on its usage records and in
    /// the replica registry; keep it stable across restarts (a pod's name)
    /// [default: the host name and the port]
    #[arg(long, env = "BASALT_REPLICA_ID")]
    pub replica_id: Option<String>,
}

impl DatabaseArgs {
    pub fn dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| basalt_catalog::data_home().join("basalt"))
    }

    /// The store and the id of a tenant named by id or name.
    async fn tenant(
        &self,
        tenant: &str,
    ) -> Result<(Arc<dyn Store>, String), Box<dyn std::error::Error>> {
        let store = self.open_database(None).await?;
        let id = store.tenant(tenant).await?.id;
        Ok((store, id))
    }

    /// Opens the platform database: PostgreSQL at `--database-url`, else (creating it if
    /// needed) the data directory's SQLite file. `replica` names this process among the
    /// replicas of a shared database (the CLI is none of them).
    pub async fn open_database(
        &self,
        replica: Option<&str>,
    ) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(self.open(replica).await?.store)
    }

    /// The platform database, and with PostgreSQL the quota counter it also is.
    pub async fn open(
        &self,
        replica: Option<&str>,
    ) -> Result<OpenDatabase, Box<dyn std::error::Error>> {
        let dir = self.dir();
        let key = match &self.secret_key {
            Some(hex) => parse_hex_key(hex)?,
            None => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
                server_key(&dir.join("server.key"))?
            }
        };
        if let Some(url) = &self.database_url {
            let replica = replica.unwrap_or("cli");
            let store = PostgresStore::connect(url, SecretBox::new(&key), replica)
                .await
                .map_err(|e| format!("cannot open the platform database at --database-url: {e}"))?;
            let store = Arc::new(store);
            return Ok(OpenDatabase {
                store: Arc::clone(&store) as Arc<dyn Store>,
                quota_counter: Some(store),
                server_key: key,
            });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let path = dir.join("basalt.db");
        let store =
            tokio::task::spawn_blocking(move || SqliteStore::open(&path, SecretBox::new(&key)))
                .await?
                .map_err(|e| {
                    format!(
                        "cannot open the platform database in {}: {e}",
                        dir.display()
                    )
                })?;
        Ok(OpenDatabase {
            store: Arc::new(store),
            quota_counter: None,
            server_key: key,
        })
    }
}

/// An opened platform database.
pub struct OpenDatabase {
    pub store: Arc<dyn Store>,
    /// Quotas counted in the database itself, exactly across replicas (PostgreSQL).
    pub quota_counter: Option<Arc<dyn QuotaCounter>>,
    /// The key replicas share (sealing SigV4 secrets; console sessions derive theirs).
    pub server_key: [u8; 32],
}

fn parse_hex_key(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return Err("the secret key must be 64 hex digits".into());
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| "the secret key must be 64 hex digits".to_string())?;
    }
    Ok(key)
}

/// The server key in `path`, created (owner-readable only) on first use.
fn server_key(path: &Path) -> Result<[u8; 32], Box<dyn std::error::Error>> {
    if let Ok(text) = std::fs::read_to_string(path) {
        return Ok(parse_hex_key(&text)?);
    }
    let key = SecretBox::generate_key()?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(hex.as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

#[derive(clap::Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant (and grant it models)
    Create {
        name: String,
        /// Share of the engine under contention
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Grant this model (repeatable; `*` grants every model)
        #[arg(long = "model")]
        models: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List tenants
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Change a tenant's status, weight or invocation logging
    Set {
        tenant: String,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        log_invocations: Option<bool>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Enforce one of the tenant's guardrails on every model call it makes (`--clear`
    /// lifts it)
    Guardrail {
        tenant: String,
        /// The guardrail's id or ARN
        #[arg(required_unless_present = "clear")]
        guardrail: Option<String>,
        /// `DRAFT` or a version number
        #[arg(long, default_value = "DRAFT")]
        version: String,
        #[arg(long, conflicts_with = "guardrail")]
        clear: bool,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Grant a model (`*` for all)
    Grant {
        tenant: String,
        model: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Take a model grant back
    Revoke {
        tenant: String,
        model: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Set a tenant's quota for a model (`*` for all models together)
    Quota {
        tenant: String,
        model: String,
        #[arg(long)]
        requests_per_minute: Option<u32>,
        #[arg(long)]
        tokens_per_minute: Option<u64>,
        #[arg(long)]
        tokens_per_day: Option<u64>,
        #[arg(long)]
        monthly_budget_usd: Option<f64>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key (printed once; only its hash is kept)
    Create {
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// Days until the key stops working
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Create an AWS-style access key pair for SigV4 (the secret is printed once)
    CreateAws {
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List a tenant's keys (never the keys themselves)
    List {
        tenant: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke an API key or access key by its id
    Revoke {
        tenant: String,
        key_id: String,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(clap::Args)]
pub struct UsageArgs {
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Only the last this many hours
    #[arg(long)]
    since_hours: Option<u32>,
    /// Print the individual records too
    #[arg(long)]
    records: bool,
    #[command(flatten)]
    database: DatabaseArgs,
}

fn print(v: &impl serde::Serialize) -> CliResult {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Runs a command's future on a runtime of its own: the store's calls are async.
fn block_on(command: impl std::future::Future<Output = CliResult>) -> CliResult {
    tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(command)
}

pub fn tenants(cmd: TenantsCommand) -> CliResult {
    block_on(tenants_command(cmd))
}

async fn tenants_command(cmd: TenantsCommand) -> CliResult {
    match cmd {
        TenantsCommand::Create {
            name,
            weight,
            models,
            database,
        } => {
            let s = database.open_database(None).await?;
            let t = s.create_tenant(&name, weight).await?;
            for m in &models {
                s.grant_model(&t.id, m).await?;
            }
            print(&t)
        }
        TenantsCommand::List { database } => {
            print(&database.open_database(None).await?.tenants().await?)
        }
        TenantsCommand::Set {
            tenant,
            status,
            weight,
            log_invocations,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            print(
                &s.update_tenant(&id, status.as_deref(), weight, log_invocations)
                    .await?,
            )
        }
        TenantsCommand::Guardrail {
            tenant,
            guardrail,
            version,
            clear: _,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            let enforced = guardrail.map(|g| basalt_store::GuardrailRef {
                id: basalt_wire::bedrock::guardrails::guardrail_id(&g).to_string(),
                version,
            });
            print(&s.set_enforced_guardrail(&id, enforced.as_ref()).await?)
        }
        TenantsCommand::Grant {
            tenant,
            model,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            s.grant_model(&id, &model).await?;
            print(&s.granted_models(&id).await?)
        }
        TenantsCommand::Revoke {
            tenant,
            model,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            s.revoke_model(&id, &model).await?;
            print(&s.granted_models(&id).await?)
        }
        TenantsCommand::Quota {
            tenant,
            model,
            requests_per_minute,
            tokens_per_minute,
            tokens_per_day,
            monthly_budget_usd,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            let q = Quota {
                requests_per_minute,
                tokens_per_minute,
                tokens_per_day,
                monthly_budget_usd,
            };
            s.set_quota(&id, &model, &q).await?;
            print(&s.quotas(&id).await?)
        }
    }
}

pub fn keys(cmd: KeysCommand) -> CliResult {
    block_on(keys_command(cmd))
}

async fn keys_command(cmd: KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Create {
            tenant,
            name,
            expires_in_days,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            let expires = expires_in_days.map(|d| basalt_store::now() + i64::from(d) * 86_400);
            let k = s.create_api_key(&id, &name, expires).await?;
            eprintln!("Store this key now: it is not shown again.");
            print(&k)
        }
        KeysCommand::CreateAws { tenant, database } => {
            let (s, id) = database.tenant(&tenant).await?;
            let k = s.create_access_key(&id).await?;
            eprintln!("Store this secret now: it is not shown again.");
            print(&k)
        }
        KeysCommand::List { tenant, database } => {
            let (s, id) = database.tenant(&tenant).await?;
            print(&serde_json::json!({
                "keys": s.api_keys(&id).await?,
                "access_keys": s.access_keys(&id).await?,
            }))
        }
        KeysCommand::Revoke {
            tenant,
            key_id,
            database,
        } => {
            let (s, id) = database.tenant(&tenant).await?;
            match s.revoke_api_key(&id, &key_id).await {
                Ok(()) => Ok(()),
                Err(basalt_store::StoreError::NotFound(_)) => {
                    Ok(s.revoke_access_key(&id, &key_id).await?)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

pub fn usage(args: UsageArgs) -> CliResult {
    block_on(usage_command(args))
}

async fn usage_command(args: UsageArgs) -> CliResult {
    let s = args.database.open_database(None).await?;
    let tenant_id = match &args.tenant {
        Some(t) => Some(s.tenant(t).await?.id),
        None => None,
    };
    let q = UsageQuery {
        tenant_id,
        model_id: args.model,
        from: args
            .since_hours
            .map(|h| basalt_store::now() - i64::from(h) * 3600),
        to: None,
        limit: Some(1000),
    };
    if args.records {
        print(
            &serde_json::json!({"totals": s.usage_totals(&q).await?, "records": s.usage(&q).await?}),
        )
    } else {
        print(&s.usage_totals(&q).await?)
    }
}
