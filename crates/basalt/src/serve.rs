//! `basalt serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_auth::{Authenticator, ChainedKeys, KeyStore, SessionKey, StaticKeys};
use basalt_catalog::Catalog;
use basalt_console::ConsoleConfig;
use basalt_guardrails::ContentClassifier;
use basalt_server::invocation_log::InvocationLog;
use basalt_server::limits::database::DatabaseLedger;
use basalt_server::limits::shared::RedisLedger;
use basalt_server::listener::{self, ConnectionLimits, Tls};
use basalt_server::platform::{Ledger, Platform, Prices};
use basalt_server::{router, AppState, ServerConfig};
use basalt_store::{CachedStore, Store, StoreKeys};
use tracing_subscriber::EnvFilter;

use crate::tenancy::DatabaseArgs;
use crate::{CatalogArgs, CliResult, EngineArgs};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_HOST")]
    host: String,
    /// Port to listen on
    #[arg(long, default_value_t = 8080, env = "BASALT_PORT")]
    port: u16,
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(flatten)]
    database: DatabaseArgs,
    /// Serve only these model ids (repeatable) [default: every text model in the store]
    #[arg(long = "model")]
    models: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Largest request body, in KiB
    #[arg(long, default_value_t = 4096)]
    max_body_kb: usize,
    /// Where Bedrock batch jobs' `s3://bucket/key` URIs live: a directory, or
    /// `s3://root-bucket/prefix` in an S3-compatible store (endpoint and credentials from
    /// AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION). Each tenant's
    /// buckets are under `<tenant id>/` there [default: <data dir>/buckets]
    #[arg(long, env = "BASALT_BUCKETS")]
    buckets: Option<String>,
    /// Knowledge bases with at least this many passages are searched through an
    /// approximate graph (HNSW) rather than by scoring every passage
    #[arg(long, default_value_t = basalt_knowledge::index::APPROXIMATE_FROM)]
    knowledge_graph_from: usize,
    /// Largest file upload (`/v1/files`), in MiB
    #[arg(long, default_value_t = 200)]
    max_file_mb: usize,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Most connections open at once; more wait to be accepted
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_connections: u32,
    /// A connection with no request in flight is closed after this many idle seconds (an
    /// HTTP/1 request's headers must also be complete within this long)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle_timeout_secs: u64,
    /// A request body must arrive whole within this many seconds (else 408)
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_read_timeout_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key
    #[arg(long, env = "BASALT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// How long keys, tenants, grants and quotas are served from memory, in milliseconds
    /// (what the CLI changes on the database is seen after at most this long); 0 reads the
    /// database on every request
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    store_cache_ms: u64,
    /// Where the other replicas sharing --database-url reach this one's API
    /// [default: http(s)://<host name>:<port>]
    #[arg(long, env = "BASALT_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Count quotas in this Redis (or Valkey), shared by every replica, so limits hold
    /// across all of them (`redis://host:6379/0`) [default: each replica counts its own]
    #[arg(long, env = "BASALT_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// When Redis cannot be reached, admit requests under this replica's own counts
    /// instead of refusing them with 503
    #[arg(long, requires = "redis_url")]
    redis_fail_open: bool,
    /// The PEM private key of --tls-cert
    #[arg(long, env = "BASALT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An API key clients may send as `Authorization: Bearer` or `x-api-key` (repeatable).
    /// With any key or access key configured, every API request must authenticate.
    #[arg(
        long = "api-key",
        env = "BASALT_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    api_keys: Vec<String>,
    /// An AWS-style `ACCESS_KEY_ID:SECRET` pair for SigV4-signed requests (repeatable)
    #[arg(long = "aws-access-key", env = "BASALT_AWS_ACCESS_KEYS", value_delimiter = ',', hide_env_values = true, value_parser = parse_access_key)]
    aws_access_keys: Vec<(String, String)>,
    /// Serve a non-loopback address without any keys (everyone is the local user)
    #[arg(long)]
    insecure_no_auth: bool,
    /// The admin API's token [default: generated on first start, printed once]
    #[arg(long, env = "BASALT_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Prices for metering: a TOML table per model id (or "*"), with input_per_million,
    /// cached_input_per_million and output_per_million in US dollars
    #[arg(long, env = "BASALT_PRICES")]
    prices: Option<PathBuf>,
    /// Where tenants that opted in have their invocations logged [default: <data dir>/invocation-logs]
    #[arg(long)]
    invocation_log_dir: Option<PathBuf>,
    /// Size at which an invocation log file is rotated, in MiB
    #[arg(long, default_value_t = 64)]
    invocation_log_max_mb: u64,
    /// Region named in the Bedrock ARNs Basalt returns (requests signed for any region are accepted)
    #[arg(long, default_value = "us-east-1", env = "BASALT_REGION")]
    region: String,
    /// A served chat model that judges guardrails' denied topics and content filters
    /// (Llama Guard, Qwen3Guard, or any instruct model); without one, guardrails with those
    /// policies are refused
    #[arg(long)]
    guard_model: Option<String>,
    /// The built-in content classifier (rates INSULTS when no guard model is named), as
    /// scripts/fetch-models exports it [default: content-classifier/classifier.json in the
    /// models directory, when there]
    #[arg(long)]
    content_classifier: Option<PathBuf>,
}

