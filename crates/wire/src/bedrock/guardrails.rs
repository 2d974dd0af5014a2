//! Bedrock Guardrails on the wire: the control plane (`CreateGuardrail`, `GetGuardrail`,
//! `ListGuardrails`, `UpdateGuardrail`, `DeleteGuardrail`, `CreateGuardrailVersion`, from
//! botocore's `bedrock/2023-04-20`) and the runtime's `ApplyGuardrail` and
//! `guardrailConfig` (`bedrock-runtime/2023-09-30`).
//!
//! A guardrail is stored as its [`Definition`]: the policies Basalt enforces and the
//! blocked messages. Automated reasoning and cross-region inference are refused by name at
//! creation rather than accepted and not enforced; topics and content filters need the
//! server's guard model, which the server checks.

use basalt_guardrails::grounding::{ContextualGroundingPolicyConfig, GroundingFilterConfig};
use basalt_guardrails::judge::{
    ContentFilterConfig, ContentPolicyConfig, TopicConfig, TopicPolicyConfig,
};
use basalt_guardrails::{
    Assessment, Guardrail, Policies, PolicyUnits, SensitiveInformationPolicyConfig, Source,
    WordPolicyConfig,
};
use basalt_types::{time::iso8601, BasaltError, ErrorKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::content::unions;

/// What a guardrail is, as stored: its policies and what it answers when it blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(flatten)]
    pub policies: Policies,
    pub blocked_input_messaging: String,
    pub blocked_outputs_messaging: String,
}

/// The body of `CreateGuardrail` and `UpdateGuardrail`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardrailRequest {
    pub name: String,
    pub description: Option<String>,
    pub topic_policy_config: Option<TopicPolicyConfig>,
    pub content_policy_config: Option<ContentPolicyConfig>,
    pub word_policy_config: Option<WordPolicyConfig>,
    pub sensitive_information_policy_config: Option<SensitiveInformationPolicyConfig>,
    pub contextual_grounding_policy_config: Option<ContextualGroundingPolicyConfig>,
    pub automated_reasoning_policy_config: Option<Value>,
    pub cross_region_config: Option<Value>,
    pub blocked_input_messaging: String,
    pub blocked_outputs_messaging: String,
    /// Accepted; the data directory's encryption is the operator's concern.
    pub kms_key_id: Option<String>,
    pub tags: Option<Value>,
    pub client_request_token: Option<String>,
}

impl GuardrailRequest {
    /// Checks the request as Bedrock validates it and returns what to store: the name, the
    /// description, and the definition (whose policies compile).
    pub fn into_definition(self) -> Result<(String, Option<String>, Definition), BasaltError> {
        let name_ok = (1..=50).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(BasaltError::invalid(
                "name",
                "a guardrail name is 1 to 50 letters, digits, `-` or `_`",
            ));
        }
        if self
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 200)
        {
            return Err(BasaltError::invalid(
                "description",
                "a description is at most 200 characters",
            ));
        }
        for (param, text) in [
            ("blockedInputMessaging", &self.blocked_input_messaging),
            ("blockedOutputsMessaging", &self.blocked_outputs_messaging),
        ] {
            if !(1..=500).contains(&text.chars().count()) {
                return Err(BasaltError::invalid(
                    param,
                    "a blocked message is 1 to 500 characters",
                ));
            }
        }
        for (param, config, what) in [
            (
                "automatedReasoningPolicyConfig",
                &self.automated_reasoning_policy_config,
                "Automated reasoning checks",
            ),
            (
                "crossRegionConfig",
                &self.cross_region_config,
                "Cross-region inference",
            ),
        ] {
            if config.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(BasaltError::new(
                    ErrorKind::UnsupportedForModel,
                    format!("{what} are not available in Basalt"),
                )
                .with_param(param));
            }
        }
        let policies = Policies {
            word_policy_config: self.word_policy_config,
            sensitive_information_policy_config: self.sensitive_information_policy_config,
            contextual_grounding_policy_config: self.contextual_grounding_policy_config,
            topic_policy_config: self.topic_policy_config,
            content_policy_config: self.content_policy_config,
        };
        Guardrail::compile(&policies)?;
        Ok((
            self.name,
            self.description,
            Definition {
                policies,
                blocked_input_messaging: self.blocked_input_messaging,
                blocked_outputs_messaging: self.blocked_outputs_messaging,
            },
        ))
    }
}

/// `CreateGuardrailVersion`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionRequest {
    pub description: Option<String>,
    pub client_request_token: Option<String>,
}

/// A guardrail's ARN (and the account its tenant stands for).
pub fn guardrail_arn(region: &str, account: &str, id: &str) -> String {
    format!("arn:aws:bedrock:{region}:{account}:guardrail/{id}")
}

/// The guardrail id in an identifier that is an id or an ARN.
pub fn guardrail_id(identifier: &str) -> &str {
    identifier.rsplit('/').next().unwrap_or(identifier)
}

