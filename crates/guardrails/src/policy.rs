//! A guardrail's policies as Bedrock's `CreateGuardrail` configures them (the stored,
//! serialisable form), compiled once into a [`Guardrail`] that assesses text.
//!
//! Limits are Bedrock's: 10,000 words, 10 regexes of at most 500 characters. A regex is
//! compiled by the `regex` crate (linear time in the text, whatever the pattern) under a
//! size limit, so a tenant's pattern can cost neither time nor memory without bound.

use basalt_types::BasaltError;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::assess::Assessment;
use crate::pii::PiiType;
use crate::words::WordList;

pub const MAX_WORDS: usize = 10_000;
pub const MAX_REGEXES: usize = 10;
pub const MAX_PATTERN_CHARS: usize = 500;
/// Compiled size allowed per regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Which way text flows: the user's prompt, or the model's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Source {
    Input,
    Output,
}

/// What a policy does with what it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PolicyAction {
    Block,
    Anonymize,
    /// Detect and report only.
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WordPolicyConfig {
    #[serde(default)]
    pub words_config: Vec<WordConfig>,
    #[serde(default)]
    pub managed_word_lists_config: Vec<ManagedWordListConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WordConfig {
    pub text: String,
    #[serde(flatten)]
    pub directions: Directions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManagedWordListConfig {
    /// `PROFANITY`, the only managed list.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub directions: Directions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveInformationPolicyConfig {
    #[serde(default)]
    pub pii_entities_config: Vec<PiiEntityConfig>,
    #[serde(default)]
    pub regexes_config: Vec<RegexConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PiiEntityConfig {
    #[serde(rename = "type")]
    pub kind: PiiType,
    pub action: PolicyAction,
    #[serde(flatten)]
    pub directions: Directions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub pattern: String,
    pub action: PolicyAction,
    #[serde(flatten)]
    pub directions: Directions,
}

/// Per-direction overrides of a policy entry: its action and whether it applies at all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Directions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_action: Option<PolicyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_action: Option<PolicyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_enabled: Option<bool>,
}

impl Directions {
    /// The action for `source`, or `None` when the entry does not apply to it.
    pub(crate) fn action(&self, source: Source, default: PolicyAction) -> Option<PolicyAction> {
        let (enabled, action) = match source {
            Source::Input => (self.input_enabled, self.input_action),
            Source::Output => (self.output_enabled, self.output_action),
        };
        (enabled != Some(false)).then_some(action.unwrap_or(default))
    }
}

/// The policies a guardrail has (those Basalt can enforce without a model), as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_policy_config: Option<WordPolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_information_policy_config: Option<SensitiveInformationPolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contextual_grounding_policy_config:
        Option<crate::grounding::ContextualGroundingPolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_policy_config: Option<crate::judge::TopicPolicyConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_policy_config: Option<crate::judge::ContentPolicyConfig>,
}

impl Policies {
    /// Whether a guard model must judge texts for these policies: denied topics, NAME and
    /// ADDRESS always; content filters unless `classifier` (the built-in content classifier
    /// is loaded) and it covers every filtered category.
    pub fn needs_guard_model(&self, classifier: bool) -> bool {
        let filters_need_one = self.content_policy_config.as_ref().is_some_and(|c| {
            !classifier
                || c.filters_config.iter().any(|f| {
                    let filtered = f.input_strength != crate::judge::Level::None
                        || f.output_strength != crate::judge::Level::None;
                    filtered && !crate::classifier::ContentClassifier::covers(f.kind)
                })
        });
        self.topic_policy_config.is_some()
            || filters_need_one
            || self
                .sensitive_information_policy_config
                .as_ref()
                .is_some_and(|s| s.pii_entities_config.iter().any(|e| e.kind.needs_model()))
    }
}

/// A guardrail's policies, compiled.
pub struct Guardrail {
    /// The guardrail's own words, then the managed list's (from index `custom_words`).
    pub(crate) words: Option<(WordList, Vec<Directions>)>,
    pub(crate) custom_words: usize,
    pub(crate) pii: Vec<PiiEntityConfig>,
    pub(crate) regexes: Vec<(RegexConfig, Regex)>,
    grounding: Option<crate::grounding::ContextualGroundingPolicyConfig>,
    topics: Option<crate::judge::TopicPolicyConfig>,
    content: Option<crate::judge::ContentPolicyConfig>,
}

impl Guardrail {
    /// Checks the configuration against Bedrock's limits and compiles it; errors name the
    /// member at fault as Bedrock's validation does.
    pub fn compile(policies: &Policies) -> Result<Self, BasaltError> {
        let words = match &policies.word_policy_config {
            Some(w) => compile_words(w)?,
            None => None,
        };
        let (pii, regexes) = match &policies.sensitive_information_policy_config {
            Some(s) => (check_pii(s)?, compile_regexes(s)?),
            None => (Vec::new(), Vec::new()),
        };
        let custom_words = policies
            .word_policy_config
            .as_ref()
            .map_or(0, |w| w.words_config.len());
        if let Some(g) = &policies.contextual_grounding_policy_config {
            crate::grounding::validate(g)?;
        }
        crate::judge::validate(
            policies.topic_policy_config.as_ref(),
            policies.content_policy_config.as_ref(),
        )?;
        Ok(Self {
            words,
            custom_words,
            pii,
            regexes,
            grounding: policies.contextual_grounding_policy_config.clone(),
            topics: policies.topic_policy_config.clone(),
            content: policies.content_policy_config.clone(),
        })
    }

    /// The contextual grounding policy, which the caller scores (it needs embeddings).
    pub fn grounding(&self) -> Option<&crate::grounding::ContextualGroundingPolicyConfig> {
        self.grounding.as_ref()
    }

    /// Whether texts flowing in `source`'s direction need the guard model; with
    /// `classifier` (the built-in content classifier rates what it covers), filters it covers
    /// do not.
    pub fn judges(&self, source: Source, classifier: bool) -> bool {
        let content = if classifier {
            self.content
                .as_ref()
                .map(|c| crate::judge::ContentPolicyConfig {
                    filters_config: c
                        .filters_config
                        .iter()
                        .filter(|f| !crate::classifier::ContentClassifier::covers(f.kind))
                        .cloned()
                        .collect(),
                })
        } else {
            self.content.clone()
        };
        crate::judge::applies(self.topics.as_ref(), content.as_ref(), source)
            || !self.model_pii(source).is_empty()
    }

    /// The PII types the guard model looks for in `source`'s direction, with their actions.
    fn model_pii(&self, source: Source) -> Vec<(PiiType, PolicyAction)> {
        self.pii_for(source)
            .into_iter()
            .filter(|(kind, _)| kind.needs_model())
            .collect()
    }

    /// The question for the guard model about `text` flowing in `source`'s direction, or
    /// `None` when no topic or content filter applies there.
    pub fn question(&self, source: Source, text: &str) -> Option<crate::judge::Question> {
        let pii: Vec<PiiType> = self.model_pii(source).iter().map(|(k, _)| *k).collect();
        crate::judge::Question::new(
            self.topics.as_ref(),
            self.content.as_ref(),
            &pii,
            source,
            text,
        )
    }

    /// The guard model's answer to [`Guardrail::question`] about `text`, assessed: the
    /// topic, content and PII assessments, `text` with the PII it found masked where the
    /// guardrail anonymises, and whether anything blocks.
    pub fn judge(
        &self,
        source: Source,
        question: &crate::judge::Question,
        answer: &str,
        text: &str,
    ) -> (Assessment, String, bool) {
        let verdict = crate::judge::Verdict::parse(
            answer,
            question,
            self.topics.as_ref(),
            self.content.as_ref(),
        );
        let (topic_policy, content_policy, blocked) = crate::judge::assess(
            self.topics.as_ref(),
            self.content.as_ref(),
            source,
            &verdict,
        );
        let (sensitive, masked, pii_blocks) =
            crate::judge::mask_entities(&self.model_pii(source), &verdict, text);
        let assessment = Assessment {
            topic_policy,
            content_policy,
            sensitive_information_policy: sensitive,
            ..Assessment::default()
        };
        (assessment, masked, blocked || pii_blocks)
    }

    /// The content filters of `source`'s direction rated by the built-in classifier (for a
    /// guardrail that needs no guard model): the assessment and whether it blocks.
    pub fn classify(
        &self,
        source: Source,
        classifier: &crate::classifier::ContentClassifier,
        text: &str,
    ) -> (Assessment, bool) {
        let (content_policy, blocked) =
            crate::judge::classify(self.content.as_ref(), source, classifier, text);
        let assessment = Assessment {
            content_policy,
            ..Assessment::default()
        };
        (assessment, blocked)
    }

    /// The PII entity types, actions and directions configured.
    pub(crate) fn pii_for(&self, source: Source) -> Vec<(PiiType, PolicyAction)> {
        self.pii
            .iter()
            .filter_map(|e| Some((e.kind, e.directions.action(source, e.action)?)))
            .collect()
    }

    pub(crate) fn word_action(&self, entry: usize, source: Source) -> Option<PolicyAction> {
        let (_, directions) = self.words.as_ref()?;
        directions.get(entry)?.action(source, PolicyAction::Block)
    }

    pub(crate) fn regex_action(config: &RegexConfig, source: Source) -> Option<PolicyAction> {
        config.directions.action(source, config.action)
    }
}

fn compile_words(w: &WordPolicyConfig) -> Result<Option<(WordList, Vec<Directions>)>, BasaltError> {
    const PARAM: &str = "wordPolicyConfig.wordsConfig";
    if w.words_config.len() > MAX_WORDS {
        return Err(BasaltError::invalid(
            PARAM,
            format!(
                "a guardrail holds at most {MAX_WORDS} words ({} given)",
                w.words_config.len()
            ),
        ));
    }
    if let Some((i, list)) = w
        .managed_word_lists_config
        .iter()
        .enumerate()
        .find(|(_, l)| l.kind != "PROFANITY")
    {
        return Err(BasaltError::invalid(
            format!("wordPolicyConfig.managedWordListsConfig.{i}.type"),
            format!("`{}` is not a managed word list (PROFANITY)", list.kind),
        ));
    }
    if w.words_config.is_empty() && w.managed_word_lists_config.is_empty() {
        return Ok(None);
    }
    let mut entries = Vec::with_capacity(w.words_config.len());
    for (i, word) in w.words_config.iter().enumerate() {
        let text = word.text.trim();
        if text.is_empty() || text.chars().count() > 100 {
            return Err(BasaltError::invalid(
                format!("{PARAM}.{i}.text"),
                "a word or phrase is 1 to 100 characters",
            ));
        }
        entries.push(text.to_string());
    }
    let mut directions: Vec<Directions> = w
        .words_config
        .iter()
        .map(|w| w.directions.clone())
        .collect();
    // The managed list's entries follow the guardrail's own (the assessment tells them
    // apart by index), each with the list's directions.
    if let Some(managed) = w.managed_word_lists_config.first() {
        for word in crate::words::profanity() {
            entries.push(word.to_string());
            directions.push(managed.directions.clone());
        }
    }
    let list = WordList::new(entries)
        .ok_or_else(|| BasaltError::invalid(PARAM, "the word list cannot be compiled"))?;
    Ok(Some((list, directions)))
}

fn check_pii(s: &SensitiveInformationPolicyConfig) -> Result<Vec<PiiEntityConfig>, BasaltError> {
    for (i, e) in s.pii_entities_config.iter().enumerate() {
        if !e.kind.is_detectable() && !e.kind.needs_model() {
            return Err(BasaltError::new(
                basalt_types::ErrorKind::UnsupportedForModel,
                format!(
                    "{} cannot be detected by pattern, and Basalt's guard model does not look \
                     for it (NAME and ADDRESS it does)",
                    e.kind.name()
                ),
            )
            .with_param(format!(
                "sensitiveInformationPolicyConfig.piiEntitiesConfig.{i}.type"
            )));
        }
    }
    Ok(s.pii_entities_config.clone())
}

fn compile_regexes(
    s: &SensitiveInformationPolicyConfig,
) -> Result<Vec<(RegexConfig, Regex)>, BasaltError> {
    const PARAM: &str = "sensitiveInformationPolicyConfig.regexesConfig";
    if s.regexes_config.len() > MAX_REGEXES {
        return Err(BasaltError::invalid(
            PARAM,
            format!("a guardrail holds at most {MAX_REGEXES} regexes"),
        ));
    }
    s.regexes_config
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.pattern.chars().count() > MAX_PATTERN_CHARS {
                return Err(BasaltError::invalid(
                    format!("{PARAM}.{i}.pattern"),
                    format!("a pattern is at most {MAX_PATTERN_CHARS} characters"),
                ));
            }
            if r.name.trim().is_empty() || r.name.chars().count() > 100 {
                return Err(BasaltError::invalid(
                    format!("{PARAM}.{i}.name"),
                    "a regex's name is 1 to 100 characters",
                ));
            }
            let regex = RegexBuilder::new(&r.pattern)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| {
                    BasaltError::invalid(
                        format!("{PARAM}.{i}.pattern"),
                        format!("invalid regex: {e}"),
                    )
                })?;
            Ok((r.clone(), regex))
        })
        .collect()
}