/// The content classifier at `path`, or at its default place in the models directory. A
/// missing default is not an error (guardrails with content filters then need a guard
/// model); a file named on the command line that cannot be read is.
fn load_content_classifier(
    path: Option<&Path>,
    models_dir: &Path,
) -> Result<Option<ContentClassifier>, String> {
    let default = models_dir.join("content-classifier/classifier.json");
    let (path, named) = match path {
        Some(p) => (p, true),
        None => (default.as_path(), false),
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if !named && e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                "no content classifier at {}: content filters need --guard-model",
                path.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let classifier = ContentClassifier::from_json(&bytes)
        .map_err(|e| format!("content classifier {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "content classifier loaded (INSULTS)");
    Ok(Some(classifier))
}

/// This machine's name (a pod's name under Kubernetes), for the default replica id.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "basalt".to_string())
}

/// The host other replicas dial: the listen address, unless it is a wildcard.
fn advertised_host(listen: &str) -> String {
    match listen {
        "0.0.0.0" | "::" | "[::]" => host_name(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_string(),
    }
}

fn parse_access_key(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
            Ok((id.to_string(), secret.to_string()))
        }
        _ => Err("expected ACCESS_KEY_ID:SECRET".into()),
    }
}

pub fn run(args: ServeArgs) -> CliResult {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let replica_id = args
        .database
        .replica_id
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), args.port));
    let opened = runtime.block_on(args.database.open(Some(&replica_id)))?;
    let database = opened.store;
    let server_key = opened.server_key;
    // Keys, tenants, grants and quotas are read on every request: from memory, for up to
    // --store-cache-ms. What this process changes is seen at once; what another changes is
    // seen when the database announces it (PostgreSQL), or when the entries expire (the CLI
    // on a SQLite file).
    let store: Arc<dyn Store> = match args.store_cache_ms {
        0 => Arc::clone(&database),
        ms => {
            let cached = Arc::new(CachedStore::new(
                Arc::clone(&database),
                Duration::from_millis(ms),
            ));
            let invalidate = Arc::clone(&cached);
            let _runtime = runtime.enter();
            database.watch_changes(Arc::new(move || invalidate.invalidate()))?;
            cached
        }
    };
    // What this replica (in a previous life) or a replica that died left running is over.
    let interrupted = runtime.block_on(store.interrupt_unfinished_usage())?;
    if interrupted > 0 {
        tracing::warn!(
            requests = interrupted,
            "usage records of requests in flight when the last server stopped are now `interrupted`"
        );
    }
    let models_dir = args.catalog.dir();
    let catalog = Catalog::open(&models_dir)?;
    for (dir, why) in &catalog.skipped {
        tracing::warn!(dir = %dir.display(), "skipping model directory: {why}");
    }
    let config = args.engine.config();
    let started = Instant::now();
    let (state, failed) =
        AppState::load(
            &catalog,
            &args.models,
            &config,
            |entry, result| match result {
                Ok(()) => tracing::info!(model = %entry.manifest.id, "loaded"),
                Err(e) => tracing::error!(model = %entry.manifest.id, "failed to load: {e}"),
            },
        );
    for id in &args.models {
        let served = state.entries().any(|e| &e.manifest.id == id);
        if !served && !failed.iter().any(|(f, _)| f == id) {
            return Err(format!(
                "model `{id}` is not in the store at {}",
                models_dir.display()
            )
            .into());
        }
    }
    // A model named with --model that cannot load is a reason not to start (serving the
    // store's models, one that fails is skipped with its error in the log).
    if let Some((id, why)) = failed.iter().find(|(f, _)| args.models.contains(f)) {
        return Err(format!("model `{id}` cannot be served: {why}").into());
    }
    let count = state.entries().count();
    if count == 0 {
        tracing::warn!(
            "no models to serve in {}: run `scripts/fetch-models` or `basalt models import`",
            models_dir.display()
        );
    }
    tracing::info!(
        models = count,
        kernels = basalt_engine::kernels::Isa::current().name(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "catalog ready"
    );

    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .map_err(|e| format!("bad listen address {}:{}: {e}", args.host, args.port))?;
    // Operator keys from the flags, then the tenants' keys in the store. Local mode (no
    // credentials needed) only while neither exists, and only on a loopback address.
    let operator_keys = StaticKeys::new("operator", &args.api_keys, &args.aws_access_keys);
    // A database replicas share is never in local mode: a tenant created through one
    // replica must switch authentication on for all of them.
    let shared_database = args.database.database_url.is_some();
    let no_keys_anywhere = operator_keys.is_empty()
        && !shared_database
        && runtime.block_on(store.tenants())?.is_empty();
    if no_keys_anywhere && !addr.ip().is_loopback() && !args.insecure_no_auth {
        return Err(format!(
            "refusing to serve {addr} without authentication: create a tenant and keys \
             (`basalt tenants create`, `basalt keys create`), give --api-key / \
             --aws-access-key, or pass --insecure-no-auth to let anyone who can reach it in"
        )
        .into());
    }
    let keys = ChainedKeys(vec![
        Arc::new(operator_keys),
        Arc::new(StoreKeys(Arc::clone(&store))),
    ]);
    let admin_hash = runtime.block_on(admin_token(store.as_ref(), args.admin_token.as_deref()))?;
    // Console sessions are signed with a key every replica derives alike, and a new admin
    // token ends them all.
    let auth = Authenticator::with_mode(Arc::new(keys), no_keys_anywhere)
        .with_sessions(SessionKey::derive(&server_key, &admin_hash));
    let prices = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read prices {}: {e}", path.display()))?;
            toml::from_str::<Prices>(&text)
                .map_err(|e| format!("bad prices file {}: {e}", path.display()))?
        }
        None => Prices::new(),
    };
    // Quotas hold across replicas when counted where they all look: Redis if given, else
    // a shared database.
    let platform = Arc::new(match (&args.redis_url, opened.quota_counter) {
        (Some(url), _) => {
            let ledger = RedisLedger::new(url, Arc::clone(&store), args.redis_fail_open)?;
            tracing::info!(
                fail_open = args.redis_fail_open,
                "quotas are counted in Redis"
            );
            Platform::with_ledger(store, prices, Ledger::Redis(Arc::new(ledger)))
        }
        (None, Some(counter)) => {
            tracing::info!("quotas are counted in the shared database (no --redis-url)");
            let ledger = Ledger::Database(DatabaseLedger::new(counter));
            Platform::with_ledger(store, prices, ledger)
        }
        (None, None) => Platform::new(store, prices),
    });
    let log_dir = args
        .invocation_log_dir
        .clone()
        .unwrap_or_else(|| args.database.dir().join("invocation-logs"));
    let state = state
        .with_auth(auth.clone())
        .with_region(args.region.clone())
        .with_platform(platform)
        .with_admin_token_hash(admin_hash)
        .with_invocation_log(InvocationLog::new(
            log_dir,
            args.invocation_log_max_mb << 20,
        ));
    let state = match &args.guard_model {
        Some(id) => state.with_guard_model(id)?,
        None => state,
    };
    let state = match &args.buckets {
        Some(url) => {
            let buckets = basalt_buckets::Buckets::open(url)?;
            tracing::info!("batch jobs' buckets: {}", buckets.describe());
            state.with_buckets(buckets)
        }
        None => state,
    };
    let state = state.with_data_dir(&args.database.dir());
    let state = match shared_database {
        true => state.with_replica_id(&replica_id),
        false => state,
    };
    if let Some(knowledge) = &state.knowledge {
        knowledge.set_graph_from(args.knowledge_graph_from);
    }
    let state = match load_content_classifier(args.content_classifier.as_deref(), &models_dir)? {
        Some(classifier) => state.with_content_classifier(classifier),
        None => state,
    };

    let server_config = ServerConfig {
        body_limit: args.max_body_kb << 10,
        body_read_timeout: Duration::from_secs(args.body_read_timeout_secs),
        file_limit: args.max_file_mb << 20,
        ..Default::default()
    };
    let limits = ConnectionLimits {
        max_connections: args.max_connections as usize,
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = Arc::new(state);
    let advertised = args
        .advertise_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{}:{}", advertised_host(&args.host), args.port));
    // Behind a TLS-terminating proxy the advertised address says so.
    let secure_cookies = tls.is_some() || advertised.starts_with("https://");
    if shared_database && !advertised.starts_with("http://") {
        tracing::warn!(
            "this replica advertises {advertised}: replicas forward to each other over plain \
             HTTP, so none will forward requests for its models to it (terminate TLS in \
             front of the replicas, or give --advertise-url an http:// address it also serves)"
        );
    }
    if shared_database {
        runtime.spawn(basalt_server::replica::announce(
            Arc::clone(&state),
            replica_id,
            advertised,
        ));
    }
    // Batch and ingestion jobs the last server left unfinished carry on where they stopped.
    runtime.spawn(basalt_server::batch::resume(Arc::clone(&state)));
    runtime.spawn(basalt_server::resume_ingestion(Arc::clone(&state)));
    let console = ConsoleConfig {
        secure_cookies,
        ..ConsoleConfig::default()
    };
    let app =
        router(Arc::clone(&state), server_config).merge(basalt_console::routes(state, console));
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!("listening on {scheme}://{addr}");
        if auth.is_open() {
            tracing::info!(
                "no tenants or keys yet: local mode, every request is the local user \
                 (creating a tenant through the admin API switches authentication on)"
            );
        }
        let shutdown = async move {
            shutdown_signal().await;
            tracing::info!(
                "shutting down: letting in-flight requests finish (up to {}s)",
                grace.as_secs()
            );
        };
        listener::serve(listener, app, limits, tls, shutdown, grace).await;
        tracing::info!("stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

/// The admin token's hash: the one given (stored, so the CLI and later starts agree), the
/// one stored earlier, or a new one printed once.
async fn admin_token(
    store: &dyn Store,
    given: Option<&str>,
) -> Result<[u8; 32], Box<dyn std::error::Error>> {
    if let Some(token) = given {
        let hash = basalt_auth::sha256(token.as_bytes());
        store.set_admin_token_hash(&hash).await?;
        return Ok(hash);
    }
    if let Some(hash) = store.admin_token_hash().await? {
        return Ok(hash);
    }
    let token = format!("bat-{}", basalt_store::random_token(40)?);
    let hash = basalt_auth::sha256(token.as_bytes());
    store.set_admin_token_hash(&hash).await?;
    eprintln!(
        "\nAdmin API token (shown once; only its hash is kept): {token}\n\
         Use it as `Authorization: Bearer <token>` on /admin/...; set BASALT_ADMIN_TOKEN to choose your own.\n"
    );
    Ok(hash)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