/// Whether `version` is one Bedrock accepts (`DRAFT` or 1 to 99999999).
pub fn valid_version(version: &str) -> bool {
    version == "DRAFT"
        || (!version.is_empty()
            && version.len() <= 8
            && version.bytes().all(|b| b.is_ascii_digit())
            && !version.starts_with('0'))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateResponse<'a> {
    pub guardrail_id: &'a str,
    pub guardrail_arn: &'a str,
    pub version: &'a str,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateResponse<'a> {
    pub guardrail_id: &'a str,
    pub guardrail_arn: &'a str,
    pub version: &'a str,
    pub updated_at: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResponse<'a> {
    pub guardrail_id: &'a str,
    pub version: &'a str,
}

/// A stored guardrail version as the API describes it.
pub struct Described<'a> {
    pub id: &'a str,
    pub arn: &'a str,
    pub version: &'a str,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `GetGuardrail`'s response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetResponse<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub guardrail_id: &'a str,
    pub guardrail_arn: &'a str,
    pub version: &'a str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub word_policy: Option<WordPolicy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensitive_information_policy: Option<SensitiveInformationPolicy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contextual_grounding_policy: Option<GroundingPolicy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_policy: Option<TopicPolicy<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_policy: Option<ContentPolicy<'a>>,
    pub created_at: String,
    pub updated_at: String,
    pub blocked_input_messaging: &'a str,
    pub blocked_outputs_messaging: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WordPolicy<'a> {
    pub words: &'a [basalt_guardrails::WordConfig],
    pub managed_word_lists: &'a [basalt_guardrails::ManagedWordListConfig],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveInformationPolicy<'a> {
    pub pii_entities: &'a [basalt_guardrails::PiiEntityConfig],
    pub regexes: &'a [basalt_guardrails::RegexConfig],
}

#[derive(Debug, Serialize)]
pub struct TopicPolicy<'a> {
    pub topics: &'a [TopicConfig],
}

#[derive(Debug, Serialize)]
pub struct ContentPolicy<'a> {
    pub filters: &'a [ContentFilterConfig],
}

#[derive(Debug, Serialize)]
pub struct GroundingPolicy<'a> {
    pub filters: &'a [GroundingFilterConfig],
}

pub fn get_response<'a>(g: &Described<'a>, d: &'a Definition) -> GetResponse<'a> {
    GetResponse {
        name: g.name,
        description: g.description,
        guardrail_id: g.id,
        guardrail_arn: g.arn,
        version: g.version,
        status: "READY",
        word_policy: d.policies.word_policy_config.as_ref().map(|w| WordPolicy {
            words: &w.words_config,
            managed_word_lists: &w.managed_word_lists_config,
        }),
        sensitive_information_policy: d.policies.sensitive_information_policy_config.as_ref().map(
            |s| SensitiveInformationPolicy {
                pii_entities: &s.pii_entities_config,
                regexes: &s.regexes_config,
            },
        ),
        contextual_grounding_policy: d.policies.contextual_grounding_policy_config.as_ref().map(
            |c| GroundingPolicy {
                filters: &c.filters_config,
            },
        ),
        topic_policy: d
            .policies
            .topic_policy_config
            .as_ref()
            .map(|t| TopicPolicy {
                topics: &t.topics_config,
            }),
        content_policy: d
            .policies
            .content_policy_config
            .as_ref()
            .map(|c| ContentPolicy {
                filters: &c.filters_config,
            }),
        created_at: iso8601(g.created_at),
        updated_at: iso8601(g.updated_at),
        blocked_input_messaging: &d.blocked_input_messaging,
        blocked_outputs_messaging: &d.blocked_outputs_messaging,
    }
}

/// One entry of `ListGuardrails`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary<'a> {
    pub id: &'a str,
    pub arn: &'a str,
    pub status: &'static str,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub version: &'a str,
    pub created_at: String,
    pub updated_at: String,
}

