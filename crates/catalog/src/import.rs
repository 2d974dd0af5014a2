//! `basalt models import`: validate a user's model, copy it into the store, register it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use basalt_gguf::GgufFile;
use sha2::{Digest, Sha256};

use crate::manifest::{validate_model_id, Format, Manifest, Modality};
use crate::{io_err, Catalog, CatalogError, Entry, MANIFEST_FILE};

/// Architectures the engine can run; importing anything else would register a model that
/// can never be served.
const GGUF_ARCHITECTURES: &[&str] = &[
    "llama", "qwen2", "qwen3", "phi3", "granite", "gemma2", "gemma3",
];
/// Largest safetensors JSON header we accept (real ones are kilobytes).
const MAX_SAFETENSORS_HEADER: u64 = 64 << 20;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Catalog id; derived from the file's metadata when absent.
    pub id: Option<String>,
    pub name: Option<String>,
    pub provider: Option<String>,
    /// The licence's name (an SPDX id such as `apache-2.0`), over what the file says.
    pub license: Option<String>,
    /// A licence file to keep beside the weights (as `LICENSE`).
    pub license_file: Option<PathBuf>,
}

fn invalid(path: &Path, message: impl Into<String>) -> CatalogError {
    CatalogError::InvalidModel {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Lower-case letters, digits and dashes only.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Imports a GGUF file, a safetensors embedding-model directory, or a diffusers
/// (Stable Diffusion) directory. `progress(done, total)` is called
/// as bytes are copied.
pub fn import(
    catalog: &mut Catalog,
    source: &Path,
    options: ImportOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Entry, CatalogError> {
    let meta = std::fs::metadata(source).map_err(io_err(source))?;
    let (mut manifest, mut files) = if meta.is_dir() && source.join("model_index.json").is_file() {
        inspect_diffusers_dir(source, &options)?
    } else if meta.is_dir() {
        inspect_safetensors_dir(source, &options)?
    } else {
        inspect_gguf(source, &options)?
    };
    if let Some(license) = &options.license {
        manifest.license = Some(license.clone());
    }
    if let Some(license_file) = &options.license_file {
        files.retain(|(_, name)| name != "LICENSE");
        files.push((license_file.clone(), "LICENSE".to_string()));
        manifest.license_file = Some("LICENSE".into());
    }
    validate_model_id(&manifest.id).map_err(|m| invalid(source, m))?;
    if catalog.get(&manifest.id).is_some() {
        return Err(CatalogError::AlreadyExists(manifest.id));
    }
    let dir = catalog.root().join(slug(&manifest.id));
    if dir.exists() {
        return Err(CatalogError::AlreadyExists(manifest.id));
    }
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let result = (|| {
        let total: u64 = files
            .iter()
            .map(|(src, _)| std::fs::metadata(src).map(|m| m.len()).unwrap_or(0))
            .sum();
        let mut done = 0;
        let mut digest = None;
        for (src, name) in &files {
            if let Some(parent) = dir.join(name).parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let hash = copy_with_progress(src, &dir.join(name), &mut done, total, progress)?;
            if *name == manifest.file {
                digest = Some(hash);
            }
        }
        let manifest = Manifest {
            sha256: digest,
            ..manifest
        };
        // The manifest goes last: until it exists the directory is not a catalog entry.
        let tmp = dir.join(".basalt.toml.tmp");
        std::fs::write(&tmp, manifest.to_toml()?).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, dir.join(MANIFEST_FILE)).map_err(io_err(&dir))?;
        Ok(Entry {
            manifest,
            dir: dir.clone(),
        })
    })();
    match result {
        Ok(entry) => {
            catalog.insert(entry.clone());
            Ok(entry)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

fn copy_with_progress(
    src: &Path,
    dst: &Path,
    done: &mut u64,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<String, CatalogError> {
    let mut input = File::open(src).map_err(io_err(src))?;
    let mut output = File::create(dst).map_err(io_err(dst))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io_err(src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io_err(dst))?;
        *done += n as u64;
        progress(*done, total);
    }
    output.sync_all().map_err(io_err(dst))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn inspect_gguf(
    path: &Path,
    options: &ImportOptions,
) -> Result<(Manifest, Vec<(PathBuf, String)>), CatalogError> {
    let file = GgufFile::open(path).map_err(|e| invalid(path, e.to_string()))?;
    let h = file.header();
    let arch = h
        .architecture()
        .map_err(|e| invalid(path, e.to_string()))?
        .to_string();
    if !GGUF_ARCHITECTURES.contains(&arch.as_str()) {
        return Err(invalid(
            path,
            format!(
                "architecture `{arch}` is not supported (supported: {})",
                GGUF_ARCHITECTURES.join(", ")
            ),
        ));
    }
    if h.array("tokenizer.ggml.tokens").is_err() {
        return Err(invalid(
            path,
            "the file has no tokenizer (tokenizer.ggml.tokens)",
        ));
    }
    let context_length = h
        .u64(&format!("{arch}.context_length"))
        .map_err(|e| invalid(path, e.to_string()))?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let base = h
        .string("general.basename")
        .or_else(|_| h.string("general.name"))
        .unwrap_or(stem);
    let size = h.string("general.size_label").unwrap_or("");
    let finetune = h.string("general.finetune").unwrap_or("");
    let provider = options
        .provider
        .clone()
        .or_else(|| h.string("general.organization").ok().map(str::to_string))
        .unwrap_or_else(|| "Imported".into());
    let id = match &options.id {
        Some(id) => id.clone(),
        None => format!(
            "{}.{}-v1:0",
            slug(&provider),
            slug(&[base, size, finetune].join(" "))
        ),
    };
    let file_name = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model.gguf")
        .to_string();
    let manifest = Manifest {
        id,
        name: options
            .name
            .clone()
            .unwrap_or_else(|| h.string("general.name").unwrap_or(stem).to_string()),
        provider,
        format: Format::Gguf,
        file: file_name.clone(),
        sha256: None,
        input_modalities: vec![Modality::Text],
        output_modalities: vec![Modality::Text],
        context_length: u32::try_from(context_length).unwrap_or(u32::MAX),
        license: h.string("general.license").ok().map(str::to_string),
        license_file: None,
    };
    Ok((manifest, vec![(path.to_path_buf(), file_name)]))
}

/// Checks a safetensors file's header: length, JSON, and that every tensor's byte range
/// matches its shape and lies inside the file.
pub fn validate_safetensors(path: &Path) -> Result<usize, CatalogError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let file_len = f.metadata().map_err(io_err(path))?.len();
    let mut len_bytes = [0u8; 8];
    f.read_exact(&mut len_bytes)
        .map_err(|_| invalid(path, "file is shorter than a safetensors header"))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_SAFETENSORS_HEADER || header_len + 8 > file_len {
        return Err(invalid(
            path,
            format!(
                "safetensors header length {header_len} is impossible for a {file_len}-byte file"
            ),
        ));
    }
    let mut header = vec![0u8; header_len as usize];
    f.read_exact(&mut header).map_err(io_err(path))?;
    let parsed: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| invalid(path, format!("safetensors header is not JSON: {e}")))?;
    let data_len = file_len - 8 - header_len;
    let mut tensors = 0;
    for (name, info) in parsed.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let dtype = info.get("dtype").and_then(|v| v.as_str()).unwrap_or("");
        let elem = match dtype {
            "F64" | "I64" | "U64" => 8,
            "F32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" | "BOOL" => 1,
            other => {
                return Err(invalid(
                    path,
                    format!("tensor `{name}` has unknown dtype `{other}`"),
                ))
            }
        };
        let shape: Option<Vec<u64>> = info
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect());
        let offsets: Option<Vec<u64>> = info
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_u64()).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(invalid(
                path,
                format!("tensor `{name}` lacks shape or data_offsets"),
            ));
        };
        let bytes = shape
            .iter()
            .try_fold(elem, |acc: u64, &d| acc.checked_mul(d));
        match (bytes, offsets.as_slice()) {
            (Some(b), [start, end]) if start <= end && *end <= data_len && end - start == b => {}
            _ => {
                return Err(invalid(
                    path,
                    format!("tensor `{name}`: byte range does not match its shape or the file"),
                ))
            }
        }
        tensors += 1;
    }
    Ok(tensors)
}

