//! The console's pages, one file per part: the overview and live health, the playgrounds,
//! the model catalog, administration (the operator's), usage, invocation logs, and the
//! pages of guardrails, knowledge bases and jobs.

pub(crate) mod admin;
pub(crate) mod features;
pub(crate) mod logs;
pub(crate) mod models;
pub(crate) mod overview;
pub(crate) mod playground;
pub(crate) mod usage;

use basalt_catalog::{Manifest, Modality};
use serde::Serialize;

use crate::session::Viewer;
use crate::Console;

/// A model as the pickers and the catalog show it.
#[derive(Serialize, Clone)]
pub(crate) struct ModelChoice {
    pub id: String,
    pub name: String,
    pub provider: String,
    /// `chat`, `text` (a base model: completions only), `embedding` or `image`.
    pub kind: &'static str,
}

/// The models this viewer may use, by kind: every model for the operator and the local
/// user, a tenant's granted ones for a tenant. Models other replicas serve are included
/// (requests for them are forwarded).
pub(crate) async fn usable_models(console: &Console, viewer: &Viewer) -> Vec<ModelChoice> {
    let app = &console.app;
    let manifests = app.listed_models();
    let ids = manifests.iter().map(|m| m.id.clone()).collect();
    let usable = app.usable(&viewer.principal, ids).await;
    manifests
        .iter()
        .filter(|m| usable.contains(&m.id))
        .map(|m| ModelChoice {
            id: m.id.clone(),
            name: m.name.clone(),
            provider: m.provider.clone(),
            kind: kind_of(console, m),
        })
        .collect()
}

fn kind_of(console: &Console, m: &Manifest) -> &'static str {
    if m.output_modalities.contains(&Modality::Image) {
        "image"
    } else if m.output_modalities.contains(&Modality::Embedding) {
        "embedding"
    } else {
        // A model this replica holds knows whether it has a chat template; one served
        // elsewhere is offered for chat, as the catalog lists it.
        match console.app.model(&m.id) {
            Ok(served) if !served.engine.supports_chat() => "text",
            _ => "chat",
        }
    }
}

/// The models of one kind among `models`.
pub(crate) fn of_kind(models: &[ModelChoice], kind: &str) -> Vec<ModelChoice> {
    models.iter().filter(|m| m.kind == kind).cloned().collect()
}
