//! The model catalog: every model the viewer may use, with what a developer needs to call
//! it (the Bedrock model id to paste into code) and its licence.

use axum::extract::State;
use axum::response::Html;
use minijinja::context;
use serde::Serialize;

use crate::page::{self, ConsoleError};
use crate::pages::usable_models;
use crate::session::Viewer;
use crate::Shared;

/// Licence files are shown in full up to this size (a licence is a few KiB).
const LICENSE_LIMIT: usize = 64 << 10;

#[derive(Serialize)]
struct CatalogRow {
    id: String,
    name: String,
    provider: String,
    kind: &'static str,
    input_modalities: Vec<String>,
    output_modalities: Vec<String>,
    context_length: u32,
    format: String,
    file: String,
    license: Option<String>,
    license_text: Option<String>,
    /// Served by this replica (else by another, which requests are forwarded to).
    here: bool,
}

pub(crate) async fn show(
    State(console): Shared,
    viewer: Viewer,
) -> Result<Html<String>, ConsoleError> {
    let usable = usable_models(&console, &viewer).await;
    let mut rows = Vec::new();
    for choice in usable {
        let Some(manifest) = console
            .app
            .listed_models()
            .into_iter()
            .find(|m| m.id == choice.id)
        else {
            continue;
        };
        let entry = console
            .app
            .entries()
            .find(|e| e.manifest.id == choice.id)
            .cloned();
        let license_text = match (&entry, &manifest.license_file) {
            (Some(entry), Some(file)) => read_license(entry.dir.join(file)).await,
            _ => None,
        };
        let names = |ms: &[basalt_catalog::Modality]| {
            ms.iter()
                .map(|m| format!("{m:?}").to_lowercase())
                .collect::<Vec<_>>()
        };
        rows.push(CatalogRow {
            id: manifest.id.clone(),
            name: manifest.name.clone(),
            provider: manifest.provider.clone(),
            kind: choice.kind,
            input_modalities: names(&manifest.input_modalities),
            output_modalities: names(&manifest.output_modalities),
            context_length: manifest.context_length,
            format: format!("{:?}", manifest.format).to_lowercase(),
            file: manifest.file.clone(),
            license: manifest.license.clone(),
            license_text,
            here: entry.is_some(),
        });
    }
    page::render(
        &console,
        "models.html",
        &viewer,
        context! { nav => "models", models => rows },
    )
}

/// A licence file's text (its first [`LICENSE_LIMIT`] bytes), read off the runtime.
async fn read_license(path: std::path::PathBuf) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).ok()?;
        let end = bytes.len().min(LICENSE_LIMIT);
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    })
    .await
    .ok()
    .flatten()
}