pub fn summary<'a>(g: &Described<'a>) -> Summary<'a> {
    Summary {
        id: g.id,
        arn: g.arn,
        status: "READY",
        name: g.name,
        description: g.description,
        version: g.version,
        created_at: iso8601(g.created_at),
        updated_at: iso8601(g.updated_at),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<'a> {
    pub guardrails: Vec<Summary<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ApplyGuardrail`'s body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRequest {
    pub source: Source,
    #[serde(deserialize_with = "unions")]
    pub content: Vec<GuardrailContentBlock>,
    pub output_scope: Option<OutputScope>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutputScope {
    Interventions,
    Full,
}

/// `GuardrailContentBlock`: text (images need a classifier).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GuardrailContentBlock {
    Text(super::content::GuardText),
    Image(serde::de::IgnoredAny),
}

/// `ApplyGuardrail`'s response.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub usage: GuardrailUsage,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_reason: Option<String>,
    pub outputs: Vec<OutputText>,
    pub assessments: Vec<AssessmentOut>,
    pub guardrail_coverage: Coverage,
}

#[derive(Debug, Serialize)]
pub struct OutputText {
    pub text: String,
}

/// `GuardrailUsage`: every member Bedrock requires, those no policy here uses at zero.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailUsage {
    pub topic_policy_units: u64,
    pub content_policy_units: u64,
    pub word_policy_units: u64,
    pub sensitive_information_policy_units: u64,
    pub sensitive_information_policy_free_units: u64,
    pub contextual_grounding_policy_units: u64,
}

impl From<PolicyUnits> for GuardrailUsage {
    fn from(u: PolicyUnits) -> Self {
        Self {
            word_policy_units: u.word_policy_units,
            sensitive_information_policy_units: u.sensitive_information_policy_units,
            contextual_grounding_policy_units: u.contextual_grounding_policy_units,
            topic_policy_units: u.topic_policy_units,
            content_policy_units: u.content_policy_units,
            ..Self::default()
        }
    }
}

/// A `GuardrailAssessment` with its invocation metrics.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssessmentOut {
    #[serde(flatten)]
    pub assessment: Assessment,
    pub invocation_metrics: InvocationMetrics,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationMetrics {
    pub guardrail_processing_latency: u64,
    pub usage: GuardrailUsage,
    pub guardrail_coverage: Coverage,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub text_characters: TextCharacters,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TextCharacters {
    pub guarded: u64,
    pub total: u64,
}

/// `guardrailConfig` on `Converse` and `ConverseStream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardrailConfig {
    pub guardrail_identifier: String,
    pub guardrail_version: String,
    #[serde(default)]
    pub trace: Trace,
    /// `ConverseStream` only.
    pub stream_processing_mode: Option<StreamProcessingMode>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trace {
    Enabled,
    #[default]
    Disabled,
    EnabledFull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamProcessingMode {
    Sync,
    Async,
}

/// `trace.guardrail` of a Converse response (and of a stream's metadata event).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardrailTrace {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_output: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub input_assessment: std::collections::BTreeMap<String, AssessmentOut>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub output_assessments: std::collections::BTreeMap<String, Vec<AssessmentOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bedrock::parse_json;

    #[test]
    fn creation_checks_like_bedrock_and_refuses_what_needs_a_model() {
        let ok = br#"{"name":"pii-guard","blockedInputMessaging":"no","blockedOutputsMessaging":"no",
            "sensitiveInformationPolicyConfig":{"piiEntitiesConfig":[{"type":"EMAIL","action":"ANONYMIZE"}]}}"#;
        let (name, _, d) = parse_json::<GuardrailRequest>(ok)
            .unwrap()
            .into_definition()
            .unwrap();
        assert_eq!(name, "pii-guard");
        // The stored form reads back as it was.
        let stored = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Definition>(&stored).unwrap(), d);
        for (body, param) in [
            (
                r#"{"name":"bad name","blockedInputMessaging":"n","blockedOutputsMessaging":"n"}"#,
                "name",
            ),
            (
                r#"{"name":"g","blockedInputMessaging":"","blockedOutputsMessaging":"n"}"#,
                "blockedInputMessaging",
            ),
            (
                r#"{"name":"g","blockedInputMessaging":"n","blockedOutputsMessaging":"n",
                    "contentPolicyConfig":{"filtersConfig":[]}}"#,
                "contentPolicyConfig.filtersConfig",
            ),
            (
                r#"{"name":"g","blockedInputMessaging":"n","blockedOutputsMessaging":"n",
                    "automatedReasoningPolicyConfig":{"policies":["p"]}}"#,
                "automatedReasoningPolicyConfig",
            ),
            (
                r#"{"name":"g","blockedInputMessaging":"n","blockedOutputsMessaging":"n",
                    "sensitiveInformationPolicyConfig":{"regexesConfig":[{"name":"r","pattern":"(","action":"BLOCK"}]}}"#,
                "sensitiveInformationPolicyConfig.regexesConfig.0.pattern",
            ),
            (
                r#"{"name":"g","blockedInputMessaging":"n","blockedOutputsMessaging":"n",
                    "sensitiveInformationPolicyConfig":{"piiEntitiesConfig":[{"type":"SHOE_SIZE","action":"BLOCK"}]}}"#,
                "sensitiveInformationPolicyConfig.piiEntitiesConfig.0.type",
            ),
        ] {
            let e = parse_json::<GuardrailRequest>(body.as_bytes())
                .and_then(GuardrailRequest::into_definition)
                .unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
    }

    #[test]
    fn identifiers_and_versions() {
        assert_eq!(
            guardrail_id("arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123"),
            "abc123"
        );
        assert_eq!(guardrail_id("abc123"), "abc123");
        assert!(valid_version("DRAFT") && valid_version("1") && valid_version("12345678"));
        assert!(
            !valid_version("0")
                && !valid_version("01")
                && !valid_version("draft")
                && !valid_version("123456789")
        );
    }
}
