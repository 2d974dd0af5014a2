//! The `basalt.toml` manifest: a model's catalog entry.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{io_err, CatalogError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One GGUF file: weights, tokenizer and chat template.
    Gguf,
    /// A Hugging Face directory: `model.safetensors`, `config.json`, `tokenizer.json`.
    Safetensors,
    /// A PyTorch checkpoint (`torch.save`'s zip format) of a model Basalt knows by
    /// architecture (the DCGAN face generator).
    Torch,
    /// A diffusers pipeline directory (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`): Stable Diffusion 1.x/2.x and SD-Turbo.
    Diffusers,
}

/// Bedrock's modality names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Modality {
    Text,
    Image,
    Embedding,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bedrock-style model id: `provider.name-vN:M`.
    pub id: String,
    pub name: String,
    pub provider: String,
    pub format: Format,
    /// The weights, relative to the model directory.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub input_modalities: Vec<Modality>,
    pub output_modalities: Vec<Modality>,
    pub context_length: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file: Option<String>,
}

impl Manifest {
    pub fn read(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let m: Manifest = toml::from_str(&text).map_err(|e| CatalogError::Manifest {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        m.validate().map_err(|message| CatalogError::Manifest {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(m)
    }

    pub fn to_toml(&self) -> Result<String, CatalogError> {
        toml::to_string(self).map_err(|e| CatalogError::Manifest {
            path: "basalt.toml".into(),
            message: e.to_string(),
        })
    }

    fn validate(&self) -> Result<(), String> {
        validate_model_id(&self.id)?;
        let file = Path::new(&self.file);
        if self.file.is_empty()
            || file.is_absolute()
            || file
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!(
                "`file` must be a path inside the model directory, got `{}`",
                self.file
            ));
        }
        if self.output_modalities.is_empty() {
            return Err("`output_modalities` is empty".into());
        }
        Ok(())
    }
}

/// Model ids appear in URLs and file names: keep them to a safe alphabet.
pub fn validate_model_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "model id `{id}` must be 1-128 characters of letters, digits, `.`, `-`, `_`, `:`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_escaping_paths() {
        let m = Manifest {
            id: "huggingface.smollm2-135m-instruct-v1:0".into(),
            name: "SmolLM2".into(),
            provider: "Hugging Face".into(),
            format: Format::Gguf,
            file: "model.gguf".into(),
            sha256: None,
            input_modalities: vec![Modality::Text],
            output_modalities: vec![Modality::Text],
            context_length: 8192,
            license: Some("Apache-2.0".into()),
            license_file: None,
        };
        let text = m.to_toml().unwrap();
        assert_eq!(toml::from_str::<Manifest>(&text).unwrap(), m);
        assert!(Manifest {
            file: "../x.gguf".into(),
            ..m.clone()
        }
        .validate()
        .is_err());
        assert!(Manifest {
            file: "/etc/passwd".into(),
            ..m.clone()
        }
        .validate()
        .is_err());
        assert!(Manifest {
            id: "a/b".into(),
            ..m
        }
        .validate()
        .is_err());
    }
}
