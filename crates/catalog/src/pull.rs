//! `basalt models pull`: a model from a hub repository (or a URL) into the store.
//!
//! `owner/repo` picks the repository's GGUF file (the one quant there is, else the
//! customary default, Q4_K_M, else the caller must name one: `owner/repo:Q8_0`); a
//! repository without GGUF files but with `model.safetensors`, `config.json` and
//! `tokenizer.json` is an embedding model's directory and comes whole. A hub URL
//! (`{hub}/owner/repo/resolve/rev/file.gguf`) names the file itself. The licence file and
//! the card's licence come along. Files are downloaded into `<store>/.downloads`
//! (resumable, checked against the SHA-256 the hub publishes), then imported like
//! `basalt models import` (the downloads are removed once the model is in the store).

use std::path::{Path, PathBuf};

use crate::hub::{validate_repo, Hub, RepoFile, RepoInfo};
use crate::import::{import, ImportOptions};
use crate::{Catalog, CatalogError, Entry};

/// Quants in the order a repository offers them by default: what Ollama and most model
/// cards call the sensible default first.
const PREFERRED_QUANTS: &[&str] = &["Q4_K_M", "Q4_K_S", "Q5_K_M", "Q6_K", "Q8_0", "Q4_0"];
/// The files an embedding model's directory needs, then those it uses when present.
const EMBEDDING_REQUIRED: &[&str] = &["model.safetensors", "config.json", "tokenizer.json"];
const EMBEDDING_OPTIONAL: &[&str] = &[
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];
const LICENSE_FILES: &[&str] = &[
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
    "LICENCE",
    "license.txt",
];

/// What to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `owner/repo`, and the quant asked for (`owner/repo:Q4_K_M`).
    Repo { repo: String, quant: Option<String> },
    /// One file of a repository, by its hub URL.
    File {
        repo: String,
        revision: String,
        path: String,
    },
}

impl Source {
    /// Reads `owner/repo[:quant]` or a `{hub}/owner/repo/resolve/{revision}/{path}` URL.
    pub fn parse(text: &str, hub: &str) -> Result<Self, CatalogError> {
        let text = text.trim();
        if text.starts_with("http://") || text.starts_with("https://") {
            let rest = text
                .strip_prefix(hub.trim_end_matches('/'))
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(|| {
                    CatalogError::Hub(format!(
                        "{text} is not on the hub ({hub}); set HF_ENDPOINT to pull from \
                         another hub"
                    ))
                })?;
            let rest = rest.split(['?', '#']).next().unwrap_or_default();
            let parts: Vec<&str> = rest.splitn(5, '/').collect();
            return match parts.as_slice() {
                [owner, name, "resolve" | "blob", revision, path] if !path.is_empty() => {
                    let repo = format!("{owner}/{name}");
                    validate_repo(&repo)?;
                    if path.split('/').any(|p| p == ".." || p.is_empty()) {
                        return Err(CatalogError::Hub(format!("{text}: not a file path")));
                    }
                    Ok(Source::File {
                        repo,
                        revision: revision.to_string(),
                        path: path.to_string(),
                    })
                }
                _ => Err(CatalogError::Hub(format!(
                    "{text} is not a file URL ({hub}/owner/repo/resolve/main/file.gguf)"
                ))),
            };
        }
        let (repo, quant) = match text.split_once(':') {
            Some((repo, quant)) if !quant.is_empty() => (repo, Some(quant.to_string())),
            Some((repo, _)) => (repo, None),
            None => (text, None),
        };
        validate_repo(repo)?;
        Ok(Source::Repo {
            repo: repo.to_string(),
            quant,
        })
    }
}

/// How to pull.
pub struct PullOptions {
    pub revision: String,
    /// The catalog entry: as for `import`, derived from the file when not given.
    pub import: ImportOptions,
}

/// The files one pull fetches from a repository.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// GGUF: one file. Embeddings: the directory's files.
    pub files: Vec<String>,
    pub license_file: Option<String>,
    pub directory: bool,
}