fn read_json(path: &Path) -> Result<serde_json::Value, CatalogError> {
    serde_json::from_slice(&std::fs::read(path).map_err(io_err(path))?)
        .map_err(|e| invalid(path, format!("not JSON: {e}")))
}

/// A directory import's name (the folder's), provider and id, unless the options give them.
fn identity(
    dir: &Path,
    options: &ImportOptions,
    fallback_name: &'static str,
) -> (String, String, String) {
    let dir_name = dir
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or(fallback_name)
        .to_string();
    let provider = options
        .provider
        .clone()
        .unwrap_or_else(|| "Imported".into());
    let id = options
        .id
        .clone()
        .unwrap_or_else(|| format!("{}.{}-v1:0", slug(&provider), slug(&dir_name)));
    (dir_name, provider, id)
}

fn inspect_safetensors_dir(
    dir: &Path,
    options: &ImportOptions,
) -> Result<(Manifest, Vec<(PathBuf, String)>), CatalogError> {
    let required = ["model.safetensors", "config.json", "tokenizer.json"];
    for name in required {
        if !dir.join(name).is_file() {
            return Err(invalid(
                dir,
                format!("a safetensors model directory needs `{name}`"),
            ));
        }
    }
    validate_safetensors(&dir.join("model.safetensors"))?;
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !matches!(
        model_type,
        "bert" | "distilbert" | "xlm-roberta" | "roberta" | "mpnet"
    ) {
        return Err(invalid(
            &config_path,
            format!("model_type `{model_type}` is not a supported embedding architecture"),
        ));
    }
    let context_length = config
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .unwrap_or(512);
    let (dir_name, provider, id) = identity(dir, options, "embedding-model");
    let mut files: Vec<(PathBuf, String)> = required
        .iter()
        .map(|n| (dir.join(n), n.to_string()))
        .collect();
    for optional in [
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "pooling.json",
        "LICENSE",
    ] {
        if dir.join(optional).is_file() {
            files.push((dir.join(optional), optional.to_string()));
        }
    }
    // sentence-transformers keeps its pooling settings in `1_Pooling/config.json`.
    let pooling = dir.join("1_Pooling").join("config.json");
    if pooling.is_file() && !dir.join("pooling.json").is_file() {
        files.push((pooling, "pooling.json".to_string()));
    }
    let manifest = Manifest {
        id,
        name: options.name.clone().unwrap_or(dir_name),
        provider,
        format: Format::Safetensors,
        file: "model.safetensors".into(),
        sha256: None,
        input_modalities: vec![Modality::Text],
        output_modalities: vec![Modality::Embedding],
        context_length: u32::try_from(context_length).unwrap_or(u32::MAX),
        license: None,
        license_file: None,
    };
    Ok((manifest, files))
}

