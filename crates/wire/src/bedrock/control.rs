//! The catalog part of Bedrock's control plane: `ListFoundationModels` (with its filters)
//! and `GetFoundationModel`.

use serde::Deserialize;
use serde_json::{json, Value};

/// What the control plane says about one served model.
#[derive(Debug, Clone)]
pub struct FoundationModel {
    pub id: String,
    pub name: String,
    pub provider: String,
    /// Bedrock modality names: `TEXT`, `IMAGE`, `EMBEDDING`.
    pub input_modalities: Vec<String>,
    pub output_modalities: Vec<String>,
    pub streaming: bool,
}

/// `ListFoundationModels` query filters; matching is case-insensitive, as on Bedrock.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilters {
    pub by_provider: Option<String>,
    pub by_customization_type: Option<String>,
    pub by_output_modality: Option<String>,
    pub by_inference_type: Option<String>,
}

impl ListFilters {
    pub fn matches(&self, m: &FoundationModel) -> bool {
        let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        // Providers go by their display name (`Hugging Face`) or their id prefix (`huggingface`).
        let id_prefix = m.id.split('.').next().unwrap_or_default();
        self.by_provider
            .as_deref()
            .is_none_or(|p| eq(p, &m.provider) || eq(p, id_prefix))
            && self
                .by_output_modality
                .as_deref()
                .is_none_or(|o| m.output_modalities.iter().any(|x| eq(x, o)))
            // Everything we serve runs on demand and none of it can be customised.
            && self.by_inference_type.as_deref().is_none_or(|t| eq(t, "ON_DEMAND"))
            && self.by_customization_type.is_none()
    }
}

pub fn model_arn(region: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}::foundation-model/{id}")
}

/// A `FoundationModelSummary`; `GetFoundationModel`'s `modelDetails` has the same members.
pub fn summary(region: &str, m: &FoundationModel) -> Value {
    json!({
        "modelArn": model_arn(region, &m.id),
        "modelId": m.id,
        "modelName": m.name,
        "providerName": m.provider,
        "inputModalities": m.input_modalities,
        "outputModalities": m.output_modalities,
        "responseStreamingSupported": m.streaming,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> FoundationModel {
        FoundationModel {
            id: "google.gemma-3-270m-v1:0".into(),
            name: "Gemma 3 270M".into(),
            provider: "google".into(),
            input_modalities: vec!["TEXT".into()],
            output_modalities: vec!["TEXT".into()],
            streaming: true,
        }
    }

    #[test]
    fn filters() {
        let m = model();
        assert!(ListFilters::default().matches(&m));
        let f = |p: Option<&str>, o: Option<&str>, t: Option<&str>| ListFilters {
            by_provider: p.map(Into::into),
            by_output_modality: o.map(Into::into),
            by_inference_type: t.map(Into::into),
            by_customization_type: None,
        };
        assert!(f(Some("Google"), Some("TEXT"), Some("ON_DEMAND")).matches(&m));
        assert!(!f(Some("meta"), None, None).matches(&m));
        let hf = FoundationModel {
            id: "huggingface.smollm2-135m-instruct-v1:0".into(),
            provider: "Hugging Face".into(),
            ..model()
        };
        assert!(f(Some("huggingface"), None, None).matches(&hf));
        assert!(f(Some("hugging face"), None, None).matches(&hf));
        assert!(!f(None, Some("EMBEDDING"), None).matches(&m));
        assert!(!f(None, None, Some("PROVISIONED")).matches(&m));
    }

    #[test]
    fn summary_shape() {
        let s = summary("us-east-1", &model());
        assert_eq!(
            s["modelArn"],
            "arn:aws:bedrock:us-east-1::foundation-model/google.gemma-3-270m-v1:0"
        );
        assert_eq!(s["modelLifecycle"]["status"], "ACTIVE");
    }
}