/// Chooses what to fetch from a repository's listing.
pub(crate) fn plan(info: &RepoInfo, quant: Option<&str>) -> Result<Plan, CatalogError> {
    let license_file = LICENSE_FILES
        .iter()
        .find(|name| info.file(name).is_some())
        .map(|s| s.to_string());
    let ggufs: Vec<&RepoFile> = info
        .siblings
        .iter()
        .filter(|f| f.rfilename.to_ascii_lowercase().ends_with(".gguf"))
        // Vision projectors ride along in some repositories; they are not models.
        .filter(|f| !f.rfilename.to_ascii_lowercase().contains("mmproj"))
        .collect();
    if ggufs.is_empty() {
        let has = |name: &str| info.file(name).is_some();
        if EMBEDDING_REQUIRED.iter().all(|f| has(f)) {
            let mut files: Vec<String> = EMBEDDING_REQUIRED.iter().map(|s| s.to_string()).collect();
            files.extend(
                EMBEDDING_OPTIONAL
                    .iter()
                    .filter(|f| has(f))
                    .map(|s| s.to_string()),
            );
            return Ok(Plan {
                files,
                license_file,
                directory: true,
            });
        }
        return Err(CatalogError::Hub(
            "the repository has no GGUF file, nor an embedding model's model.safetensors, \
             config.json and tokenizer.json"
                .into(),
        ));
    }
    let whole: Vec<&RepoFile> = ggufs
        .iter()
        .copied()
        .filter(|f| !is_split_part(&f.rfilename))
        .collect();
    if whole.is_empty() {
        return Err(CatalogError::Hub(
            "the repository's GGUF files are split in parts (-00001-of-0000N.gguf), which \
             Basalt does not load yet: merge them with llama.cpp's `llama-gguf-split --merge` \
             and `basalt models import` the result"
                .into(),
        ));
    }
    let names = || {
        whole
            .iter()
            .map(|f| f.rfilename.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match quant {
        Some(q) => {
            let matching: Vec<&&RepoFile> = whole
                .iter()
                .filter(|f| names_quant(&f.rfilename, q))
                .collect();
            match matching.as_slice() {
                [one] => one.rfilename.clone(),
                [] => {
                    return Err(CatalogError::Hub(format!(
                        "no GGUF file for quant {q}; the repository has {}",
                        names()
                    )))
                }
                _ => {
                    return Err(CatalogError::Hub(format!(
                        "more than one GGUF file matches {q}: {}; pull one by its URL",
                        matching
                            .iter()
                            .map(|f| f.rfilename.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
        None if whole.len() == 1 => whole[0].rfilename.clone(),
        None => PREFERRED_QUANTS
            .iter()
            .find_map(|q| {
                let matching: Vec<&&RepoFile> = whole
                    .iter()
                    .filter(|f| names_quant(&f.rfilename, q))
                    .collect();
                (matching.len() == 1).then(|| matching[0].rfilename.clone())
            })
            .ok_or_else(|| {
                CatalogError::Hub(format!(
                    "the repository has several GGUF files ({}); name one: owner/repo:QUANT",
                    names()
                ))
            })?,
    };
    Ok(Plan {
        files: vec![chosen],
        license_file,
        directory: false,
    })
}

/// `model-00001-of-00003.gguf`.
fn is_split_part(name: &str) -> bool {
    let stem = name.trim_end_matches(".gguf").trim_end_matches(".GGUF");
    let mut parts = stem.rsplitn(4, '-');
    let (total, of, index) = (parts.next(), parts.next(), parts.next());
    matches!((total, of, index), (Some(t), Some("of"), Some(i))
        if t.len() == 5 && i.len() == 5
            && t.bytes().all(|b| b.is_ascii_digit()) && i.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether a file name carries `quant` as a whole token (`Q4_K` is not `Q4_K_M`).
fn names_quant(name: &str, quant: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let quant = quant.to_ascii_uppercase();
    let bytes = name.as_bytes();
    name.match_indices(&quant).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + quant.len()).copied();
        let edge = |b: Option<u8>| b.is_none_or(|b| matches!(b, b'.' | b'-' | b'/'));
        edge(before) && edge(after)
    })
}

/// Pulls `source` from `hub` into `catalog`: downloads (resumable, checked), then
/// `check(path)` (the caller's last word: the engine inspects a GGUF there), then import.
pub fn pull(
    catalog: &mut Catalog,
    hub: &Hub,
    source: &Source,
    options: PullOptions,
    check: &dyn Fn(&Path) -> Result<(), String>,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Entry, CatalogError> {
    let (repo, revision, info, plan) = match source {
        Source::Repo { repo, quant } => {
            let info = hub.repo(repo, &options.revision)?;
            let plan = plan(&info, quant.as_deref())?;
            (repo, options.revision.clone(), info, plan)
        }
        Source::File {
            repo,
            revision,
            path,
        } => {
            let info = hub.repo(repo, revision)?;
            if info.file(path).is_none() {
                return Err(CatalogError::Hub(format!(
                    "{repo} has no file {path} at {revision}"
                )));
            }
            let mut plan = plan(&info, None).unwrap_or(Plan {
                files: Vec::new(),
                license_file: None,
                directory: false,
            });
            plan.files = vec![path.clone()];
            plan.directory = false;
            (repo, revision.clone(), info, plan)
        }
    };
    let staging = catalog
        .root()
        .join(".downloads")
        .join(repo.replace('/', "--"))
        .join(&revision);
    let mut fetch = |name: &str| -> Result<PathBuf, CatalogError> {
        let file = info.file(name);
        let dest = staging.join(name);
        if dest.is_file() {
            // Fetched and checked by an earlier run whose import did not finish.
            return Ok(dest);
        }
        let url = hub.file_url(repo, &revision, name);
        let mut report = |done, total| progress(name, done, total);
        hub.download(
            &url,
            &dest,
            file.and_then(RepoFile::size),
            file.and_then(RepoFile::sha256),
            &mut report,
        )?;
        Ok(dest)
    };
    let mut fetched = Vec::new();
    for name in &plan.files {
        fetched.push(fetch(name)?);
    }
    let license_file = match &plan.license_file {
        Some(name) => Some(fetch(name)?),
        None => None,
    };
    let source_path = if plan.directory {
        staging.clone()
    } else {
        fetched[0].clone()
    };
    check(&source_path).map_err(|why| CatalogError::InvalidModel {
        path: source_path.clone(),
        message: why,
    })?;
    let import_options = ImportOptions {
        license: options.import.license.clone().or_else(|| info.license()),
        license_file: options.import.license_file.clone().or(license_file),
        ..options.import
    };
    let entry = import(catalog, &source_path, import_options, &mut |_, _| {})?;
    // The store holds its own copy now; the emptied parents go too (remove_dir leaves a
    // directory that still holds another pull's files).
    let _ = std::fs::remove_dir_all(&staging);
    for parent in staging.ancestors().skip(1).take(2) {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(names: &[&str]) -> RepoInfo {
        let siblings: Vec<serde_json::Value> = names
            .iter()
            .map(|n| serde_json::json!({"rfilename": n, "size": 1}))
            .collect();
        serde_json::from_value(serde_json::json!({ "siblings": siblings })).unwrap()
    }

    #[test]
    fn sources_are_repositories_with_a_quant_or_file_urls() {
        let hub = "https://huggingface.co";
        assert_eq!(
            Source::parse("Qwen/Qwen3-0.6B-GGUF:Q8_0", hub).unwrap(),
            Source::Repo {
                repo: "Qwen/Qwen3-0.6B-GGUF".into(),
                quant: Some("Q8_0".into())
            }
        );
        assert_eq!(
            Source::parse(
                "https://huggingface.co/a/b/resolve/main/x/m.Q4_0.gguf?download=true",
                hub
            )
            .unwrap(),
            Source::File {
                repo: "a/b".into(),
                revision: "main".into(),
                path: "x/m.Q4_0.gguf".into()
            }
        );
        for bad in [
            "https://elsewhere.test/a/b/resolve/main/m.gguf",
            "https://huggingface.co/a/b",
            "https://huggingface.co/a/b/resolve/main/../../etc/passwd",
            "not-a-repo",
            "a/b/c",
        ] {
            assert!(Source::parse(bad, hub).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_quant_is_chosen_unless_one_is_named() {
        let info = listing(&[
            "README.md",
            "LICENSE",
            "m-Q4_K_S.gguf",
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "mmproj-m-f16.gguf",
        ]);
        let p = plan(&info, None).unwrap();
        assert_eq!(p.files, ["m-Q4_K_M.gguf"]);
        assert_eq!(p.license_file.as_deref(), Some("LICENSE"));
        assert_eq!(plan(&info, Some("q8_0")).unwrap().files, ["m-Q8_0.gguf"]);
        // Q4_K names no file: it is a prefix of two.
        assert!(plan(&info, Some("Q4_K")).is_err());
        assert!(plan(&info, Some("IQ2_XS")).is_err());
    }

    #[test]
    fn ambiguity_split_files_and_embedding_directories() {
        assert!(plan(&listing(&["a-IQ4_XS.gguf", "a-IQ3_M.gguf"]), None).is_err());
        assert_eq!(
            plan(&listing(&["only.gguf"]), None).unwrap().files,
            ["only.gguf"]
        );
        assert!(plan(
            &listing(&[
                "m-Q4_K_M-00001-of-00002.gguf",
                "m-Q4_K_M-00002-of-00002.gguf"
            ]),
            None
        )
        .is_err());
        let p = plan(
            &listing(&[
                "model.safetensors",
                "config.json",
                "tokenizer.json",
                "1_Pooling/config.json",
                "README.md",
            ]),
            None,
        )
        .unwrap();
        assert!(p.directory);
        assert_eq!(
            p.files,
            [
                "model.safetensors",
                "config.json",
                "tokenizer.json",
                "1_Pooling/config.json"
            ]
        );
        assert!(plan(&listing(&["README.md"]), None).is_err());
    }
}
