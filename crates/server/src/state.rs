//! The models a running server serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use basalt_auth::{Authenticator, Principal};
use basalt_catalog::{Catalog, Entry, Format, Modality};
use basalt_diffusion::StableDiffusion;
use basalt_embed::{Embedder, EmbeddingModel};
use basalt_engine::{EngineConfig, LoadedModel};
use basalt_guardrails::ContentClassifier;
use basalt_image::{ImageGenerator, ImageModel};
use basalt_types::BasaltError;

use crate::invocation_log::InvocationLog;
use crate::metrics::Metrics;
use crate::platform::Platform;

pub struct ServedModel {
    pub entry: Entry,
    pub engine: LoadedModel,
}

/// An image model being served: DCGAN or Stable Diffusion behind one interface.
pub struct ServedImageModel {
    pub entry: Entry,
    pub model: Arc<dyn ImageGenerator>,
}

/// An embedding model being served, with its batching worker.
pub struct ServedEmbedder {
    pub entry: Entry,
    pub embedder: Embedder,
}

pub struct AppState {
    models: BTreeMap<String, Arc<ServedModel>>,
    embedders: BTreeMap<String, Arc<ServedEmbedder>>,
    image_models: BTreeMap<String, Arc<ServedImageModel>>,
    pub started: u64,
    /// Who may call; open (everyone is the local user) until keys are configured.
    pub auth: Authenticator,
    /// The region named in Bedrock ARNs we hand out.
    pub region: String,
    /// Tenants, access, quotas and metering; `None` runs without a store (tests, tools).
    pub platform: Option<Arc<Platform>>,
    pub metrics: Arc<Metrics>,
    /// The admin API's token, hashed; `None` disables the admin API.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Where opted-in tenants' invocations are logged.
    pub invocation_log: Option<Arc<InvocationLog>>,
    /// Guardrail versions in use, compiled.
    pub guardrails: crate::guardrail::GuardrailCache,
    /// The chat model that judges guardrails' denied topics and content filters, if the
    /// operator named one.
    pub guard_model: Option<Arc<ServedModel>>,
    /// The built-in content classifier (INSULTS without a guard model), if its exported
    /// numbers were found.
    pub content_classifier: Option<Arc<ContentClassifier>>,
    /// Uploaded and generated files (`/v1/files`), when the server has a data directory.
    pub files: Option<Arc<crate::files::FileStore>>,
    /// The batch jobs this server runs (`/v1/batches`), when it has a data directory.
    pub batches: Option<Arc<crate::batch::Batches>>,
    /// Where Bedrock jobs' `s3://` URIs live.
    pub buckets: Option<basalt_buckets::Buckets>,
    /// Knowledge bases' indexes, when the server has a data directory.
    pub knowledge: Option<Arc<crate::knowledge::KnowledgeIndexes>>,
    /// The other replicas sharing this server's database, which serve what it does not.
    pub peers: Arc<crate::forward::Peers>,
}

