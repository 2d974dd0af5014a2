//! `basalt serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_auth::{Authenticator, StaticKeys};
use basalt_catalog::Catalog;
use basalt_server::{router, AppState, ServerConfig};
use tracing_subscriber::EnvFilter;

use crate::{CliResult, EngineArgs, StoreArgs};

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1", env = "BASALT_HOST")]
    host: String,
    /// Port to listen on
    #[arg(long, default_value_t = 8080, env = "BASALT_PORT")]
    port: u16,
    #[command(flatten)]
    store: StoreArgs,
    /// Data directory (state such as usage records) [default: ${XDG_DATA_HOME:-~/.local/share}/basalt]
    #[arg(long, env = "BASALT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Serve only these model ids (repeatable) [default: every text model in the store]
    #[arg(long = "model")]
    models: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Largest request body, in KiB
    #[arg(long, default_value_t = 4096)]
    max_body_kb: usize,
    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,
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
    /// Region named in the Bedrock ARNs Basalt returns (requests signed for any region are accepted)
    #[arg(long, default_value = "us-east-1", env = "BASALT_REGION")]
    region: String,
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
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| basalt_catalog::data_home().join("basalt"));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", data_dir.display()))?;
    let models_dir = args.store.dir();
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
        if state.model(id).is_err() && !failed.iter().any(|(f, _)| f == id) {
            return Err(format!(
                "model `{id}` is not in the store at {}",
                models_dir.display()
            )
            .into());
        }
    }
    let count = state.models().count();
    if count == 0 {
        tracing::warn!(
            "no models to serve in {}: run `scripts/fetch-models` or `basalt models import`",
            models_dir.display()
        );
    }
    tracing::info!(
        models = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "catalog ready"
    );

    let keys = StaticKeys::new("default", &args.api_keys, &args.aws_access_keys);
    let auth = Authenticator::new(Arc::new(keys));
    let state = state
        .with_auth(auth.clone())
        .with_region(args.region.clone());

    let server_config = ServerConfig {
        body_limit: args.max_body_kb << 10,
        ..Default::default()
    };
    let app = router(Arc::new(state), server_config);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", args.host, args.port).parse())
        .map_err(|e| format!("bad listen address {}:{}: {e}", args.host, args.port))?;
    let grace = Duration::from_secs(args.shutdown_grace_secs);
    if auth.is_open() && !addr.ip().is_loopback() && !args.insecure_no_auth {
        return Err(format!(
            "refusing to serve {addr} without authentication: give --api-key / \
             --aws-access-key, or --insecure-no-auth to let anyone who can reach it use the models"
        )
        .into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!("listening on http://{addr}");
        if auth.is_open() {
            tracing::info!("no keys configured: local mode, every request is the local user");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!(
                "shutting down: letting in-flight requests finish (up to {}s)",
                grace.as_secs()
            );
            let _ = stop_tx.send(true);
        });
        let mut stop_rx = stop_rx;
        tokio::select! {
            result = server => result.map_err(|e| format!("server error: {e}"))?,
            _ = async {
                let _ = stop_rx.wait_for(|stopped| *stopped).await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!("grace period over; closing remaining connections"),
        }
        tracing::info!("stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })
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
