//! Basalt's model store: a directory of model directories, each described by a
//! `basalt.toml` manifest (its catalog entry).
//!
//! Opening the catalog reads manifests only, never weights, so start-up stays instant
//! however many models are installed. Import validates a file before it enters the store
//! (a hostile or truncated header is refused with a clear error) and writes the manifest
//! last, so a crash mid-import never leaves a half-registered model.
//!
//! This crate does no inference and prints nothing; long operations report progress through
//! a callback.

#![forbid(unsafe_code)]

pub mod hub;
mod import;
mod manifest;
mod pull;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use import::{import, validate_safetensors, ImportOptions};
pub use manifest::{Format, Manifest, Modality};
pub use pull::{pull, PullOptions, Source};

pub const MANIFEST_FILE: &str = "basalt.toml";

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid manifest {path}: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("invalid model file {path}: {message}")]
    InvalidModel { path: PathBuf, message: String },
    #[error("model `{0}` is not in the catalog")]
    NotFound(String),
    #[error("model `{0}` is already in the catalog")]
    AlreadyExists(String),
    /// A model hub refused, failed, or sent what it should not have (`models pull`).
    #[error("{0}")]
    Hub(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One installed model.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl Entry {
    /// The weights file (GGUF) or directory (safetensors models).
    pub fn weights_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.file)
    }
}

#[derive(Debug, Clone)]
pub struct Catalog {
    root: PathBuf,
    entries: Vec<Entry>,
    /// Directories whose manifest could not be read, with the reason; reported, not fatal.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Catalog {
    /// Reads every `*/basalt.toml` under `root` (creating `root` if needed).
    pub fn open(root: &Path) -> Result<Self, CatalogError> {
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io_err(root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join(MANIFEST_FILE).is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            match Manifest::read(&dir.join(MANIFEST_FILE)) {
                Ok(manifest) => {
                    if entries.iter().any(|e: &Entry| e.manifest.id == manifest.id) {
                        skipped.push((dir, format!("duplicate model id `{}`", manifest.id)));
                    } else {
                        entries.push(Entry { manifest, dir });
                    }
                }
                Err(e) => skipped.push((dir, e.to_string())),
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            entries,
            skipped,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.manifest.id == id)
    }

    /// Deletes a model's directory from the store.
    pub fn remove(&mut self, id: &str) -> Result<Entry, CatalogError> {
        let pos = self
            .entries
            .iter()
            .position(|e| e.manifest.id == id)
            .ok_or_else(|| CatalogError::NotFound(id.into()))?;
        let entry = self.entries.remove(pos);
        // Only ever delete a directory that is directly inside the store and is a model
        // directory (has a manifest): a hand-edited manifest cannot point this elsewhere.
        let canonical_root = self.root.canonicalize().map_err(io_err(&self.root))?;
        let canonical_dir = entry.dir.canonicalize().map_err(io_err(&entry.dir))?;
        if canonical_dir.parent() != Some(canonical_root.as_path()) {
            return Err(CatalogError::Manifest {
                path: entry.dir.clone(),
                message: "model directory is outside the model store".into(),
            });
        }
        std::fs::remove_dir_all(&canonical_dir).map_err(io_err(&canonical_dir))?;
        Ok(entry)
    }

    pub(crate) fn insert(&mut self, entry: Entry) {
        self.entries.push(entry);
    }
}

/// The model store Basalt uses when none is given:
/// `$BASALT_MODELS_DIR`, else `${XDG_DATA_HOME:-~/.local/share}/basalt/models`.
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BASALT_MODELS_DIR") {
        return PathBuf::from(dir);
    }
    data_home().join("basalt").join("models")
}

/// `${XDG_DATA_HOME:-~/.local/share}`.
pub fn data_home() -> PathBuf {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".local")
            .join("share"),
    }
}