impl AppState {
    pub fn new(models: Vec<ServedModel>) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let models = models
            .into_iter()
            .map(|m| (m.entry.manifest.id.clone(), Arc::new(m)))
            .collect();
        Self {
            models,
            embedders: BTreeMap::new(),
            image_models: BTreeMap::new(),
            started,
            auth: Authenticator::open(),
            region: "us-east-1".into(),
            platform: None,
            metrics: Arc::default(),
            admin_token_sha256: None,
            invocation_log: None,
            guardrails: Default::default(),
            guard_model: None,
            content_classifier: None,
            files: None,
            batches: None,
            buckets: None,
            knowledge: None,
            peers: Arc::default(),
        }
    }

    /// Names this server among the replicas sharing its database, so that requests for
    /// models only others serve are passed to them.
    pub fn with_replica_id(mut self, id: &str) -> Self {
        self.peers = Arc::new(crate::forward::Peers::new(id));
        self
    }

    pub fn with_invocation_log(mut self, log: InvocationLog) -> Self {
        self.invocation_log = Some(Arc::new(log));
        self
    }

    pub fn with_admin_token_hash(mut self, hash: [u8; 32]) -> Self {
        self.admin_token_sha256 = Some(hash);
        self
    }

    pub fn with_platform(mut self, platform: Arc<Platform>) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Which of `ids` the principal may see and use (its grants, from the store's cache).
    pub async fn usable(&self, principal: &Principal, ids: Vec<String>) -> Vec<String> {
        let Some(platform) = &self.platform else {
            return ids;
        };
        let mut usable = Vec::with_capacity(ids.len());
        for id in ids {
            if platform.may_use(principal, &id).await {
                usable.push(id);
            }
        }
        usable
    }

    pub fn with_auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    /// Names the served chat model that judges guardrails' topics and content filters.
    pub fn with_guard_model(mut self, id: &str) -> Result<Self, String> {
        let model = self
            .models
            .get(id)
            .cloned()
            .ok_or_else(|| format!("the guard model `{id}` is not a served chat model"))?;
        self.guard_model = Some(model);
        Ok(self)
    }

    /// Keeps files under `dir/files`, batch jobs' journals under `dir/batches`, knowledge
    /// bases' indexes under `dir/knowledge-bases` and (unless
    /// [`Self::with_buckets`] names another store) buckets under `dir/buckets`.
    pub fn with_data_dir(mut self, dir: &std::path::Path) -> Self {
        self.files = Some(Arc::new(crate::files::FileStore::new(dir.join("files"))));
        self.batches = Some(Arc::new(crate::batch::Batches::new(dir.join("batches"))));
        self.knowledge = Some(Arc::new(crate::knowledge::KnowledgeIndexes::new(
            dir.join("knowledge-bases"),
        )));
        if self.buckets.is_none() {
            match basalt_buckets::Buckets::local(&dir.join("buckets")) {
                Ok(buckets) => self.buckets = Some(buckets),
                Err(e) => tracing::warn!("no buckets for Bedrock jobs: {e}"),
            }
        }
        self
    }

    /// Where Bedrock jobs' `s3://` URIs live (a directory or an S3-compatible store).
    pub fn with_buckets(mut self, buckets: basalt_buckets::Buckets) -> Self {
        self.buckets = Some(buckets);
        self
    }

    pub fn with_content_classifier(mut self, classifier: ContentClassifier) -> Self {
        self.content_classifier = Some(Arc::new(classifier));
        self
    }

    /// The content classifier, when it rates content filters: only where no guard model
    /// does (a guard model the operator chose judges every category).
    pub(crate) fn content_classifier(&self) -> Option<Arc<ContentClassifier>> {
        match self.guard_model {
            Some(_) => None,
            None => self.content_classifier.clone(),
        }
    }

    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Loads every text-generation model of the catalog (optionally only `only`). Models that
    /// fail to load are returned with their error instead of stopping the server.
    pub fn load(
        catalog: &Catalog,
        only: &[String],
        config: &EngineConfig,
        mut on_loaded: impl FnMut(&Entry, Result<(), &str>),
    ) -> (Self, Vec<(String, String)>) {
        let mut models = Vec::new();
        let mut embedders = Vec::new();
        let mut image_models = Vec::new();
        let mut failed = Vec::new();
        for entry in catalog.entries() {
            let m = &entry.manifest;
            if !only.is_empty() && !only.contains(&m.id) {
                continue;
            }
            if m.format == Format::Safetensors && m.output_modalities.contains(&Modality::Embedding)
            {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                match EmbeddingModel::load(&entry.dir).and_then(|m| Embedder::start(m, threads)) {
                    Ok(embedder) => {
                        on_loaded(entry, Ok(()));
                        embedders.push(ServedEmbedder {
                            entry: entry.clone(),
                            embedder,
                        });
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        on_loaded(entry, Err(&msg));
                        failed.push((m.id.clone(), msg));
                    }
                }
                continue;
            }
            if m.output_modalities.contains(&Modality::Image) {
                let loaded: Result<Arc<dyn ImageGenerator>, String> = match m.format {
                    Format::Torch => ImageModel::load(&entry.weights_path())
                        .map(|m| Arc::new(m) as Arc<dyn ImageGenerator>)
                        .map_err(|e| e.to_string()),
                    Format::Diffusers => StableDiffusion::load(&entry.dir, Default::default())
                        .map(|m| Arc::new(m) as Arc<dyn ImageGenerator>)
                        .map_err(|e| e.to_string()),
                    other => Err(format!("{other:?} is not an image model format")),
                };
                match loaded {
                    Ok(model) => {
                        on_loaded(entry, Ok(()));
                        image_models.push(ServedImageModel {
                            entry: entry.clone(),
                            model,
                        });
                    }
                    Err(msg) => {
                        on_loaded(entry, Err(&msg));
                        failed.push((m.id.clone(), msg));
                    }
                }
                continue;
            }
            if m.format != Format::Gguf || !m.output_modalities.contains(&Modality::Text) {
                continue;
            }
            match LoadedModel::load(&entry.weights_path(), config.clone()) {
                Ok(engine) => {
                    on_loaded(entry, Ok(()));
                    models.push(ServedModel {
                        entry: entry.clone(),
                        engine,
                    });
                }
                Err(e) => {
                    let msg = e.to_string();
                    on_loaded(entry, Err(&msg));
                    failed.push((m.id.clone(), msg));
                }
            }
        }
        let mut state = Self::new(models);
        state.embedders = embedders
            .into_iter()
            .map(|e| (e.entry.manifest.id.clone(), Arc::new(e)))
            .collect();
        state.image_models = image_models
            .into_iter()
            .map(|e| (e.entry.manifest.id.clone(), Arc::new(e)))
            .collect();
        (state, failed)
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<ServedModel>> {
        self.models.values()
    }

    /// Looks a model up by id; ids may arrive URL-encoded.
    pub fn model(&self, id: &str) -> Result<Arc<ServedModel>, BasaltError> {
        self.models
            .get(id)
            .cloned()
            .ok_or_else(|| BasaltError::model_not_found(id))
    }

    pub fn embedders(&self) -> impl Iterator<Item = &Arc<ServedEmbedder>> {
        self.embedders.values()
    }

    pub fn embedder(&self, id: &str) -> Option<Arc<ServedEmbedder>> {
        self.embedders.get(id).cloned()
    }

    pub fn image_models(&self) -> impl Iterator<Item = &Arc<ServedImageModel>> {
        self.image_models.values()
    }

    pub fn image_model(&self, id: &str) -> Option<Arc<ServedImageModel>> {
        self.image_models.get(id).cloned()
    }

    /// Every served model's catalog entry: text, embedding and image models.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.models
            .values()
            .map(|m| &m.entry)
            .chain(self.embedders.values().map(|e| &e.entry))
            .chain(self.image_models.values().map(|i| &i.entry))
    }

    /// Every model the platform serves, for listings: this server's own, then those only
    /// other replicas sharing its database serve (requests for them are forwarded).
    pub fn listed_models(&self) -> Vec<basalt_catalog::Manifest> {
        let mut listed: Vec<basalt_catalog::Manifest> =
            self.entries().map(|e| e.manifest.clone()).collect();
        for manifest in self.peers.manifests_elsewhere() {
            if !listed.iter().any(|m| m.id == manifest.id) {
                listed.push(manifest);
            }
        }
        listed
    }

    /// KV-cache bytes held by all models (zero when idle).
    pub fn kv_bytes_in_use(&self) -> usize {
        self.models
            .values()
            .map(|m| m.engine.kv_bytes_in_use())
            .sum()
    }
}
