//! `basalt models ...`: the model store from the command line.

use std::io::Write;
use std::path::{Path, PathBuf};

use basalt_catalog::hub::Hub;
use basalt_catalog::{import, pull, Catalog, ImportOptions, Modality, PullOptions, Source};

use crate::{CatalogArgs, CliResult};

#[derive(clap::Subcommand)]
pub enum ModelsCommand {
    /// List installed models
    List {
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Show one model's catalog entry
    Show {
        id: String,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Import a GGUF file, a safetensors embedding-model directory, or a diffusers (Stable Diffusion) directory into the store
    Import {
        path: PathBuf,
        /// Catalog id (e.g. `acme.my-model-v1:0`) [default: derived from the file]
        #[arg(long)]
        id: Option<String>,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// Provider (model developer) name
        #[arg(long)]
        provider: Option<String>,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Download a model from a Hugging Face hub repository into the store: `owner/repo`
    /// (its GGUF file, Q4_K_M when it has several, or an embedding model's directory),
    /// `owner/repo:QUANT`, or a file's URL. Resumable; checked against the hub's SHA-256.
    Pull {
        /// `owner/repo`, `owner/repo:Q8_0`, or `https://huggingface.co/owner/repo/resolve/main/file.gguf`
        source: String,
        /// The repository's revision (branch, tag or commit)
        #[arg(long, default_value = "main")]
        revision: String,
        /// Catalog id (e.g. `acme.my-model-v1:0`) [default: derived from the file]
        #[arg(long)]
        id: Option<String>,
        /// Display name
        #[arg(long)]
        name: Option<String>,
        /// Provider (model developer) name
        #[arg(long)]
        provider: Option<String>,
        /// The hub
        #[arg(long, env = "HF_ENDPOINT", default_value = basalt_catalog::hub::DEFAULT_HUB)]
        hub_url: String,
        /// A token for private or gated repositories
        #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
    /// Remove a model from the store (deletes its files)
    Rm {
        id: String,
        #[command(flatten)]
        catalog: CatalogArgs,
    },
}

fn modalities(m: &[Modality]) -> String {
    m.iter()
        .map(|x| format!("{x:?}").to_uppercase())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn run(cmd: ModelsCommand) -> CliResult {
    match cmd {
        ModelsCommand::List { catalog } => {
            let catalog = Catalog::open(&catalog.dir())?;
            // Columns as wide as their widest value.
            let width = |f: &dyn Fn(&basalt_catalog::Manifest) -> usize, title: &str| {
                catalog
                    .entries()
                    .iter()
                    .map(|e| f(&e.manifest))
                    .max()
                    .unwrap_or(0)
                    .max(title.len())
            };
            let wi = width(&|m| m.id.len(), "ID");
            let wp = width(&|m| m.provider.len(), "PROVIDER");
            let wo = width(&|m| modalities(&m.output_modalities).len(), "OUTPUT");
            println!(
                "{:<wi$}  {:<wp$}  {:<wo$}  {:>8}  NAME",
                "ID", "PROVIDER", "OUTPUT", "CONTEXT"
            );
            for e in catalog.entries() {
                let m = &e.manifest;
                println!(
                    "{:<wi$}  {:<wp$}  {:<wo$}  {:>8}  {}",
                    m.id,
                    m.provider,
                    modalities(&m.output_modalities),
                    m.context_length,
                    m.name
                );
            }
            for (dir, why) in &catalog.skipped {
                eprintln!("warning: skipped {}: {why}", dir.display());
            }
            Ok(())
        }
        ModelsCommand::Show { id, catalog } => {
            let catalog = Catalog::open(&catalog.dir())?;
            let e = catalog
                .get(&id)
                .ok_or_else(|| format!("model `{id}` is not in the catalog"))?;
            println!("# {}", e.dir.display());
            print!("{}", e.manifest.to_toml()?);
            let size = std::fs::metadata(e.weights_path())
                .map(|m| m.len())
                .unwrap_or(0);
            println!(
                "# weights: {} ({:.1} MB)",
                e.weights_path().display(),
                size as f64 / 1e6
            );
            Ok(())
        }
        ModelsCommand::Import {
            path,
            id,
            name,
            provider,
            catalog,
        } => {
            // The catalog checks the header; the engine checks that the file would load
            // (hyper-parameters against the tensors present), before anything is copied.
            if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            {
                basalt_engine::LoadedModel::inspect(&path)
                    .map_err(|e| format!("{} cannot be served: {e}", path.display()))?;
            }
            let mut catalog = Catalog::open(&catalog.dir())?;
            let mut last = 0u64;
            let entry = import(
                &mut catalog,
                &path,
                ImportOptions {
                    id,
                    name,
                    provider,
                    ..ImportOptions::default()
                },
                &mut |done, total| {
                    let pct = (done * 100).checked_div(total).unwrap_or(100);
                    if pct != last || done == total {
                        last = pct;
                        eprint!(
                            "\rimporting {}: {pct:>3}% ({:.1} / {:.1} MB)",
                            path.display(),
                            done as f64 / 1e6,
                            total as f64 / 1e6
                        );
                        let _ = std::io::stderr().flush();
                    }
                },
            )?;
            eprintln!();
            println!(
                "imported {} into {}",
                entry.manifest.id,
                entry.dir.display()
            );
            Ok(())
        }
        ModelsCommand::Pull {
            source,
            revision,
            id,
            name,
            provider,
            hub_url,
            token,
            catalog,
        } => {
            let hub = Hub::new(&hub_url, token);
            let source = Source::parse(&source, hub.base())?;
            let mut catalog = Catalog::open(&catalog.dir())?;
            let options = PullOptions {
                revision,
                import: ImportOptions {
                    id,
                    name,
                    provider,
                    ..ImportOptions::default()
                },
            };
            // As for import: a GGUF the engine could not serve never enters the store.
            let check = |path: &Path| {
                if path.is_file() {
                    basalt_engine::LoadedModel::inspect(path)
                        .map_err(|e| format!("it cannot be served: {e}"))
                } else {
                    Ok(())
                }
            };
            let mut bar = ProgressBar::default();
            let entry = pull(
                &mut catalog,
                &hub,
                &source,
                options,
                &check,
                &mut |file, done, total| bar.show(file, done, total),
            )?;
            eprintln!();
            println!("pulled {} into {}", entry.manifest.id, entry.dir.display());
            Ok(())
        }
        ModelsCommand::Rm { id, catalog } => {
            let mut catalog = Catalog::open(&catalog.dir())?;
            let entry = catalog.remove(&id)?;
            println!("removed {} ({})", id, entry.dir.display());
            Ok(())
        }
    }
}

/// One line on stderr, redrawn: file, percentage, megabytes and speed.
#[derive(Default)]
struct ProgressBar {
    file: String,
    started: Option<std::time::Instant>,
    start_bytes: u64,
    last_drawn: Option<std::time::Instant>,
}

impl ProgressBar {
    fn show(&mut self, file: &str, done: u64, total: u64) {
        let now = std::time::Instant::now();
        if self.file != file {
            if !self.file.is_empty() {
                eprintln!();
            }
            self.file = file.to_string();
            self.started = Some(now);
            // A resumed download's speed counts only what this run fetched.
            self.start_bytes = done;
            self.last_drawn = None;
        }
        let finished = total > 0 && done >= total;
        if self
            .last_drawn
            .is_some_and(|t| now.duration_since(t).as_millis() < 100 && !finished)
        {
            return;
        }
        self.last_drawn = Some(now);
        let secs = self
            .started
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64())
            .max(1e-3);
        let speed = (done - self.start_bytes.min(done)) as f64 / secs / 1e6;
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(0).min(width) as usize;
        let pct = (done * 100).checked_div(total).unwrap_or(0);
        eprint!(
            "\r{file}  [{}{}] {pct:>3}%  {:.1}/{:.1} MB  {speed:.1} MB/s ",
            "#".repeat(filled),
            " ".repeat(width as usize - filled),
            done as f64 / 1e6,
            total as f64 / 1e6,
        );
        let _ = std::io::stderr().flush();
    }
}
