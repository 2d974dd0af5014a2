//! The `basalt` command: a thin layer of argument parsing over the library crates.

#![forbid(unsafe_code)]

mod bench;
mod bench_embed;
mod bench_index;
mod chat;
mod generate_image;
mod models;
mod serve;
mod tenancy;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "A self-hosted foundation-model platform in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the model catalog is (the model store of `basalt models`).
#[derive(clap::Args, Clone)]
struct CatalogArgs {
    /// Model store [default: $BASALT_MODELS_DIR or ${XDG_DATA_HOME:-~/.local/share}/basalt/models]
    #[arg(long, env = "BASALT_MODELS_DIR")]
    models_dir: Option<PathBuf>,
}

impl CatalogArgs {
    fn dir(&self) -> PathBuf {
        self.models_dir
            .clone()
            .unwrap_or_else(basalt_catalog::default_models_dir)
    }
}

#[derive(clap::Args, Clone)]
struct EngineArgs {
    /// Compute threads per model [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// KV-cache memory per model, in MiB
    #[arg(long, default_value_t = 512)]
    kv_cache_mb: usize,
    /// Sequences decoded concurrently per model
    #[arg(long, default_value_t = 16)]
    max_running: usize,
    /// After idling, how long a model's scheduler waits for more requests before starting
    /// (again after each arrival), so that requests sent together start together; 0 starts
    /// at once (at most 1000)
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=1000))]
    admission_window_ms: u64,
    /// Serve weights from the model file's page-cache mapping, shared with other processes,
    /// instead of a private copy in huge pages (which decodes faster)
    #[arg(long)]
    mmap_weights: bool,
}

impl EngineArgs {
    fn config(&self) -> basalt_engine::EngineConfig {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        basalt_engine::set_compute_threads(threads);
        basalt_engine::EngineConfig {
            kv_budget_bytes: self.kv_cache_mb << 20,
            max_running: self.max_running.max(1),
            admission_window: std::time::Duration::from_millis(self.admission_window_ms),
            map_weights: self.mmap_weights,
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the catalog's models over HTTP (OpenAI-compatible API)
    Serve(Box<serve::ServeArgs>),
    /// Chat with a model in the terminal, in-process or against a running server
    Chat(chat::ChatArgs),
    /// Manage the model store
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Measure the engine's prefill and decode speed on a GGUF file (see scripts/bench)
    Bench(bench::BenchArgs),
    /// Measure embedding throughput on a model directory (see scripts/bench-embeddings)
    BenchEmbed(bench_embed::BenchEmbedArgs),
    /// Measure a knowledge base index's query latency (see scripts/bench-knowledge)
    BenchIndex(bench_index::BenchIndexArgs),
    /// Generate images with an image model of the store
    GenerateImage(generate_image::GenerateImageArgs),
    /// Manage tenants: create, list, status, model grants, quotas
    #[command(subcommand)]
    Tenants(tenancy::TenantsCommand),
    /// Manage a tenant's API keys and AWS access keys
    #[command(subcommand)]
    Keys(tenancy::KeysCommand),
    /// Show metered usage
    Usage(tenancy::UsageArgs),
}

fn main() -> ExitCode {
    // Before anything else: the compiler may have used the build machine's instruction set
    // outside the kernels (which choose their own level at run time).
    let missing = basalt_engine::kernels::missing_cpu_features();
    if !missing.is_empty() {
        eprintln!(
            "error: this basalt binary was compiled for a CPU with {} and this CPU lacks it; \
             build basalt on this machine (`make run` does)",
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    // A mistyped or unrunnable BASALT_KERNELS is an error now rather than ignored later.
    if let Err(e) = basalt_engine::kernels::isa::configure_from_env() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Chat(args) => chat::run(args),
        Command::Models(cmd) => models::run(cmd),
        Command::Bench(args) => bench::run(args),
        Command::BenchEmbed(args) => bench_embed::run(args),
        Command::BenchIndex(args) => bench_index::run(args),
        Command::GenerateImage(args) => generate_image::run(args),
        Command::Tenants(cmd) => tenancy::tenants(cmd),
        Command::Keys(cmd) => tenancy::keys(cmd),
        Command::Usage(args) => tenancy::usage(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("basalt: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type CliResult = Result<(), Box<dyn std::error::Error>>;
