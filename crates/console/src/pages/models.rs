//! The model catalog: every model the viewer may use, with what a developer needs to call
//! it (the Bedrock model id to paste into code) and its licence.

use axum::extract::State;
use axum::response::Html;
use minijinja::context;
use serde::Serialize;

use crate::page::{self, ConsoleError};
use crate::pages::usable_models;
use crate::session::Viewer;
use crate::{Console, Shared};

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
    /// What a GGUF file's weight matrices are stored as (its quantisation), by share.
    weights: Option<String>,
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
    let listed = console.app.listed_models();
    let mut rows = Vec::new();
    for choice in usable {
        let Some(manifest) = listed.iter().find(|m| m.id == choice.id) else {
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
        let weights = match &entry {
            Some(e) if manifest.format == basalt_catalog::Format::Gguf => {
                weight_types_of(&console, e.weights_path()).await
            }
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
            weights,
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

/// The weight types of a GGUF file, read from its header off the runtime once per file (a
/// model's files do not change while it is served; a header with a large vocabulary takes
/// a while to parse).
async fn weight_types_of(console: &Console, path: std::path::PathBuf) -> Option<String> {
    let known = console
        .weight_types
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&path)
        .cloned();
    if let Some(known) = known {
        return known;
    }
    let read = path.clone();
    let types = tokio::task::spawn_blocking(move || {
        let file = basalt_gguf::GgufFile::open(&read).ok()?;
        Some(weight_types(file.header()))
    })
    .await
    .ok()
    .flatten();
    console
        .weight_types
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path, types.clone());
    types
}

/// The types of a file's matrices by their share of its bytes, largest first:
/// `Q4_K 71% · Q6_K 18% · Q8_0 11%` (norms and other vectors are not weights of note).
fn weight_types(header: &basalt_gguf::Header) -> String {
    let mut bytes: Vec<(&'static str, usize)> = Vec::new();
    for t in header.tensors.iter().filter(|t| t.dims.len() >= 2) {
        match bytes.iter_mut().find(|(name, _)| *name == t.ty.name()) {
            Some((_, n)) => *n += t.size_bytes,
            None => bytes.push((t.ty.name(), t.size_bytes)),
        }
    }
    let total: usize = bytes.iter().map(|(_, n)| n).sum::<usize>().max(1);
    bytes.sort_by_key(|b| std::cmp::Reverse(b.1));
    bytes
        .iter()
        .map(|(name, n)| format!("{name} {}%", (n * 100 + total / 2) / total))
        .collect::<Vec<_>>()
        .join(" · ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_gguf::{Header, TensorInfo, TensorType};

    fn tensor(dims: Vec<usize>, ty: TensorType, size_bytes: usize) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims,
            ty,
            offset: 0,
            size_bytes,
        }
    }

    #[test]
    fn weight_types_are_shares_of_the_matrices_bytes() {
        let header = Header {
            version: 3,
            metadata: Default::default(),
            tensors: vec![
                tensor(vec![64, 64], TensorType::Q4K, 700),
                tensor(vec![64, 64], TensorType::Q6K, 200),
                tensor(vec![64, 64], TensorType::Q4K, 100),
                tensor(vec![64], TensorType::F32, 5000),
            ],
            data_offset: 0,
        };
        assert_eq!(weight_types(&header), "Q4_K 80% · Q6_K 20%");
    }
}