/// Files of a diffusers directory Basalt reads: `(path, required)`. Weights may be the
/// `.fp16` variant; they are stored under the canonical name.
const DIFFUSERS_FILES: [(&str, bool); 13] = [
    ("model_index.json", true),
    ("scheduler/scheduler_config.json", true),
    ("text_encoder/config.json", true),
    ("text_encoder/model.safetensors", true),
    ("tokenizer/vocab.json", true),
    ("tokenizer/merges.txt", true),
    ("tokenizer/special_tokens_map.json", false),
    ("tokenizer/tokenizer_config.json", false),
    ("unet/config.json", true),
    ("unet/diffusion_pytorch_model.safetensors", true),
    ("vae/config.json", true),
    ("vae/diffusion_pytorch_model.safetensors", true),
    ("LICENSE", false),
];

fn inspect_diffusers_dir(
    dir: &Path,
    options: &ImportOptions,
) -> Result<(Manifest, Vec<(PathBuf, String)>), CatalogError> {
    let index_path = dir.join("model_index.json");
    let index = read_json(&index_path)?;
    let class = index
        .get("_class_name")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if !matches!(
        class,
        "StableDiffusionPipeline" | "StableDiffusionImg2ImgPipeline"
    ) {
        return Err(invalid(
            &index_path,
            format!("pipeline `{class}` is not supported (Stable Diffusion 1.x/2.x layouts are)"),
        ));
    }
    let mut files = Vec::new();
    for (name, required) in DIFFUSERS_FILES {
        let canonical = dir.join(name);
        let fp16 = dir.join(name.replace(".safetensors", ".fp16.safetensors"));
        let found = [canonical, fp16].into_iter().find(|p| p.is_file());
        match found {
            Some(path) => {
                if name.ends_with(".safetensors") {
                    validate_safetensors(&path)?;
                }
                files.push((path, name.to_string()));
            }
            None if required => {
                return Err(invalid(
                    dir,
                    format!("a diffusers directory needs `{name}`"),
                ))
            }
            None => {}
        }
    }
    let context_length = read_json(&dir.join("text_encoder/config.json"))?
        .get("max_position_embeddings")
        .and_then(|v| v.as_u64())
        .unwrap_or(77);
    let (dir_name, provider, id) = identity(dir, options, "stable-diffusion");
    let manifest = Manifest {
        id,
        name: options.name.clone().unwrap_or(dir_name),
        provider,
        format: Format::Diffusers,
        file: "model_index.json".into(),
        sha256: None,
        input_modalities: vec![Modality::Text],
        output_modalities: vec![Modality::Image],
        context_length: u32::try_from(context_length).unwrap_or(u32::MAX),
        license: None,
        license_file: dir.join("LICENSE").is_file().then(|| "LICENSE".to_string()),
    };
    Ok((manifest, files))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("basalt-catalog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn slugs_are_safe() {
        assert_eq!(
            slug("huggingface.smollm2-135m-instruct-v1:0"),
            "huggingface-smollm2-135m-instruct-v1-0"
        );
        assert_eq!(slug("../../etc"), "etc");
    }

    #[test]
    fn hostile_files_are_refused_and_leave_nothing_behind() {
        let root = temp_dir("hostile");
        let store = root.join("store");
        let mut catalog = Catalog::open(&store).unwrap();
        // Truncated GGUF.
        let bad = root.join("bad.gguf");
        std::fs::write(&bad, b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\x7f").unwrap();
        let err = import(&mut catalog, &bad, ImportOptions::default(), &mut |_, _| {}).unwrap_err();
        assert!(matches!(err, CatalogError::InvalidModel { .. }), "{err}");
        // Not a GGUF at all.
        std::fs::write(&bad, b"hello world").unwrap();
        assert!(import(&mut catalog, &bad, ImportOptions::default(), &mut |_, _| {}).is_err());
        // Safetensors directory with a hostile header length.
        let st = root.join("st");
        std::fs::create_dir_all(&st).unwrap();
        std::fs::write(st.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
        std::fs::write(st.join("config.json"), br#"{"model_type":"bert"}"#).unwrap();
        std::fs::write(st.join("tokenizer.json"), b"{}").unwrap();
        let err = import(&mut catalog, &st, ImportOptions::default(), &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("impossible"), "{err}");
        assert!(
            std::fs::read_dir(&store).unwrap().next().is_none(),
            "nothing may be left in the store"
        );
    }

    #[test]
    fn diffusers_directory_round_trip() {
        let root = temp_dir("sd-ok");
        let src = root.join("tiny-sd");
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut weights = (header.len() as u64).to_le_bytes().to_vec();
        weights.extend(header);
        weights.extend([0u8; 8]);
        for (name, _) in DIFFUSERS_FILES {
            let path = src.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let body: &[u8] = match name {
                "model_index.json" => br#"{"_class_name":"StableDiffusionPipeline"}"#,
                "text_encoder/config.json" => br#"{"max_position_embeddings":77}"#,
                n if n.ends_with(".safetensors") => &weights,
                _ => b"{}",
            };
            // The UNet comes as the fp16 variant; it is stored under the canonical name.
            let path = if name.starts_with("unet/diffusion") {
                src.join("unet/diffusion_pytorch_model.fp16.safetensors")
            } else {
                path
            };
            std::fs::write(path, body).unwrap();
        }
        let mut catalog = Catalog::open(&root.join("store")).unwrap();
        let entry = import(&mut catalog, &src, ImportOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(entry.manifest.format, Format::Diffusers);
        assert_eq!(entry.manifest.output_modalities, vec![Modality::Image]);
        assert_eq!(entry.manifest.context_length, 77);
        assert!(entry
            .dir
            .join("unet/diffusion_pytorch_model.safetensors")
            .is_file());
        assert!(entry.dir.join("tokenizer/merges.txt").is_file());

        // A broken weights file or another pipeline class is refused.
        std::fs::write(src.join("vae/diffusion_pytorch_model.safetensors"), b"junk").unwrap();
        let opts = || ImportOptions {
            id: Some("imported.other-v1:0".into()),
            ..ImportOptions::default()
        };
        assert!(import(&mut catalog, &src, opts(), &mut |_, _| {}).is_err());
        std::fs::write(
            src.join("vae/diffusion_pytorch_model.safetensors"),
            &weights,
        )
        .unwrap();
        std::fs::write(
            src.join("model_index.json"),
            br#"{"_class_name":"StableDiffusionXLPipeline"}"#,
        )
        .unwrap();
        assert!(import(&mut catalog, &src, opts(), &mut |_, _| {}).is_err());
        assert!(catalog.get("imported.other-v1:0").is_none());
    }

    #[test]
    fn safetensors_directory_round_trip() {
        let root = temp_dir("st-ok");
        let src = root.join("tiny-bert");
        std::fs::create_dir_all(&src).unwrap();
        let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes.extend([0u8; 8]);
        std::fs::write(src.join("model.safetensors"), &bytes).unwrap();
        std::fs::write(
            src.join("config.json"),
            br#"{"model_type":"bert","max_position_embeddings":512}"#,
        )
        .unwrap();
        std::fs::write(src.join("tokenizer.json"), b"{}").unwrap();
        let store = root.join("store");
        let mut catalog = Catalog::open(&store).unwrap();
        let entry = import(&mut catalog, &src, ImportOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(entry.manifest.id, "imported.tiny-bert-v1:0");
        assert_eq!(entry.manifest.output_modalities, vec![Modality::Embedding]);
        let reopened = Catalog::open(&store).unwrap();
        assert!(reopened.get("imported.tiny-bert-v1:0").is_some());
        assert!(matches!(
            import(&mut catalog, &src, ImportOptions::default(), &mut |_, _| {}),
            Err(CatalogError::AlreadyExists(_))
        ));
        catalog.remove("imported.tiny-bert-v1:0").unwrap();
        assert!(Catalog::open(&store).unwrap().entries().is_empty());
    }
}
